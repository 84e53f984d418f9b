"""Joint layouts, kinematic trees, the sparse→dense→fine hierarchy and 2D keypoint formats.

Most of its length is tables (joint names, keypoint formats), kept beside the code that
reads them.

Everything here is plain data (tuples and numpy arrays) so it can be hashed, used as a
static argument under `jax.jit`, and stored in dataset metadata.

Terms used throughout the project:
  sparse: the 17 Human3.6M joints (one per body part; part i is owned by joint i).
  dense:  `Hierarchy.num_dense` points (48 by default); `dense_part[k]` is the sparse
          joint (body part) that dense point k belongs to.
  fine:   `Hierarchy.num_fine` points (96 by default); `fine_parent[m]` is the dense
          point that fine point m belongs to.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------------------
# Human3.6M-17 (the joint order of VideoPose3D-format files).

H36M_JOINT_NAMES = (
    'pelvis', 'r_hip', 'r_knee', 'r_ankle', 'l_hip', 'l_knee', 'l_ankle', 'spine',
    'thorax', 'neck_nose', 'head', 'l_shoulder', 'l_elbow', 'l_wrist', 'r_shoulder',
    'r_elbow', 'r_wrist')
H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
# Left/right pairs; flipping an image horizontally swaps the joints of each pair.
H36M_FLIP_PAIRS = ((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16))
NUM_JOINTS = len(H36M_JOINT_NAMES)
ROOT = 0
# The three levels of a hierarchical pose, coarse to fine.
LEVELS = ('sparse', 'dense', 'fine')


def joint_depths(parents: Sequence[int]) -> np.ndarray:
  """Number of bones between each joint and the root of its kinematic tree.

  Args:
    parents: parent index per joint, -1 for the root; any order (parents need not
      precede children).
  Returns:
    [J] int array of hops from the root.
  """
  parents = tuple(int(p) for p in parents)
  depths = np.full(len(parents), -1, dtype=np.int32)
  for joint in range(len(parents)):
    chain, node = [], joint
    while node != -1 and depths[node] < 0:
      if node in chain:
        raise ValueError(f'parents {parents} contain a cycle through joint {node}')
      chain.append(node)
      node = parents[node]
      if node >= len(parents) or node < -1:
        raise ValueError(f'parents {parents}: parent index {node} out of range')
    base = -1 if node == -1 else depths[node]
    for offset, chained in enumerate(reversed(chain)):
      depths[chained] = base + 1 + offset
  return depths


def center_to_periphery_rings(parents: Sequence[int] = H36M_PARENTS) -> tuple[tuple[int, ...], ...]:
  """Joints grouped by kinematic distance from the root, nearest first.

  For Human3.6M-17: ((0,), (1, 4, 7), (2, 5, 8), (3, 6, 9, 11, 14), (10, 12, 15), (13, 16)).
  """
  depths = joint_depths(parents)
  return tuple(tuple(int(j) for j in np.flatnonzero(depths == d))
               for d in range(int(depths.max()) + 1))


def center_to_periphery_order(parents: Sequence[int] = H36M_PARENTS) -> tuple[int, ...]:
  """All joints, ring by ring from the root outwards (index order within a ring)."""
  return tuple(j for ring in center_to_periphery_rings(parents) for j in ring)


def flip_permutation(num_joints: int = NUM_JOINTS,
                     pairs: Sequence[tuple[int, int]] = H36M_FLIP_PAIRS) -> np.ndarray:
  """[J] permutation such that `flipped[..., perm, :]` swaps left and right joints."""
  perm = np.arange(num_joints)
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return perm


# --------------------------------------------------------------------------------------
# The hierarchy.


def _group(owner: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
  """Members of each group, padded with -1: ([G, max_size] indices, [G] sizes)."""
  sizes = np.bincount(owner, minlength=num_groups).astype(np.int32)
  members = np.full((num_groups, max(int(sizes.max(initial=0)), 1)), -1, dtype=np.int32)
  for g in range(num_groups):
    idx = np.flatnonzero(owner == g)
    members[g, :len(idx)] = idx
  return members, sizes


@dataclasses.dataclass(frozen=True)
class Hierarchy:
  """The sparse→dense→fine point hierarchy, as data.

  Attributes:
    dense_part: [D] for each dense point, the sparse joint (body part) it belongs to.
    fine_parent: [F] for each fine point, the dense point it belongs to.
    parents: [S] the sparse kinematic tree (Human3.6M-17 by default).
    sparse_flip_pairs: left/right sparse joint pairs.

  Group sizes may vary (a part may own no dense point, e.g. the root); models pad each
  group to the largest one and mask (`dense_groups`, `fine_groups`). Hashable, so a
  hierarchy can be a static argument or a Flax module attribute.
  """

  dense_part: tuple[int, ...]
  fine_parent: tuple[int, ...]
  parents: tuple[int, ...] = H36M_PARENTS
  sparse_flip_pairs: tuple[tuple[int, int], ...] = H36M_FLIP_PAIRS

  def __post_init__(self):
    for name in ('dense_part', 'fine_parent', 'parents'):
      value = getattr(self, name)
      array = np.asarray(value)
      if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f'Hierarchy.{name} must be a 1-D sequence of ints, got {value!r}')
      object.__setattr__(self, name, tuple(int(v) for v in array))
    object.__setattr__(self, 'sparse_flip_pairs',
                       tuple((int(a), int(b)) for a, b in self.sparse_flip_pairs))
    joint_depths(self.parents)  # Raises on cycles and out-of-range parents.
    if not self.dense_part:
      raise ValueError('Hierarchy.dense_part is empty: a hierarchy needs dense points')
    if not self.fine_parent:
      raise ValueError('Hierarchy.fine_parent is empty: a hierarchy needs fine points')
    bad = [(k, p) for k, p in enumerate(self.dense_part) if not 0 <= p < self.num_sparse]
    if bad:
      raise ValueError(f'Hierarchy.dense_part: (dense point, part) {bad[:5]} out of range '
                       f'[0, {self.num_sparse})')
    bad = [(m, p) for m, p in enumerate(self.fine_parent) if not 0 <= p < self.num_dense]
    if bad:
      raise ValueError(f'Hierarchy.fine_parent: (fine point, dense parent) {bad[:5]} out of '
                       f'range [0, {self.num_dense})')
    for a, b in self.sparse_flip_pairs:
      if not (0 <= a < self.num_sparse and 0 <= b < self.num_sparse):
        raise ValueError(f'Hierarchy.sparse_flip_pairs: pair {(a, b)} out of range')

  @property
  def num_sparse(self) -> int:
    return len(self.parents)

  @property
  def num_dense(self) -> int:
    return len(self.dense_part)

  @property
  def num_fine(self) -> int:
    return len(self.fine_parent)

  @property
  def dense_part_array(self) -> np.ndarray:
    """[D] int32."""
    return np.asarray(self.dense_part, dtype=np.int32)

  @property
  def fine_parent_array(self) -> np.ndarray:
    """[F] int32."""
    return np.asarray(self.fine_parent, dtype=np.int32)

  @property
  def fine_part(self) -> np.ndarray:
    """[F] the sparse joint (body part) of each fine point."""
    return self.dense_part_array[self.fine_parent_array]

  @property
  def dense_group_sizes(self) -> np.ndarray:
    """[S] number of dense points of each part (0 allowed)."""
    return _group(self.dense_part_array, self.num_sparse)[1]

  @property
  def fine_group_sizes(self) -> np.ndarray:
    """[D] number of fine points of each dense point (0 allowed)."""
    return _group(self.fine_parent_array, self.num_dense)[1]

  @property
  def dense_groups(self) -> tuple[np.ndarray, np.ndarray]:
    """([S, Gd] dense indices per part padded with -1, [S, Gd] bool mask)."""
    members, _ = _group(self.dense_part_array, self.num_sparse)
    return members, members >= 0

  @property
  def fine_groups(self) -> tuple[np.ndarray, np.ndarray]:
    """([D, Gf] fine indices per dense point padded with -1, [D, Gf] bool mask)."""
    members, _ = _group(self.fine_parent_array, self.num_dense)
    return members, members >= 0

  def dense_index_in_group(self) -> np.ndarray:
    """[D] position of each dense point within its part's group."""
    members, mask = self.dense_groups
    out = np.zeros(self.num_dense, np.int32)
    out[members[mask]] = np.nonzero(mask)[1]
    return out

  def fine_index_in_group(self) -> np.ndarray:
    """[F] position of each fine point within its dense point's group."""
    members, mask = self.fine_groups
    out = np.zeros(self.num_fine, np.int32)
    out[members[mask]] = np.nonzero(mask)[1]
    return out

  def flip_permutations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right permutations ([S], [D], [F]) for a horizontal flip.

    Dense point k of part p maps to the dense point with the same in-group position in
    the mirrored part; likewise for fine points. Raises if mirrored groups differ in size
    (the hierarchy is not left/right symmetric and flip augmentation is not defined).
    """
    sparse = flip_permutation(self.num_sparse, self.sparse_flip_pairs)
    dense_members, _ = self.dense_groups
    dense_sizes = self.dense_group_sizes
    if np.any(dense_sizes != dense_sizes[sparse]):
      raise ValueError('Hierarchy is not left/right symmetric: mirrored parts own '
                       f'different numbers of dense points {dense_sizes.tolist()}')
    dense = dense_members[sparse[self.dense_part_array], self.dense_index_in_group()]
    fine_members, _ = self.fine_groups
    fine_sizes = self.fine_group_sizes
    if np.any(fine_sizes != fine_sizes[dense]):
      raise ValueError('Hierarchy is not left/right symmetric: mirrored dense points own '
                       f'different numbers of fine points {fine_sizes.tolist()}')
    fine = fine_members[dense[self.fine_parent_array], self.fine_index_in_group()]
    return sparse, dense.astype(np.int32), fine.astype(np.int32)

  @classmethod
  def from_maps(cls, dense_part: Sequence[int], fine_parent: Sequence[int],
                parents: Sequence[int] = H36M_PARENTS,
                sparse_flip_pairs: Sequence[tuple[int, int]] = H36M_FLIP_PAIRS) -> 'Hierarchy':
    """A user hierarchy (e.g. points picked from an SMPL mesh), validated."""
    return cls(tuple(dense_part), tuple(fine_parent), tuple(parents),
               tuple(tuple(p) for p in sparse_flip_pairs))

  def to_json(self) -> dict:
    return dict(dense_part=list(self.dense_part), fine_parent=list(self.fine_parent),
                parents=list(self.parents),
                sparse_flip_pairs=[list(p) for p in self.sparse_flip_pairs])

  @classmethod
  def from_json(cls, data: Mapping) -> 'Hierarchy':
    return cls.from_maps(data['dense_part'], data['fine_parent'], data['parents'],
                         [tuple(p) for p in data['sparse_flip_pairs']])


def default_hierarchy(dense_per_bone: int = 3, fine_per_dense: int = 2,
                      parents: Sequence[int] = H36M_PARENTS) -> Hierarchy:
  """docs/DESIGN.md §2: each non-root joint j owns `dense_per_bone` dense points on the bone
  parent(j)→j, each dense point owns `fine_per_dense` fine points; the root owns none.
  For Human3.6M-17 with the defaults: 48 dense and 96 fine points."""
  owners = [j for j, p in enumerate(parents) if p >= 0]
  dense_part = tuple(j for j in owners for _ in range(dense_per_bone))
  fine_parent = tuple(k for k in range(len(dense_part)) for _ in range(fine_per_dense))
  return Hierarchy(dense_part, fine_parent, tuple(parents))


# --------------------------------------------------------------------------------------
# 2D keypoint formats → Human3.6M-17.
#
# Each format is a table: for every Human3.6M joint, a weighted combination of the
# format's keypoints. Coordinates convert as `h36m = weights @ keypoints`; a converted
# joint's confidence is the minimum confidence of the keypoints it uses (a joint built
# from a missing keypoint is missing).


@dataclasses.dataclass(frozen=True)
class KeypointFormat:
  """A 2D keypoint layout and its conversion to Human3.6M-17.

  Attributes:
    name: format name, e.g. 'coco17'.
    keypoint_names: the layout's keypoints, in file order.
    to_h36m: for each Human3.6M joint name, {keypoint name: weight}.
  """

  name: str
  keypoint_names: tuple[str, ...]
  to_h36m: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]

  def __post_init__(self):
    joints = [joint for joint, _ in self.to_h36m]
    if sorted(joints) != sorted(H36M_JOINT_NAMES):
      raise ValueError(f'{self.name}: conversion must define every Human3.6M joint, '
                       f'got {joints}')
    for joint, terms in self.to_h36m:
      unknown = [k for k, _ in terms if k not in self.keypoint_names]
      if unknown:
        raise ValueError(f'{self.name}: joint {joint} uses unknown keypoints {unknown}')
      total = sum(w for _, w in terms)
      if abs(total - 1.0) > 1e-6:
        raise ValueError(f'{self.name}: weights of joint {joint} sum to {total}, not 1')

  @property
  def num_keypoints(self) -> int:
    return len(self.keypoint_names)

  @property
  def weights(self) -> np.ndarray:
    """[17, K] float32 conversion matrix, rows in Human3.6M order."""
    table = dict(self.to_h36m)
    out = np.zeros((NUM_JOINTS, self.num_keypoints), np.float32)
    for j, joint in enumerate(H36M_JOINT_NAMES):
      for keypoint, weight in table[joint]:
        out[j, self.keypoint_names.index(keypoint)] += weight
    return out

  def convert(self, keypoints: np.ndarray, confidence: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Converts keypoints of this format to Human3.6M-17.

    Args:
      keypoints: [..., K, 2] coordinates in this format's order.
      confidence: [..., K] per-keypoint confidence (0 = missing); all ones if None.
    Returns:
      ([..., 17, 2] coordinates, [..., 17] confidence).
    """
    keypoints = np.asarray(keypoints, np.float32)
    if keypoints.shape[-2:] != (self.num_keypoints, 2):
      raise ValueError(f'{self.name}: expected keypoints [..., {self.num_keypoints}, 2], '
                       f'got shape {keypoints.shape}')
    if confidence is None:
      confidence = np.ones(keypoints.shape[:-1], np.float32)
    confidence = np.asarray(confidence, np.float32)
    if confidence.shape != keypoints.shape[:-1]:
      raise ValueError(f'{self.name}: confidence shape {confidence.shape} does not match '
                       f'keypoints {keypoints.shape}')
    weights = self.weights
    used = weights != 0  # [17, K]
    coords = np.einsum('jk,...kc->...jc', weights, keypoints)
    masked = np.where(used, confidence[..., None, :], np.inf)  # [..., 17, K]
    return coords.astype(np.float32), masked.min(axis=-1).astype(np.float32)


