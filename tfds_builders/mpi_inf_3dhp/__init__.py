"""MPI-INF-3DHP test-set TFDS builder (annot_data.mat files, manual download)."""

# Importing the package registers the builder (input_pipeline.load_source relies on it).
from .mpi_inf_3dhp_dataset_builder import Builder
