r"""Writes `dummy_data/`: fake MPI-INF-3DHP test-set files in the real layout.

Nothing here comes from the licensed data. Each `mpi_inf_3dhp_test_set/TS<k>/annot_data.mat`
is written as MATLAB v7.3 writes it: an HDF5 file behind a 512-byte user block holding
the MATLAB header, every variable a dataset whose dimensions are MATLAB's reversed
(annot2, 2 x 17 x 1 x n in MATLAB, is an n x 1 x 17 x 2 dataset) with a `MATLAB_class`
attribute. Variables: valid_frame (1 x n), activity_annotation (1 x n), annot2, annot3
and univ_annot3 (`bb_crop` is not written: the builder does not read it).

The poses are a made-up standing body in the test set's 17-joint order, jittered per
frame, about 4 m in front of the camera (camera coordinates, millimeters); annot2 is its
pinhole projection with the sequence camera's intrinsics (spelled out here, independent
of the builder), univ_annot3 the body scaled about the pelvis by UNIVERSAL_SCALE. The
files exercise what the builder must handle:

  TS1 (6 frames): frame 2 invalid; frame 5 valid with activity 0 (unknown)  → 5 examples
  TS2 (5 frames): frames 0, 4 invalid (NaN poses); frame 2 valid but its univ_annot3 is
                  NaN (skipped and logged)                                  → 2 examples
  TS3 (4 frames): all valid                                                 → 4 examples
  TS4 (3 frames): frame 1 invalid with activity 9 (out of range)            → 2 examples
  TS5 (4 frames): frame 3 invalid                                           → 3 examples
  TS6 (3 frames): frame 0 invalid                                           → 2 examples
                                                                     total    18

Run from the repository root:  python -m tfds_builders.mpi_inf_3dhp.make_dummy_data
"""

from __future__ import annotations

import pathlib
from typing import Mapping

from absl import app
import h5py
import numpy as np

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / 'dummy_data'
SEED = 3
# Per sequence: valid_frame, activity_annotation (one entry per frame).
SEQUENCES = {
    'TS1': ((1, 1, 0, 1, 1, 1), (1, 2, 3, 4, 5, 0)),
    'TS2': ((0, 1, 1, 1, 0), (6, 6, 7, 7, 7)),
    'TS3': ((1, 1, 1, 1), (1, 1, 2, 2)),
    'TS4': ((1, 0, 1), (3, 9, 3)),
    'TS5': ((1, 1, 1, 0), (6, 6, 6, 6)),
    'TS6': ((0, 1, 1), (7, 1, 1)),
}
NAN_UNIV_FRAMES = {'TS2': (2,)}
# (fx, fy, cx, cy): TS1-TS4 studio (2048 x 2048), TS5-TS6 outdoor (1920 x 1080).
INTRINSICS = {'studio': (1500.172288, 1500.172288, 1017.38733568, 1043.03198208),
              'outdoor': (1683.98345952, 1672.59370772, 939.85754016, 560.140743168)}
SEQUENCE_SCENE = {'TS1': 'studio', 'TS2': 'studio', 'TS3': 'studio', 'TS4': 'studio',
                  'TS5': 'outdoor', 'TS6': 'outdoor'}
# Rest pose (x right, y up, z towards the camera; mm, pelvis at 0) in the test order:
# head_top, neck, r_shoulder, r_elbow, r_wrist, l_shoulder, l_elbow, l_wrist, r_hip,
# r_knee, r_ankle, l_hip, l_knee, l_ankle, pelvis, spine, head.
REST_POSE_MM = np.array([
    (0, 680, 0), (0, 480, 0), (-170, 450, 0), (-200, 170, 20), (-210, -80, 80),
    (170, 450, 0), (200, 170, 20), (210, -80, 80), (-130, 0, 0), (-140, -450, 20),
    (-140, -890, 0), (130, 0, 0), (140, -450, 20), (140, -890, 0), (0, 0, 0),
    (0, 230, -10), (0, 580, 20)], np.float64)
PELVIS = 14
DISTANCE_MM = 4000.0
JITTER_MM = 15.0
UNIVERSAL_SCALE = 0.95
MATLAB_HEADER = (b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 '
                 b'2026 HDF5 schema 1.00 .')
USER_BLOCK_BYTES = 512


def fake_sequence(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """[n, 17, 3] camera coordinates (x right, y down, z forward), millimeters."""
  pose = REST_POSE_MM * np.array([1.0, -1.0, -1.0])  # y up → y down; face the camera.
  offset = np.array([rng.uniform(-300, 300), 100.0, DISTANCE_MM])
  return pose[None] + offset + rng.normal(0, JITTER_MM, (num_frames, 17, 3))


def project(points: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
  """[..., 3] camera mm → [..., 2] pixels, pinhole."""
  fx, fy, cx, cy = intrinsics
  return np.stack([fx * points[..., 0] / points[..., 2] + cx,
                   fy * points[..., 1] / points[..., 2] + cy], axis=-1)


def matlab_pose(points: np.ndarray) -> np.ndarray:
  """[n, 17, C] → C x 17 x 1 x n, the test set's MATLAB layout."""
  return points.transpose(2, 1, 0)[:, :, None, :]


def write_v73(path: pathlib.Path, variables: Mapping[str, np.ndarray]) -> None:
  """Writes MATLAB-order arrays as MATLAB v7.3 does (HDF5, reversed dimensions)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, 'w', userblock_size=USER_BLOCK_BYTES) as mat:
    for name, value in variables.items():
      dataset = mat.create_dataset(name, data=np.asarray(value, np.float64).T)
      dataset.attrs['MATLAB_class'] = np.bytes_('double')
  # The MAT-file header: 116 bytes of text, 8 bytes of subsystem offset, version 0x0200
  # and the endian indicator 'IM'.
  header = MATLAB_HEADER.ljust(116, b' ') + b'\0' * 8 + b'\x00\x02' + b'IM'
  with path.open('r+b') as f:
    f.write(header)


def sequence_variables(rng: np.random.Generator, sequence: str) -> dict[str, np.ndarray]:
  """The MATLAB-order variables of one sequence's annot_data.mat."""
  valid, activity = (np.asarray(v, np.float64) for v in SEQUENCES[sequence])
  annot3 = fake_sequence(rng, valid.size)
  univ = annot3[:, PELVIS:PELVIS + 1] + UNIVERSAL_SCALE * (annot3 - annot3[:, PELVIS:PELVIS + 1])
  annot2 = project(annot3, INTRINSICS[SEQUENCE_SCENE[sequence]])
  invalid = valid == 0
  if sequence == 'TS2':
    annot2[invalid], annot3[invalid], univ[invalid] = np.nan, np.nan, np.nan
  for frame in NAN_UNIV_FRAMES.get(sequence, ()):
    univ[frame] = np.nan
  return {'valid_frame': valid[None], 'activity_annotation': activity[None],
          'annot2': matlab_pose(annot2), 'annot3': matlab_pose(annot3),
          'univ_annot3': matlab_pose(univ)}


def main(argv):
  del argv
  rng = np.random.default_rng(SEED)
  for sequence in SEQUENCES:
    path = DUMMY_DIR / 'mpi_inf_3dhp_test_set' / sequence / 'annot_data.mat'
    write_v73(path, sequence_variables(rng, sequence))
    print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)
