"""Stage 3 (lifter) on the shared CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_lifter.py:hierarchical \
      --workdir=/runs/cmu/lifter --config.init_from.msst=/runs/cmu/msst \
      --config.init_from.hiarm=/runs/cmu/hiarm

The argument after ':' is the input mode: sparse (baseline), hierarchical (HiPART: needs
init_from.msst and init_from.hiarm) or oracle (ground-truth hierarchy: the upper bound),
all with the transformer lifter; `mlp` is the SimpleBaseline MLP of Martinez et al. on
the input joints (the field's classic baseline), and `mlp_hierarchical` / `mlp_oracle`
the same MLP fed the generated / ground-truth hierarchy too.
"""

import ml_collections

from launch.configs import base
from launch.configs import cmu_msst
from launch.configs import h36m_lifter


MLP_PREFIX = 'mlp'


def simple_baseline_model(mode: str) -> ml_collections.ConfigDict:
  """The SimpleBaseline MLP (Martinez et al. 2017: width 1024, two residual blocks)."""
  return ml_collections.ConfigDict(dict(
      architecture='simple_baseline', mode=mode, width=1024, num_blocks=2, dropout=0.25))


def lifter_model(arg: str) -> ml_collections.ConfigDict:
  """'sparse' | 'hierarchical' | 'oracle' (transformer), 'mlp' or 'mlp_<mode>' (MLP)."""
  if arg == MLP_PREFIX:
    return simple_baseline_model('sparse')
  if arg.startswith(MLP_PREFIX + '_'):
    return simple_baseline_model(arg[len(MLP_PREFIX) + 1:])
  return h36m_lifter.lifter_model(arg)


def get_config(mode: str = 'hierarchical') -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'lifter'
  config.dataset.name = cmu_msst.DATASET
  config.dataset.input_source = cmu_msst.INPUT_SOURCE
  config.dataset.eval_split = cmu_msst.VALIDATION_SPLIT
  config.model = lifter_model(mode or 'hierarchical')
  config.loss = ml_collections.ConfigDict(dict(bone_weight=0.0,
                                               generation_temperature=0.0))
  config.init_from.msst = ''
  config.init_from.hiarm = ''
  config.batch_size = 128
  config.eval_batch_size = 256
  config.num_train_steps = 20_000
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 500
  config.log_every_steps = 100
  config.eval_every_steps = 4_000
  config.checkpoint_every_steps = 1_000
  config.best_metric = 'eval/mpjpe_mm'
  return config
