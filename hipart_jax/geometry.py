"""Cameras, projection, 2D coordinate frames and rigid/similarity alignment.

Every function is written once and runs on both numpy and JAX arrays: if any array
argument is a `jax.Array` (tracers included, so everything works under `jax.jit` and
`jax.vmap`) the computation uses `jax.numpy`, otherwise plain numpy. Dataset builders
therefore call these functions on numpy arrays at numpy speed and get numpy arrays
back; models call them on traced arrays. All functions take leading batch dimensions
`...`. Per-sample parameters (2D frames, roots) carry exactly the leading dimensions of
the points they act on (without the point axis `N`); per-camera parameters (extrinsics,
intrinsics, image size) may also have fewer leading dimensions that broadcast to them,
e.g. one camera `[4]` for points `[frames, N, 3]`.

Conventions (VideoPose3D / Human3.6M):
  quaternions: (w, x, y, z), unit norm, active rotation `v' = q v q*`.
  camera extrinsics: `rotation` is the camera orientation in the world and
    `translation` the camera position in world meters, so
    `world_to_camera(x) = rotate(conj(q), x - t)`, `camera_to_world(x) = rotate(q, x) + t`.
  camera intrinsics: `focal [2]`, `center [2]` in pixels, `radial [3]` (k1, k2, k3),
    `tangential [2]` in the order VideoPose3D stores them (see `project_to_pixels`).
  screen-normalized 2D: `x / w * 2 - 1`, `y / w * 2 - h / w` (aspect ratio preserved,
    x in [-1, 1]).

The module is longer than most because every conversion lives here beside its inverse.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # np.ndarray or jax.Array


def array_module(*arrays):
  """`jax.numpy` if any argument is a JAX array (or tracer), else numpy.

  The dispatch every function here uses; other numpy/JAX-agnostic code can share it.
  """
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _assert_camera_param(name, value, batch, size):
  """Checks a per-camera parameter: shape [..., size], leading dims broadcasting to `batch`.

  One camera may serve a whole batch of frames (shape [size]), but a parameter must
  never enlarge the batch or carry a point axis (that would broadcast silently).
  """
  leading = value.shape[:-1]
  try:
    fits = value.ndim >= 1 and np.broadcast_shapes(leading, batch) == tuple(batch)
  except ValueError:
    fits = False
  if not fits or value.shape[-1] != size:
    raise ValueError(f'{name} has shape {value.shape}; expected [..., {size}] with leading '
                     f'dimensions that broadcast to the points\' {tuple(batch)}')


def _float_like(xp, value, reference):
  """`value` as an array of `reference`'s floating dtype (numpy would upcast ints)."""
  dtype = reference.dtype if xp.issubdtype(reference.dtype, xp.floating) else xp.float32
  return xp.asarray(value, dtype=dtype)


def _cross(xp, a, b):
  """Cross product over the last axis with broadcasting; a, b: [..., 3]."""
  ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
  bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
  return xp.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=-1)


# --------------------------------------------------------------------------------------
# Quaternions.


def quaternion_conjugate(q: Array) -> Array:
  """q: [..., 4] (w, x, y, z) -> [..., 4] conjugate (the inverse of a unit quaternion)."""
  xp = array_module(q)
  q = xp.asarray(q)
  chex.assert_shape(q, (..., 4))
  return xp.concatenate([q[..., :1], -q[..., 1:]], axis=-1)


def quaternion_rotate(q: Array, v: Array) -> Array:
  """Rotates vectors by unit quaternions.

  Args:
    q: [..., 4] unit quaternions (w, x, y, z).
    v: [..., 3] vectors; leading dimensions broadcast against q's.
  Returns:
    [..., 3] rotated vectors `q v q*`.
  """
  xp = array_module(q, v)
  q, v = xp.asarray(q), xp.asarray(v)
  chex.assert_shape(q, (..., 4))
  chex.assert_shape(v, (..., 3))
  axis = q[..., 1:]
  uv = _cross(xp, axis, v)
  uuv = _cross(xp, axis, uv)
  return v + 2 * (q[..., :1] * uv + uuv)


