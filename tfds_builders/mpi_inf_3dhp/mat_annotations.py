"""MPI-INF-3DHP test-set annotations: `TS<k>/annot_data.mat`, its joints and activities.

Each of the six test sequences ships one MATLAB file with (MATLAB shapes, n frames):

  valid_frame           1 x n (or n x 1)   1 where the frame is evaluated
  activity_annotation   1 x n (or n x 1)   activity id 1..7 (ACTIVITIES)
  annot2                2 x 17 x 1 x n     2D joints, image pixels
  annot3                3 x 17 x 1 x n     3D joints, camera coordinates, millimeters
  univ_annot3           3 x 17 x 1 x n     `annot3` rescaled to the universal (Human3.6M
                                           sized) skeleton: the evaluation target
  bb_crop               (not read)

The official files are MATLAB v7.3, i.e. HDF5. HDF5 stores arrays in row-major order, so
h5py returns every array with its dimensions reversed (annot2: n x 1 x 17 x 2); scipy's
`loadmat` (MATLAB v5 files) returns them in MATLAB order. `read_sequence` accepts both
orientations (with or without the singleton person axis), identifies them from the
number of frames of `valid_frame`, and raises a ValueError naming the file otherwise.

The 17 joints are in the order of the test set's `mpii_get_joints('relevant')`
(JOINT_NAMES); `TO_H36M` maps them to the project's Human3.6M-17 layout.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Mapping

from etils import epath
import numpy as np

from hipart_jax import skeleton
from tfds_builders.mpi_inf_3dhp import mat_v5_layout

# The test set's 17 joints, `mpii_get_joints('relevant')` order (0-based here). 'spine' is
# the Human3.6M-like spine point, 'head' the centre of the head, 'head_top' its top.
JOINT_NAMES = (
    'head_top', 'neck', 'r_shoulder', 'r_elbow', 'r_wrist', 'l_shoulder', 'l_elbow',
    'l_wrist', 'r_hip', 'r_knee', 'r_ankle', 'l_hip', 'l_knee', 'l_ankle', 'pelvis',
    'spine', 'head')
NUM_JOINTS = len(JOINT_NAMES)
ROOT = JOINT_NAMES.index('pelvis')

# (Human3.6M-17 joint, MPI-INF-3DHP test joint, how they correspond), in Human3.6M order.
JOINT_CORRESPONDENCE = (
    ('pelvis', 'pelvis', 'same joint (root)'),
    ('r_hip', 'r_hip', 'same joint'),
    ('r_knee', 'r_knee', 'same joint'),
    ('r_ankle', 'r_ankle', 'same joint'),
    ('l_hip', 'l_hip', 'same joint'),
    ('l_knee', 'l_knee', 'same joint'),
    ('l_ankle', 'l_ankle', 'same joint'),
    ('spine', 'spine', 'same joint (3DHP defines it Human3.6M-like)'),
    ('thorax', 'neck', 'approximation: 3DHP neck (base of the neck) for H36M thorax'),
    ('neck_nose', 'head', 'approximation: 3DHP head centre for H36M neck/nose'),
    ('head', 'head_top', 'approximation: 3DHP head top for H36M head (top of the head)'),
    ('l_shoulder', 'l_shoulder', 'same joint'),
    ('l_elbow', 'l_elbow', 'same joint'),
    ('l_wrist', 'l_wrist', 'same joint'),
    ('r_shoulder', 'r_shoulder', 'same joint'),
    ('r_elbow', 'r_elbow', 'same joint'),
    ('r_wrist', 'r_wrist', 'same joint'),
)
# Human3.6M-17 joint k is MPI-INF-3DHP test joint TO_H36M[k]: h36m = mpi[..., TO_H36M, :].
TO_H36M = tuple(JOINT_NAMES.index(mpi) for _, mpi, _ in JOINT_CORRESPONDENCE)

# Activity ids of `activity_annotation` (index = id); ids outside 1..7 are 'Unknown'.
ACTIVITIES = ('Unknown', 'Standing/Walking', 'Exercising', 'Sitting', 'Reaching/Crouching',
              'On the Floor', 'Sports', 'Miscellaneous')
UNKNOWN_ACTIVITY = 0

FIELDS_PER_FRAME = ('valid_frame', 'activity_annotation')
# Pose fields and their coordinate dimension.
POSE_FIELDS = {'annot2': 2, 'univ_annot3': 3}
_HEADER_BYTES = 128
_V73_HEADER = b'MATLAB 7.3 MAT-file'
_V5_HEADER = b'MATLAB 5.0 MAT-file'
_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
# HDF5 looks for its signature at 0 and at powers of two from 512 (the v7.3 user block).
_HDF5_SIGNATURE_OFFSETS = (0, 512, 1024, 2048)


@dataclasses.dataclass(frozen=True)
class SequenceAnnotations:
  """One test sequence, all frames, in the file's 17-joint order.

  Attributes:
    valid: [n] bool, True for frames the protocol evaluates.
    activity: [n] int32 activity id (index into ACTIVITIES; 0 = unknown).
    annot2: [n, 17, 2] pixels.
    univ_annot3: [n, 17, 3] camera coordinates, millimeters (universal skeleton).
  """

  valid: np.ndarray
  activity: np.ndarray
  annot2: np.ndarray
  univ_annot3: np.ndarray

  @property
  def num_frames(self) -> int:
    return int(self.valid.shape[0])


def _file_kind(path: epath.Path) -> str:
  """'v7.3' (HDF5) or 'v5', from the file's header; ValueError for anything else."""
  with path.open('rb') as f:
    head = f.read(max(_HDF5_SIGNATURE_OFFSETS) + len(_HDF5_SIGNATURE))
  if head.startswith(_V73_HEADER) or any(
      head[offset:offset + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE
      for offset in _HDF5_SIGNATURE_OFFSETS):
    return 'v7.3'
  if head.startswith(_V5_HEADER):
    return 'v5'
  raise ValueError(f'{path}: not a MATLAB v5 or v7.3 MAT-file (header '
                   f'{head[:40]!r})')


def _read_hdf5(path: epath.Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(f'{path} is a MATLAB v7.3 (HDF5) file; reading it needs h5py: '
                      '`pip install h5py`') from error
  with path.open('rb') as f, h5py.File(f, 'r') as mat:
    missing = [name for name in fields if name not in mat]
    if missing:
      raise ValueError(f'{path}: missing fields {missing} (has {sorted(mat.keys())})')
    return {name: np.asarray(mat[name][()]) for name in fields}


def _read_v5(path: epath.Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
  try:
    from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(f'{path} is a MATLAB v5 file; reading it needs scipy: '
                      '`pip install scipy`') from error
  data = path.read_bytes()
  mat_v5_layout.check_layout(path, data, fields)
  mat = scipy_io.loadmat(io.BytesIO(data), variable_names=list(fields))
  missing = [name for name in fields if name not in mat]
  if missing:
    raise ValueError(f'{path}: missing fields {missing} (has '
                     f'{sorted(k for k in mat if not k.startswith("__"))})')
  return {name: np.asarray(mat[name]) for name in fields}


def read_mat(path: epath.PathLike, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
  """The named variables of a MATLAB v7.3 (h5py) or v5 (scipy) file, as stored.

  Raises:
    ValueError: naming the file, if it is no MATLAB file, lacks a field or cannot be
      parsed (h5py and scipy report corrupt files with assorted exceptions).
  """
  path = epath.Path(path)
  kind = _file_kind(path)
  try:
    return (_read_hdf5 if kind == 'v7.3' else _read_v5)(path, fields)
  except (ImportError, ValueError) as error:
    if isinstance(error, ImportError) or str(error).startswith(f'{path}: '):
      raise
    raise ValueError(f'{path}: unreadable MATLAB {kind} file ({error})') from error
  except Exception as error:  # pylint: disable=broad-except
    raise ValueError(f'{path}: unreadable MATLAB {kind} file ({type(error).__name__}: '
                     f'{error})') from error


def _real_numbers(path: Any, field: str, value: Any) -> np.ndarray:
  """`value` as an array of real numbers (bool, integer or float), or ValueError."""
  value = np.asarray(value)
  if value.dtype.kind not in 'biuf':
    raise ValueError(f'{path}: {field} holds {value.dtype} values, expected real numbers')
  return value


def per_frame(path: Any, field: str, value: np.ndarray) -> np.ndarray:
  """A 1 x n, n x 1 or n array as [n]."""
  value = _real_numbers(path, field, value)
  if value.ndim == 1 or (value.ndim == 2 and 1 in value.shape):
    return value.reshape(-1)
  raise ValueError(f'{path}: {field} has shape {value.shape}, expected one value per '
                   'frame (1 x n or n x 1)')


def pose_array(path: Any, field: str, value: np.ndarray, num_frames: int,
               dim: int) -> np.ndarray:
  """A pose field in either orientation as [n, 17, dim].

  Accepted shapes (n = `num_frames`): (n, 1, 17, dim) and (n, 17, dim), as h5py reads
  v7.3 files; (dim, 17, 1, n) and (dim, 17, n), MATLAB's order (scipy, v5 files).
  """
  value = _real_numbers(path, field, value)
  row_major = (num_frames, 1, NUM_JOINTS, dim)
  column_major = (dim, NUM_JOINTS, 1, num_frames)
  candidates = {}
  if value.shape in (row_major, row_major[:1] + row_major[2:]):
    candidates['h5py'] = value.reshape(num_frames, NUM_JOINTS, dim)
  if value.shape in (column_major, column_major[:2] + column_major[3:]):
    candidates['matlab'] = value.reshape(dim, NUM_JOINTS, num_frames).transpose(2, 1, 0)
  if not candidates:
    raise ValueError(
        f'{path}: {field} has shape {value.shape}; expected {row_major} (MATLAB v7.3 read '
        f'by h5py) or {column_major} (MATLAB order), with {num_frames} frames as in '
        'valid_frame')
  if len(candidates) > 1 and not np.array_equal(*candidates.values()):
    raise ValueError(f'{path}: {field} has the ambiguous shape {value.shape} (as many '
                     'frames as coordinates); cannot tell its orientation')
  return next(iter(candidates.values())).astype(np.float64)


def read_sequence(path: epath.PathLike) -> SequenceAnnotations:
  """Reads one `TS<k>/annot_data.mat` (v7.3 or v5) in a fixed orientation."""
  path = epath.Path(path)
  raw = read_mat(path, FIELDS_PER_FRAME + tuple(POSE_FIELDS))
  valid = per_frame(path, 'valid_frame', raw['valid_frame'])
  activity = per_frame(path, 'activity_annotation', raw['activity_annotation'])
  num_frames = valid.shape[0]
  if activity.shape[0] != num_frames:
    raise ValueError(f'{path}: activity_annotation has {activity.shape[0]} frames, '
                     f'valid_frame {num_frames}')
  if not np.all(np.isin(valid, (0, 1))):
    raise ValueError(f'{path}: valid_frame must hold 0/1, got {np.unique(valid)[:10]}')
  activity = np.where(np.isfinite(activity), activity, UNKNOWN_ACTIVITY)
  known = (activity >= 1) & (activity < len(ACTIVITIES)) & (activity == np.round(activity))
  activity = np.where(known, activity, UNKNOWN_ACTIVITY).astype(np.int32)
  poses = {field: pose_array(path, field, raw[field], num_frames, dim)
           for field, dim in POSE_FIELDS.items()}
  return SequenceAnnotations(valid=valid.astype(bool), activity=activity, **poses)


def to_h36m(points: np.ndarray) -> np.ndarray:
  """[..., 17, C] MPI-INF-3DHP test order → [..., 17, C] Human3.6M-17 order."""
  points = np.asarray(points)
  if points.shape[-2] != NUM_JOINTS:
    raise ValueError(f'expected [..., {NUM_JOINTS}, C] joints, got {points.shape}')
  return points[..., TO_H36M, :]


def check_tables(h36m_names: tuple[str, ...] = skeleton.H36M_JOINT_NAMES,
                 correspondence: tuple[tuple[str, str, str], ...] = JOINT_CORRESPONDENCE
                 ) -> Mapping[str, str]:
  """Validates the joint table; returns {Human3.6M name: MPI-INF-3DHP name}.

  Raises:
    ValueError: if the table does not list the Human3.6M joints in order or does not
      use every MPI-INF-3DHP joint exactly once.
  """
  h36m = tuple(row[0] for row in correspondence)
  mpi = tuple(row[1] for row in correspondence)
  if h36m != tuple(h36m_names):
    raise ValueError(f'joint table rows {h36m} must follow the Human3.6M-17 order '
                     f'{tuple(h36m_names)}')
  if sorted(mpi) != sorted(JOINT_NAMES):
    raise ValueError(f'joint table must use each MPI-INF-3DHP joint once, got {mpi}')
  return dict(zip(h36m, mpi))


check_tables()