def _mid(*names: str) -> tuple[tuple[str, float], ...]:
  return tuple((n, 1.0 / len(names)) for n in names)


def _one(name: str) -> tuple[tuple[str, float], ...]:
  return ((name, 1.0),)


def _limbs(l_hip, r_hip, l_knee, r_knee, l_ankle, r_ankle, l_shoulder, r_shoulder,
           l_elbow, r_elbow, l_wrist, r_wrist):
  """Table rows shared by every format that names hips, shoulders and limbs."""
  return (
      ('pelvis', _mid(l_hip, r_hip)),
      ('r_hip', _one(r_hip)), ('r_knee', _one(r_knee)), ('r_ankle', _one(r_ankle)),
      ('l_hip', _one(l_hip)), ('l_knee', _one(l_knee)), ('l_ankle', _one(l_ankle)),
      # Spine: midway between pelvis (mid-hips) and thorax (mid-shoulders).
      ('spine', _mid(l_hip, r_hip, l_shoulder, r_shoulder)),
      ('l_shoulder', _one(l_shoulder)), ('l_elbow', _one(l_elbow)),
      ('l_wrist', _one(l_wrist)), ('r_shoulder', _one(r_shoulder)),
      ('r_elbow', _one(r_elbow)), ('r_wrist', _one(r_wrist)))


