"""Stage 2 (HiARM) on the CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_hiarm.py --workdir=/runs/cmu/hiarm \
      --config.init_from.msst=/runs/cmu/msst

`--config=launch/configs/cmu_hiarm.py:raster` (or center_to_periphery, sparse_to_dense)
switches the decoding order; `,tiny` gives the test-size variant. Inputs: projected
joints with the pipeline's occlusion, noise and flips (the default augmentation).
"""

import ml_collections

from hipart_jax import orderings
from launch.configs import base
from launch.configs import cmu_msst


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  ordering, tiny = base.parse_variant(arg, orderings.ORDERING_NAMES, 'hierarchical')
  config = cmu_msst.cmu_stage_config('hiarm', schedule='cmu',
                                     model=base.hiarm_model('paper', ordering),
                                     loss=base.hiarm_loss(label_smoothing=0.1))
  return base.make_tiny(config) if tiny else config
