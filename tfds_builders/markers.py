"""Virtual surface markers: the `markers` dense source of docs/DESIGN.md §2.

Each dense point is a marker fixed in the local frame of the bone of its body part, off
the bone axis, so it moves with the limb's twist and orientation and not only with the
joints; each fine point is a marker fixed near its dense point in the same frame.

Bone frame convention (what `place_markers` expects of `bone_rotations`):
  * Part j owns the bone parent(j) → j; its frame is stored at index j as a rotation
    matrix whose columns are the frame's local axes in world (or camera) coordinates:
    `world_vector = bone_rotations[..., j, :, :] @ local_vector`.
  * Local x runs along the bone, from parent(j) towards j.
  * Local y is an anatomical reference direction perpendicular to the bone, chosen by
    the same rule on both sides of the body (e.g. "anterior in the rest pose"); local
    z = x × y. For bones of the midline (not in a flip pair) this puts y in the sagittal
    plane and z lateral.
  * The root part (parent -1) has no bone; its frame is the pelvis orientation and its
    markers (if a hierarchy gives it any) sit around the root joint.
  With this convention a body and its mirror image have frames related by
  `R_mirrored = M @ R @ diag(1, 1, -1)` (M the world reflection), and the layout below
  negates local z between mirrored parts, so a horizontal flip maps every marker to the
  marker `Hierarchy.flip_permutations` says it maps to. Midline markers lie in their
  bone's x-y plane (z = 0), because the flip maps them to themselves.

Frames from other conventions (e.g. CMU ASF bones, whose direction is a fixed vector in
the bone's own axes) convert with `align_bone_axis`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hipart_jax import skeleton

# Approximate limb radii (meters) per Human3.6M part, i.e. for the bone parent(j) → j.
H36M_BONE_RADII = {
    'pelvis': 0.10, 'r_hip': 0.07, 'r_knee': 0.08, 'r_ankle': 0.05, 'l_hip': 0.07,
    'l_knee': 0.08, 'l_ankle': 0.05, 'spine': 0.12, 'thorax': 0.13, 'neck_nose': 0.05,
    'head': 0.09, 'l_shoulder': 0.05, 'l_elbow': 0.05, 'l_wrist': 0.04,
    'r_shoulder': 0.05, 'r_elbow': 0.05, 'r_wrist': 0.04,
}


def h36m_bone_radii(scale: float = 1.0) -> np.ndarray:
  """[17] limb radii in Human3.6M joint order, meters, times `scale`."""
  return scale * np.array([H36M_BONE_RADII[n] for n in skeleton.H36M_JOINT_NAMES])


@dataclasses.dataclass(frozen=True, eq=False)
class MarkerLayout:
  """Where each dense and fine marker sits in its bone's frame.

  Attributes:
    hierarchy: the hierarchy the layout is for.
    dense_fraction: [D] position along the bone parent(j) → j (0 at the parent).
    dense_offset: [D, 3] offset from that point on the axis, bone-local frame, meters.
    fine_offset: [F, 3] offset from the fine point's dense marker, bone-local frame of
      the dense marker's part, meters.
  """

  hierarchy: skeleton.Hierarchy
  dense_fraction: np.ndarray
  dense_offset: np.ndarray
  fine_offset: np.ndarray

  @property
  def bone_start(self) -> np.ndarray:
    """[D] joint at which each dense marker's bone starts (the part itself for the root)."""
    parents = np.asarray(self.hierarchy.parents)
    part = self.hierarchy.dense_part_array
    return np.where(parents[part] >= 0, parents[part], part)

  @property
  def bone_end(self) -> np.ndarray:
    """[D] joint at which each dense marker's bone ends (its part)."""
    return self.hierarchy.dense_part_array


def mirror_signs(hierarchy: skeleton.Hierarchy) -> np.ndarray:
  """[S] +1 for the first part of each flip pair, -1 for the second, 0 on the midline."""
  signs = np.zeros(hierarchy.num_sparse, np.int32)
  for first, second in hierarchy.sparse_flip_pairs:
    signs[first], signs[second] = 1, -1
  return signs


