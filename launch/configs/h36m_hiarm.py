"""Stage 2 (HiARM) on Human3.6M at the paper's scale, from a trained stage-1 workdir.

  python -m launch.train --config=launch/configs/h36m_hiarm.py --workdir=/runs/h36m/hiarm \
      --config.init_from.msst=/runs/h36m/msst

`--config=launch/configs/h36m_hiarm.py:raster` (or center_to_periphery, sparse_to_dense)
switches the decoding order; `,tiny` gives the test-size variant. Conditioned on CPN
detections with the pipeline's occlusion, noise and flips (the default augmentation).
"""

import ml_collections

from hipart_jax import orderings
from launch.configs import base
from launch.configs import h36m_msst


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  ordering, tiny = base.parse_variant(arg, orderings.ORDERING_NAMES, 'hierarchical')
  config = base.stage_config('hiarm', dataset=h36m_msst.DATASET,
                             input_source=h36m_msst.INPUT_SOURCE, schedule='h36m',
                             model=base.hiarm_model('paper', ordering),
                             loss=base.hiarm_loss(label_smoothing=0.1))
  return base.make_tiny(config) if tiny else config
