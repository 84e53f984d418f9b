"""Stage 1 (MSST tokenizer) on the embedded synthetic dataset: minutes on a CPU.

  python -m launch.train --config=launch/configs/synthetic_msst.py --workdir=/tmp/w/msst
"""

import ml_collections

from hipart_jax import augment
from launch.configs import base


def msst_model(num_actions: int) -> ml_collections.ConfigDict:
  """A small tokenizer (about 0.3 M parameters)."""
  return ml_collections.ConfigDict(dict(
      width=64, num_blocks=2, token_hidden=64, channel_hidden=128, member_dim=16,
      sparse_codebook_size=128, dense_codebook_size=128, code_dim=32,
      ema_decay=0.95, vq_epsilon=1e-5, codebook_init_stddev=1.0, dead_after_steps=50,
      dropout=0.0, num_actions=num_actions, action_token_dim=4))


def msst_loss() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      sparse=1.0, commitment=0.25, local_alignment=0.01, global_alignment=0.01,
      la_temperature=0.1))


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'msst'
  config.dataset.name = 'synthetic_poses/small'
  # The tokenizer encodes ground-truth hierarchies, but in the model frame of the input
  # joints, which occlusion moves and rescales (the frame is the box of the visible
  # joints). HiARM's targets and test inputs live in such frames, so the tokenizer is
  # trained on them too: the default augmentation (occlusion, noise, flips).
  config.dataset.augment = augment.default_augment_config()
  config.model = msst_model(num_actions=6)  # synthetic_poses has 6 motion classes.
  config.loss = msst_loss()
  config.batch_size = 128
  # The gradient 32 examples at a time on CPU (train.make_train_step; the codebooks are
  # updated once from the whole batch, the same update): 1.28x faster train steps than
  # the whole batch of 128 (BENCHMARKS.md, change 11).
  config.train_step_microbatch_size.cpu = 32
  config.eval_batch_size = 256
  config.num_train_steps = 1_500
  config.optimizer.lr = 2e-3
  config.optimizer.warmup_steps = 100
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.best_metric = 'eval/recon_fine_px'
  return config
