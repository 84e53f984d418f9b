"""Tests for hipart_jax.augment: flip, noise, occlusion masks and hidden coordinates."""

import numpy as np
import pytest

import fake_examples
from hipart_jax import augment
from hipart_jax import geometry
from hipart_jax import skeleton

HIERARCHY = skeleton.default_hierarchy()
# An uneven but left/right symmetric hierarchy: 1..3 dense points per part (the root owns
# one), 1..3 fine points per dense point by its position in the group.
_UNEVEN_PARTS = [1, 4, 2, 2, 5, 5, 7, 8, 8, 8, 11, 14, 12, 12, 12, 15, 15, 15, 13, 16, 3,
                 6, 9, 10, 0]
_POSITION = skeleton.Hierarchy.from_maps(_UNEVEN_PARTS, [0]).dense_index_in_group()
UNEVEN = skeleton.Hierarchy.from_maps(
    _UNEVEN_PARTS, [k for k, p in enumerate(_POSITION) for _ in range(1 + p)])
JOINT = {name: j for j, name in enumerate(skeleton.H36M_JOINT_NAMES)}


def _levels(hierarchy, n=3, seed=0):
  """Screen-normalized 2D and camera 3D of every level, from fake examples."""
  examples = fake_examples.fake_examples(n, hierarchy, seed)
  size = np.stack([ex['image_size'] for ex in examples])
  out = {}
  for level in ('sparse', 'dense', 'fine'):
    pixels = np.stack([ex[f'{level}_2d'] for ex in examples])
    out[f'{level}_2d'] = geometry.screen_normalize(pixels, size)
    out[f'{level}_3d'] = np.stack([ex[f'{level}_3d'] for ex in examples])
  return out


@pytest.mark.parametrize('hierarchy', [HIERARCHY, UNEVEN], ids=['default', 'uneven'])
def test_flip_twice_is_identity_and_swaps_every_level(hierarchy):
  levels = _levels(hierarchy)
  perms = dict(zip(('sparse', 'dense', 'fine'), hierarchy.flip_permutations()))
  flip = np.array([True, False, True])
  for key, points in levels.items():
    perm = perms[key.split('_')[0]]
    once = augment.flip_points(points, perm, flip)
    np.testing.assert_array_equal(augment.flip_points(once, perm, flip), points)
    np.testing.assert_array_equal(once[1], points[1])  # Not flipped.
    # Point k moves to its mirror perm[k] with x negated.
    np.testing.assert_allclose(once[0][perm, 0], -points[0][:, 0])
    np.testing.assert_allclose(once[0][perm, 1:], points[0][:, 1:])
  # Every left-limb point lands on the mirrored right-limb point and vice versa.
  sparse, dense, fine = hierarchy.flip_permutations()
  np.testing.assert_array_equal(hierarchy.dense_part_array[dense],
                                sparse[hierarchy.dense_part_array])
  np.testing.assert_array_equal(hierarchy.fine_part[fine], sparse[hierarchy.fine_part])
  assert sparse[JOINT['l_wrist']] == JOINT['r_wrist']


def test_flipped_dense_points_stay_on_their_bones():
  """After a flip, dense points of part j lie between flipped parent(j) and j."""
  levels = _levels(HIERARCHY, n=2)
  flip = np.ones(2, bool)
  sparse_perm, dense_perm, _ = HIERARCHY.flip_permutations()
  joints = augment.flip_points(levels['sparse_3d'], sparse_perm, flip)
  dense = augment.flip_points(levels['dense_3d'], dense_perm, flip)
  parents = np.asarray(HIERARCHY.parents)
  for k, part in enumerate(HIERARCHY.dense_part):
    start, end = joints[:, parents[part]], joints[:, part]
    along = end - start
    t = np.sum((dense[:, k] - start) * along, -1) / np.sum(along * along, -1)
    closest = start + t[:, None] * along
    assert np.all(np.linalg.norm(dense[:, k] - closest, axis=-1) < 0.1), k


def test_screen_flip_matches_camera_flip():
  """Negating camera X projects to the screen flip (principal point at image centre)."""
  levels = _levels(HIERARCHY, n=2)
  flip = np.ones(2, bool)
  perm = HIERARCHY.flip_permutations()[1]
  size = np.tile(np.asarray(fake_examples.IMAGE_SIZE), (2, 1))
  projected = geometry.screen_normalize(
      fake_examples.project(augment.flip_points(levels['dense_3d'], perm, flip)), size)
  np.testing.assert_allclose(projected, augment.flip_points(levels['dense_2d'], perm, flip),
                             atol=1e-5)


def test_noise_scales_with_box():
  points = np.zeros((2, 17, 2), np.float32)
  half = np.array([0.5, 5.0], np.float32)
  noisy = augment.add_noise(np.random.default_rng(0), points, half, noise_std=0.02)
  std = noisy.reshape(2, -1).std(-1)
  np.testing.assert_allclose(std, 0.02 * 2 * half, rtol=0.35)
  assert std[1] / std[0] > 5  # Ten times larger box, much larger noise.
  same = augment.add_noise(np.random.default_rng(0), points, np.ones(2, np.float32), 0.02)
  np.testing.assert_allclose(noisy[1], same[1] * 5.0, rtol=1e-5)


