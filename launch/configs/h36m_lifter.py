"""Stage 3 (lifter) on Human3.6M at the paper's scale (protocol human36m_p1 / p2).

  python -m launch.train --config=launch/configs/h36m_lifter.py:hierarchical \
      --workdir=/runs/h36m/lifter --config.init_from.msst=/runs/h36m/msst \
      --config.init_from.hiarm=/runs/h36m/hiarm

The argument after ':' is the input mode: sparse (baseline), hierarchical (HiPART: needs
init_from.msst and init_from.hiarm) or oracle (ground-truth hierarchy: the upper bound);
`,tiny` gives the test-size variant. Evaluate with `python -m launch.evaluate
--checkpoint=/runs/h36m/lifter --protocol=human36m_p1`.
"""

import ml_collections

from hipart_jax.models import lifter
from launch.configs import base
from launch.configs import h36m_msst


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  mode, tiny = base.parse_variant(arg, lifter.LIFTER_MODES, 'hierarchical')
  config = base.stage_config('lifter', dataset=h36m_msst.DATASET,
                             input_source=h36m_msst.INPUT_SOURCE, schedule='h36m',
                             model=base.lifter_model('paper', mode), loss=base.lifter_loss())
  return base.make_tiny(config) if tiny else config