def matrix_from_quaternion(q: Array) -> Array:
  """q: [..., 4] unit (w, x, y, z) -> [..., 3, 3] rotation R with `R @ v == rotate(q, v)`."""
  xp = array_module(q)
  q = xp.asarray(q)
  chex.assert_shape(q, (..., 4))
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [
      [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
  ]
  return xp.stack([xp.stack(row, axis=-1) for row in rows], axis=-2)


def quaternion_from_matrix(matrix: Array) -> Array:
  """Rotation matrices -> unit quaternions (inverse of `matrix_from_quaternion`).

  Shepperd's method, branch-free: the four algebraically equivalent formulas are all
  evaluated and the numerically best one (largest |component|) is selected per matrix.

  Args:
    matrix: [..., 3, 3] rotation matrices (orthonormal, det +1).
  Returns:
    [..., 4] unit quaternions (w, x, y, z) with w >= 0.
  """
  xp = array_module(matrix)
  m = xp.asarray(matrix)
  chex.assert_shape(m, (..., 3, 3))
  m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
  m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
  m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
  # Row k is 4 * q_k * q for the k-th component as the pivot.
  candidates = xp.stack([
      xp.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], axis=-1),
      xp.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], axis=-1),
      xp.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], axis=-1),
      xp.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], axis=-1),
  ], axis=-2)
  pivots = xp.stack([candidates[..., k, k] for k in range(4)], axis=-1)
  best = xp.argmax(pivots, axis=-1)
  q = xp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
  q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
  return xp.where(q[..., :1] < 0, -q, q)


# --------------------------------------------------------------------------------------
# Camera extrinsics.


def _prepare_extrinsics(points, rotation, translation):
  """Arrays of one module and dtype; rotation and translation with a point axis."""
  xp = array_module(points, rotation, translation)
  points = xp.asarray(points)
  rotation = _float_like(xp, rotation, points)
  translation = _float_like(xp, translation, points)
  chex.assert_shape(points, (..., 3))
  _assert_camera_param('rotation', rotation, points.shape[:-2], 4)
  _assert_camera_param('translation', translation, points.shape[:-2], 3)
  return points, rotation[..., None, :], translation[..., None, :]


def world_to_camera(points: Array, rotation: Array, translation: Array) -> Array:
  """World -> camera coordinates (VideoPose3D convention).

  Args:
    points: [..., N, 3] world coordinates, meters.
    rotation: [..., 4] camera orientation quaternion (w, x, y, z).
    translation: [..., 3] camera position, world meters.
  Returns:
    [..., N, 3] camera coordinates `rotate(conj(q), x - t)`.
  """
  points, rotation, translation = _prepare_extrinsics(points, rotation, translation)
  return quaternion_rotate(quaternion_conjugate(rotation), points - translation)


def camera_to_world(points: Array, rotation: Array, translation: Array) -> Array:
  """Camera -> world coordinates, the inverse of `world_to_camera`.

  Args:
    points: [..., N, 3] camera coordinates, meters.
    rotation: [..., 4] camera orientation quaternion (w, x, y, z).
    translation: [..., 3] camera position, world meters.
  Returns:
    [..., N, 3] world coordinates `rotate(q, x) + t`.
  """
  points, rotation, translation = _prepare_extrinsics(points, rotation, translation)
  return quaternion_rotate(rotation, points) + translation


# --------------------------------------------------------------------------------------
# Camera intrinsics: the Human3.6M distortion model.


def _distortion_terms(xp, undistorted, radial, tangential):
  """`(r2, radial_factor + tangential_factor)` of the Human3.6M model, each [..., N, 1]."""
  r2 = xp.sum(undistorted ** 2, axis=-1, keepdims=True)
  radial_factor = 1 + (radial[..., 0:1] * r2 + radial[..., 1:2] * r2 ** 2
                       + radial[..., 2:3] * r2 ** 3)
  tangential_factor = xp.sum(tangential * undistorted, axis=-1, keepdims=True)
  return r2, radial_factor + tangential_factor


