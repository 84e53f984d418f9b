"""Stage 1 (MSST tokenizer) on Human3.6M at the paper's scale.

  python -m launch.train --config=launch/configs/h36m_msst.py --workdir=/runs/h36m/msst

The dataset is `human36m/cpn` (build it first: tfds_builders/human36m/README.md).
Tokenizer, HiARM and lifter together hold about 2.7 M parameters (the paper reports
2.4 M); `:tiny` gives the test-size variant.
"""

import ml_collections

from hipart_jax import augment
from launch.configs import base
from tfds_builders.human36m import human36m_dataset_builder as h36m_builder

DATASET = 'human36m/cpn'
INPUT_SOURCE = 'cpn'  # CPN detections, the paper's 2D input.


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  _, tiny = base.parse_variant(arg, (), '')
  config = base.stage_config('msst', dataset=DATASET, input_source=INPUT_SOURCE,
                             schedule='h36m_msst', loss=base.msst_loss(),
                             model=base.msst_model('paper', len(h36m_builder.ACTIONS)))
  # Trained in the model frames of occluded inputs, as HiARM sees them (synthetic_msst).
  config.dataset.augment = augment.default_augment_config()
  return base.make_tiny(config) if tiny else config
