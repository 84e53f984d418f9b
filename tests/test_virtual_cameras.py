"""Tests for tfds_builders/virtual_cameras.py."""

import dataclasses

import numpy as np
import pytest

from tfds_builders import virtual_cameras


def _subject(rng, num_frames=5, spread=0.4):
  """[T, N, 3] points of a roughly person-sized cloud around (0.5, -0.3), z in [0, 1.8]."""
  points = rng.uniform([-spread, -spread, 0.0], [spread, spread, 1.8], size=(num_frames, 30, 3))
  return points + np.array([0.5, -0.3, 0.0])


def test_look_at_centres_the_target_and_keeps_up_up():
  position, target = np.array([4.0, 1.0, 1.6]), np.array([0.0, 0.5, 1.0])
  camera = virtual_cameras.Camera(
      name='c', image_size=np.array([1000, 1002]), focal=np.array([1145.0, 1145.0]),
      center=np.array([500.0, 501.0]), radial=np.zeros(3), tangential=np.zeros(2),
      rotation=virtual_cameras.look_at(position, target), translation=position)
  points = np.stack([target, target + [0.0, 0.0, 0.5], position + [0.0, 0.0, 0.0]])
  cam = camera.world_to_camera(points)
  np.testing.assert_allclose(cam[2], 0.0, atol=1e-12)  # The camera centre.
  np.testing.assert_allclose(cam[0, :2], 0.0, atol=1e-12)
  np.testing.assert_allclose(cam[0, 2], np.linalg.norm(target - position))
  pixels = camera.project(cam[:2])
  np.testing.assert_allclose(pixels[0], camera.center, atol=1e-9)
  assert pixels[1, 1] < pixels[0, 1] - 50  # Higher in the world = higher in the image.
  assert abs(pixels[1, 0] - pixels[0, 0]) < 1e-6  # No roll: vertical stays vertical.


def test_ring_cameras_see_the_subject():
  rng = np.random.default_rng(0)
  points = _subject(rng)
  layout = virtual_cameras.RingLayout(num_cameras=4)
  cameras = virtual_cameras.ring_cameras(np.random.default_rng(1), points, layout=layout)
  assert [c.name for c in cameras] == ['cam0', 'cam1', 'cam2', 'cam3']
  centre = points.reshape(-1, 3).mean(0)
  azimuths = []
  for camera in cameras:
    pixels = camera.project(camera.world_to_camera(points))
    assert np.all(pixels > layout.margin) and np.all(pixels < camera.image_size - layout.margin)
    assert np.all(camera.world_to_camera(points)[..., 2] > 3.0)
    assert layout.height[0] <= camera.translation[2] <= layout.height[1]
    horizontal = camera.translation[:2] - centre[:2]
    assert np.linalg.norm(horizontal) > layout.distance[0] - 0.5
    azimuths.append(np.arctan2(horizontal[1], horizontal[0]))
    params = camera.params()
    assert {k: v.shape for k, v in params.items()} == {
        'focal': (2,), 'center': (2,), 'radial': (3,), 'tangential': (2,), 'rotation': (4,),
        'translation': (3,)}
    np.testing.assert_allclose(np.linalg.norm(params['rotation']), 1.0, atol=1e-6)
    assert 1140 <= params['focal'].min() and params['focal'].max() <= 1150
    assert np.all(np.abs(params['center'] - [500.0, 501.0]) <= 12.0)
    assert -0.21 <= params['radial'][0] <= -0.19
  # Spread around the ring: consecutive cameras roughly a quarter turn apart.
  gaps = np.diff(np.unwrap(np.sort(np.mod(azimuths, 2 * np.pi))))
  assert np.all(gaps > np.pi / 2 - 2 * layout.azimuth_jitter - 1e-9)


def test_ring_cameras_are_deterministic():
  points = _subject(np.random.default_rng(0))
  first = virtual_cameras.ring_cameras(np.random.default_rng(7), points)
  second = virtual_cameras.ring_cameras(np.random.default_rng(7), points)
  other = virtual_cameras.ring_cameras(np.random.default_rng(8), points)
  for a, b, c in zip(first, second, other):
    for name in ('rotation', 'translation', 'focal', 'radial'):
      np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.translation, c.translation)


def test_ring_moves_back_until_a_large_subject_fits():
  points = _subject(np.random.default_rng(0), spread=3.0)  # 6 m wide.
  layout = virtual_cameras.RingLayout(num_cameras=2, distance=(2.0, 2.5))
  cameras = virtual_cameras.ring_cameras(np.random.default_rng(1), points, layout=layout)
  for camera in cameras:
    assert np.all(camera.visible(points, layout.margin, layout.min_depth))
    assert np.linalg.norm(camera.translation[:2] - [0.5, -0.3]) > 2.5
  with pytest.raises(ValueError, match='cannot see every point'):
    virtual_cameras.ring_cameras(np.random.default_rng(1), points,
                                 layout=dataclasses.replace(layout, max_attempts=1))
