"""Stage 1 (MSST tokenizer) on Human3.6M at the paper's scale.

  python -m launch.train --config=launch/configs/h36m_msst.py --workdir=/runs/h36m/msst

The paper-scale model blocks live here and in h36m_hiarm.py / h36m_lifter.py; the CMU
configs reuse them. Tokenizer, HiARM and lifter together hold about 2.7 M parameters
(the paper reports 2.4 M; tests/test_configs.py counts them). The dataset is
`human36m/cpn` (build it first: tfds_builders/human36m/README.md).
"""

import ml_collections

from hipart_jax import augment
from launch.configs import base
from launch.configs import synthetic_msst
from tfds_builders.human36m import human36m_dataset_builder as h36m_builder

DATASET = 'human36m/cpn'
INPUT_SOURCE = 'cpn'  # CPN detections, the paper's 2D input.


def msst_model(num_actions: int) -> ml_collections.ConfigDict:
  """The paper-scale tokenizer (about 0.85 M parameters, 2 x 512 codes of 64 dims)."""
  return ml_collections.ConfigDict(dict(
      width=128, num_blocks=2, token_hidden=64, channel_hidden=256, member_dim=32,
      sparse_codebook_size=512, dense_codebook_size=512, code_dim=64,
      ema_decay=0.99, vq_epsilon=1e-5, codebook_init_stddev=1.0, dead_after_steps=200,
      dropout=0.0, num_actions=num_actions, action_token_dim=8))


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'msst'
  config.dataset.name = DATASET
  config.dataset.input_source = INPUT_SOURCE
  # The tokenizer encodes ground-truth hierarchies, but in the model frame of the input
  # joints, which occlusion moves and rescales (the frame is the box of the visible
  # joints). HiARM's targets and test inputs live in such frames, so the tokenizer is
  # trained on them too: the default augmentation (occlusion, noise, flips).
  config.dataset.augment = augment.default_augment_config()
  config.model = msst_model(num_actions=len(h36m_builder.ACTIONS))
  config.loss = synthetic_msst.msst_loss()
  config.batch_size = 256
  config.eval_batch_size = 512
  # The train split holds about 1.56 M (frame, camera) examples: 6 100 steps per epoch.
  config.num_train_steps = 100_000
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 1_000
  config.log_every_steps = 200
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  config.best_metric = 'eval/recon_fine_px'
  return config
