"""absl entry points and ml_collections configs."""

import os

# TensorFlow (loaded by tfds) prints C++ INFO lines at import; warnings and errors stay.
# It reads this once, so it is set before any entry point imports it; set it to 0 to see
# them.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
