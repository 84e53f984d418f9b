"""Stage 1 (MSST tokenizer) on the shared CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_msst.py --workdir=/runs/cmu/msst

Build the dataset first (tfds_builders/cmu_mocap/README.md, config `multi_subject`, with
`--manual_dir=../shared/data/cmu_mocap`); `--config.dataset.name=cmu_mocap/shared_clips
--config.dataset.eval_split=test` trains on the older single-subject clips. The model blocks are the Human3.6M paper-scale
ones (h36m_*.py); bench/cmu_accuracy.py trains the same stages with the small synthetic
model sizes instead, to fit a CPU budget.
"""

import ml_collections

from hipart_jax import augment
from launch.configs import base
from launch.configs import h36m_msst
from launch.configs import synthetic_msst
from tfds_builders.cmu_mocap import multi_subject

DATASET = 'cmu_mocap/multi_subject'
INPUT_SOURCE = 'gt'  # Projected joints: the only 2D source of the CMU builder.
VALIDATION_SPLIT = 'validation'  # Subject-disjoint from train and test.


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.stage = 'msst'
  config.dataset.name = DATASET
  config.dataset.input_source = INPUT_SOURCE
  config.dataset.eval_split = VALIDATION_SPLIT
  # The tokenizer encodes ground-truth hierarchies, but in the model frame of the input
  # joints, which occlusion moves and rescales (the frame is the box of the visible
  # joints). HiARM's targets and test inputs live in such frames, so the tokenizer is
  # trained on them too: the default augmentation (occlusion, noise, flips).
  config.dataset.augment = augment.default_augment_config()
  config.model = h36m_msst.msst_model(num_actions=len(multi_subject.ACTIONS))
  config.loss = synthetic_msst.msst_loss()
  config.batch_size = 128
  config.eval_batch_size = 256
  # 77 108 training examples: 602 steps per epoch.
  config.num_train_steps = 20_000
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 500
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 1_000
  config.best_metric = 'eval/recon_fine_px'
  return config
