"""SMPL: joint layout, the SMPL-24 → Human3.6M-17 rule and the body model's forward pass.

`SMPL_TO_H36M` maps the 24 SMPL joints stored in 3DPW (`jointPositions`) to the 17
Human3.6M joints. SMPL has no joints at the Human3.6M thorax, nose or head top, so three
rows are approximations (the standard alternative, mesh vertices through the Human3.6M
joint regressor, is `regress_joints`):

| Human3.6M joint | SMPL joint(s) | note |
|---|---|---|
| pelvis | pelvis | SMPL's pelvis sits a few cm above the hip centre |
| r/l hip, knee, ankle | r/l hip, knee, ankle | direct |
| spine | spine2 | Human3.6M's spine is about halfway up the torso, as spine2 is |
| thorax | mean of l/r shoulder | approximation: Human3.6M's thorax is between the shoulders |
| neck/nose | neck | approximation: SMPL's neck is lower than the nose |
| head | head | approximation: SMPL's head joint is the head centre, not its top |
| shoulders, elbows, wrists | the same SMPL joints | direct |

`smpl_forward` is the SMPL linear-blend-skinning model (Loper et al., SIGGRAPH Asia 2015):
shape blend shapes, joint regression, pose blend shapes from the rotation matrices
(Rodrigues), the kinematic chain and skinning. Model files are `.npz` archives of plain
arrays (see `SmplModel.from_npz`); the official `.pkl` files hold chumpy objects and
scipy matrices that a restricted unpickler refuses, so convert them once (README).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from etils import epath
import numpy as np

from hipart_jax import skeleton

SMPL_JOINT_NAMES = (
    'pelvis', 'l_hip', 'r_hip', 'spine1', 'l_knee', 'r_knee', 'spine2', 'l_ankle', 'r_ankle',
    'spine3', 'l_foot', 'r_foot', 'neck', 'l_collar', 'r_collar', 'head', 'l_shoulder',
    'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist', 'r_wrist', 'l_hand', 'r_hand')
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20,
                21)
NUM_SMPL_JOINTS = len(SMPL_JOINT_NAMES)

# Human3.6M joint → {SMPL joint: weight} (the table in the module docstring).
SMPL_TO_H36M = {
    'pelvis': {'pelvis': 1.0},
    'r_hip': {'r_hip': 1.0}, 'r_knee': {'r_knee': 1.0}, 'r_ankle': {'r_ankle': 1.0},
    'l_hip': {'l_hip': 1.0}, 'l_knee': {'l_knee': 1.0}, 'l_ankle': {'l_ankle': 1.0},
    'spine': {'spine2': 1.0},
    'thorax': {'l_shoulder': 0.5, 'r_shoulder': 0.5},
    'neck_nose': {'neck': 1.0},
    'head': {'head': 1.0},
    'l_shoulder': {'l_shoulder': 1.0}, 'l_elbow': {'l_elbow': 1.0},
    'l_wrist': {'l_wrist': 1.0},
    'r_shoulder': {'r_shoulder': 1.0}, 'r_elbow': {'r_elbow': 1.0},
    'r_wrist': {'r_wrist': 1.0},
}


def smpl_to_h36m_matrix() -> np.ndarray:
  """[17, 24] weights: `h36m_joints = W @ smpl_joints`."""
  weights = np.zeros((skeleton.NUM_JOINTS, NUM_SMPL_JOINTS), np.float64)
  for j, name in enumerate(skeleton.H36M_JOINT_NAMES):
    for smpl_name, weight in SMPL_TO_H36M[name].items():
      weights[j, SMPL_JOINT_NAMES.index(smpl_name)] = weight
  return weights


def smpl_to_h36m(joints: np.ndarray) -> np.ndarray:
  """[..., 24, 3] SMPL joints → [..., 17, 3] Human3.6M joints by the table."""
  joints = np.asarray(joints)
  if joints.shape[-2:] != (NUM_SMPL_JOINTS, 3):
    raise ValueError(f'expected SMPL joints [..., 24, 3], got {joints.shape}')
  return np.einsum('hs,...sc->...hc', smpl_to_h36m_matrix(), joints)


@dataclasses.dataclass(frozen=True, eq=False)
class SmplModel:
  """The arrays of an SMPL body model.

  Attributes:
    v_template: [V, 3] rest vertices, meters.
    shapedirs: [V, 3, B] shape blend shapes.
    posedirs: [V, 3, 9 (J - 1)] pose blend shapes.
    joint_regressor: [J, V] rest joints from vertices.
    weights: [V, J] skinning weights.
    parents: [J] kinematic tree (-1 at the root).
  """
  v_template: np.ndarray
  shapedirs: np.ndarray
  posedirs: np.ndarray
  joint_regressor: np.ndarray
  weights: np.ndarray
  parents: tuple[int, ...]

  def __post_init__(self):
    num_vertices, num_joints = self.v_template.shape[0], len(self.parents)
    expected = {
        'v_template': (num_vertices, 3),
        'shapedirs': (num_vertices, 3, self.shapedirs.shape[-1]),
        'posedirs': (num_vertices, 3, 9 * (num_joints - 1)),
        'joint_regressor': (num_joints, num_vertices),
        'weights': (num_vertices, num_joints),
    }
    for name, shape in expected.items():
      if getattr(self, name).shape != shape:
        raise ValueError(f'SMPL model: {name} has shape {getattr(self, name).shape}, '
                         f'expected {shape}')

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, np.ndarray], name: str = 'SMPL model'
                  ) -> 'SmplModel':
    """From the fields of an SMPL model file: v_template, shapedirs, posedirs,
    J_regressor, weights, kintree_table ([2, J], parents in row 0, root 2**32 - 1 or -1)."""
    fields = ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights',
              'kintree_table')
    missing = [f for f in fields if f not in arrays]
    if missing:
      raise ValueError(f'{name}: missing fields {missing} (has {sorted(arrays)})')
    parents = np.asarray(arrays['kintree_table'], np.int64)[0]
    parents = tuple(-1 if p < 0 or p >= len(parents) else int(p) for p in parents)
    as_float = lambda field: np.asarray(arrays[field], np.float64)
    try:
      return cls(as_float('v_template'), as_float('shapedirs'), as_float('posedirs'),
                 as_float('J_regressor'), as_float('weights'), parents)
    except ValueError as error:
      raise ValueError(f'{name}: {error}') from error

  @classmethod
  def from_npz(cls, path: epath.PathLike) -> 'SmplModel':
    """Loads an `.npz` of plain arrays (no pickles are read)."""
    path = epath.Path(path)
    with path.open('rb') as f, np.load(f, allow_pickle=False) as archive:
      return cls.from_arrays({k: archive[k] for k in archive.files}, path.name)


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
  """[..., 3] axis-angle vectors → [..., 3, 3] rotation matrices."""
  axis_angle = np.asarray(axis_angle, np.float64)
  angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)[..., None]  # [..., 1, 1]
  safe = np.where(angle > 0, angle, 1.0)
  x, y, z = np.moveaxis(axis_angle / safe[..., 0], -1, 0)
  zero = np.zeros_like(x)
  cross = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1),
                    np.stack([-y, x, zero], -1)], -2)
  eye = np.broadcast_to(np.eye(3), cross.shape)
  return eye + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def smpl_forward(model: SmplModel, betas: np.ndarray, poses: np.ndarray, trans: np.ndarray,
                 chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """Posed SMPL meshes and joints.

  Args:
    model: the body model.
    betas: [B'] shape coefficients (the first min(B, B') are used).
    poses: [N, 3 J] axis-angle rotation of every joint relative to its parent (root first).
    trans: [N, 3] global translation, meters.
    chunk: frames per batch (bounds memory: skinning holds [chunk, V, 4, 4]).
  Returns:
    ([N, V, 3] vertices, [N, J, 3] joints), world meters.
  """
  num_joints = len(model.parents)
  poses = np.asarray(poses, np.float64).reshape(len(poses), num_joints, 3)
  trans = np.asarray(trans, np.float64)
  betas = np.asarray(betas, np.float64).reshape(-1)
  num_betas = min(len(betas), model.shapedirs.shape[-1])
  v_shaped = model.v_template + model.shapedirs[..., :num_betas] @ betas[:num_betas]
  rest_joints = model.joint_regressor @ v_shaped  # [J, 3]
  vertices, joints = [], []
  for start in range(0, len(poses), chunk):
    rotations = rodrigues(poses[start:start + chunk])  # [n, J, 3, 3]
    n = len(rotations)
    pose_feature = (rotations[:, 1:] - np.eye(3)).reshape(n, -1)
    v_posed = v_shaped + np.einsum('vcp,np->nvc', model.posedirs, pose_feature)
    world = np.zeros((n, num_joints, 4, 4))
    for j, parent in enumerate(model.parents):
      local = np.zeros((n, 4, 4))
      local[:, :3, :3] = rotations[:, j]
      local[:, :3, 3] = rest_joints[j] - (rest_joints[parent] if parent >= 0 else 0)
      local[:, 3, 3] = 1
      world[:, j] = local if parent < 0 else world[:, parent] @ local
    posed_joints = world[:, :, :3, 3]
    # Skinning transforms: the joint transforms relative to the rest pose.
    relative = world.copy()
    relative[:, :, :3, 3] -= np.einsum('njab,jb->nja', world[:, :, :3, :3], rest_joints)
    blended = np.einsum('vj,njab->nvab', model.weights, relative)
    posed = np.einsum('nvab,nvb->nva', blended[..., :3, :3], v_posed) + blended[..., :3, 3]
    vertices.append(posed + trans[start:start + n, None])
    joints.append(posed_joints + trans[start:start + n, None])
  return np.concatenate(vertices), np.concatenate(joints)


def regress_joints(regressor: np.ndarray, vertices: np.ndarray) -> np.ndarray:
  """[K, V] joint regressor (e.g. J_regressor_h36m.npy) applied to [..., V, 3] meshes."""
  regressor = np.asarray(regressor, np.float64)
  if regressor.ndim != 2 or regressor.shape[1] != vertices.shape[-2]:
    raise ValueError(f'joint regressor of shape {regressor.shape} does not fit meshes of '
                     f'{vertices.shape[-2]} vertices')
  return np.einsum('kv,...vc->...kc', regressor, vertices)
