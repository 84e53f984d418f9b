"""synthetic_poses: the embedded default dataset (importing this registers the builder)."""

from .synthetic_poses_dataset_builder import SyntheticPoses
from .synthetic_poses_dataset_builder import SyntheticPosesConfig