def _expand_intrinsics(xp, points, focal, center, radial, tangential):
  """Per-camera [..., K] intrinsics in `points`' dtype with a point axis: [..., 1, K]."""
  params = {'focal': focal, 'center': center, 'radial': radial, 'tangential': tangential}
  params = {name: _float_like(xp, value, points) for name, value in params.items()}
  for name, value in params.items():
    _assert_camera_param(name, value, points.shape[:-2], 3 if name == 'radial' else 2)
  return tuple(value[..., None, :] for value in params.values())


def project_to_pixels(points_cam: Array, focal: Array, center: Array, radial: Array,
                      tangential: Array, clip: float | None = 1.0) -> Array:
  """Projects camera-space points to distorted pixel coordinates.

  The Human3.6M model exactly as VideoPose3D's `project_to_2d` implements it (a port of
  the dataset's MATLAB code). With `u = clip(x / z, y / z)`, `r2 = |u|^2`, `k = radial`,
  `p = tangential` (in the stored order, p[0] multiplying the x terms):

    radial_factor = 1 + k1 r2 + k2 r2^2 + k3 r2^3
    tangential_factor = p[0] u_x + p[1] u_y
    distorted = u * (radial_factor + tangential_factor) + p * r2
    pixels = focal * distorted + center

  Depth is not clamped: points must lie in front of the camera (z > 0); z = 0 yields
  inf/nan, z < 0 a mirrored projection. VideoPose3D clips `x / z, y / z` to [-1, 1]
  (45 degrees off axis); `clip` keeps that behavior (None disables it). Points beyond
  the clip do not round-trip through `unproject_pixels`.

  Args:
    points_cam: [..., N, 3] camera coordinates (any unit; only ratios matter).
    focal: [..., 2] focal lengths in pixels (fx, fy).
    center: [..., 2] principal point in pixels.
    radial: [..., 3] radial distortion (k1, k2, k3).
    tangential: [..., 2] tangential distortion in VideoPose3D's stored order.
    clip: bound on |x / z| and |y / z| before distortion, or None.
  Returns:
    [..., N, 2] pixel coordinates.
  """
  xp = array_module(points_cam, focal, center, radial, tangential)
  points_cam = xp.asarray(points_cam)
  chex.assert_shape(points_cam, (..., 3))
  focal, center, radial, tangential = _expand_intrinsics(
      xp, points_cam, focal, center, radial, tangential)
  undistorted = points_cam[..., :2] / points_cam[..., 2:]
  if clip is not None:
    undistorted = xp.clip(undistorted, -clip, clip)
  r2, factor = _distortion_terms(xp, undistorted, radial, tangential)
  return focal * (undistorted * factor + tangential * r2) + center


def undistort_pixels(pixels: Array, focal: Array, center: Array, radial: Array,
                     tangential: Array, num_iterations: int = 20) -> Array:
  """Inverts the distortion of `project_to_pixels` by fixed-point iteration.

  Solves `distorted = u * (radial_factor(u) + tangential_factor(u)) + p * r2(u)` for the
  normalized undistorted coordinates `u = (x / z, y / z)` with
  `u <- (distorted - p * r2(u)) / (radial_factor(u) + tangential_factor(u))`, starting
  from `u = distorted`. Converges quickly for the mild distortion of real lenses
  (Human3.6M: below 1e-6 px in well under 20 iterations). The loop is unrolled in
  Python, so under `jax.jit` it compiles to `num_iterations` copies of a few
  elementwise operations.

  Args:
    pixels: [..., N, 2] distorted pixel coordinates.
    focal, center, radial, tangential: per-camera intrinsics as in `project_to_pixels`.
    num_iterations: fixed-point iterations.
  Returns:
    [..., N, 2] normalized undistorted image coordinates (x / z, y / z).
  """
  xp = array_module(pixels, focal, center, radial, tangential)
  pixels = xp.asarray(pixels)
  chex.assert_shape(pixels, (..., 2))
  focal, center, radial, tangential = _expand_intrinsics(
      xp, pixels, focal, center, radial, tangential)
  distorted = (pixels - center) / focal
  undistorted = distorted
  for _ in range(num_iterations):
    r2, factor = _distortion_terms(xp, undistorted, radial, tangential)
    undistorted = (distorted - tangential * r2) / factor
  return undistorted


