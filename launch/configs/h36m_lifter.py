"""Stage 3 (lifter) on Human3.6M at the paper's scale (protocol human36m_p1 / p2).

  python -m launch.train --config=launch/configs/h36m_lifter.py:hierarchical \
      --workdir=/runs/h36m/lifter --config.init_from.msst=/runs/h36m/msst \
      --config.init_from.hiarm=/runs/h36m/hiarm

The argument after ':' is the input mode: sparse (baseline), hierarchical (HiPART: needs
init_from.msst and init_from.hiarm) or oracle (ground-truth hierarchy: the upper bound).
Evaluate with `python -m launch.evaluate --checkpoint=/runs/h36m/lifter
--protocol=human36m_p1`.
"""

import ml_collections

from launch.configs import base
from launch.configs import h36m_msst


def lifter_model(mode: str) -> ml_collections.ConfigDict:
  """The paper-scale lifter (about 0.55 M parameters)."""
  return ml_collections.ConfigDict(dict(
      mode=mode, width=128, depth=4, num_heads=8, mlp_ratio=2, dropout=0.1))


def get_config(mode: str = 'hierarchical') -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'lifter'
  config.dataset.name = h36m_msst.DATASET
  config.dataset.input_source = h36m_msst.INPUT_SOURCE
  config.model = lifter_model(mode or 'hierarchical')
  config.loss = ml_collections.ConfigDict(dict(bone_weight=0.0,
                                               generation_temperature=0.0))
  config.init_from.msst = ''
  config.init_from.hiarm = ''
  config.batch_size = 256
  config.eval_batch_size = 512
  config.num_train_steps = 200_000
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 2_000
  config.log_every_steps = 200
  config.eval_every_steps = 20_000
  config.checkpoint_every_steps = 2_000
  config.best_metric = 'eval/mpjpe_mm'
  return config
