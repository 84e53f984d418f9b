"""Reads the official Human3.6M release: per-subject `D3_Positions` CDF files.

The official download (<http://vision.imar.ro/human3.6m/>, "Poses_D3_Positions_<S>.tgz")
extracts to `<root>/<subject>/MyPoseFeatures/D3_Positions/<Action>.cdf`. Each file holds
one sequence as the CDF variable `Pose`, shape (1, frames, 96): the 32 joints of the
motion-capture skeleton (`skeleton32.py`), x, y, z world millimeters, per frame.

This module turns those files into exactly what VideoPose3D's `prepare_data_h36m.py
--from-source-cdf` writes to `data_3d_h36m.npz`, so the builder's `official` path yields
the examples of its VideoPose3D-npz path:

  * action keys are the file names without `.cdf`, with VideoPose3D's renames applied to
    them as substrings (`ACTION_RENAMES`: 'TakingPhoto 1' → 'Photo 1', 'WalkingDog' →
    'WalkDog'), so keys match the npz keys;
  * S11 'Directions' is discarded (`DISCARDED_SEQUENCES`; its video is corrupted);
  * `Pose` is reshaped to [frames, 32, 3], divided by 1000 in its stored dtype (meters)
    and cast to float32.

The release has no 2D detections (CPN is a VideoPose3D download), so the only 2D source
is `gt`: the 17 kept joints projected through the four cameras of `cameras.py`
(`ground_truth_2d`), as the same script does for `data_2d_h36m_gt.npz` (there in
float32 torch arithmetic, here in float64 cast to float32). The camera parameters are
the builder's data (`cameras.py`), so the release's `metadata.xml` is not read.

CDF files are read with the pure-Python `cdflib` package, imported only here and only
when the official path runs (`pip install cdflib`, or the project's `official` extra).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from absl import logging
from etils import epath
import numpy as np

from tfds_builders.human36m import cameras
from tfds_builders.human36m import skeleton32

CDF_PACKAGE = 'cdflib'
POSE_VARIABLE = 'Pose'
CDF_SUFFIX = '.cdf'
# <manual_dir>/<subject>/<D3_POSITIONS_DIR>/<Action>.cdf
D3_POSITIONS_DIR = 'MyPoseFeatures/D3_Positions'
# VideoPose3D asserts this many D3_Positions files per subject (15 actions x 2 takes).
FILES_PER_SUBJECT = 30
# `Pose` values are millimeters; examples use meters.
MILLIMETERS_PER_METER = 1000.0
# VideoPose3D's renames, (old, new) substrings of the file name, applied in this order.
ACTION_RENAMES = (('TakingPhoto', 'Photo'), ('WalkingDog', 'WalkDog'))
# (subject, file name without suffix) VideoPose3D leaves out: the corrupted S11 video.
DISCARDED_SEQUENCES = frozenset({('S11', 'Directions')})


def import_cdflib() -> Any:
  """The `cdflib` module, or an ImportError that says how to install it."""
  try:
    import cdflib  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        f'human36m official_* configs read the official .cdf files with the '
        f'`{CDF_PACKAGE}` package, which is not installed: `pip install {CDF_PACKAGE}` (or '
        f"`pip install -e '.[official]'`)") from error
  return cdflib


def sequence_dir(manual_dir: epath.PathLike, subject: str) -> epath.Path:
  """`<manual_dir>/<subject>/MyPoseFeatures/D3_Positions`."""
  return epath.Path(manual_dir) / subject / D3_POSITIONS_DIR


def action_key(file_stem: str) -> str:
  """A file name without `.cdf` → VideoPose3D's action key ('TakingPhoto 1' → 'Photo 1')."""
  for old, new in ACTION_RENAMES:
    file_stem = file_stem.replace(old, new)
  return file_stem


