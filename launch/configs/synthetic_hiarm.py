"""Stage 2 (HiARM) on the embedded synthetic dataset, from a trained stage-1 workdir.

  python -m launch.train --config=launch/configs/synthetic_hiarm.py --workdir=/tmp/w/hiarm \
      --config.init_from.msst=/tmp/w/msst

`--config=launch/configs/synthetic_hiarm.py:raster` (or center_to_periphery,
sparse_to_dense) switches the decoding order.
"""

import ml_collections

from launch.configs import base


def hiarm_model(ordering: str) -> ml_collections.ConfigDict:
  """A small HiARM (about 0.2 M parameters)."""
  return ml_collections.ConfigDict(dict(
      ordering=ordering, width=64, num_lsab=1, num_gcsab=2, num_heads=4, mlp_ratio=2,
      dropout=0.0, embedding_stddev=0.02))


def get_config(ordering: str = 'hierarchical') -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'hiarm'
  config.dataset.name = 'synthetic_poses/small'
  # Inputs: ground truth with the pipeline's occlusion, noise and flips (default augment).
  config.model = hiarm_model(ordering or 'hierarchical')
  config.loss = ml_collections.ConfigDict(dict(dense_weight=1.0, label_smoothing=0.0))
  config.init_from.msst = ''  # Workdir of the stage-1 run (required).
  config.batch_size = 128
  # The gradient 16 examples at a time on CPU (train.make_train_step, the same update):
  # 1.57x faster train steps than the whole batch of 128 (BENCHMARKS.md, change 11).
  config.train_step_microbatch_size.cpu = 16
  # And one CPU device per core (launch/cpu_devices.py): 1.27-1.32x (change 12).
  config.cpu_devices = 0
  config.eval_batch_size = 256
  config.num_train_steps = 1_500
  config.optimizer.lr = 2e-3
  config.optimizer.warmup_steps = 100
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.best_metric = 'eval/loss'
  return config
