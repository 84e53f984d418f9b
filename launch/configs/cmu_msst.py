"""Stage 1 (MSST tokenizer) on the shared CMU mocap clips, paper-scale model.

  python -m launch.train --config=launch/configs/cmu_msst.py --workdir=/runs/cmu/msst

Build the dataset first (tfds_builders/cmu_mocap/README.md, config `shared_clips`, with
`--manual_dir=../shared/data/cmu_mocap`). bench/cmu_accuracy.py trains the same stages
with the small synthetic model sizes instead, to fit a CPU budget; `:tiny` gives the
test-size variant.
"""

import ml_collections

from hipart_jax import augment
from launch.configs import base
from tfds_builders.cmu_mocap import cmu_mocap_dataset_builder as cmu_builder

DATASET = 'cmu_mocap/shared_clips'
INPUT_SOURCE = 'gt'  # Projected joints: the only 2D source of the CMU builder.


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  _, tiny = base.parse_variant(arg, (), '')
  config = base.stage_config('msst', dataset=DATASET, input_source=INPUT_SOURCE,
                             schedule='cmu_msst', loss=base.msst_loss(),
                             model=base.msst_model('paper', len(cmu_builder.ACTIONS)))
  # Trained in the model frames of occluded inputs, as HiARM sees them (synthetic_msst).
  config.dataset.augment = augment.default_augment_config()
  return base.make_tiny(config) if tiny else config
