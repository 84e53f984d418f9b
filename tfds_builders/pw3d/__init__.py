"""3DPW TFDS builder (official sequence files, manual download)."""

# Importing the package registers the builder (input_pipeline.load_source relies on it).
from .pw3d_dataset_builder import Builder
