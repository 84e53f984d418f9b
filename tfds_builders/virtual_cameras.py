"""Virtual cameras around a subject, with Human3.6M-like intrinsics.

Cameras stand on a ring around the subject at head-ish heights and look at it, like the
four Human3.6M cameras in the corners of the capture room. Intrinsics are drawn around
the Human3.6M calibration: 1000 x 1002 images, focal length about 1145 px, principal
point near the image centre, and Human3.6M's small radial/tangential distortion. The
ring's distance grows until every given point of every frame projects inside the image,
so the subject never leaves the picture.

World coordinates are z-up meters (any right-handed frame with a known `up` works).
Camera coordinates follow the pinhole convention: x right, y down, z along the optical
axis. Extrinsics follow docs/ARCHITECTURE.md (VideoPose3D): `rotation` is the camera
orientation quaternion (w, x, y, z) in the world, `translation` the camera position.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hipart_jax import geometry

IMAGE_SIZE = (1000, 1002)  # (width, height), pixels.


@dataclasses.dataclass(frozen=True)
class IntrinsicsRanges:
  """Uniform ranges the intrinsics are drawn from (defaults bracket Human3.6M's)."""

  focal: tuple[float, float] = (1140.0, 1150.0)
  center_offset: float = 12.0  # Max principal point offset from the image centre, px.
  k1: tuple[float, float] = (-0.21, -0.19)
  k2: tuple[float, float] = (0.21, 0.26)
  k3: tuple[float, float] = (-0.009, 0.007)
  tangential: tuple[float, float] = (-0.003, -0.0005)


@dataclasses.dataclass(frozen=True)
class RingLayout:
  """Where the cameras stand.

  Attributes:
    num_cameras: cameras on the ring, evenly spaced in azimuth.
    distance: (low, high) initial horizontal distance from the subject, meters.
    height: (low, high) camera height above the ground, meters.
    azimuth_jitter: max deviation from even spacing, radians.
    aim_jitter: max offset of the aim point from the subject centre, meters.
    roll: max camera roll about the optical axis, radians.
    margin: projected points must stay this many pixels inside the image.
    min_depth: points must be at least this far in front of the camera, meters.
    distance_growth: factor applied to the distance when a point falls outside.
    max_attempts: distance increases before giving up.
  """

  num_cameras: int = 4
  distance: tuple[float, float] = (4.5, 6.0)
  height: tuple[float, float] = (1.0, 2.0)
  azimuth_jitter: float = 0.3
  aim_jitter: float = 0.1
  roll: float = 0.03
  margin: float = 10.0
  min_depth: float = 0.5
  distance_growth: float = 1.1
  max_attempts: int = 30


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
  """A calibrated camera.

  Attributes:
    name: camera id.
    image_size: [2] int (width, height) pixels.
    focal, center: [2] pixels.
    radial: [3] (k1, k2, k3); tangential: [2] (p1, p2) (Human3.6M model).
    rotation: [4] orientation quaternion (w, x, y, z) in world.
    translation: [3] position in world, meters.
  """

  name: str
  image_size: np.ndarray
  focal: np.ndarray
  center: np.ndarray
  radial: np.ndarray
  tangential: np.ndarray
  rotation: np.ndarray
  translation: np.ndarray

  def params(self) -> dict[str, np.ndarray]:
    """The schema's `camera_params` (float32)."""
    return {name: np.asarray(getattr(self, name), np.float32)
            for name in ('focal', 'center', 'radial', 'tangential', 'rotation',
                         'translation')}

  def world_to_camera(self, points: np.ndarray) -> np.ndarray:
    """points: [..., N, 3] world meters -> [..., N, 3] camera coordinates."""
    points = np.asarray(points, np.float64)
    batch = points.shape[:-2]
    return geometry.world_to_camera(points, np.broadcast_to(self.rotation, batch + (4,)),
                                    np.broadcast_to(self.translation, batch + (3,)))

  def project(self, points_cam: np.ndarray) -> np.ndarray:
    """points_cam: [..., N, 3] camera coordinates -> [..., N, 2] distorted pixels."""
    points_cam = np.asarray(points_cam, np.float64)
    batch = points_cam.shape[:-2]
    intrinsics = [np.broadcast_to(p, batch + p.shape)
                  for p in (self.focal, self.center, self.radial, self.tangential)]
    return geometry.project_to_pixels(points_cam, *intrinsics)

  def visible(self, points_world: np.ndarray, margin: float = 0.0,
              min_depth: float = 0.0) -> np.ndarray:
    """[..., N] bool: in front of the camera by `min_depth` and `margin` px inside."""
    points_cam = self.world_to_camera(points_world)
    pixels = self.project(points_cam)
    size = np.asarray(self.image_size, np.float64)
    inside = np.all((pixels >= margin) & (pixels <= size - margin), axis=-1)
    return inside & (points_cam[..., 2] >= min_depth)


def look_at(position: np.ndarray, target: np.ndarray, up: Sequence[float] = (0, 0, 1),
            roll: float = 0.0) -> np.ndarray:
  """[4] orientation quaternion of a camera at `position` looking at `target`.

  The camera's y axis (image down) points as close to -`up` as the viewing direction
  allows, then the camera rolls by `roll` radians about its optical axis.
  """
  forward = np.asarray(target, np.float64) - np.asarray(position, np.float64)
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, np.asarray(up, np.float64))
  if np.linalg.norm(right) < 1e-9:
    raise ValueError('look_at: viewing direction is parallel to up')
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  cos, sin = np.cos(roll), np.sin(roll)
  right, down = cos * right + sin * down, -sin * right + cos * down
  return geometry.quaternion_from_matrix(np.stack([right, down, forward], axis=-1))