def make_marker_layout(hierarchy: skeleton.Hierarchy,
                       bone_radii: Sequence[float] | np.ndarray,
                       *, dense_phase: float = 0.0, fine_spread: float = 0.5,
                       fine_phase: float = np.pi / 4) -> MarkerLayout:
  """A deterministic, mirror-symmetric marker layout for any hierarchy.

  The n dense markers of part j sit at fractions (i + 1) / (n + 1) along its bone, on a
  circle of radius `bone_radii[j]` around the axis: at angles dense_phase + 2πi/n
  (a helix) for parts in a flip pair, alternately in front (angle 0, local +y) and
  behind (angle π) for midline parts. The m fine markers of a dense marker sit on a
  circle of radius `fine_spread * bone_radii[j]` around it, at angles
  fine_phase + 2πl/m in the plane spanned by the bone axis and the surface tangent
  (lateral parts) or the outward normal (midline parts, which keeps them in the
  sagittal plane). Mirrored parts negate local z.

  Args:
    hierarchy: the sparse→dense→fine hierarchy.
    bone_radii: [S] radius of each part's limb, meters (see `h36m_bone_radii`).
    dense_phase: angle of the first dense marker of lateral parts, radians from local +y.
    fine_spread: fine-circle radius as a fraction of the limb radius.
    fine_phase: angle of the first fine marker, radians from the bone axis.
  Returns:
    The MarkerLayout.
  """
  radii = np.asarray(bone_radii, np.float64)
  if radii.shape != (hierarchy.num_sparse,) or np.any(radii < 0):
    raise ValueError(f'bone_radii: expected [{hierarchy.num_sparse}] non-negative radii, got '
                     f'{radii.tolist() if radii.ndim <= 1 else radii.shape}')
  hierarchy.flip_permutations()  # Raises unless mirrored parts own equal-sized groups.
  signs = mirror_signs(hierarchy)
  part = hierarchy.dense_part_array
  dense_index = hierarchy.dense_index_in_group()
  dense_count = hierarchy.dense_group_sizes[part]

  fraction = (dense_index + 1.0) / (dense_count + 1.0)
  lateral = signs[part] != 0
  angle = np.where(lateral, dense_phase + 2 * np.pi * dense_index / dense_count,
                   np.pi * (dense_index % 2))
  # Unit radial direction of each dense marker, and the two in-surface directions the
  # fine markers spread along: the bone axis and a second one (tangent or normal).
  normal = np.stack([np.zeros_like(angle), np.cos(angle), np.sin(angle)], -1)
  tangent = np.stack([np.zeros_like(angle), -np.sin(angle), np.cos(angle)], -1)
  second = np.where(lateral[:, None], tangent, normal)
  radius = radii[part]
  dense_offset = radius[:, None] * normal

  parent = hierarchy.fine_parent_array
  fine_index = hierarchy.fine_index_in_group()
  fine_count = hierarchy.fine_group_sizes[parent]
  fine_angle = fine_phase + 2 * np.pi * fine_index / fine_count
  axis = np.array([1.0, 0.0, 0.0])
  fine_offset = (fine_spread * radius[parent])[:, None] * (
      np.cos(fine_angle)[:, None] * axis + np.sin(fine_angle)[:, None] * second[parent])

  # Mirror: the second part of each flip pair negates local z.
  flip_z = np.where(signs < 0, -1.0, 1.0)
  dense_offset[:, 2] *= flip_z[part]
  fine_offset[:, 2] *= flip_z[part[parent]]
  # Midline markers lie exactly in the x-y plane (sin π is not exactly 0).
  dense_offset[~lateral, 2] = 0.0
  fine_offset[~lateral[parent], 2] = 0.0
  return MarkerLayout(hierarchy, fraction, dense_offset, fine_offset)