# COCO-17 (also the first 17 keypoints of Halpe-26). Thorax = mid-shoulders; the
# Human3.6M "neck/nose" joint = the nose; "head" (top of the head) = the mean of eyes and
# ears, the nearest face points to the head centre that every COCO detector outputs.
COCO17 = KeypointFormat(
    name='coco17',
    keypoint_names=('nose', 'l_eye', 'r_eye', 'l_ear', 'r_ear', 'l_shoulder',
                    'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist', 'r_wrist', 'l_hip',
                    'r_hip', 'l_knee', 'r_knee', 'l_ankle', 'r_ankle'),
    to_h36m=_limbs('l_hip', 'r_hip', 'l_knee', 'r_knee', 'l_ankle', 'r_ankle',
                   'l_shoulder', 'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist',
                   'r_wrist') + (
        ('thorax', _mid('l_shoulder', 'r_shoulder')),
        ('neck_nose', _one('nose')),
        ('head', _mid('l_eye', 'r_eye', 'l_ear', 'r_ear'))),
)

# Halpe-26 (AlphaPose): COCO-17 followed by head top, neck, hip centre, big toes, small
# toes and heels. Uses the annotated head top, neck-based thorax and hip centre.
HALPE26 = KeypointFormat(
    name='halpe26',
    keypoint_names=COCO17.keypoint_names + (
        'head_top', 'neck', 'hip', 'l_big_toe', 'r_big_toe', 'l_small_toe',
        'r_small_toe', 'l_heel', 'r_heel'),
    to_h36m=tuple((j, t) for j, t in _limbs(
        'l_hip', 'r_hip', 'l_knee', 'r_knee', 'l_ankle', 'r_ankle', 'l_shoulder',
        'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist', 'r_wrist') if j != 'pelvis') + (
        ('pelvis', _one('hip')),
        ('thorax', _one('neck')),
        ('neck_nose', _one('nose')),
        ('head', _one('head_top'))),
)