def unproject_pixels(pixels: Array, depth: Array, focal: Array, center: Array,
                     radial: Array, tangential: Array, num_iterations: int = 20) -> Array:
  """Lifts distorted pixels at known depths back to camera space.

  Args:
    pixels: [..., N, 2] distorted pixel coordinates.
    depth: [..., N] camera-space z of each point.
    focal, center, radial, tangential: per-camera intrinsics as in `project_to_pixels`.
    num_iterations: fixed-point iterations of `undistort_pixels`.
  Returns:
    [..., N, 3] camera coordinates with `project_to_pixels(result) == pixels`.
  """
  xp = array_module(pixels, depth, focal, center, radial, tangential)
  pixels = xp.asarray(pixels)
  depth = _float_like(xp, depth, pixels)
  chex.assert_shape(depth, pixels.shape[:-1])
  undistorted = undistort_pixels(pixels, focal, center, radial, tangential, num_iterations)
  return xp.concatenate([undistorted * depth[..., None], depth[..., None]], axis=-1)


# --------------------------------------------------------------------------------------
# 2D frames: screen normalization and the per-sample model frame.


def _screen_width_and_offset(xp, points, image_size):
  """`w` as [..., 1, 1] and `(1, h / w)` as [..., 1, 2] for points [..., N, 2]."""
  size = _float_like(xp, image_size, points)
  chex.assert_shape(points, (..., 2))
  _assert_camera_param('image_size', size, points.shape[:-2], 2)
  width, height = size[..., None, 0:1], size[..., None, 1:2]
  return width, xp.concatenate([xp.ones_like(height), height / width], axis=-1)


def screen_normalize(points: Array, image_size: Array) -> Array:
  """Pixels -> screen-normalized coordinates (VideoPose3D).

  Args:
    points: [..., N, 2] pixel coordinates (x, y).
    image_size: [..., 2] (width, height) in pixels.
  Returns:
    [..., N, 2] `(x / w * 2 - 1, y / w * 2 - h / w)`.
  """
  xp = array_module(points, image_size)
  points = xp.asarray(points)
  width, offset = _screen_width_and_offset(xp, points, image_size)
  return points / width * 2 - offset


def screen_denormalize(points: Array, image_size: Array) -> Array:
  """Screen-normalized -> pixel coordinates, the inverse of `screen_normalize`.

  Args:
    points: [..., N, 2] screen-normalized coordinates.
    image_size: [..., 2] (width, height) in pixels.
  Returns:
    [..., N, 2] pixel coordinates.
  """
  xp = array_module(points, image_size)
  points = xp.asarray(points)
  width, offset = _screen_width_and_offset(xp, points, image_size)
  return (points + offset) * width / 2