def test_limb_occlusion_hides_exactly_the_limb():
  mask = augment.random_limb_occlusion(np.random.default_rng(0), 4,
                                       augment.limb_mask(['left_arm', 'head']), 1.0)
  expected = np.zeros(17, bool)
  expected[[JOINT[j] for j in ('l_shoulder', 'l_elbow', 'l_wrist', 'neck_nose', 'head')]] = True
  np.testing.assert_array_equal(mask, np.tile(expected, (4, 1)))
  with pytest.raises(ValueError, match='unknown limbs'):
    augment.limb_mask(['tail'])


def test_rectangle_occlusion_covers_box_or_nothing():
  rng = np.random.default_rng(1)
  points = rng.uniform(-1, 1, (5, 17, 2))
  center, half = geometry.normalization_frame(points, np.ones((5, 17)))
  everything = augment.rectangle_occlusion(rng, points, center, half, (2.0, 2.0))
  assert everything.all()
  nothing = augment.rectangle_occlusion(rng, points, center, half, (0.0, 1e-9))
  assert not nothing.any()
  some = augment.rectangle_occlusion(rng, points, center, half, (0.3, 0.6))
  assert 0 < some.sum() < some.size


def test_training_occlusion_keeps_min_visible():
  rng = np.random.default_rng(2)
  n = 64
  points = rng.uniform(-1, 1, (n, 17, 2))
  available = np.ones((n, 17), bool)
  available[:8, 3:] = False  # Only 3 joints exist in the first 8 samples.
  center, half = geometry.normalization_frame(points, available.astype(np.float32))
  occluded = augment.training_occlusion(
      rng, points, available, center, half, occlusion_prob=1.0, joint_drop_prob=1.0,
      limb_drop_prob=1.0, limbs=('left_arm',), rectangle_prob=1.0,
      rectangle_size=(0.5, 0.5), min_visible=4)
  visible = available & ~occluded
  np.testing.assert_array_equal(visible.sum(-1), [3] * 8 + [4] * (n - 8))
  assert not (occluded & ~available).any()
  # Which joints survive is random, not always the first ones.
  assert len({tuple(np.flatnonzero(v)) for v in visible[8:]}) > 10


def test_training_occlusion_respects_probabilities():
  rng = np.random.default_rng(3)
  n = 2000
  points = rng.uniform(-1, 1, (n, 17, 2))
  available = np.ones((n, 17), bool)
  center, half = geometry.normalization_frame(points, np.ones((n, 17)))
  kwargs = dict(joint_drop_prob=0.2, limb_drop_prob=0.0, limbs=(), rectangle_prob=0.0,
                rectangle_size=(0.2, 0.5), min_visible=1)
  off = augment.training_occlusion(rng, points, available, center, half,
                                   occlusion_prob=0.0, **kwargs)
  assert not off.any()
  on = augment.training_occlusion(rng, points, available, center, half,
                                  occlusion_prob=0.5, **kwargs)
  assert abs(on.mean() - 0.1) < 0.01
  assert abs(on.any(-1).mean() - 0.5 * (1 - 0.8 ** 17)) < 0.04


@pytest.mark.parametrize('level,count', [('none', 0), ('one_limb', 3), ('two_limbs', 6),
                                         ('random_30', 5)])
def test_level_occlusion_counts(level, count):
  rng = np.random.default_rng(4)
  occluded = augment.level_occlusion(rng, level, np.ones((50, 17), bool))
  np.testing.assert_array_equal(occluded.sum(-1), count)
  if level in ('one_limb', 'two_limbs'):
    limbs = augment.limb_mask(augment.EVAL_LIMBS)
    # Every hidden joint belongs to a hidden limb that is hidden completely.
    for row in occluded:
      hidden_limbs = (limbs & row).any(-1)
      np.testing.assert_array_equal(limbs[hidden_limbs].any(0), row)
  with pytest.raises(ValueError, match='unknown occlusion level'):
    augment.level_occlusion(rng, 'three_limbs', np.ones((1, 17), bool))


def test_hide_coordinates_modes():
  rng = np.random.default_rng(5)
  points = rng.normal(size=(2, 17, 2)).astype(np.float32)
  normal = rng.normal(size=(2, 17, 2)).astype(np.float32)
  occluded = np.zeros((2, 17), bool)
  occluded[:, :3] = True
  missing = np.zeros((2, 17), bool)
  missing[1, 16] = True
  zero = augment.hide_coordinates(points, occluded, missing, 'zero', 0.1, normal)
  np.testing.assert_array_equal(zero[:, :3], 0)
  np.testing.assert_array_equal(zero[1, 16], 0)
  np.testing.assert_array_equal(zero[0, 3:], points[0, 3:])
  jitter = augment.hide_coordinates(points, occluded, missing, 'jitter', 0.1, normal)
  np.testing.assert_allclose(jitter[:, :3], points[:, :3] + 0.1 * normal[:, :3], rtol=1e-6)
  np.testing.assert_array_equal(jitter[1, 16], 0)
  with pytest.raises(ValueError, match='occluded_coordinates'):
    augment.hide_coordinates(points, occluded, missing, 'blur', 0.1, normal)


def test_default_config_presets():
  default = augment.default_augment_config()
  none = augment.default_augment_config('none')
  assert default.flip_prob > 0 and default.noise_std > 0 and default.occlusion_prob > 0
  assert none.flip_prob == none.noise_std == none.occlusion_prob == 0
  assert set(default.keys()) == set(none.keys())
  with pytest.raises(ValueError, match='preset'):
    augment.default_augment_config('heavy')
