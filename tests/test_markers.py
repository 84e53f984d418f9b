"""Tests for tfds_builders/markers.py: virtual surface markers in bone frames."""

import numpy as np
import pytest

from hipart_jax import geometry
from hipart_jax import skeleton
from tfds_builders import markers
from tfds_builders.synthetic_poses import body as body_lib

MIRROR = np.diag([-1.0, 1.0, 1.0])  # World reflection x -> -x.
FLIP_Z = np.diag([1.0, 1.0, -1.0])  # Local z negated between mirrored bone frames.


def _random_rotations(rng, shape):
  quaternions = rng.normal(size=shape + (4,))
  quaternions /= np.linalg.norm(quaternions, axis=-1, keepdims=True)
  return geometry.matrix_from_quaternion(quaternions)


def _twist(angle):
  """Rotation about local x (the bone axis)."""
  return body_lib.axis_rotation(0, angle)


def _bone_aligned_pose(rng, num_frames=3):
  """Random joints [T, 17, 3] and frames whose local x runs along each bone."""
  joints = rng.normal(size=(num_frames, 17, 3))
  parents = np.asarray(skeleton.H36M_PARENTS)
  bones = joints - joints[:, np.maximum(parents, 0)]
  bones[:, 0] = [0.0, 0.0, 1.0]  # The root has no bone; any direction will do.
  base = _random_rotations(rng, (num_frames, 17))
  local = np.einsum('tjki,tjk->tji', base, bones)  # Bone direction in each base frame.
  frames = np.stack([markers.align_bone_axis(base[t], local[t]) for t in range(num_frames)])
  return joints, frames


def _symmetric_custom_hierarchy():
  """Variable group sizes, a root with dense points, left/right symmetric."""
  sizes = {0: 2, 1: 1, 4: 1, 2: 4, 5: 4, 7: 3, 11: 2, 14: 2, 13: 1, 16: 1}
  dense_part = [part for part, size in sorted(sizes.items()) for _ in range(size)]
  hierarchy_no_fine = skeleton.Hierarchy.from_maps(dense_part, [0])
  index = hierarchy_no_fine.dense_index_in_group()
  fine_parent = [k for k in range(len(dense_part)) for _ in range(1 + index[k] % 3)]
  return skeleton.Hierarchy.from_maps(dense_part, fine_parent)


@pytest.fixture(scope='module')
def default_layout():
  return markers.make_marker_layout(skeleton.default_hierarchy(), markers.h36m_bone_radii())


def test_layout_markers_are_off_axis_at_limb_radius(default_layout):
  hierarchy = default_layout.hierarchy
  radii = markers.h36m_bone_radii()[hierarchy.dense_part_array]
  assert np.all((default_layout.dense_fraction > 0) & (default_layout.dense_fraction < 1))
  np.testing.assert_allclose(default_layout.dense_offset[:, 0], 0.0)  # Perpendicular.
  np.testing.assert_allclose(np.linalg.norm(default_layout.dense_offset, axis=-1), radii)
  fine_norm = np.linalg.norm(default_layout.fine_offset, axis=-1)
  assert np.all(fine_norm > 0.01)  # No fine marker sits on its dense marker.


def test_place_markers_geometry(default_layout):
  rng = np.random.default_rng(0)
  joints, frames = _bone_aligned_pose(rng)
  np.testing.assert_allclose(markers.bone_axis_error(joints, frames)[:, 1:], 0.0, atol=1e-6)
  dense, fine = markers.place_markers(joints, frames, default_layout)
  assert dense.shape == (3, 48, 3) and fine.shape == (3, 96, 3)
  # Independent check: each dense marker's distance from its bone's axis is the limb
  # radius, and its projection on the bone is at the layout's fraction.
  start = joints[:, default_layout.bone_start]
  end = joints[:, default_layout.bone_end]
  axis = end - start
  relative = dense - start
  along = np.sum(relative * axis, -1) / np.sum(axis * axis, -1)
  off_axis = np.linalg.norm(relative - along[..., None] * axis, axis=-1)
  np.testing.assert_allclose(along, np.broadcast_to(default_layout.dense_fraction, along.shape),
                             atol=1e-9)
  radii = markers.h36m_bone_radii()[default_layout.hierarchy.dense_part_array]
  np.testing.assert_allclose(off_axis, np.broadcast_to(radii, off_axis.shape), atol=1e-9)
  # Fine markers stay close to their dense marker.
  parent = default_layout.hierarchy.fine_parent_array
  gap = np.linalg.norm(fine - dense[:, parent], axis=-1)
  assert np.all(gap < radii[parent] + 1e-9)


