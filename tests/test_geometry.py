"""Tests for hipart_jax.geometry: round trips, hand-computed cases, numpy/JAX agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import geometry

# Human3.6M camera 54138969 as stored by VideoPose3D (rounded).
H36M_INTRINSICS = dict(
    focal=np.array([1145.049, 1143.781]),
    center=np.array([512.541, 515.451]),
    radial=np.array([-0.207099, 0.247775, -0.003075]),
    tangential=np.array([-0.000976, -0.001424]),
)


def _random_quaternions(rng, shape):
  q = rng.normal(size=(*shape, 4))
  return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _random_rotations(rng, shape):
  return geometry.matrix_from_quaternion(_random_quaternions(rng, shape))


def _batched_intrinsics(batch):
  return {name: np.broadcast_to(value, (batch, value.shape[-1])).copy()
          for name, value in H36M_INTRINSICS.items()}


def _points_in_view(rng, batch, num):
  """Camera-space points 3-6 m in front of the camera, within about +-0.45 of the axis."""
  depth = rng.uniform(3.0, 6.0, size=(batch, num, 1))
  offsets = rng.uniform(-0.45, 0.45, size=(batch, num, 2)) * depth
  return np.concatenate([offsets, depth], axis=-1)


@pytest.fixture(scope='module')
def rng():
  return np.random.default_rng(0)


# --------------------------------------------------------------------------------------
# Quaternions and extrinsics.


def test_quaternion_rotate_quarter_turn_about_z():
  half = np.sqrt(0.5)
  q = np.array([half, 0.0, 0.0, half])  # +90 degrees about z.
  np.testing.assert_allclose(geometry.quaternion_rotate(q, np.array([1.0, 0.0, 0.0])),
                             [0.0, 1.0, 0.0], atol=1e-12)
  np.testing.assert_allclose(
      geometry.quaternion_rotate(geometry.quaternion_conjugate(q), np.array([0.0, 1.0, 0.0])),
      [1.0, 0.0, 0.0], atol=1e-12)


def test_quaternion_matrix_agree_and_round_trip(rng):
  q = _random_quaternions(rng, (64,))
  q[:4] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # Every Shepperd branch.
  v = rng.normal(size=(64, 3))
  matrix = geometry.matrix_from_quaternion(q)
  np.testing.assert_allclose(np.einsum('bij,bj->bi', matrix, v),
                             geometry.quaternion_rotate(q, v), atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(matrix), 1.0, atol=1e-12)
  np.testing.assert_allclose(matrix @ np.swapaxes(matrix, -1, -2),
                             np.broadcast_to(np.eye(3), matrix.shape), atol=1e-12)
  recovered = geometry.quaternion_from_matrix(matrix)
  canonical = np.where(q[:, :1] < 0, -q, q)
  np.testing.assert_allclose(recovered, canonical, atol=1e-9)


def test_world_camera_round_trip_and_translation_only_case(rng):
  points = rng.normal(size=(5, 17, 3))
  rotation = _random_quaternions(rng, (5,))
  translation = rng.normal(size=(5, 3)) * 3
  camera = geometry.world_to_camera(points, rotation, translation)
  np.testing.assert_allclose(geometry.camera_to_world(camera, rotation, translation), points,
                             atol=1e-12)
  # Distances are preserved and the camera position maps to the origin.
  np.testing.assert_allclose(np.linalg.norm(camera, axis=-1),
                             np.linalg.norm(points - translation[:, None], axis=-1), atol=1e-12)
  at_camera = geometry.world_to_camera(translation[:, None], rotation, translation)
  np.testing.assert_allclose(at_camera, 0.0, atol=1e-12)
  identity = np.tile([1.0, 0.0, 0.0, 0.0], (5, 1))
  np.testing.assert_allclose(geometry.world_to_camera(points, identity, translation),
                             points - translation[:, None], atol=1e-12)


# --------------------------------------------------------------------------------------
# Intrinsics.


def _reference_projection(point, focal, center, radial, tangential):
  """One point, written out term by term from the Human3.6M / VideoPose3D formula."""
  x, y, z = point
  u, v = np.clip(x / z, -1, 1), np.clip(y / z, -1, 1)
  r2 = u * u + v * v
  k1, k2, k3 = radial
  p0, p1 = tangential
  radial_factor = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
  tangential_factor = p0 * u + p1 * v
  du = u * (radial_factor + tangential_factor) + p0 * r2
  dv = v * (radial_factor + tangential_factor) + p1 * r2
  return np.array([focal[0] * du + center[0], focal[1] * dv + center[1]])


def test_project_matches_the_written_out_formula(rng):
  points = _points_in_view(rng, 2, 6)
  points[0, 0] = [4.0, -1.0, 2.0]  # x / z = 2 is clipped to 1, as in VideoPose3D.
  intrinsics = _batched_intrinsics(2)
  pixels = geometry.project_to_pixels(points, **intrinsics)
  assert pixels.shape == (2, 6, 2)
  for b in range(2):
    for n in range(6):
      expected = _reference_projection(points[b, n], *(v[b] for v in intrinsics.values()))
      np.testing.assert_allclose(pixels[b, n], expected, rtol=1e-12)
  # Distortion matters: without it the pixels differ by more than a pixel somewhere.
  no_distortion = dict(intrinsics, radial=np.zeros((2, 3)), tangential=np.zeros((2, 2)))
  assert np.abs(geometry.project_to_pixels(points, **no_distortion) - pixels).max() > 1.0


def test_undistort_inverts_distortion(rng):
  points = _points_in_view(rng, 3, 50)
  intrinsics = _batched_intrinsics(3)
  pixels = geometry.project_to_pixels(points, **intrinsics)
  restored = geometry.unproject_pixels(pixels, points[..., 2], **intrinsics)
  np.testing.assert_allclose(restored, points, atol=1e-6)
  reprojected = geometry.project_to_pixels(restored, **intrinsics)
  assert np.abs(reprojected - pixels).max() < 1e-3
  normalized = geometry.undistort_pixels(pixels, **intrinsics)
  np.testing.assert_allclose(normalized, points[..., :2] / points[..., 2:], atol=1e-8)


def test_one_camera_serves_a_batch_but_a_point_axis_is_rejected(rng):
  points = _points_in_view(rng, 4, 5)
  single = geometry.project_to_pixels(points, **H36M_INTRINSICS)
  np.testing.assert_allclose(single, geometry.project_to_pixels(points, **_batched_intrinsics(4)))
  rotation = _random_quaternions(rng, ())
  np.testing.assert_allclose(geometry.world_to_camera(points, rotation, np.zeros(3)),
                             geometry.world_to_camera(points, np.tile(rotation, (4, 1)),
                                                      np.zeros((4, 3))))
  with pytest.raises(ValueError, match='focal'):
    per_point = np.broadcast_to(H36M_INTRINSICS['focal'], (4, 5, 2))
    geometry.project_to_pixels(points, **dict(H36M_INTRINSICS, focal=per_point))
  with pytest.raises(ValueError, match='image_size'):
    geometry.screen_normalize(points[..., :2], np.array([1000, 1000, 3]))


# --------------------------------------------------------------------------------------
# 2D frames.


def test_screen_normalize_hand_values_and_round_trip(rng):
  size = np.array([[1000, 1002]], dtype=np.int32)
  pixels = np.array([[[0.0, 0.0], [500.0, 501.0], [1000.0, 1002.0]]], dtype=np.float32)
  normalized = geometry.screen_normalize(pixels, size)
  assert normalized.dtype == np.float32
  np.testing.assert_allclose(normalized, [[[-1, -1.002], [0, 0], [1, 1.002]]], atol=1e-6)
  points = rng.uniform(0, 1000, size=(4, 17, 2))
  sizes = rng.integers(500, 2000, size=(4, 2))
  np.testing.assert_allclose(
      geometry.screen_denormalize(geometry.screen_normalize(points, sizes), sizes), points,
      atol=1e-9)


def test_normalization_frame_ignores_unconfident_joints():
  points = np.array([[[0.0, 0.0], [2.0, 1.0], [1.0, -1.0], [50.0, 50.0]]])
  confidence = np.array([[0.9, 0.5, 0.2, 0.0]])  # The far outlier has confidence 0.
  center, scale = geometry.normalization_frame(points, confidence)
  np.testing.assert_allclose(center, [[1.0, 0.0]])
  np.testing.assert_allclose(scale, [1.0])  # Box 2 x 2: half the longer side is 1.


def test_normalization_frame_degenerate_cases():
  points = np.array([[[0.3, 0.4], [5.0, 5.0]], [[0.3, 0.4], [5.0, 5.0]]])
  confidence = np.array([[1.0, 0.0], [0.0, 0.0]])
  center, scale = geometry.normalization_frame(points, confidence, min_scale=0.01)
  np.testing.assert_allclose(center, [[0.3, 0.4], [0.0, 0.0]])
  np.testing.assert_allclose(scale, [0.01, 1.0])  # One joint: floor. None: identity.


def test_normalize_2d_round_trip(rng):
  points = rng.normal(size=(3, 17, 2))
  center, scale = geometry.normalization_frame(points, rng.uniform(0, 1, size=(3, 17)))
  normalized = geometry.normalize_2d(points, center, scale)
  assert np.abs(normalized).max() <= 1.0 + 1e-12  # The box maps into [-1, 1].
  np.testing.assert_allclose(geometry.denormalize_2d(normalized, center, scale), points,
                             atol=1e-12)


def test_root_relative_round_trip(rng):
  points = rng.normal(size=(2, 17, 3))
  relative = geometry.to_root_relative(points)
  np.testing.assert_allclose(relative[:, 0], 0.0)
  np.testing.assert_allclose(relative, points - points[:, :1])
  np.testing.assert_allclose(geometry.from_root_relative(relative, points[:, 0]), points)
  other = geometry.to_root_relative(points, root_index=3)
  np.testing.assert_allclose(other[:, 3], 0.0)


def test_interpolate_bones_hand_values():
  joints = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 4.0]])
  points = geometry.interpolate_bones(joints, [0, 1, 1], [1, 2, 2], [0.5, 0.25, 1.0])
  np.testing.assert_allclose(points, [[1.0, 0.0], [2.0, 1.0], [2.0, 4.0]])
  batched = geometry.interpolate_bones(np.stack([joints, 2 * joints]), [0], [2], [0.5])
  np.testing.assert_allclose(batched, [[[1.0, 2.0]], [[2.0, 4.0]]])
  with pytest.raises(ValueError, match='bone endpoints'):
    geometry.interpolate_bones(joints, [0], [3], [0.5])


# --------------------------------------------------------------------------------------
# Alignment.


def test_procrustes_recovers_a_similarity_transform(rng):
  pred = rng.normal(size=(4, 17, 3))
  rotation = _random_rotations(rng, (4,))
  scale = rng.uniform(0.5, 2.0, size=(4, 1, 1))
  target = scale * np.einsum('bij,bnj->bni', rotation, pred) + rng.normal(size=(4, 1, 3))
  np.testing.assert_allclose(geometry.procrustes_align(pred, target), target, atol=1e-10)


def test_procrustes_never_reflects(rng):
  pred = rng.normal(size=(3, 17, 3))
  target = pred * np.array([-1.0, 1.0, 1.0])  # A mirror image: reachable only by reflection.
  aligned = geometry.procrustes_align(pred, target)
  assert np.linalg.norm(aligned - target, axis=-1).mean() > 0.1
  # aligned - mean = s R (pred - mean): recover the linear map and check det > 0.
  centered_pred = pred - pred.mean(axis=1, keepdims=True)
  centered_aligned = aligned - aligned.mean(axis=1, keepdims=True)
  for b in range(3):
    linear, *_ = np.linalg.lstsq(centered_pred[b], centered_aligned[b], rcond=None)
    assert np.linalg.det(linear) > 0
    # An orthogonal map times a scale: linear^T linear is a multiple of the identity.
    gram = linear.T @ linear
    np.testing.assert_allclose(gram, np.eye(3) * gram[0, 0], atol=1e-9)


def test_scale_align_hand_value(rng):
  target = rng.normal(size=(2, 17, 3))
  np.testing.assert_allclose(geometry.scale_align(0.25 * target, target), target, atol=1e-12)
  pred = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
  other = np.array([[[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # <p,t> = 2, <p,p> = 2 -> s = 1.
  np.testing.assert_allclose(geometry.scale_align(pred, other), pred)


# --------------------------------------------------------------------------------------
# numpy and JAX give the same results (and numpy input stays numpy).


def _cases(rng):
  points = _points_in_view(rng, 2, 5)
  intrinsics = _batched_intrinsics(2)
  pixels = geometry.project_to_pixels(points, **intrinsics)
  pose2d = rng.normal(size=(2, 17, 2))
  confidence = (rng.uniform(size=(2, 17)) > 0.3).astype(np.float64)
  rotation = _random_quaternions(rng, (2,))
  translation = rng.normal(size=(2, 3))
  return {
      'project_to_pixels': (geometry.project_to_pixels, (points, *intrinsics.values())),
      'unproject_pixels': (geometry.unproject_pixels,
                           (pixels, points[..., 2], *intrinsics.values())),
      'world_to_camera': (geometry.world_to_camera, (points, rotation, translation)),
      'camera_to_world': (geometry.camera_to_world, (points, rotation, translation)),
      'quaternion_from_matrix': (geometry.quaternion_from_matrix,
                                 (_random_rotations(rng, (3,)),)),
      'screen_normalize': (geometry.screen_normalize, (pose2d, np.array([[1000, 1002]] * 2))),
      'normalization_frame': (geometry.normalization_frame, (pose2d, confidence)),
      'normalize_2d': (geometry.normalize_2d, (pose2d, pose2d[:, 0], np.array([0.5, 2.0]))),
      'to_root_relative': (geometry.to_root_relative, (points,)),
      'procrustes_align': (geometry.procrustes_align, (points, points[::-1])),
      'scale_align': (geometry.scale_align, (points, points[::-1])),
  }


@pytest.fixture(scope='module')
def cases():
  return _cases(np.random.default_rng(1))


@pytest.mark.parametrize('name', sorted(_cases(np.random.default_rng(1))))
def test_numpy_and_jit_agree(cases, name):
  function, args = cases[name]
  args = tuple(np.asarray(a, dtype=np.float32) if a.dtype.kind == 'f' else a for a in args)
  numpy_out = function(*args)
  jax_out = jax.jit(function)(*(jnp.asarray(a) for a in args))
  for np_leaf, jax_leaf in zip(jax.tree.leaves(numpy_out), jax.tree.leaves(jax_out)):
    assert isinstance(np_leaf, np.ndarray), f'{name} turned numpy input into {type(np_leaf)}'
    assert isinstance(jax_leaf, jax.Array)
    assert np_leaf.dtype == np.float32
    np.testing.assert_allclose(np_leaf, np.asarray(jax_leaf), rtol=2e-4, atol=2e-4)


def test_vmap_matches_batched(rng):
  pred = rng.normal(size=(3, 17, 3)).astype(np.float32)
  target = rng.normal(size=(3, 17, 3)).astype(np.float32)
  vmapped = jax.vmap(geometry.procrustes_align)(jnp.asarray(pred), jnp.asarray(target))
  np.testing.assert_allclose(np.asarray(vmapped), geometry.procrustes_align(pred, target),
                             rtol=1e-4, atol=1e-4)
