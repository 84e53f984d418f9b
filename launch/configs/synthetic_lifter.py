"""Stage 3 (lifter) on the embedded synthetic dataset.

  python -m launch.train --config=launch/configs/synthetic_lifter.py:hierarchical \
      --workdir=/tmp/w/lifter --config.init_from.msst=/tmp/w/msst \
      --config.init_from.hiarm=/tmp/w/hiarm

The argument after ':' is the input mode: sparse (baseline, needs no earlier stage),
hierarchical (HiPART: needs init_from.msst and init_from.hiarm) or oracle (ground-truth
hierarchy: the upper bound); `,tiny` gives the test-size variant.
"""

import ml_collections

from hipart_jax.models import lifter
from launch.configs import base
from launch.configs import synthetic_msst


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  mode, tiny = base.parse_variant(arg, lifter.LIFTER_MODES, 'hierarchical')
  config = base.stage_config('lifter', dataset=synthetic_msst.DATASET,
                             schedule='synthetic_lifter', model=base.lifter_model('small', mode),
                             loss=base.lifter_loss())
  # On a CPU host the 178-point lifters take the gradient 16 examples at a time on one
  # XLA device per core; the 17-point sparse lifter fits the caches whole.
  if mode != 'sparse':
    config.execution.cpu.update(microbatch_size=16, devices=0)
  return base.make_tiny(config) if tiny else config
