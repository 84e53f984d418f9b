"""Stage 3 (lifter) on the CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_lifter.py:hierarchical \
      --workdir=/runs/cmu/lifter --config.init_from.msst=/runs/cmu/msst \
      --config.init_from.hiarm=/runs/cmu/hiarm

The argument after ':' is the input mode: sparse (baseline), hierarchical (HiPART: needs
init_from.msst and init_from.hiarm) or oracle (ground-truth hierarchy: the upper bound),
all with the transformer lifter; `mlp` is the SimpleBaseline MLP of Martinez et al. on
the input joints (the field's classic baseline), and `mlp_hierarchical` / `mlp_oracle`
the same MLP fed the generated / ground-truth hierarchy too. `,tiny` gives the
test-size variant.
"""

import ml_collections

from hipart_jax.models import lifter
from launch.configs import base
from launch.configs import cmu_msst

MLP_PREFIX = 'mlp'
CHOICES = lifter.LIFTER_MODES + (MLP_PREFIX,) + tuple(
    f'{MLP_PREFIX}_{mode}' for mode in lifter.LIFTER_MODES)


def lifter_model(arg: str) -> ml_collections.ConfigDict:
  """'sparse' | 'hierarchical' | 'oracle' (transformer), 'mlp' or 'mlp_<mode>' (MLP)."""
  if arg == MLP_PREFIX:
    return base.simple_baseline_model('sparse')
  if arg.startswith(MLP_PREFIX + '_'):
    return base.simple_baseline_model(arg[len(MLP_PREFIX) + 1:])
  return base.lifter_model('paper', arg)


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  choice, tiny = base.parse_variant(arg, CHOICES, 'hierarchical')
  config = cmu_msst.cmu_stage_config('lifter', schedule='cmu', model=lifter_model(choice),
                                     loss=base.lifter_loss())
  return base.make_tiny(config) if tiny else config