def test_markers_rotate_with_twist_joints_do_not(default_layout):
  rng = np.random.default_rng(1)
  joints, frames = _bone_aligned_pose(rng, num_frames=1)
  part = skeleton.H36M_JOINT_NAMES.index('l_elbow')  # The upper arm.
  twisted = frames.copy()
  twisted[:, part] = frames[:, part] @ _twist(0.6)
  dense, fine = markers.place_markers(joints, frames, default_layout)
  dense_t, fine_t = markers.place_markers(joints, twisted, default_layout)
  on_part = default_layout.hierarchy.dense_part_array == part
  moved = np.linalg.norm(dense_t - dense, axis=-1)[0]
  radius = markers.h36m_bone_radii()[part]
  np.testing.assert_allclose(moved[on_part], 2 * radius * np.sin(0.3), rtol=1e-9)
  np.testing.assert_allclose(moved[~on_part], 0.0, atol=1e-12)
  fine_on_part = default_layout.hierarchy.fine_part == part
  assert np.all(np.linalg.norm(fine_t - fine, axis=-1)[0][fine_on_part] > 1e-3)


def test_forearm_twist_in_the_body_moves_markers_not_joints(default_layout):
  body = body_lib.make_body()
  angles = np.zeros((2, 17, 3))
  part = skeleton.H36M_JOINT_NAMES.index('r_wrist')  # The forearm.
  angles[:, part, body_lib.FLEXION] = 1.0
  angles[1, part, body_lib.TWIST] = 0.8
  root = np.broadcast_to(np.eye(3), (2, 3, 3))
  joints, frames = body_lib.forward_kinematics(body, np.zeros((2, 3)), root, angles)
  np.testing.assert_allclose(joints[0], joints[1], atol=1e-12)
  dense, _ = markers.place_markers(joints, frames, default_layout)
  moved = np.linalg.norm(dense[1] - dense[0], axis=-1)
  on_part = default_layout.hierarchy.dense_part_array == part
  assert np.all(moved[on_part] > 0.02)
  np.testing.assert_allclose(moved[~on_part], 0.0, atol=1e-12)


def _assert_mirror_symmetric(layout, rng):
  """Mirrored joints and frames give mirrored markers under the flip permutations."""
  hierarchy = layout.hierarchy
  sparse_perm, dense_perm, fine_perm = hierarchy.flip_permutations()
  joints = rng.normal(size=(4, hierarchy.num_sparse, 3))
  frames = _random_rotations(rng, (4, hierarchy.num_sparse))
  mirrored_joints = (joints @ MIRROR)[:, sparse_perm]
  mirrored_frames = (MIRROR @ frames @ FLIP_Z)[:, sparse_perm]
  dense, fine = markers.place_markers(joints, frames, layout)
  dense_m, fine_m = markers.place_markers(mirrored_joints, mirrored_frames, layout)
  np.testing.assert_allclose(dense_m, (dense @ MIRROR)[:, dense_perm], atol=1e-12)
  np.testing.assert_allclose(fine_m, (fine @ MIRROR)[:, fine_perm], atol=1e-12)


def test_default_layout_is_mirror_symmetric(default_layout):
  _assert_mirror_symmetric(default_layout, np.random.default_rng(2))
  # And it is not trivially so: mirrored parts differ in local z.
  _, dense_perm, _ = default_layout.hierarchy.flip_permutations()
  lateral = dense_perm != np.arange(len(dense_perm))
  assert np.abs(default_layout.dense_offset[lateral, 2]).max() > 0.01
  np.testing.assert_allclose(default_layout.dense_offset[dense_perm][lateral],
                             default_layout.dense_offset[lateral] @ FLIP_Z)


