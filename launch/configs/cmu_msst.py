"""Stage 1 (MSST tokenizer) on the CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_msst.py --workdir=/runs/cmu/msst

Build the dataset first (tfds_builders/cmu_mocap/README.md, config `multi_subject`, with
`--manual_dir=../shared/data/cmu_mocap`); `--config.dataset.name=cmu_mocap/shared_clips
--config.dataset.eval_split=test` trains on the older single-subject clips.
bench/cmu_accuracy.py trains the same stages with the small synthetic model sizes
instead, to fit a CPU budget; `:tiny` gives the test-size variant.
"""

import ml_collections

from hipart_jax import augment
from launch.configs import base
from tfds_builders.cmu_mocap import multi_subject

DATASET = 'cmu_mocap/multi_subject'  # 77 108 training examples: 602 steps per epoch.
INPUT_SOURCE = 'gt'  # Projected joints: the only 2D source of the CMU builder.
VALIDATION_SPLIT = 'validation'  # Subject-disjoint from train and test.


def cmu_stage_config(stage: str, **blocks) -> ml_collections.ConfigDict:
  """A stage on the CMU clips, evaluated on the validation split."""
  config = base.stage_config(stage, dataset=DATASET, input_source=INPUT_SOURCE, **blocks)
  config.dataset.eval_split = VALIDATION_SPLIT
  return config


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  _, tiny = base.parse_variant(arg, (), '')
  config = cmu_stage_config('msst', schedule='cmu_msst', loss=base.msst_loss(),
                            model=base.msst_model('paper', len(multi_subject.ACTIONS)))
  # Trained in the model frames of occluded inputs, as HiARM sees them (synthetic_msst).
  config.dataset.augment = augment.default_augment_config()
  return base.make_tiny(config) if tiny else config
