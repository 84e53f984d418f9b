"""Tests for hipart_jax.skeleton: layouts, rings, hierarchy validation, keypoint formats."""

import numpy as np
import pytest

from hipart_jax import skeleton


def test_rings_match_design():
  assert skeleton.center_to_periphery_rings() == (
      (0,), (1, 4, 7), (2, 5, 8), (3, 6, 9, 11, 14), (10, 12, 15), (13, 16))


def test_rings_follow_any_tree_order():
  # A chain given child-first: 2 -> 0 (root is index 1).
  assert skeleton.center_to_periphery_rings((1, -1, 0)) == ((1,), (0,), (2,))


def test_cycle_is_rejected():
  with pytest.raises(ValueError, match='cycle'):
    skeleton.joint_depths((1, 0))


def test_flip_permutation_swaps_pairs_and_is_involution():
  perm = skeleton.flip_permutation()
  assert perm[1] == 4 and perm[14] == 11 and perm[0] == 0
  np.testing.assert_array_equal(perm[perm], np.arange(17))


def test_default_hierarchy_sizes():
  h = skeleton.default_hierarchy()
  assert (h.num_sparse, h.num_dense, h.num_fine) == (17, 48, 96)
  sizes = h.dense_group_sizes
  assert sizes[0] == 0 and np.all(sizes[1:] == 3)
  assert np.all(h.fine_group_sizes == 2)
  members, mask = h.dense_groups
  assert members.shape == (17, 3) and not mask[0].any()
  np.testing.assert_array_equal(members[1], [0, 1, 2])
  np.testing.assert_array_equal(h.fine_part[:6], [1, 1, 1, 1, 1, 1])
  hash(h)  # Usable as a static argument.


def test_user_hierarchy_with_uneven_groups():
  dense_part = [1, 1, 2, 3, 3, 3, 5, 8]
  fine_parent = [0, 0, 0, 1, 3, 4, 7]
  h = skeleton.Hierarchy.from_maps(dense_part, fine_parent)
  assert h.num_dense == 8 and h.num_fine == 7
  np.testing.assert_array_equal(h.dense_group_sizes[[0, 1, 2, 3, 5, 8]], [0, 2, 1, 3, 1, 1])
  members, mask = h.dense_groups
  assert members.shape == (17, 3)
  np.testing.assert_array_equal(members[3], [3, 4, 5])
  np.testing.assert_array_equal(members[1][mask[1]], [0, 1])
  np.testing.assert_array_equal(h.fine_group_sizes, [3, 1, 0, 1, 1, 0, 0, 1])
  np.testing.assert_array_equal(h.dense_index_in_group(), [0, 1, 0, 0, 1, 2, 0, 0])
  assert skeleton.Hierarchy.from_json(h.to_json()) == h


@pytest.mark.parametrize('dense_part, fine_parent, match', [
    ([1, 17], [0, 1], r'dense_part.*out of range'),
    ([1, -1], [0, 1], r'dense_part.*out of range'),
    ([1, 2], [0, 2], r'fine_parent.*out of range'),
    ([], [0], 'dense_part is empty'),
    ([1], [], 'fine_parent is empty'),
    ([[1, 2]], [0], '1-D'),
    ([1.5], [0], 'ints'),
])
def test_hierarchy_validation_errors(dense_part, fine_parent, match):
  with pytest.raises(ValueError, match=match):
    skeleton.Hierarchy.from_maps(dense_part, fine_parent)


def test_flip_permutations_map_left_points_to_right():
  h = skeleton.default_hierarchy()
  sparse, dense, fine = h.flip_permutations()
  # Dense points of r_hip (part 1) map to those of l_hip (part 4), same order.
  np.testing.assert_array_equal(h.dense_part_array[dense], sparse[h.dense_part_array])
  np.testing.assert_array_equal(h.dense_index_in_group()[dense], h.dense_index_in_group())
  np.testing.assert_array_equal(dense[dense], np.arange(48))
  np.testing.assert_array_equal(fine[fine], np.arange(96))
  np.testing.assert_array_equal(h.fine_parent_array[fine], dense[h.fine_parent_array])