def test_whole_body_mirror_maps_markers_to_markers(default_layout):
  """Mirrored anatomical angles give the mirrored body and mirrored markers."""
  rng = np.random.default_rng(3)
  body = body_lib.make_body()
  limits = body_lib.joint_limits()
  angles = rng.uniform(limits[..., 0], limits[..., 1], size=(3, 17, 3))
  root = body_lib.axis_rotation(2, rng.uniform(-3, 3, 3)) @ body_lib.axis_rotation(
      0, rng.uniform(-0.3, 0.3, 3))
  position = rng.normal(size=(3, 3))
  sparse_perm, dense_perm, fine_perm = default_layout.hierarchy.flip_permutations()
  mirrored_angles = angles[:, sparse_perm].copy()
  mirrored_angles[:, body_lib.sides() == 0, 1:] *= -1  # Midline bends/twists reverse.
  joints, frames = body_lib.forward_kinematics(body, position, root, angles)
  joints_m, frames_m = body_lib.forward_kinematics(
      body, position @ MIRROR, MIRROR @ root @ MIRROR, mirrored_angles)
  np.testing.assert_allclose(joints_m, (joints @ MIRROR)[:, sparse_perm], atol=1e-12)
  dense, fine = markers.place_markers(joints, frames, default_layout)
  dense_m, fine_m = markers.place_markers(joints_m, frames_m, default_layout)
  np.testing.assert_allclose(dense_m, (dense @ MIRROR)[:, dense_perm], atol=1e-12)
  np.testing.assert_allclose(fine_m, (fine @ MIRROR)[:, fine_perm], atol=1e-12)


def test_variable_group_sizes():
  hierarchy = _symmetric_custom_hierarchy()
  layout = markers.make_marker_layout(hierarchy, markers.h36m_bone_radii())
  _assert_mirror_symmetric(layout, np.random.default_rng(4))
  rng = np.random.default_rng(5)
  joints = rng.normal(size=(2, 17, 3))
  dense, fine = markers.place_markers(joints, _random_rotations(rng, (2, 17)), layout)
  assert dense.shape == (2, hierarchy.num_dense, 3) and fine.shape == (2, hierarchy.num_fine, 3)
  # All markers are distinct points.
  for points in (dense[0], fine[0]):
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    assert distances[np.triu_indices(len(points), 1)].min() > 1e-3
  # Root markers sit around the root joint at its radius.
  root_markers = hierarchy.dense_part_array == 0
  np.testing.assert_allclose(np.linalg.norm(dense[:, root_markers] - joints[:, :1], axis=-1),
                             markers.h36m_bone_radii()[0])


def test_layout_is_deterministic(default_layout):
  again = markers.make_marker_layout(skeleton.default_hierarchy(), markers.h36m_bone_radii())
  np.testing.assert_array_equal(again.dense_offset, default_layout.dense_offset)
  np.testing.assert_array_equal(again.fine_offset, default_layout.fine_offset)


def test_align_bone_axis_keeps_twist():
  rng = np.random.default_rng(6)
  rotations = _random_rotations(rng, (17,))
  directions = rng.normal(size=(17, 3))
  directions[3] = [-2.0, 0.0, 0.0]  # Antiparallel to local x.
  aligned = markers.align_bone_axis(rotations, directions)
  unit = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
  np.testing.assert_allclose(aligned[:, :, 0], np.einsum('jik,jk->ji', rotations, unit),
                             atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(aligned), 1.0)
  # Twisting the input frames about the bone twists the output frames the same way.
  spin = geometry.matrix_from_quaternion(np.concatenate(
      [[np.cos(0.4)], np.sin(0.4) * unit[5]]))
  twisted = markers.align_bone_axis(rotations[5] @ spin, directions[5:6])
  np.testing.assert_allclose(twisted[0], aligned[5] @ _twist(0.8), atol=1e-12)


def test_errors():
  hierarchy = skeleton.default_hierarchy()
  with pytest.raises(ValueError, match='bone_radii'):
    markers.make_marker_layout(hierarchy, np.ones(16))
  asymmetric = skeleton.Hierarchy.from_maps([1, 1, 4], [0, 1, 2])
  with pytest.raises(ValueError, match='symmetric'):
    markers.make_marker_layout(asymmetric, np.ones(17))
  layout = markers.make_marker_layout(hierarchy, np.ones(17))
  with pytest.raises(ValueError, match='joints'):
    markers.place_markers(np.zeros((2, 16, 3)), np.zeros((2, 16, 3, 3)), layout)
  with pytest.raises(ValueError, match='bone_rotations'):
    markers.place_markers(np.zeros((2, 17, 3)), np.zeros((2, 17, 3)), layout)
