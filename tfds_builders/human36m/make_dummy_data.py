r"""Writes `dummy_data/`: fake Human3.6M files in the real VideoPose3D formats.

Nothing here comes from the licensed data: the 3D poses are a made-up 32-joint skeleton
jittered per frame; the GT 2D file projects them through the published cameras
(`cameras.py`) with `geometry.project_to_pixels`, as VideoPose3D's preparation script
does; the "CPN" file is that plus noise. The files reproduce the irregularities the
builder must handle:

  * S1 'Walking 1': CPN sequences have one extra frame (trimmed to the 3D length);
  * S1 'TakingPhoto' (an alias of 'Photo'): camera 55011271 has an empty CPN sequence
    (skipped and logged);
  * S9 'Directions': the GT sequence of camera 54138969 has one extra frame;
  * S9 'Eating 2': CPN sequences are one frame shorter than the 3D one.

Run from the repository root:  python -m tfds_builders.human36m.make_dummy_data
"""

from __future__ import annotations

import pathlib

from absl import app
import numpy as np

from hipart_jax import geometry
from tfds_builders.human36m import cameras

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / 'dummy_data'
SEED = 36
# subject → action → number of 3D frames.
SEQUENCES = {'S1': {'Walking 1': 10, 'TakingPhoto': 8},
             'S9': {'Directions': 6, 'Eating 2': 7}}
# The 17 kept joints, spelled out here (not imported from the builder) so the GT file
# is an independent reference for the builder's subset and camera handling.
KEPT = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
PARENTS_32 = (-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19, 20,
              19, 22, 12, 24, 25, 26, 27, 28, 27, 30)
# Rest offsets (meters) of each of the 32 joints from its parent; z up. Joint 0 is the
# absolute hip position.
REST_OFFSETS = np.array([
    (0, 0, 0.9), (-0.13, 0, 0), (0, 0, -0.45), (0, 0, -0.44), (0, 0.12, -0.04),
    (0, 0.05, 0), (0.13, 0, 0), (0, 0, -0.45), (0, 0, -0.44), (0, 0.12, -0.04),
    (0, 0.05, 0), (0, 0, 0.12), (0, 0, 0.12), (0, 0, 0.25), (0, 0.02, 0.1), (0, 0, 0.12),
    (0, 0, 0.25), (0.17, 0, -0.05), (0, 0, -0.28), (0, 0, -0.25), (0, 0.03, -0.05),
    (0, 0.02, -0.02), (0, 0, -0.08), (0, 0, -0.02), (0, 0, 0.25), (-0.17, 0, -0.05),
    (0, 0, -0.28), (0, 0, -0.25), (0, 0.03, -0.05), (0, 0.02, -0.02), (0, 0, -0.08),
    (0, 0, -0.02)])
JITTER_METERS = 0.02
CPN_NOISE_PIXELS = 2.0
NUM_DENSE, NUM_FINE = 48, 96


def fake_sequence(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """[T, 32, 3] world meters: the rest skeleton, jittered, turning and walking."""
  offsets = REST_OFFSETS[None] + rng.normal(0, JITTER_METERS, (num_frames, 32, 3))
  offsets[:, 0] = REST_OFFSETS[0] + np.linspace(0, 0.3, num_frames)[:, None] * [1, 0.5, 0]
  joints = np.zeros_like(offsets)
  for j, p in enumerate(PARENTS_32):
    joints[:, j] = offsets[:, j] if p < 0 else joints[:, p] + offsets[:, j]
  return joints


def project(subject: str, camera_index: int, points_world: np.ndarray) -> np.ndarray:
  """[T, N, 3] world meters → [T, N, 2] pixels through one published camera."""
  camera_id = cameras.CAMERA_IDS[camera_index]
  intrinsics = cameras.INTRINSICS[camera_id]
  orientation, position_mm = cameras.EXTRINSICS[subject][camera_index]
  position = np.asarray(position_mm) / 1000.0
  flat = points_world.reshape(-1, 3)
  points_cam = geometry.world_to_camera(flat, np.asarray(orientation), position)
  pixels = geometry.project_to_pixels(
      points_cam, np.asarray(intrinsics['focal']), np.asarray(intrinsics['center']),
      np.asarray(intrinsics['radial']), np.asarray(intrinsics['tangential']))
  return pixels.reshape(*points_world.shape[:-1], 2)


def main(argv):
  del argv
  rng = np.random.default_rng(SEED)
  positions_3d, gt_2d, cpn_2d, dense_3d, fine_3d = {}, {}, {}, {}, {}
  for subject, actions in SEQUENCES.items():
    for store in (positions_3d, gt_2d, cpn_2d, dense_3d, fine_3d):
      store[subject] = {}
    for action, num_frames in actions.items():
      joints = fake_sequence(rng, num_frames)
      positions_3d[subject][action] = joints.astype(np.float32)
      gt, cpn = [], []
      for camera_index in range(len(cameras.CAMERA_IDS)):
        pixels = project(subject, camera_index, joints[:, KEPT]).astype(np.float32)
        detected = pixels + rng.normal(0, CPN_NOISE_PIXELS, pixels.shape).astype(np.float32)
        if action == 'Walking 1':
          detected = np.concatenate([detected, detected[-1:]], axis=0)
        if action == 'Eating 2':
          detected = detected[:-1]
        if action == 'Directions' and camera_index == 0:
          pixels = np.concatenate([pixels, pixels[-1:]], axis=0)
        if action == 'TakingPhoto' and camera_index == 1:
          detected = np.zeros((0, len(KEPT), 2), np.float32)
        gt.append(pixels)
        cpn.append(detected)
      gt_2d[subject][action] = gt
      cpn_2d[subject][action] = cpn
      # External dense/fine points: fake surface points scattered around the joints.
      centers = joints[:, rng.integers(0, 32, NUM_DENSE + NUM_FINE)]
      points = centers + rng.normal(0, 0.05, centers.shape)
      dense_3d[subject][action] = points[:, :NUM_DENSE].astype(np.float32)
      fine_3d[subject][action] = points[:, NUM_DENSE:].astype(np.float32)

  metadata = {'layout_name': 'h36m', 'num_joints': 17,
              'keypoints_symmetry': [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
  DUMMY_DIR.mkdir(exist_ok=True)
  np.savez_compressed(DUMMY_DIR / 'data_3d_h36m.npz', positions_3d=positions_3d)
  np.savez_compressed(DUMMY_DIR / 'data_2d_h36m_gt.npz', positions_2d=gt_2d,
                      metadata=metadata)
  np.savez_compressed(DUMMY_DIR / 'data_2d_h36m_cpn_ft_h36m_dbb.npz', positions_2d=cpn_2d,
                      metadata=metadata)
  np.savez_compressed(DUMMY_DIR / 'dense_points_h36m.npz', dense_3d=dense_3d,
                      fine_3d=fine_3d)
  print(f'wrote {sorted(p.name for p in DUMMY_DIR.iterdir())} to {DUMMY_DIR}')


if __name__ == '__main__':
  app.run(main)
