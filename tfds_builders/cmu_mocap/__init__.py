"""cmu_mocap: CMU motion capture clips (ASF/AMC, BVH) as hierarchical pose examples.

Importing this package registers the builder under the name 'cmu_mocap'.
"""

from .cmu_mocap_dataset_builder import Builder
from .cmu_mocap_dataset_builder import CmuMocapConfig
