"""Stage 3 (lifter) on the embedded synthetic dataset.

  python -m launch.train --config=launch/configs/synthetic_lifter.py:hierarchical \
      --workdir=/tmp/w/lifter --config.init_from.msst=/tmp/w/msst \
      --config.init_from.hiarm=/tmp/w/hiarm

The argument after ':' is the input mode: sparse (baseline, needs no earlier stage),
hierarchical (HiPART: needs init_from.msst and init_from.hiarm) or oracle (ground-truth
hierarchy: the upper bound).
"""

import ml_collections

from launch.configs import base


def lifter_model(mode: str) -> ml_collections.ConfigDict:
  # attention_batch_chunk: with the hierarchy (178 points) the attention runs 4 examples at
  # a time, which keeps its [B, 4, 178, 178] temporaries in the CPU caches: 1.7x faster
  # inference at batch 1024 than unchunked, and 4 trains 1.03x faster than 8 (BENCHMARKS.md,
  # changes 3 and 10). 17 points need no chunking. 0 on GPU/TPU.
  return ml_collections.ConfigDict(dict(
      mode=mode, width=64, depth=3, num_heads=4, mlp_ratio=2, dropout=0.0,
      attention_batch_chunk=0 if mode == 'sparse' else 4))


def get_config(mode: str = 'hierarchical') -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'lifter'
  config.dataset.name = 'synthetic_poses/small'
  config.model = lifter_model(mode or 'hierarchical')
  config.loss = ml_collections.ConfigDict(dict(bone_weight=0.0,
                                               generation_temperature=0.0))
  config.init_from.msst = ''
  config.init_from.hiarm = ''
  config.batch_size = 128
  # The gradient 16 examples at a time on CPU (train.make_train_step, the same update):
  # the HiPART lifter's train step runs 1.10-1.14x faster, on the ground-truth hierarchy
  # 1.3x; the 17-point sparse lifter already fits the caches and runs 0.85x slower split,
  # so it takes the whole batch (BENCHMARKS.md, change 11).
  # And one CPU device per core (launch/cpu_devices.py): 1.45-1.5x (change 12).
  if config.model.mode != 'sparse':
    config.train_step_microbatch_size.cpu = 16
    config.cpu_devices = 0
  config.eval_batch_size = 256
  config.num_train_steps = 1_500
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 100
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.best_metric = 'eval/mpjpe_mm'
  return config
