"""The README's main job (launch/demo.py): all of HiPART, briefly, on synthetic poses.

Stage configs are the synthetic ones (launch/configs/synthetic_*.py) with the numbers
below; `get_config('smoke')` is the seconds-long variant the test suite runs.
"""

import ml_collections


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = 'synthetic_poses/small'
  config.seed = 0
  config.batch_size = 64
  config.eval_batch_size = 512
  # Training steps per stage, sized for the whole demo to take under 10 minutes on 2 CPU
  # cores.
  config.msst_steps = 400
  config.hiarm_steps = 400
  config.lifter_steps = 300
  # Model blocks of every stage (launch/configs/base.py scales); the lifters' depth.
  config.model_scale = 'small'
  config.lifter_depth = 2
  config.lifter_modes = ('sparse', 'hierarchical', 'oracle')
  # Robustness table: input-pipeline occlusion levels (augment.OCCLUSION_LEVELS).
  config.occlusion_levels = ('none', 'one_limb', 'two_limbs', 'random_30')
  # Inference demo: test examples lifted from pixels, and hypotheses per pose.
  config.num_inference_examples = 4
  config.num_samples = 8
  config.temperature = 1.0
  if variant == 'smoke':
    config.dataset = 'synthetic_poses/tiny'
    config.batch_size = 16
    config.eval_batch_size = 32
    config.msst_steps = config.hiarm_steps = config.lifter_steps = 3
    # Compiling the small models took most of the smoke run; the tests' size suffices.
    config.model_scale = 'tiny'
    config.lifter_depth = 1
    config.occlusion_levels = ('none', 'one_limb')
    config.num_inference_examples = 2
    config.num_samples = 2
  elif variant:
    raise ValueError(f"unknown demo variant {variant!r}; expected '' or 'smoke'")
  return config
