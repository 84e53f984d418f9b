"""The feature schema shared by every pose dataset builder (docs/ARCHITECTURE.md).

One example per (frame, camera):

  subject, camera          Text
  action                   ClassLabel (names per dataset)
  frame                    int32 frame index in the sequence
  image_size               int32 [2] (width, height) pixels
  camera_params            focal [2], center [2] pixels; radial [3] (k1, k2, k3);
                           tangential [2] (p1, p2); rotation [4] (w, x, y, z) camera
                           orientation in world; translation [3] camera position, world m
  keypoints_2d             {source: float32 [17, 3]} 2D input: pixels x, y, confidence
  sparse_2d, dense_2d, fine_2d   float32 [17|D|F, 2] ground truth, pixels
  sparse_3d, dense_3d, fine_3d   float32 [17|D|F, 3] ground truth, camera coords, meters

Builders assemble examples with `example_from_arrays`, which checks every shape and
value and raises a ValueError naming the offending field, record the hierarchy with
`hierarchy_metadata`, and subclass `PoseDatasetBuilder` to store array_record files (read
by `tfds.data_source`) with a tfrecord copy (read by `tfds.load`). Missing 2D input joints
are stored as finite coordinates (e.g. 0) with confidence 0, never as NaN.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds

from hipart_jax import skeleton

NUM_SPARSE = skeleton.NUM_JOINTS
DENSE_SOURCES = ('skeleton', 'markers', 'external')
# Shapes of the `camera_params` entries.
CAMERA_PARAM_SHAPES = {
    'focal': (2,),
    'center': (2,),
    'radial': (3,),
    'tangential': (2,),
    'rotation': (4,),
    'translation': (3,),
}
_CAMERA_PARAM_DOCS = {
    'focal': 'focal lengths (fx, fy), pixels',
    'center': 'principal point (cx, cy), pixels',
    'radial': 'radial distortion (k1, k2, k3), Human3.6M model',
    'tangential': 'tangential distortion (p1, p2), Human3.6M model',
    'rotation': 'camera orientation in world, unit quaternion (w, x, y, z)',
    'translation': 'camera position in world, meters',
}
# A camera rotation must be a unit quaternion within this tolerance.
QUATERNION_NORM_TOLERANCE = 1e-3
_LEVELS = ('sparse', 'dense', 'fine')


def _level_sizes(num_dense: int, num_fine: int) -> dict[str, int]:
  return {'sparse': NUM_SPARSE, 'dense': num_dense, 'fine': num_fine}


def _check_names(kind: str, names: Sequence[str]) -> tuple[str, ...]:
  names = tuple(names)
  if not names or len(set(names)) != len(names) or not all(
      isinstance(n, str) and n for n in names):
    raise ValueError(f'{kind} must be distinct non-empty strings, got {names!r}')
  return names


def pose_features(action_names: Sequence[str], input_sources: Sequence[str],
                  num_dense: int, num_fine: int) -> tfds.features.FeaturesDict:
  """The schema of docs/ARCHITECTURE.md.

  Args:
    action_names: the dataset's action / motion classes (ClassLabel names).
    input_sources: names of the 2D input sources, e.g. ('gt', 'cpn').
    num_dense: D, dense points of the dataset's hierarchy.
    num_fine: F, fine points of the dataset's hierarchy.
  Returns:
    The FeaturesDict every pose builder returns from `_info`.
  """
  action_names = _check_names('action_names', action_names)
  input_sources = _check_names('input_sources', input_sources)
  sizes = _level_sizes(num_dense, num_fine)
  if min(sizes.values()) < 1:
    raise ValueError(f'num_dense and num_fine must be positive, got {num_dense}, {num_fine}')
  float32 = np.float32
  features = {
      'subject': tfds.features.Text(doc='subject id'),
      'action': tfds.features.ClassLabel(names=action_names, doc='action / motion class'),
      'camera': tfds.features.Text(doc='camera id'),
      'frame': tfds.features.Scalar(np.int32, doc='frame index in the sequence'),
      'image_size': tfds.features.Tensor(shape=(2,), dtype=np.int32,
                                         doc='(width, height), pixels'),
      'camera_params': tfds.features.FeaturesDict({
          name: tfds.features.Tensor(shape=shape, dtype=float32, doc=_CAMERA_PARAM_DOCS[name])
          for name, shape in CAMERA_PARAM_SHAPES.items()}),
      'keypoints_2d': tfds.features.FeaturesDict({
          source: tfds.features.Tensor(
              shape=(NUM_SPARSE, 3), dtype=float32,
              doc=f'2D input from {source!r}: pixels x, y and confidence')
          for source in input_sources}),
  }
  for level, size in sizes.items():
    features[f'{level}_2d'] = tfds.features.Tensor(
        shape=(size, 2), dtype=float32, doc=f'ground-truth {level} points, pixels')
    features[f'{level}_3d'] = tfds.features.Tensor(
        shape=(size, 3), dtype=float32,
        doc=f'ground-truth {level} points, camera coordinates, meters (absolute)')
  return tfds.features.FeaturesDict(features)


def _array(field: str, value: Any, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
  """`value` as a finite array of `shape` and `dtype`, or a ValueError naming `field`."""
  try:
    array = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as error:
    raise ValueError(f'{field}: not a numeric array ({error})') from error
  if array.shape != shape:
    raise ValueError(f'{field}: expected shape {shape}, got {array.shape}')
  if not np.all(np.isfinite(array)):
    bad = np.argwhere(~np.isfinite(array))[:3].tolist()
    raise ValueError(f'{field}: non-finite values at indices {bad}')
  if np.issubdtype(dtype, np.integer) and np.any(array != np.round(array)):
    raise ValueError(f'{field}: expected integers, got {array.tolist()}')
  info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
  if np.any(np.abs(array) > info.max):
    raise ValueError(f'{field}: values beyond the {np.dtype(dtype).name} range '
                     f'(largest {np.abs(array).max()})')
  return array.astype(dtype)


def _text(field: str, value: Any) -> str:
  if not isinstance(value, str) or not value:
    raise ValueError(f'{field}: expected a non-empty string, got {value!r}')
  return value


def example_from_arrays(
    *, subject: str, action: str | int, camera: str, frame: int,
    image_size: Sequence[int], camera_params: Mapping[str, Any],
    keypoints_2d: Mapping[str, Any],
    sparse_2d: Any, dense_2d: Any, fine_2d: Any,
    sparse_3d: Any, dense_3d: Any, fine_3d: Any,
    num_dense: int, num_fine: int, input_sources: Sequence[str],
    action_names: Sequence[str] | None = None) -> dict[str, Any]:
  """Assembles and validates one schema example.

  Args:
    subject, camera: ids (non-empty strings).
    action: class name, or index into `action_names`.
    frame: frame index in the sequence (>= 0).
    image_size: (width, height) pixels.
    camera_params: `focal [2]`, `center [2]`, `radial [3]`, `tangential [2]`,
      `rotation [4]` unit quaternion (w, x, y, z), `translation [3]` meters.
    keypoints_2d: {source: [17, 3] pixels x, y, confidence in [0, 1]}, exactly the
      sources in `input_sources`.
    sparse_2d, dense_2d, fine_2d: [17|D|F, 2] pixels.
    sparse_3d, dense_3d, fine_3d: [17|D|F, 3] camera coordinates, meters.
    num_dense, num_fine: D and F of the dataset's hierarchy.
    input_sources: the dataset's 2D input sources.
    action_names: if given, `action` must be one of them (or a valid index).
  Returns:
    The example dict with numpy arrays of the schema's dtypes.
  Raises:
    ValueError: naming the first field with a wrong shape, type or value.
  """
  input_sources = _check_names('input_sources', input_sources)
  sizes = _level_sizes(num_dense, num_fine)
  if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
    if action_names is not None and not 0 <= int(action) < len(action_names):
      raise ValueError(f'action: index {action} out of range [0, {len(action_names)})')
    action = int(action)
  else:
    action = _text('action', action)
    if action_names is not None and action not in action_names:
      raise ValueError(f'action: {action!r} is not one of {tuple(action_names)}')
  frame_array = _array('frame', frame, (), np.int32)
  if frame_array < 0:
    raise ValueError(f'frame: must be >= 0, got {int(frame_array)}')
  size = _array('image_size', image_size, (2,), np.int32)
  if np.any(size <= 0):
    raise ValueError(f'image_size: must be positive, got {size.tolist()}')

  if set(camera_params) != set(CAMERA_PARAM_SHAPES):
    raise ValueError(f'camera_params: expected keys {sorted(CAMERA_PARAM_SHAPES)}, got '
                     f'{sorted(camera_params)}')
  params = {name: _array(f'camera_params/{name}', camera_params[name], shape)
            for name, shape in CAMERA_PARAM_SHAPES.items()}
  if np.any(params['focal'] <= 0):
    raise ValueError(f'camera_params/focal: must be positive, got {params["focal"].tolist()}')
  norm = float(np.linalg.norm(params['rotation']))
  if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
    raise ValueError(f'camera_params/rotation: expected a unit quaternion, norm is {norm}')

  if set(keypoints_2d) != set(input_sources):
    raise ValueError(f'keypoints_2d: expected sources {sorted(input_sources)}, got '
                     f'{sorted(keypoints_2d)}')
  keypoints = {}
  for source in input_sources:
    field = f'keypoints_2d/{source}'
    keypoints[source] = _array(field, keypoints_2d[source], (NUM_SPARSE, 3))
    confidence = keypoints[source][:, 2]
    if np.any((confidence < 0) | (confidence > 1)):
      raise ValueError(f'{field}: confidence must lie in [0, 1], got '
                       f'[{confidence.min()}, {confidence.max()}]')

  example = {
      'subject': _text('subject', subject),
      'action': action,
      'camera': _text('camera', camera),
      'frame': frame_array,
      'image_size': size,
      'camera_params': params,
      'keypoints_2d': keypoints,
  }
  points = dict(sparse_2d=sparse_2d, dense_2d=dense_2d, fine_2d=fine_2d,
                sparse_3d=sparse_3d, dense_3d=dense_3d, fine_3d=fine_3d)
  for level in _LEVELS:
    for dim in (2, 3):
      field = f'{level}_{dim}d'
      example[field] = _array(field, points[field], (sizes[level], dim))
  return example


def hierarchy_metadata(hierarchy: skeleton.Hierarchy, dense_source: str,
                       input_sources: Sequence[str]) -> tfds.core.MetadataDict:
  """`info.metadata` content: the hierarchy, where dense points come from, 2D sources.

  Args:
    hierarchy: the dataset's sparse→dense→fine hierarchy.
    dense_source: one of DENSE_SOURCES ('skeleton', 'markers', 'external').
    input_sources: the names of the `keypoints_2d` sources.
  """
  if dense_source not in DENSE_SOURCES:
    raise ValueError(f'dense_source: expected one of {DENSE_SOURCES}, got {dense_source!r}')
  return tfds.core.MetadataDict(
      hierarchy=hierarchy.to_json(), dense_source=dense_source,
      input_sources=list(_check_names('input_sources', input_sources)))


def hierarchy_from_metadata(metadata: Mapping[str, Any]) -> skeleton.Hierarchy:
  """The Hierarchy stored by `hierarchy_metadata` (e.g. `builder.info.metadata`)."""
  if 'hierarchy' not in metadata:
    raise ValueError(f'dataset metadata has no hierarchy (keys: {sorted(metadata)})')
  return skeleton.Hierarchy.from_json(metadata['hierarchy'])


class PoseDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the pose builders: array_record by default, plus a tfrecord copy.

  Training reads datasets through `tfds.data_source`, which needs a random-access format
  (array_record). `tfds.load` / `as_dataset` (tf.data, also used by
  `tfds.testing.DatasetBuilderTestCase`) cannot read array_record in tfds 4.9. So a
  builder writes array_record unless another format is requested (`file_format=...`),
  then copies every array_record shard to tfrecord and records the copy as an alternative
  file format; `as_dataset` reads the copy, `tfds.data_source` the original. Set
  `WRITE_TFRECORD_COPY = False` in a subclass to skip the copy (halves the disk use;
  `tfds.load` then fails with TFDS's "use .as_data_source()" error). A dataset already on
  disk keeps its primary format; a missing copy is added by `download_and_prepare`.
  """

  WRITE_TFRECORD_COPY: ClassVar[bool] = True
  _ARRAY_RECORD = tfds.core.FileFormat.ARRAY_RECORD
  _TFRECORD = tfds.core.FileFormat.TFRECORD

  def __init__(self, *, file_format: str | tfds.core.FileFormat | None = None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not self.is_prepared():
      self.info.set_file_format(self._ARRAY_RECORD, override=True)

  def download_and_prepare(self, *args, **kwargs) -> None:
    """As in TFDS, then adds the tfrecord copy if it is wanted and missing."""
    super().download_and_prepare(*args, **kwargs)
    if (self.WRITE_TFRECORD_COPY and self.info.file_format == self._ARRAY_RECORD
        and self._TFRECORD not in self._stored_alternatives()):
      self._write_tfrecord_copy()

  def _stored_alternatives(self) -> set[tfds.core.FileFormat]:
    # The proto, not `info.alternative_file_formats`: tfds 4.9 restores only the proto
    # from dataset_info.json.
    return {tfds.core.FileFormat.from_value(v)
            for v in self.info.as_proto.alternative_file_formats}

  def _write_tfrecord_copy(self) -> None:
    adapter = tfds.core.file_adapters.ADAPTER_FOR_FORMAT[self._TFRECORD]
    for split_info in self.info.splits.values():
      template = split_info.filename_template.replace(filetype_suffix=self._TFRECORD.value)
      targets = sorted(template.sharded_filepaths(split_info.num_shards))
      for source, target in zip(split_info.filepaths, targets):
        reader = array_record_module.ArrayRecordReader(str(source))
        try:
          records = reader.read_all()
        finally:
          reader.close()
        adapter.write_examples(target, ((None, record) for record in records))
    self.info.add_alternative_file_format(self._TFRECORD)
    self.info.write_to_directory(self.data_dir)

  def _as_dataset(self, *args, **kwargs):
    """Reads the tfrecord copy when the primary format has no tf.data reader."""
    info = self.info
    if (info.file_format not in tfds.core.FileFormat.with_tf_data()
        and self._TFRECORD in self._stored_alternatives()):
      if info.file_format not in info.alternative_file_formats:
        # Keeps `as_data_source` on this builder finding the original format.
        info.add_alternative_file_format(info.file_format)
      info.set_file_format(self._TFRECORD, override=True, override_if_initialized=True)
    return super()._as_dataset(*args, **kwargs)