def normalization_frame(points: Array, confidence: Array,
                        min_scale: float = 1e-3) -> tuple[Array, Array]:
  """The per-sample model frame of a 2D pose: bounding-box centre and half size.

  Only joints with `confidence > 0` count. The scale is half the longer side of their
  bounding box, at least `min_scale` (a single confident joint gives a zero-size box).
  A sample with no confident joint gets the identity frame: center 0, scale 1.
  Masked min/max, no boolean indexing, so it runs under `jax.jit`.

  Args:
    points: [..., J, 2] 2D pose (screen-normalized).
    confidence: [..., J] joint confidences; <= 0 means missing/occluded.
    min_scale: lower bound on the scale.
  Returns:
    center: [..., 2]; scale: [...].
  """
  xp = array_module(points, confidence)
  points = xp.asarray(points)
  confidence = xp.asarray(confidence)
  chex.assert_shape(points, (..., 2))
  chex.assert_shape(confidence, points.shape[:-1])
  mask = (confidence > 0)[..., None]
  lowest = xp.min(xp.where(mask, points, xp.inf), axis=-2)
  highest = xp.max(xp.where(mask, points, -xp.inf), axis=-2)
  any_confident = xp.any(mask, axis=-2)
  lowest = xp.where(any_confident, lowest, 0)
  highest = xp.where(any_confident, highest, 0)
  center = (lowest + highest) / 2
  half_size = xp.max(highest - lowest, axis=-1) / 2
  scale = xp.where(any_confident[..., 0], xp.maximum(half_size, min_scale), 1)
  return center.astype(points.dtype), scale.astype(points.dtype)


def normalize_2d(points: Array, center: Array, scale: Array) -> Array:
  """Screen coordinates -> model frame: `(p - center) / scale`.

  Args:
    points: [..., N, 2]; center: [..., 2]; scale: [...].
  Returns:
    [..., N, 2].
  """
  xp = array_module(points, center, scale)
  points = xp.asarray(points)
  center, scale = _float_like(xp, center, points), _float_like(xp, scale, points)
  chex.assert_shape(center, (*points.shape[:-2], 2))
  chex.assert_shape(scale, points.shape[:-2])
  return (points - center[..., None, :]) / scale[..., None, None]


def to_model_frame(points: Array, confidence: Array) -> tuple[Array, Array, Array]:
  """Screen coordinates -> the model frame of the confident joints (docs/DESIGN.md §3);
  the one definition the input pipeline and inference share.

  Args:
    points: [..., J, 2] screen-normalized input joints; confidence: [..., J].
  Returns:
    (points [..., J, 2] in the model frame, center [..., 2], scale [...]).
  """
  center, scale = normalization_frame(points, confidence)
  return normalize_2d(points, center, scale), center, scale


def denormalize_2d(points: Array, center: Array, scale: Array) -> Array:
  """Model frame -> screen coordinates: `p * scale + center` (inverse of `normalize_2d`).

  Args:
    points: [..., N, 2]; center: [..., 2]; scale: [...].
  Returns:
    [..., N, 2].
  """
  xp = array_module(points, center, scale)
  points = xp.asarray(points)
  center, scale = _float_like(xp, center, points), _float_like(xp, scale, points)
  chex.assert_shape(center, (*points.shape[:-2], 2))
  chex.assert_shape(scale, points.shape[:-2])
  return points * scale[..., None, None] + center[..., None, :]


# --------------------------------------------------------------------------------------
# Root-relative coordinates and points on bones.


def to_root_relative(points: Array, root: Array | None = None, root_index: int = 0) -> Array:
  """Subtracts a root position from every point.

  Args:
    points: [..., N, C].
    root: [..., C] root positions; None takes `points[..., root_index, :]`.
    root_index: the root point when `root` is None.
  Returns:
    [..., N, C] `points - root`.
  """
  xp = array_module(points, root)
  points = xp.asarray(points)
  root = points[..., root_index, :] if root is None else _float_like(xp, root, points)
  chex.assert_shape(root, (*points.shape[:-2], points.shape[-1]))
  return points - root[..., None, :]


def from_root_relative(points: Array, root: Array) -> Array:
  """Adds the root position back: points [..., N, C], root [..., C] -> [..., N, C]."""
  xp = array_module(points, root)
  points = xp.asarray(points)
  root = _float_like(xp, root, points)
  chex.assert_shape(root, (*points.shape[:-2], points.shape[-1]))
  return points + root[..., None, :]


