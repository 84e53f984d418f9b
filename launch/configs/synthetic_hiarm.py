"""Stage 2 (HiARM) on the embedded synthetic dataset, from a trained stage-1 workdir.

  python -m launch.train --config=launch/configs/synthetic_hiarm.py --workdir=/tmp/w/hiarm \
      --config.init_from.msst=/tmp/w/msst

`--config=launch/configs/synthetic_hiarm.py:raster` (or center_to_periphery,
sparse_to_dense) switches the decoding order; `,tiny` gives the test-size variant.
Inputs: ground truth with the pipeline's occlusion, noise and flips (default augment).
"""

import ml_collections

from hipart_jax import orderings
from launch.configs import base
from launch.configs import synthetic_msst


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  ordering, tiny = base.parse_variant(arg, orderings.ORDERING_NAMES, 'hierarchical')
  config = base.stage_config('hiarm', dataset=synthetic_msst.DATASET,
                             schedule='synthetic_hiarm',
                             model=base.hiarm_model('small', ordering),
                             loss=base.hiarm_loss(label_smoothing=0.0))
  # On a CPU host: the gradient 16 examples at a time, one XLA device per core.
  config.execution.cpu.update(microbatch_size=16, devices=0)
  return base.make_tiny(config) if tiny else config
