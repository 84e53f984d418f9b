"""Stage 3 (lifter) on the shared CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_lifter.py:hierarchical \
      --workdir=/runs/cmu/lifter --config.init_from.msst=/runs/cmu/msst \
      --config.init_from.hiarm=/runs/cmu/hiarm

The argument after ':' is the input mode: sparse (baseline), hierarchical (HiPART: needs
init_from.msst and init_from.hiarm) or oracle (ground-truth hierarchy: the upper bound);
`,tiny` gives the test-size variant.
"""

import ml_collections

from hipart_jax.models import lifter
from launch.configs import base
from launch.configs import cmu_msst


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  mode, tiny = base.parse_variant(arg, lifter.LIFTER_MODES, 'hierarchical')
  config = base.stage_config('lifter', dataset=cmu_msst.DATASET,
                             input_source=cmu_msst.INPUT_SOURCE, schedule='cmu',
                             model=base.lifter_model('paper', mode), loss=base.lifter_loss())
  return base.make_tiny(config) if tiny else config
