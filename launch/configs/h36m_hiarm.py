"""Stage 2 (HiARM) on Human3.6M at the paper's scale, from a trained stage-1 workdir.

  python -m launch.train --config=launch/configs/h36m_hiarm.py --workdir=/runs/h36m/hiarm \
      --config.init_from.msst=/runs/h36m/msst

`--config=launch/configs/h36m_hiarm.py:raster` (or center_to_periphery, sparse_to_dense)
switches the decoding order. Conditioned on CPN detections with the pipeline's
occlusion, noise and flips (the default augmentation).
"""

import ml_collections

from launch.configs import base
from launch.configs import h36m_msst


def hiarm_model(ordering: str) -> ml_collections.ConfigDict:
  """The paper-scale HiARM (about 1.26 M parameters)."""
  return ml_collections.ConfigDict(dict(
      ordering=ordering, width=128, num_lsab=2, num_gcsab=3, num_heads=8, mlp_ratio=4,
      dropout=0.1, embedding_stddev=0.02))


def get_config(ordering: str = 'hierarchical') -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'hiarm'
  config.dataset.name = h36m_msst.DATASET
  config.dataset.input_source = h36m_msst.INPUT_SOURCE
  config.model = hiarm_model(ordering or 'hierarchical')
  config.loss = ml_collections.ConfigDict(dict(dense_weight=1.0, label_smoothing=0.1))
  config.init_from.msst = ''  # Workdir of the stage-1 run (required).
  config.batch_size = 256
  config.eval_batch_size = 512
  config.num_train_steps = 200_000
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 2_000
  config.log_every_steps = 200
  config.eval_every_steps = 20_000
  config.checkpoint_every_steps = 2_000
  config.best_metric = 'eval/loss'
  return config
