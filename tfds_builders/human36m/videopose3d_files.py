"""Checks of the trees stored in VideoPose3D's Human3.6M `.npz` files.

`data_3d_h36m.npz` holds `positions_3d`: subject → action → [T, 32, 3] world meters;
the 2D files hold `positions_2d`: subject → action → one [T, 17, 2] pixel array per
camera (4, in `cameras.CAMERA_IDS` order; a camera may be None or empty). Each is a dict
pickled into a 0-d object array, so nothing about its shape is known until it is walked:
these checks raise a ValueError naming the file and the entry before any example is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def stored_dict(file_name: str, arrays: dict[str, np.ndarray], field: str) -> dict:
  """`arrays[field]` unwrapped from its 0-d object array; it must be a dict."""
  if field not in arrays:
    raise ValueError(f'{file_name}: missing field {field!r} (has {sorted(arrays)})')
  value = arrays[field]
  if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
    value = value.item()
  if not isinstance(value, dict):
    raise ValueError(f'{file_name}: field {field!r} must hold a dict subject → action → '
                     f'array, got {type(value).__name__} {getattr(value, "shape", "")}')
  return value


def _sequence(where: str, value: Any, tail: tuple[int, ...]) -> np.ndarray:
  """`value` as a finite float64 [T, *tail] array, or a ValueError starting `where`."""
  try:
    array = np.asarray(value)
    if array.dtype.kind not in 'biuf':
      raise TypeError(f'dtype {array.dtype}')
    array = array.astype(np.float64)
  except (TypeError, ValueError) as error:
    raise ValueError(f'{where}: not an array of numbers ({error})') from None
  if array.ndim != len(tail) + 1 or array.shape[1:] != tail:
    raise ValueError(f'{where}: expected shape [frames, {", ".join(map(str, tail))}], '
                     f'got {array.shape}')
  if not np.isfinite(array).all():
    raise ValueError(f'{where}: non-finite values at {np.argwhere(~np.isfinite(array))[0]}')
  return array


def _actions(file_name: str, field: str, tree: dict):
  """Yields (where, subject, action, value) of a subject → action → value tree."""
  for subject, actions in tree.items():
    if not isinstance(subject, str) or not isinstance(actions, dict):
      raise ValueError(f'{file_name}: {field}[{subject!r}] must be a dict action → array, '
                       f'keyed by a subject name, got {type(actions).__name__}')
    for action, value in actions.items():
      where = f'{file_name}: {field}[{subject!r}][{action!r}]'
      if not isinstance(action, str):
        raise ValueError(f'{where}: the action must be a name')
      yield where, subject, action, value


def check_positions_3d(file_name: str, tree: dict, num_joints: int) -> dict:
  """subject → action → finite float64 [T, num_joints, 3], checked."""
  out = {}
  for where, subject, action, value in _actions(file_name, 'positions_3d', tree):
    out.setdefault(subject, {})[action] = _sequence(where, value, (num_joints, 3))
  return out


def check_positions_2d(file_name: str, tree: dict, num_joints: int,
                       num_cameras: int) -> dict:
  """subject → action → `num_cameras` finite float64 [T, num_joints, 2] or None, checked."""
  out = {}
  for where, subject, action, per_camera in _actions(file_name, 'positions_2d', tree):
    if not isinstance(per_camera, (list, tuple, np.ndarray)) or len(per_camera) != num_cameras:
      raise ValueError(f'{where}: expected one array per camera ({num_cameras}), got '
                       f'{type(per_camera).__name__} of length {_length(per_camera)}')
    out.setdefault(subject, {})[action] = [
        None if sequence is None or _length(sequence) == 0 else
        _sequence(f'{where}[{camera}]', sequence, (num_joints, 2))
        for camera, sequence in enumerate(per_camera)]
  return out


def _length(value: Any) -> int | None:
  try:
    return len(value)
  except TypeError:
    return None
