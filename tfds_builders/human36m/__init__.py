"""Human3.6M TFDS builder (VideoPose3D-format files, manual download)."""

# Importing the package registers the builder (input_pipeline.load_source relies on it).
from .human36m_dataset_builder import Builder