# OpenPose COCO-18: nose, neck, right arm, left arm, right leg, left leg, eyes, ears.
OPENPOSE_COCO18 = KeypointFormat(
    name='openpose_coco18',
    keypoint_names=('nose', 'neck', 'r_shoulder', 'r_elbow', 'r_wrist', 'l_shoulder',
                    'l_elbow', 'l_wrist', 'r_hip', 'r_knee', 'r_ankle', 'l_hip', 'l_knee',
                    'l_ankle', 'r_eye', 'l_eye', 'r_ear', 'l_ear'),
    to_h36m=_limbs('l_hip', 'r_hip', 'l_knee', 'r_knee', 'l_ankle', 'r_ankle',
                   'l_shoulder', 'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist',
                   'r_wrist') + (
        ('thorax', _one('neck')),
        ('neck_nose', _one('nose')),
        ('head', _mid('l_eye', 'r_eye', 'l_ear', 'r_ear'))),
)

# OpenPose BODY_25: COCO-18 order with mid-hip inserted at 8, then feet.
OPENPOSE_BODY25 = KeypointFormat(
    name='openpose_body25',
    keypoint_names=('nose', 'neck', 'r_shoulder', 'r_elbow', 'r_wrist', 'l_shoulder',
                    'l_elbow', 'l_wrist', 'mid_hip', 'r_hip', 'r_knee', 'r_ankle', 'l_hip',
                    'l_knee', 'l_ankle', 'r_eye', 'l_eye', 'r_ear', 'l_ear', 'l_big_toe',
                    'l_small_toe', 'l_heel', 'r_big_toe', 'r_small_toe', 'r_heel'),
    to_h36m=tuple((j, t) for j, t in _limbs(
        'l_hip', 'r_hip', 'l_knee', 'r_knee', 'l_ankle', 'r_ankle', 'l_shoulder',
        'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist', 'r_wrist') if j != 'pelvis') + (
        ('pelvis', _one('mid_hip')),
        ('thorax', _one('neck')),
        ('neck_nose', _one('nose')),
        ('head', _mid('l_eye', 'r_eye', 'l_ear', 'r_ear'))),
)

KEYPOINT_FORMATS = {f.name: f for f in (COCO17, HALPE26, OPENPOSE_COCO18, OPENPOSE_BODY25)}


def coco_to_h36m(keypoints: np.ndarray, confidence: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """COCO-17 [..., 17, 2] (+ [..., 17] confidence) → Human3.6M-17 (coords, confidence)."""
  return COCO17.convert(keypoints, confidence)
