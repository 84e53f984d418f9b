"""MPI-INF-3DHP test-set TFDS builder (annot_data.mat files, manual download)."""
