"""Euler-angle rotation matrices shared by the ASF/AMC and BVH readers (numpy)."""

from __future__ import annotations

import numpy as np

_AXIS_INDEX = {'x': 0, 'y': 1, 'z': 2}


def axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
  """Right-handed rotation by `angle` radians about one coordinate axis.

  Args:
    axis: 'x', 'y' or 'z' (either case).
    angle: [...] radians.
  Returns:
    [..., 3, 3] rotation matrices (acting on column vectors).
  """
  index = _AXIS_INDEX[axis.lower()]
  angle = np.asarray(angle, np.float64)
  cos, sin = np.cos(angle), np.sin(angle)
  matrix = np.zeros(angle.shape + (3, 3))
  first, second = [(1, 2), (2, 0), (0, 1)][index]
  matrix[..., index, index] = 1.0
  matrix[..., first, first] = cos
  matrix[..., second, second] = cos
  matrix[..., first, second] = -sin
  matrix[..., second, first] = sin
  return matrix


def euler_to_matrix(angles: np.ndarray, axes: str, *, extrinsic: bool,
                    degrees: bool = True) -> np.ndarray:
  """Composes per-axis rotations into one matrix.

  Args:
    angles: [..., K] one angle per letter of `axes`.
    axes: K axis letters, e.g. 'XYZ' or 'zyx'.
    extrinsic: True: the rotations are applied in the order of `axes` about the fixed
      (parent) axes, so 'XYZ' gives Rz @ Ry @ Rx (the Acclaim ASF/AMC convention).
      False: intrinsic, the product is taken in the order of `axes`, so 'ZYX' gives
      Rz @ Ry @ Rx (the BVH channel convention).
    degrees: whether `angles` are in degrees (else radians).
  Returns:
    [..., 3, 3] rotation matrices.
  """
  angles = np.asarray(angles, np.float64)
  if angles.shape[-1] != len(axes):
    raise ValueError(f'euler_to_matrix: {angles.shape[-1]} angles for axes {axes!r}')
  if degrees:
    angles = np.deg2rad(angles)
  matrix = np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3))
  for k, axis in enumerate(axes):
    step = axis_rotation(axis, angles[..., k])
    matrix = step @ matrix if extrinsic else matrix @ step
  return matrix