def test_asymmetric_hierarchy_cannot_flip():
  h = skeleton.Hierarchy.from_maps([1, 1, 4], [0, 1, 2])
  with pytest.raises(ValueError, match='not left/right symmetric'):
    h.flip_permutations()


def _coco_pose():
  """A COCO-17 pose with easy numbers (pixels)."""
  names = skeleton.COCO17.keypoint_names
  points = {
      'nose': (50, 10), 'l_eye': (52, 8), 'r_eye': (48, 8), 'l_ear': (55, 9),
      'r_ear': (45, 9), 'l_shoulder': (60, 20), 'r_shoulder': (40, 20),
      'l_elbow': (64, 35), 'r_elbow': (36, 35), 'l_wrist': (66, 50), 'r_wrist': (34, 50),
      'l_hip': (56, 60), 'r_hip': (44, 60), 'l_knee': (57, 80), 'r_knee': (43, 80),
      'l_ankle': (58, 100), 'r_ankle': (42, 100)}
  return np.array([points[n] for n in names], np.float32)


def test_coco_to_h36m_on_known_pose():
  coco = _coco_pose()
  h36m, conf = skeleton.coco_to_h36m(coco)
  expected = {
      'pelvis': (50, 60), 'r_hip': (44, 60), 'r_knee': (43, 80), 'r_ankle': (42, 100),
      'l_hip': (56, 60), 'l_knee': (57, 80), 'l_ankle': (58, 100), 'spine': (50, 40),
      'thorax': (50, 20), 'neck_nose': (50, 10), 'head': (50, 8.5),
      'l_shoulder': (60, 20), 'l_elbow': (64, 35), 'l_wrist': (66, 50),
      'r_shoulder': (40, 20), 'r_elbow': (36, 35), 'r_wrist': (34, 50)}
  want = np.array([expected[n] for n in skeleton.H36M_JOINT_NAMES], np.float32)
  np.testing.assert_allclose(h36m, want, atol=1e-5)
  np.testing.assert_array_equal(conf, np.ones(17))


def test_missing_keypoint_makes_derived_joints_missing():
  coco = np.stack([_coco_pose()] * 2)
  conf = np.ones((2, 17), np.float32)
  conf[1, skeleton.COCO17.keypoint_names.index('l_hip')] = 0.0
  _, out = skeleton.coco_to_h36m(coco, conf)
  names = skeleton.H36M_JOINT_NAMES
  missing = {names.index(n) for n in ('pelvis', 'l_hip', 'spine')}
  np.testing.assert_array_equal(out[0], np.ones(17))
  for j in range(17):
    assert out[1, j] == (0.0 if j in missing else 1.0), names[j]


def test_formats_agree_on_the_same_body():
  """BODY_25 / COCO-18 files of the same body give the COCO result (up to the
  annotated joints they have in addition: pelvis from mid-hip, thorax from neck)."""
  coco = _coco_pose()
  by_name = dict(zip(skeleton.COCO17.keypoint_names, coco))
  by_name['neck'] = (by_name['l_shoulder'] + by_name['r_shoulder']) / 2
  by_name['mid_hip'] = (by_name['l_hip'] + by_name['r_hip']) / 2
  reference, _ = skeleton.coco_to_h36m(coco)
  for fmt in (skeleton.OPENPOSE_COCO18, skeleton.OPENPOSE_BODY25):
    kps = np.array([by_name.get(n, (0.0, 0.0)) for n in fmt.keypoint_names], np.float32)
    conf = np.array([n in by_name for n in fmt.keypoint_names], np.float32)
    out, out_conf = fmt.convert(kps, conf)
    np.testing.assert_allclose(out, reference, atol=1e-5, err_msg=fmt.name)
    assert np.all(out_conf == 1.0), fmt.name


def test_convert_rejects_wrong_keypoint_count():
  with pytest.raises(ValueError, match=r'coco17.*\[\.\.\., 17, 2\]'):
    skeleton.COCO17.convert(np.zeros((5, 18, 2)))


def test_format_table_must_cover_every_joint():
  with pytest.raises(ValueError, match='every Human3.6M joint'):
    skeleton.KeypointFormat('bad', ('a',), (('pelvis', (('a', 1.0),)),))
