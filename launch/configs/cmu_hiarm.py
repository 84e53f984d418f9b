"""Stage 2 (HiARM) on the shared CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_hiarm.py --workdir=/runs/cmu/hiarm \
      --config.init_from.msst=/runs/cmu/msst

`--config=launch/configs/cmu_hiarm.py:raster` (or center_to_periphery, sparse_to_dense)
switches the decoding order. Inputs: projected joints with the pipeline's occlusion,
noise and flips (the default augmentation).
"""

import ml_collections

from launch.configs import base
from launch.configs import cmu_msst
from launch.configs import h36m_hiarm


def get_config(ordering: str = 'hierarchical') -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'hiarm'
  config.dataset.name = cmu_msst.DATASET
  config.dataset.input_source = cmu_msst.INPUT_SOURCE
  config.dataset.eval_split = cmu_msst.VALIDATION_SPLIT
  config.model = h36m_hiarm.hiarm_model(ordering or 'hierarchical')
  config.loss = ml_collections.ConfigDict(dict(dense_weight=1.0, label_smoothing=0.1))
  config.init_from.msst = ''  # Workdir of the stage-1 run (required).
  config.batch_size = 128
  config.eval_batch_size = 256
  config.num_train_steps = 20_000
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 500
  config.log_every_steps = 100
  config.eval_every_steps = 4_000
  config.checkpoint_every_steps = 1_000
  config.best_metric = 'eval/loss'
  return config