def place_markers(joints: np.ndarray, bone_rotations: np.ndarray,
                  layout: MarkerLayout) -> tuple[np.ndarray, np.ndarray]:
  """Marker positions for posed bones.

  Args:
    joints: [..., S, 3] sparse joints (any frame: world or camera), meters.
    bone_rotations: [..., S, 3, 3] bone frames in the same coordinates (module
      docstring: index j = bone parent(j) → j, local x along the bone).
    layout: from `make_marker_layout`.
  Returns:
    (dense [..., D, 3], fine [..., F, 3]) in the coordinates of `joints`.
  """
  joints = np.asarray(joints, np.float64)
  rotations = np.asarray(bone_rotations, np.float64)
  num_sparse = layout.hierarchy.num_sparse
  if joints.shape[-2:] != (num_sparse, 3):
    raise ValueError(f'joints: expected [..., {num_sparse}, 3], got {joints.shape}')
  if rotations.shape != joints.shape[:-1] + (3, 3):
    raise ValueError(f'bone_rotations: expected {joints.shape[:-1] + (3, 3)}, got '
                     f'{rotations.shape}')
  start = joints[..., layout.bone_start, :]
  end = joints[..., layout.bone_end, :]
  on_axis = start + layout.dense_fraction[:, None] * (end - start)
  dense_frames = rotations[..., layout.bone_end, :, :]  # [..., D, 3, 3]
  dense = on_axis + np.einsum('...dij,dj->...di', dense_frames, layout.dense_offset)
  parent = layout.hierarchy.fine_parent_array
  fine = dense[..., parent, :] + np.einsum('...fij,fj->...fi', dense_frames[..., parent, :, :],
                                           layout.fine_offset)
  return dense, fine


def _rotation_between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
  """[..., 3, 3] the smallest rotations taking unit vectors `source` to `target`."""
  cross = np.cross(source, target)
  cos = np.sum(source * target, axis=-1)
  # Antiparallel vectors: rotate by π about any axis perpendicular to `source`.
  helper = np.where(np.abs(source[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
  perpendicular = np.cross(source, helper)
  perpendicular /= np.linalg.norm(perpendicular, axis=-1, keepdims=True)
  skew = np.zeros(cross.shape + (3,))
  skew[..., 0, 1], skew[..., 0, 2] = -cross[..., 2], cross[..., 1]
  skew[..., 1, 0], skew[..., 1, 2] = cross[..., 2], -cross[..., 0]
  skew[..., 2, 0], skew[..., 2, 1] = -cross[..., 1], cross[..., 0]
  eye = np.broadcast_to(np.eye(3), skew.shape)
  near_opposite = (cos < -1 + 1e-9)[..., None, None]
  rodrigues = eye + skew + skew @ skew / (1.0 + np.maximum(cos, -1 + 1e-9))[..., None, None]
  half_turn = 2 * perpendicular[..., :, None] * perpendicular[..., None, :] - eye
  return np.where(near_opposite, half_turn, rodrigues)


def align_bone_axis(rotations: np.ndarray, local_directions: np.ndarray) -> np.ndarray:
  """Converts bone frames whose bone direction is a fixed local vector to this module's.

  E.g. CMU ASF: bone j points along `local_directions[j]` in its own axes. Returns
  `rotations @ C_j` with C_j the smallest rotation taking local x to that direction, so
  local x runs along the bone and the twist about it is kept.

  Args:
    rotations: [..., S, 3, 3] bone frames (columns = local axes in world).
    local_directions: [S, 3] bone direction in each bone's local axes (any length > 0).
  Returns:
    [..., S, 3, 3] frames whose local x runs along the bone.
  """
  directions = np.asarray(local_directions, np.float64)
  norms = np.linalg.norm(directions, axis=-1, keepdims=True)
  if np.any(norms < 1e-12):
    raise ValueError('local_directions: every bone direction needs a non-zero length')
  x_axis = np.broadcast_to(np.array([1.0, 0.0, 0.0]), directions.shape)
  return np.asarray(rotations, np.float64) @ _rotation_between(x_axis, directions / norms)


def bone_axis_error(joints: np.ndarray, bone_rotations: np.ndarray,
                    parents: Sequence[int] = skeleton.H36M_PARENTS) -> np.ndarray:
  """[..., S] angle (radians) between each frame's local x and its bone; 0 at the root.

  A check for callers that build frames themselves: a correct frame gives ~0.
  """
  parents = np.asarray(parents)
  joints = np.asarray(joints, np.float64)
  has_bone = parents >= 0
  bones = joints - joints[..., np.where(has_bone, parents, 0), :]
  lengths = np.linalg.norm(bones, axis=-1)
  x_axis = np.asarray(bone_rotations, np.float64)[..., :, 0]
  cos = np.sum(bones * x_axis, -1) / np.maximum(lengths, 1e-12)
  return np.where(has_bone, np.arccos(np.clip(cos, -1.0, 1.0)), 0.0)
