"""Human3.6M TFDS builder (VideoPose3D-format files, manual download)."""
