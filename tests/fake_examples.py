"""Synthetic schema examples for tests (docs/ARCHITECTURE.md, "Dataset feature schema").

`fake_examples(n, hierarchy, seed)` returns plain dicts shaped like what
`tfds.data_source` yields for a pose builder: a randomly perturbed and turned standing
person about 5 m in front of a pinhole camera, projected into a 1000x1000 image. Dense
points lie on the bone from the owning joint's parent to the joint (root-owned ones near
the root), fine points near their dense point, so the data are plausible for any
hierarchy over the 17 Human3.6M joints.
"""

from __future__ import annotations

import numpy as np

from hipart_jax import skeleton

IMAGE_SIZE = (1000, 1000)
FOCAL = 1145.0
DEPTH = 5.0
ACTION_NAMES = ('walk', 'wave', 'squat', 'reach')
INPUT_SOURCES = ('gt', 'cpn')
# A standing person in camera axes (x right, y down, z forward), meters, pelvis at 0.
TEMPLATE = np.array([
    [0.00, 0.00, 0.0], [-0.13, 0.00, 0.0], [-0.13, 0.45, 0.0], [-0.13, 0.88, 0.0],
    [0.13, 0.00, 0.0], [0.13, 0.45, 0.0], [0.13, 0.88, 0.0], [0.00, -0.23, 0.0],
    [0.00, -0.48, 0.0], [0.00, -0.58, -0.05], [0.00, -0.70, 0.0], [0.16, -0.46, 0.0],
    [0.30, -0.25, 0.0], [0.38, -0.03, 0.0], [-0.16, -0.46, 0.0], [-0.30, -0.25, 0.0],
    [-0.38, -0.03, 0.0]], np.float32)


def project(points: np.ndarray) -> np.ndarray:
  """Pinhole projection of camera points [..., N, 3] to pixels [..., N, 2]."""
  center = np.asarray(IMAGE_SIZE, np.float32) / 2
  return (FOCAL * points[..., :2] / points[..., 2:] + center).astype(np.float32)


def _levels(rng: np.random.Generator, sparse: np.ndarray, hierarchy: skeleton.Hierarchy
            ) -> tuple[np.ndarray, np.ndarray]:
  """Dense [D, 3] points on their part's bone and fine [F, 3] points around them."""
  parents = np.asarray(hierarchy.parents)
  dense = np.zeros((hierarchy.num_dense, 3), np.float32)
  index_in_group = hierarchy.dense_index_in_group()
  sizes = hierarchy.dense_group_sizes
  for k, part in enumerate(hierarchy.dense_part):
    start = sparse[parents[part]] if parents[part] >= 0 else sparse[part]
    fraction = (index_in_group[k] + 1) / (sizes[part] + 1)
    dense[k] = (1 - fraction) * start + fraction * sparse[part]
  dense += rng.normal(0.0, 0.02, dense.shape).astype(np.float32)
  fine = dense[hierarchy.fine_parent_array] + rng.normal(
      0.0, 0.03, (hierarchy.num_fine, 3)).astype(np.float32)
  return dense, fine


def fake_example(rng: np.random.Generator, hierarchy: skeleton.Hierarchy,
                 frame: int) -> dict:
  """One schema example (numpy arrays; Text as bytes, ClassLabel/int as Python ints)."""
  if hierarchy.num_sparse != len(TEMPLATE):
    raise ValueError(f'fake examples need {len(TEMPLATE)} sparse joints, got '
                     f'{hierarchy.num_sparse}')
  angle = rng.uniform(-np.pi, np.pi)
  turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                   [-np.sin(angle), 0, np.cos(angle)]], np.float32)
  body = TEMPLATE + rng.normal(0.0, 0.04, TEMPLATE.shape).astype(np.float32)
  root = np.array([rng.normal(0, 0.4), rng.normal(0, 0.2), DEPTH + rng.normal(0, 0.5)],
                  np.float32)
  sparse = (body @ turn.T + root).astype(np.float32)
  dense, fine = _levels(rng, sparse, hierarchy)
  sparse_px = project(sparse)
  cpn = sparse_px + rng.normal(0.0, 4.0, sparse_px.shape).astype(np.float32)
  cpn_confidence = rng.uniform(0.3, 1.0, (len(sparse), 1)).astype(np.float32)
  ones = np.ones((len(sparse), 1), np.float32)
  return dict(
      subject=b'S1',
      action=int(rng.integers(len(ACTION_NAMES))),
      camera=b'cam0',
      frame=frame,
      image_size=np.asarray(IMAGE_SIZE, np.int32),
      camera_params=dict(
          focal=np.full(2, FOCAL, np.float32),
          center=np.asarray(IMAGE_SIZE, np.float32) / 2,
          radial=np.zeros(3, np.float32), tangential=np.zeros(2, np.float32),
          rotation=np.array([1, 0, 0, 0], np.float32), translation=np.zeros(3, np.float32)),
      keypoints_2d=dict(gt=np.concatenate([sparse_px, ones], -1),
                        cpn=np.concatenate([cpn, cpn_confidence], -1)),
      sparse_2d=sparse_px, dense_2d=project(dense), fine_2d=project(fine),
      sparse_3d=sparse, dense_3d=dense, fine_3d=fine,
  )


def fake_examples(n: int, hierarchy: skeleton.Hierarchy | None = None,
                  seed: int = 0) -> list[dict]:
  """`n` schema examples, deterministic in `seed` (default hierarchy when None)."""
  hierarchy = skeleton.default_hierarchy() if hierarchy is None else hierarchy
  rng = np.random.default_rng(seed)
  return [fake_example(rng, hierarchy, frame) for frame in range(n)]
