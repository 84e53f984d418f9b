"""A kinematic Human3.6M-17 body: bone lengths, rest pose, joint limits, forward kinematics.

World and body coordinates are right-handed with z up. The body (root) frame has x to
the subject's right, y forward (anterior) and z up; at yaw 0 the subject faces world +y.

Bone frames follow `tfds_builders.markers` (index j = bone parent(j) → j; local x along
the bone; local y = the body's forward direction in the rest pose, made perpendicular to
the bone; local z = x × y). Joint motion is given as anatomical angles per bone
(flexion, abduction, twist) applied in the bone's rest frame, `E = Rz(flexion)
Ry(±abduction) Rx(±twist)`, with abduction and twist negated on the right side so equal
angles on both sides give mirror-image poses:
  flexion > 0   moves the bone forward (hip/shoulder flexion, elbow flexion, forward
                bending of the spine, neck and head); knees flex with flexion < 0;
  abduction > 0 moves a limb away from the midline (raises a clavicle); on the midline
                it bends towards the subject's left;
  twist         rotates the bone about its own axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hipart_jax import skeleton

NAMES = skeleton.H36M_JOINT_NAMES
PARENTS = np.asarray(skeleton.H36M_PARENTS)
FLEXION, ABDUCTION, TWIST = 0, 1, 2

# Approximate mean bone lengths of the Human3.6M training subjects, millimeters, for the
# bone parent(j) → j of each part j (the root has none).
H36M_BONE_LENGTHS_MM = {
    'pelvis': 0.0, 'r_hip': 133.0, 'r_knee': 454.0, 'r_ankle': 450.0, 'l_hip': 133.0,
    'l_knee': 454.0, 'l_ankle': 450.0, 'spine': 234.0, 'thorax': 253.0, 'neck_nose': 115.0,
    'head': 115.0, 'l_shoulder': 151.0, 'l_elbow': 278.0, 'l_wrist': 251.0,
    'r_shoulder': 151.0, 'r_elbow': 278.0, 'r_wrist': 251.0,
}

# Rest-pose bone directions in the body frame (x right, y forward, z up): standing, arms
# hanging. The root's entry is the axis of its own frame (up).
REST_DIRECTIONS = {
    'pelvis': (0, 0, 1), 'r_hip': (1, 0, 0), 'r_knee': (0, 0, -1), 'r_ankle': (0, 0, -1),
    'l_hip': (-1, 0, 0), 'l_knee': (0, 0, -1), 'l_ankle': (0, 0, -1), 'spine': (0, 0, 1),
    'thorax': (0, 0, 1), 'neck_nose': (0, 0.35, 1), 'head': (0, -0.35, 1),
    'l_shoulder': (-1, 0, -0.1), 'l_elbow': (0, 0, -1), 'l_wrist': (0, 0, -1),
    'r_shoulder': (1, 0, -0.1), 'r_elbow': (0, 0, -1), 'r_wrist': (0, 0, -1),
}

# Anatomical ranges, radians: ((flexion), (abduction), (twist)) as (low, high).
JOINT_LIMITS = {
    'pelvis': ((0, 0), (0, 0), (0, 0)),  # The root moves through its own orientation.
    'r_hip': ((0, 0), (0, 0), (0, 0)),  # Pelvis → hip is rigid with the pelvis.
    'l_hip': ((0, 0), (0, 0), (0, 0)),
    'r_knee': ((-0.5, 2.0), (-0.35, 0.8), (-0.6, 0.6)),  # Thigh, moved at the hip.
    'l_knee': ((-0.5, 2.0), (-0.35, 0.8), (-0.6, 0.6)),
    'r_ankle': ((-2.4, 0.0), (0, 0), (-0.3, 0.3)),  # Shin, moved at the knee.
    'l_ankle': ((-2.4, 0.0), (0, 0), (-0.3, 0.3)),
    'spine': ((-0.3, 0.8), (-0.35, 0.35), (-0.5, 0.5)),
    'thorax': ((-0.3, 0.5), (-0.3, 0.3), (-0.5, 0.5)),
    'neck_nose': ((-0.5, 0.6), (-0.4, 0.4), (-0.8, 0.8)),
    'head': ((-0.4, 0.4), (-0.3, 0.3), (-0.3, 0.3)),
    'r_shoulder': ((-0.2, 0.3), (-0.15, 0.35), (0, 0)),  # Clavicle.
    'l_shoulder': ((-0.2, 0.3), (-0.15, 0.35), (0, 0)),
    'r_elbow': ((-0.9, 3.0), (-0.3, 2.8), (-1.2, 1.2)),  # Upper arm, moved at the shoulder.
    'l_elbow': ((-0.9, 3.0), (-0.3, 2.8), (-1.2, 1.2)),
    'r_wrist': ((0.0, 2.6), (0, 0), (-1.4, 1.4)),  # Forearm, moved at the elbow.
    'l_wrist': ((0.0, 2.6), (0, 0), (-1.4, 1.4)),
}


def joint_limits() -> np.ndarray:
  """[17, 3, 2] (low, high) per part and degree of freedom, radians."""
  return np.array([JOINT_LIMITS[name] for name in NAMES], np.float64)


def sides() -> np.ndarray:
  """[17] +1 for left parts, -1 for right parts, 0 on the midline."""
  return np.array([1 if n.startswith('l_') else -1 if n.startswith('r_') else 0
                   for n in NAMES], np.int32)


def _rest_frame(direction: np.ndarray) -> np.ndarray:
  """[3, 3] bone frame with local x along `direction` and local y forward."""
  x_axis = direction / np.linalg.norm(direction)
  forward = np.array([0.0, 1.0, 0.0])
  y_axis = forward - np.dot(forward, x_axis) * x_axis
  y_axis /= np.linalg.norm(y_axis)
  return np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=-1)


def axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
  """[..., 3, 3] rotations by `angle` [...] radians about coordinate axis 0, 1 or 2."""
  angle = np.asarray(angle, np.float64)
  cos, sin = np.cos(angle), np.sin(angle)
  i, j = [(1, 2), (2, 0), (0, 1)][axis]
  out = np.zeros(angle.shape + (3, 3))
  out[..., axis, axis] = 1.0
  out[..., i, i], out[..., j, j] = cos, cos
  out[..., i, j], out[..., j, i] = -sin, sin
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class Body:
  """One subject's skeleton.

  Attributes:
    bone_lengths: [17] meters, bone parent(j) → j (0 for the root).
    rest_frames: [17, 3, 3] bone frames of the rest pose in the body frame.
    scale: the subject's overall size relative to the Human3.6M mean.
  """

  bone_lengths: np.ndarray
  rest_frames: np.ndarray
  scale: float


def make_body(scale: float = 1.0, bone_scales: np.ndarray | None = None) -> Body:
  """The mean Human3.6M body times `scale` (and optional [17] per-bone factors)."""
  lengths = np.array([H36M_BONE_LENGTHS_MM[n] for n in NAMES]) / 1000.0 * scale
  if bone_scales is not None:
    lengths = lengths * np.asarray(bone_scales, np.float64)
  frames = np.stack([_rest_frame(np.asarray(REST_DIRECTIONS[n], np.float64)) for n in NAMES])
  return Body(lengths, frames, float(scale))


def random_body(rng: np.random.Generator, scale_range: tuple[float, float],
                bone_jitter: float) -> Body:
  """A subject: overall scale uniform in `scale_range`, each bone pair ±`bone_jitter`.

  Left and right bones get the same factor, so the body stays mirror-symmetric.
  """
  scale = rng.uniform(*scale_range)
  factors = rng.uniform(1 - bone_jitter, 1 + bone_jitter, size=len(NAMES))
  for right, left in skeleton.H36M_FLIP_PAIRS:
    factors[left] = factors[right]
  return make_body(scale, factors)


def anatomical_rotations(angles: np.ndarray) -> np.ndarray:
  """[..., 17, 3] (flexion, abduction, twist) → [..., 17, 3, 3] rotations in bone frames."""
  signs = np.where(sides() < 0, -1.0, 1.0)
  return (axis_rotation(2, angles[..., FLEXION])
          @ axis_rotation(1, signs * angles[..., ABDUCTION])
          @ axis_rotation(0, signs * angles[..., TWIST]))


def clip_to_limits(angles: np.ndarray) -> np.ndarray:
  """[..., 17, 3] angles clipped to JOINT_LIMITS."""
  limits = joint_limits()
  return np.clip(angles, limits[..., 0], limits[..., 1])


def forward_kinematics(body: Body, root_position: np.ndarray, root_orientation: np.ndarray,
                       angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Joint positions and bone frames.

  Args:
    body: the subject.
    root_position: [T, 3] pelvis position, world meters.
    root_orientation: [T, 3, 3] body frame (columns: right, forward, up) in world.
    angles: [T, 17, 3] anatomical angles per part (radians; not clipped here).
  Returns:
    joints: [T, 17, 3] world meters.
    bone_frames: [T, 17, 3, 3] world frames of the bones (markers convention); index 0
      is the pelvis frame (local x up, y forward).
  """
  num_frames = root_position.shape[0]
  if root_orientation.shape != (num_frames, 3, 3) or angles.shape != (num_frames, 17, 3):
    raise ValueError(f'forward_kinematics: root_orientation {root_orientation.shape} and '
                     f'angles {angles.shape} must be [{num_frames}, 3, 3] and '
                     f'[{num_frames}, 17, 3]')
  local = anatomical_rotations(angles)  # [T, 17, 3, 3] in rest bone frames.
  rest = body.rest_frames
  # Accumulated rotation (relative to the rest pose) of each bone, in world.
  accumulated = np.zeros((num_frames, 17, 3, 3))
  joints = np.zeros((num_frames, 17, 3))
  accumulated[:, 0] = root_orientation
  joints[:, 0] = root_position
  for j in skeleton.center_to_periphery_order(skeleton.H36M_PARENTS)[1:]:
    parent = PARENTS[j]
    rotation_at_joint = rest[j] @ local[:, j] @ rest[j].T
    accumulated[:, j] = accumulated[:, parent] @ rotation_at_joint
    joints[:, j] = joints[:, parent] + body.bone_lengths[j] * (accumulated[:, j] @ rest[j][:, 0])
  bone_frames = accumulated @ rest
  return joints, bone_frames
