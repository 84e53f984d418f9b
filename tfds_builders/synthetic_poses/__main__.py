r"""Builds synthetic_poses without the `tfds` command line tool.

  python -m tfds_builders.synthetic_poses --config=tiny --data_dir=/tmp/tfds

Equivalent to `tfds build tfds_builders/synthetic_poses --config=tiny`, which in
tensorflow-datasets 4.9.10 needs apache-beam installed (its CLI imports beam at start-up).
"""

from absl import app
from absl import flags

from tfds_builders.synthetic_poses import synthetic_poses_dataset_builder

_CONFIG = flags.DEFINE_enum(
    'config', synthetic_poses_dataset_builder.SyntheticPoses.DEFAULT_BUILDER_CONFIG_NAME,
    [c.name for c in synthetic_poses_dataset_builder.SyntheticPoses.BUILDER_CONFIGS],
    'Builder config (size) to build.')
_DATA_DIR = flags.DEFINE_string('data_dir', None,
                                'TFDS data directory (default: ~/tensorflow_datasets).')
_FILE_FORMAT = flags.DEFINE_enum(
    'file_format', None, ['array_record', 'tfrecord'],
    'File format (default array_record, which comes with a tfrecord copy for tfds.load).')


def main(argv):
  del argv
  builder = synthetic_poses_dataset_builder.SyntheticPoses(
      config=_CONFIG.value, data_dir=_DATA_DIR.value, file_format=_FILE_FORMAT.value)
  builder.download_and_prepare(file_format=_FILE_FORMAT.value)
  print(f'{builder.info.full_name} in {builder.data_dir}: '
        + ', '.join(f'{name} {split.num_examples}' for name, split in builder.info.splits.items()))


if __name__ == '__main__':
  app.run(main)