def read_pose(path: epath.PathLike, cdflib: Any | None = None) -> np.ndarray:
  """One D3_Positions file → [frames, 32, 3] float32 world meters.

  Args:
    path: a `.cdf` file with the `Pose` variable, (1, frames, 96) millimeters.
    cdflib: the `cdflib` module (imported when None).
  Returns:
    [frames, 32, 3] float32, `Pose / 1000` computed in the stored dtype (as VideoPose3D).
  """
  cdflib = import_cdflib() if cdflib is None else cdflib
  path = epath.Path(path)
  values_per_frame = skeleton32.NUM_JOINTS_32 * 3
  try:
    pose = np.array(cdflib.CDF(str(path)).varget(POSE_VARIABLE))
  except Exception as error:  # pylint: disable=broad-except
    # cdflib parses the file in Python: a missing variable, a file that is no CDF and a
    # corrupt one (bad offsets, sizes or compressed blocks) fail with assorted errors.
    raise ValueError(f'{path}: cannot read CDF variable {POSE_VARIABLE!r} '
                     f'({type(error).__name__}: {error})') from error
  if pose.ndim < 2 or pose.shape[-1] != values_per_frame or pose.size == 0:
    raise ValueError(f'{path}: expected {POSE_VARIABLE!r} of shape (1, frames, '
                     f'{values_per_frame}) (32 joints x xyz), got {pose.shape}')
  if not np.issubdtype(pose.dtype, np.floating):
    raise ValueError(f'{path}: expected floating-point {POSE_VARIABLE!r}, got {pose.dtype}')
  positions = pose.reshape(-1, skeleton32.NUM_JOINTS_32, 3)
  positions /= MILLIMETERS_PER_METER
  positions = positions.astype(np.float32)
  # Checked after the cast: a float64 file's largest values overflow float32.
  if not np.all(np.isfinite(positions)):
    frame = int(np.argwhere(~np.isfinite(positions))[0, 0])
    raise ValueError(f'{path}: {POSE_VARIABLE!r} frame {frame}: values that are not '
                     'finite (or beyond float32 once in meters)')
  return positions


def load_positions_3d(manual_dir: epath.PathLike, subjects: Sequence[str]
                      ) -> dict[str, dict[str, np.ndarray]]:
  """The `positions_3d` of VideoPose3D's `data_3d_h36m.npz`, from the official files.

  Args:
    manual_dir: the folder holding `<subject>/MyPoseFeatures/D3_Positions/*.cdf`.
    subjects: subjects to read; those without a folder are left out (and logged).
  Returns:
    subject → action key → [frames, 32, 3] float32 world meters.
  Raises:
    FileNotFoundError: if no subject has a D3_Positions folder with `.cdf` files.
    ValueError: on two files mapping to one action key, or an unreadable `Pose`.
  """
  cdflib = import_cdflib()
  positions_3d, absent = {}, []
  for subject in subjects:
    folder = sequence_dir(manual_dir, subject)
    files = sorted(folder.glob(f'*{CDF_SUFFIX}')) if folder.is_dir() else []
    if not files:
      absent.append(subject)
      continue
    if len(files) != FILES_PER_SUBJECT:
      logging.warning('human36m official: %s has %d .cdf files, the release has %d',
                      folder, len(files), FILES_PER_SUBJECT)
    positions_3d[subject] = {}
    for path in files:
      stem = path.name[:-len(CDF_SUFFIX)]
      if (subject, stem) in DISCARDED_SEQUENCES:
        logging.info('human36m official: discarding %s (corrupted video, as VideoPose3D)',
                     path)
        continue
      key = action_key(stem)
      if key in positions_3d[subject]:
        raise ValueError(f'{folder}: two files map to action {key!r} after the renames '
                         f'{ACTION_RENAMES}')
      positions_3d[subject][key] = read_pose(path, cdflib)
  if not positions_3d:
    raise FileNotFoundError(
        f'human36m official: no <subject>/{D3_POSITIONS_DIR}/*{CDF_SUFFIX} files in '
        f'{manual_dir} for subjects {list(subjects)}; see tfds_builders/human36m/README.md')
  if absent:
    logging.warning('human36m official: no %s/*%s for subjects %s in %s', D3_POSITIONS_DIR,
                    CDF_SUFFIX, absent, manual_dir)
  return positions_3d


def ground_truth_2d(positions_3d: Mapping[str, Mapping[str, np.ndarray]]
                    ) -> dict[str, dict[str, list[np.ndarray]]]:
  """The `positions_2d` of `data_2d_h36m_gt.npz`: kept joints through each camera.

  Args:
    positions_3d: subject → action → [frames, 32, 3] world meters.
  Returns:
    subject → action → 4 float32 [frames, 17, 2] pixel arrays, cameras in
    `cameras.CAMERA_IDS` order.
  """
  out = {}
  for subject, actions in positions_3d.items():
    out[subject] = {}
    for action, joints in actions.items():
      sparse = np.asarray(joints, np.float64)[:, skeleton32.KEPT_JOINTS]
      out[subject][action] = [
          cameras.project_world(sparse, cameras.camera_params(subject, camera_id))[1]
          .astype(np.float32) for camera_id in cameras.CAMERA_IDS]
  return out