def sample_intrinsics(rng: np.random.Generator,
                      image_size: Sequence[int] = IMAGE_SIZE,
                      ranges: IntrinsicsRanges = IntrinsicsRanges()) -> dict[str, np.ndarray]:
  """Random Human3.6M-like intrinsics: focal [2], center [2], radial [3], tangential [2]."""
  size = np.asarray(image_size, np.float64)
  return dict(
      focal=rng.uniform(*ranges.focal, size=2),
      center=size / 2 + rng.uniform(-ranges.center_offset, ranges.center_offset, size=2),
      radial=np.array([rng.uniform(*ranges.k1), rng.uniform(*ranges.k2),
                       rng.uniform(*ranges.k3)]),
      tangential=rng.uniform(*ranges.tangential, size=2))


def ring_cameras(rng: np.random.Generator, subject_points: np.ndarray, *,
                 image_size: Sequence[int] = IMAGE_SIZE, layout: RingLayout = RingLayout(),
                 intrinsics: IntrinsicsRanges = IntrinsicsRanges(),
                 up: Sequence[float] = (0, 0, 1)) -> list[Camera]:
  """Cameras on a ring around a subject that keep all its points inside the image.

  Args:
    rng: the only source of randomness (same state → same cameras).
    subject_points: [T, N, 3] (or [N, 3]) world points that must stay visible, e.g. every
      joint and marker of every frame of a sequence.
    image_size: (width, height) pixels.
    layout: ring geometry and visibility requirements.
    intrinsics: ranges of the intrinsics.
    up: world up axis (the ring lies in the plane perpendicular to it; heights along it).
  Returns:
    `layout.num_cameras` cameras named 'cam0', 'cam1', ...
  Raises:
    ValueError: if a camera cannot see every point within `layout.max_attempts`.
  """
  points = np.asarray(subject_points, np.float64).reshape(-1, 3)
  if not np.all(np.isfinite(points)) or points.size == 0:
    raise ValueError('ring_cameras: subject_points must be finite and non-empty')
  up = np.asarray(up, np.float64) / np.linalg.norm(up)
  # Two horizontal axes spanning the ring plane.
  helper = np.array([1.0, 0, 0]) if abs(up[0]) < 0.9 else np.array([0, 1.0, 0])
  axis_a = np.cross(up, helper)
  axis_a /= np.linalg.norm(axis_a)
  axis_b = np.cross(up, axis_a)
  center = (points.min(0) + points.max(0)) / 2
  ground = center - np.dot(center, up) * up  # Centre projected onto the ground plane.
  size = np.asarray(image_size, np.int32)

  offset = rng.uniform(0, 2 * np.pi)
  cameras = []
  for index in range(layout.num_cameras):
    azimuth = (offset + 2 * np.pi * index / layout.num_cameras
               + rng.uniform(-layout.azimuth_jitter, layout.azimuth_jitter))
    distance = rng.uniform(*layout.distance)
    height = rng.uniform(*layout.height)
    aim = center + rng.uniform(-layout.aim_jitter, layout.aim_jitter, size=3)
    roll = rng.uniform(-layout.roll, layout.roll)
    params = sample_intrinsics(rng, image_size, intrinsics)
    direction = np.cos(azimuth) * axis_a + np.sin(azimuth) * axis_b
    for _ in range(layout.max_attempts):
      position = ground + distance * direction + height * up
      camera = Camera(name=f'cam{index}', image_size=size,
                      rotation=look_at(position, aim, up, roll), translation=position,
                      **params)
      if np.all(camera.visible(points, layout.margin, layout.min_depth)):
        cameras.append(camera)
        break
      distance *= layout.distance_growth
    else:
      raise ValueError(f'ring_cameras: camera {index} cannot see every point within '
                       f'{layout.max_attempts} attempts (last distance {distance:.1f} m)')
  return cameras