def interpolate_bones(joints: Array, starts: Sequence[int] | Array,
                      ends: Sequence[int] | Array, fractions: Sequence[float] | Array) -> Array:
  """Points along segments between joints: `(1 - f) * joints[start] + f * joints[end]`.

  Args:
    joints: [..., J, C] joint positions (C = 2 or 3).
    starts: [K] int start joint of each point's segment.
    ends: [K] int end joint of each point's segment.
    fractions: [K] float position along the segment (0 = start, 1 = end).
  Returns:
    [..., K, C] interpolated points.
  """
  xp = array_module(joints)
  joints = xp.asarray(joints)
  starts = np.asarray(starts, dtype=np.int32)
  ends = np.asarray(ends, dtype=np.int32)
  fractions = _float_like(xp, fractions, joints)
  chex.assert_shape([starts, ends, fractions], (starts.shape[0],))
  num_joints = joints.shape[-2]
  if starts.size and (min(starts.min(), ends.min()) < 0
                      or max(starts.max(), ends.max()) >= num_joints):
    raise ValueError(f'bone endpoints must index the {num_joints} joints; got starts '
                     f'{starts.tolist()} and ends {ends.tolist()}')
  weights = fractions[:, None]
  return joints[..., starts, :] * (1 - weights) + joints[..., ends, :] * weights


# --------------------------------------------------------------------------------------
# Alignment.


def procrustes_align(pred: Array, target: Array, eps: float = 1e-12) -> Array:
  """Aligns `pred` to `target` with the best similarity transform (protocol 2).

  Finds rotation R (det +1, never a reflection), uniform scale s and translation t
  minimizing `sum_n |s R pred_n + t - target_n|^2` per sample (Umeyama): with centred
  point sets X, Y and `X^T Y = U S V^T`, `R = V D U^T`, `D = diag(1, 1, sign det(V U^T))`,
  `s = trace(D S) / |X|^2`.

  Args:
    pred: [..., N, 3] points to align.
    target: [..., N, 3] reference points.
    eps: floor on `|X|^2` so a collapsed prediction (all points equal) gives s = 0
      instead of nan.
  Returns:
    [..., N, 3] aligned `pred`.
  """
  xp = array_module(pred, target)
  pred, target = xp.asarray(pred), xp.asarray(target)
  chex.assert_equal_shape([pred, target])
  chex.assert_shape(pred, (..., 3))
  pred_mean = xp.mean(pred, axis=-2, keepdims=True)
  target_mean = xp.mean(target, axis=-2, keepdims=True)
  x, y = pred - pred_mean, target - target_mean
  covariance = xp.einsum('...ni,...nj->...ij', x, y)
  u, singular, vh = xp.linalg.svd(covariance)
  v, ut = xp.swapaxes(vh, -1, -2), xp.swapaxes(u, -1, -2)
  reflection = xp.where(xp.linalg.det(v @ ut) < 0, -1.0, 1.0).astype(pred.dtype)
  signs = xp.concatenate([xp.ones_like(singular[..., :2]), reflection[..., None]], axis=-1)
  rotation = (v * signs[..., None, :]) @ ut
  norm = xp.maximum(xp.sum(x ** 2, axis=(-2, -1)), eps)
  scale = xp.sum(singular * signs, axis=-1) / norm
  rotated = xp.einsum('...ij,...nj->...ni', rotation, x)
  return scale[..., None, None] * rotated + target_mean


def scale_align(pred: Array, target: Array, eps: float = 1e-12) -> Array:
  """Rescales `pred` by the least-squares scale `<pred, target> / <pred, pred>` (N-MPJPE).

  Args:
    pred: [..., N, C]; target: [..., N, C].
    eps: floor on `<pred, pred>` (an all-zero prediction stays zero).
  Returns:
    [..., N, C] `s * pred` with one scale per sample.
  """
  xp = array_module(pred, target)
  pred, target = xp.asarray(pred), xp.asarray(target)
  chex.assert_equal_shape([pred, target])
  scale = (xp.sum(pred * target, axis=(-2, -1))
           / xp.maximum(xp.sum(pred ** 2, axis=(-2, -1)), eps))
  return scale[..., None, None] * pred
