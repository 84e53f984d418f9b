"""3DPW TFDS builder (official sequence files, manual download)."""
