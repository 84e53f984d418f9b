"""Stage 1 (MSST tokenizer) on the embedded synthetic dataset: minutes on a CPU.

  python -m launch.train --config=launch/configs/synthetic_msst.py --workdir=/tmp/w/msst

`:tiny` gives the test-size variant.
"""

import ml_collections

from hipart_jax import augment
from launch.configs import base

DATASET = 'synthetic_poses/small'
NUM_ACTIONS = 6  # synthetic_poses' motion classes.


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  _, tiny = base.parse_variant(arg, (), '')
  config = base.stage_config('msst', dataset=DATASET, schedule='synthetic_msst',
                             model=base.msst_model('small', NUM_ACTIONS),
                             loss=base.msst_loss())
  # The tokenizer encodes ground-truth hierarchies, but in the model frame of the input
  # joints, which occlusion moves and rescales (the frame is the box of the visible
  # joints). HiARM's targets and test inputs live in such frames, so the tokenizer is
  # trained on them too: the default augmentation (occlusion, noise, flips).
  config.dataset.augment = augment.default_augment_config()
  return base.make_tiny(config) if tiny else config
