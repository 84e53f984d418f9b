"""Human3.6M-17 joints and bone frames read off CMU mocap skeletons (ASF/AMC or BVH).

Both formats reduce to `Segments`: rigid pieces with a start, an end and a rotation that
moves the file's rest pose to the frame's pose. A `JointMap` then places each
Human3.6M joint on a segment (a fraction of the way from its start to its end) and names
the segment whose rotation drives each Human3.6M bone parent(j) → j. `EXTRA_POINTS` are
the real CMU points beyond the 17 joints (toes, hands, finger and thumb tips, mid-neck),
an optional addition to the dense level (`with_extra_points`).

Bone frames follow `tfds_builders/markers.py`: index j is the bone parent(j) → j, local
x runs along the bone, local y is the rest pose's anterior direction (the way the
subject faces, +z in CMU files) carried along by the driving segment's rotation and
made perpendicular to the bone, local z = x × y. The same rule on both body sides makes
the frames mirror-consistent. The root's frame is the pelvis orientation: x = the rest
up direction, y = anterior, both rotated by the root segment.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hipart_jax import skeleton

from . import asf_amc
from . import bvh
from . import bvh_dialects

# CMU files are y-up and subjects face +z in the rest pose.
CMU_UP = (0.0, 1.0, 0.0)
CMU_ANTERIOR = (0.0, 0.0, 1.0)
# CMU (x, y-up, z) → the project's z-up world (x, -z, y): a +90° turn about x.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# Below this length a reoriented reference axis counts as parallel to its bone.
_DEGENERATE = 1e-6


@dataclasses.dataclass(frozen=True)
class Segments:
  """Rigid segments of a mocap skeleton over T frames.

  Attributes:
    names: segment names.
    starts: [T, B, 3] segment start points, meters.
    ends: [T, B, 3] segment end points, meters.
    rotations: [T, B, 3, 3] rotation of each segment relative to the file's rest pose
      (a point fixed to segment b moves as x_t = start_t + R_t R_rest⁻¹ (x_rest - start_rest)).
  """

  names: tuple[str, ...]
  starts: np.ndarray
  ends: np.ndarray
  rotations: np.ndarray

  def index(self, name: str) -> int:
    try:
      return self.names.index(name)
    except ValueError:
      raise ValueError(f'segment {name!r} not in the skeleton ({self.names})') from None



def asf_segments(kinematics: asf_amc.Kinematics) -> Segments:
  """One segment per ASF bone ('root' included, zero length)."""
  return Segments(kinematics.names, kinematics.starts, kinematics.ends, kinematics.rotations)


def bvh_segments(kinematics: bvh.BvhKinematics) -> Segments:
  """One segment per BVH joint j (End Sites included), from parent(j) to j.

  The offset of j is fixed in its parent's frame, so the segment rotates with the parent
  joint; the root's segment has zero length and rotates with the root.
  """
  parents = np.asarray(kinematics.parents)
  source = np.where(parents >= 0, parents, np.arange(len(parents)))
  return Segments(kinematics.names, kinematics.positions[:, source], kinematics.positions,
                  kinematics.rotations[:, source])


@dataclasses.dataclass(frozen=True)
class JointMap:
  """Where the Human3.6M-17 joints lie on a mocap skeleton.

  Attributes:
    name: the skeleton family, e.g. 'cmu_asf'.
    points: per Human3.6M joint (in `skeleton.H36M_JOINT_NAMES` order), (segment name,
      fraction from its start (0) to its end (1)).
    bone_segments: per Human3.6M joint j, the segment whose rotation drives the bone
      parent(j) → j (for the root: the pelvis segment).
  """

  name: str
  points: tuple[tuple[str, float], ...]
  bone_segments: tuple[str, ...]

  def __post_init__(self):
    if len(self.points) != skeleton.NUM_JOINTS or len(self.bone_segments) != skeleton.NUM_JOINTS:
      raise ValueError(f'JointMap {self.name}: needs {skeleton.NUM_JOINTS} points and bone '
                       'segments')


def _joint_map(name: str, table: dict[str, tuple[str, float, str]]) -> JointMap:
  rows = [table[joint] for joint in skeleton.H36M_JOINT_NAMES]
  return JointMap(name, tuple((segment, fraction) for segment, fraction, _ in rows),
                  tuple(driver for _, _, driver in rows))


# Human3.6M joint → (segment, fraction, segment driving the bone parent → joint).
# ASF bones run from the parent bone's end: e.g. 'rfemur' at 0 is the right hip joint.
ASF_TO_H36M = _joint_map('cmu_asf', {
    'pelvis': ('root', 0.0, 'root'),
    'r_hip': ('rfemur', 0.0, 'rhipjoint'),
    'r_knee': ('rtibia', 0.0, 'rfemur'),
    'r_ankle': ('rfoot', 0.0, 'rtibia'),
    'l_hip': ('lfemur', 0.0, 'lhipjoint'),
    'l_knee': ('ltibia', 0.0, 'lfemur'),
    'l_ankle': ('lfoot', 0.0, 'ltibia'),
    # Three back bones of ~11.5 cm: the spine joint is half-way along the middle one
    # (half-way from pelvis to thorax, as in Human3.6M); the thorax is the neck base.
    'spine': ('upperback', 0.5, 'lowerback'),
    'thorax': ('thorax', 1.0, 'upperback'),
    # Neck/nose at the base of the head bone (about nose height), head at its tip.
    'neck_nose': ('head', 0.0, 'lowerneck'),
    'head': ('head', 1.0, 'head'),
    'l_shoulder': ('lhumerus', 0.0, 'lclavicle'),
    'l_elbow': ('lradius', 0.0, 'lhumerus'),
    'l_wrist': ('lwrist', 0.0, 'lradius'),
    'r_shoulder': ('rhumerus', 0.0, 'rclavicle'),
    'r_elbow': ('rradius', 0.0, 'rhumerus'),
    'r_wrist': ('rwrist', 0.0, 'rradius'),
})



def bvh_joint_map(dialect: str, restored: bool = False) -> JointMap:
  """The map of a `bvh_dialects` dialect, on its skeleton as filed or restored."""
  table = bvh_dialects.DIALECTS[dialect]
  joints = {**table['joints'], **(table['restore']['joints'] if restored else {})}
  return _joint_map(f'cmu_bvh_{dialect}' + ('_restored' if restored else ''), joints)


# The 3ds-Max conversion of 131_01, as filed.
BVH_TO_H36M = dataclasses.replace(bvh_joint_map('3ds_max'), name='cmu_bvh')


@dataclasses.dataclass(frozen=True)
class ExtraPoint:
  """A real CMU skeleton point beyond Human3.6M-17 (toes, hands, fingers, thumbs, neck).

  Attributes:
    name: point name.
    part: the Human3.6M joint (body part) whose dense group it joins.
    asf: (segment, fraction) on an ASF skeleton.
    bvh: (segment, fraction) on the CMU BVH skeleton.
  """

  name: str
  part: str
  asf: tuple[str, float]
  bvh: tuple[str, float]


def _sided(side: str, bvh_side: str, bvh_hand: str) -> tuple[ExtraPoint, ...]:
  return (
      ExtraPoint(f'{side}_toe_base', f'{side}_ankle', (f'{side}toes', 0.0),
                 (f'{bvh_side}Toe', 1.0)),
      ExtraPoint(f'{side}_toe_tip', f'{side}_ankle', (f'{side}toes', 1.0),
                 (f'{bvh_side}Toe_end', 1.0)),
      ExtraPoint(f'{side}_hand', f'{side}_wrist', (f'{side}hand', 1.0),
                 (f'{bvh_hand}Fingers', 1.0)),
      ExtraPoint(f'{side}_finger_tip', f'{side}_wrist', (f'{side}fingers', 1.0),
                 (f'{bvh_hand}Fingers_end', 1.0)),
      ExtraPoint(f'{side}_thumb_tip', f'{side}_wrist', (f'{side}thumb', 1.0),
                 (f'{bvh_hand}Thumb_end', 1.0)),
  )


# Left before right in the same order, so mirrored parts own mirrored groups. The
# clavicles add nothing: they are the Human3.6M bones thorax → shoulder.
EXTRA_POINTS = _sided('l', 'Left', 'L') + _sided('r', 'Right', 'R') + (
    ExtraPoint('neck', 'neck_nose', ('lowerneck', 1.0), ('Neck', 1.0)),)


def with_extra_points(hierarchy: skeleton.Hierarchy,
                      extra_points: tuple[ExtraPoint, ...] = EXTRA_POINTS
                      ) -> skeleton.Hierarchy:
  """`hierarchy` plus one dense point per extra point (appended, owning no fine points)."""
  parts = tuple(skeleton.H36M_JOINT_NAMES.index(p.part) for p in extra_points)
  return skeleton.Hierarchy(hierarchy.dense_part + parts, hierarchy.fine_parent,
                            hierarchy.parents, hierarchy.sparse_flip_pairs)


def extra_points_positions(segments: Segments, file_format: str,
                           extra_points: tuple[ExtraPoint, ...] = EXTRA_POINTS
                           ) -> np.ndarray:
  """[T, E, 3] extra points of an 'asf' or 'bvh' skeleton (same units and axes)."""
  if file_format not in ('asf', 'bvh'):
    raise ValueError(f"file_format: expected 'asf' or 'bvh', got {file_format!r}")
  return points_on_segments(segments, [getattr(p, file_format) for p in extra_points])


def points_on_segments(segments: Segments, points) -> np.ndarray:
  """[T, K, 3] points given as K (segment name, fraction from start to end) pairs."""
  rows = np.array([segments.index(name) for name, _ in points])
  fractions = np.array([fraction for _, fraction in points], np.float64)[:, None]
  return segments.starts[:, rows] * (1.0 - fractions) + segments.ends[:, rows] * fractions


def h36m_joints(segments: Segments, joint_map: JointMap) -> np.ndarray:
  """[T, 17, 3] Human3.6M joints (same units and axes as `segments`)."""
  return points_on_segments(segments, joint_map.points)


def _unit(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  return vectors / np.maximum(norms, _DEGENERATE), norms[..., 0]


def h36m_bone_frames(segments: Segments, rest: Segments, joint_map: JointMap,
                     up: np.ndarray = np.asarray(CMU_UP),
                     anterior: np.ndarray = np.asarray(CMU_ANTERIOR)) -> np.ndarray:
  """Bone frames in the convention of `tfds_builders/markers.py`.

  Args:
    segments: the posed skeleton over T frames.
    rest: the same skeleton in the file's rest pose (one frame, all angles zero).
    joint_map: where the Human3.6M joints lie.
    up, anterior: [3] the rest pose's up and facing directions, in `rest`'s axes.
  Returns:
    [T, 17, 3, 3] frames, columns = local (x, y, z) axes in `segments`' world axes; x
    runs exactly along each bone parent(j) → j.
  Raises:
    ValueError: if a rest-pose bone is parallel to the anterior direction.
  """
  parents = np.asarray(skeleton.H36M_PARENTS)
  has_bone = parents >= 0
  parent_rows = np.where(has_bone, parents, 0)
  drivers = np.array([segments.index(name) for name in joint_map.bone_segments])

  rest_joints = h36m_joints(rest, joint_map)[0]  # [17, 3]
  up, anterior = np.asarray(up, np.float64), np.asarray(anterior, np.float64)
  rest_axis, _ = _unit(rest_joints - rest_joints[parent_rows])
  rest_axis[~has_bone] = up
  rest_reference, lengths = _unit(
      anterior - np.sum(anterior * rest_axis, -1, keepdims=True) * rest_axis)
  if np.any(lengths < _DEGENERATE):
    bad = [skeleton.H36M_JOINT_NAMES[j] for j in np.flatnonzero(lengths < _DEGENERATE)]
    raise ValueError(f'{joint_map.name}: rest-pose bones {bad} are parallel to anterior')

  # Rotation of each driving segment relative to its rest orientation: [T, 17, 3, 3].
  relative = segments.rotations[:, drivers] @ np.swapaxes(rest.rotations[0, drivers], -1, -2)
  joints = h36m_joints(segments, joint_map)
  carried_axis = np.einsum('tjab,jb->tja', relative, rest_axis)
  bone_axis, bone_lengths = _unit(joints - joints[:, parent_rows])
  x_axis = np.where((has_bone[:, None] & (bone_lengths[..., None] > _DEGENERATE)),
                    bone_axis, carried_axis)
  reference = np.einsum('tjab,jb->tja', relative, rest_reference)
  y_axis, y_lengths = _unit(reference - np.sum(reference * x_axis, -1, keepdims=True) * x_axis)
  if np.any(y_lengths < _DEGENERATE):
    raise ValueError(f'{joint_map.name}: a bone turned parallel to its reference axis')
  z_axis = np.cross(x_axis, y_axis)
  return np.stack([x_axis, y_axis, z_axis], axis=-1)


def asf_rest_segments(asf: asf_amc.AsfSkeleton, meters_per_unit: float | None = None
                      ) -> Segments:
  """The ASF skeleton with every AMC value zero (one frame)."""
  values = {asf_amc.ROOT: np.zeros((1, len(asf.root_order)))}
  values.update({b.name: np.zeros((1, len(b.dof))) for b in asf.bones if b.dof})
  motion = asf_amc.AmcMotion(np.zeros(1, np.int64), values, degrees=True)
  return asf_segments(asf_amc.forward_kinematics(asf, motion, meters_per_unit))


def bvh_rest_segments(hierarchy: bvh.BvhSkeleton, meters_per_unit: float) -> Segments:
  """The BVH skeleton with every channel zero (one frame)."""
  motion = bvh.BvhMotion(frame_time=1.0, values=np.zeros((1, hierarchy.num_channels)))
  return bvh_segments(bvh.forward_kinematics(hierarchy, motion, meters_per_unit))


# ------------------------------------------------------------------------- BVH dialects


def dialect_extra_points(dialect: str) -> tuple[tuple[str, float], ...]:
  """(segment, fraction) per `EXTRA_POINTS` entry (in its order) on a BVH dialect."""
  table = bvh_dialects.DIALECTS[dialect]['extra_points']
  return tuple(table[point.name] for point in EXTRA_POINTS)


def _dialect_joints(dialect: str) -> set[str]:
  """The file joints (End Sites included) a dialect's maps read; virtual sites excluded."""
  table = bvh_dialects.DIALECTS[dialect]
  names = {name for segment, _, driver in table['joints'].values() for name in (segment, driver)}
  names |= {segment for segment, _ in table['extra_points'].values()}
  names |= {parent for parent, _ in table['sites'].values()}
  names |= {name for pair in table['restore']['offsets'].items() for name in pair}
  names |= {name for segment, _, driver in table['restore']['joints'].values()
            for name in (segment, driver)}
  return names - set(table['sites'])


def detect_bvh_dialect(names, source: str = 'BVH') -> str:
  """The dialect whose joints all appear in `names` (a HIERARCHY's joint names).

  Raises:
    ValueError: naming `source`, the best guess (most joints found) and its joints that
      the file lacks, if no dialect matches.
  """
  present = set(names)
  missing = {dialect: sorted(_dialect_joints(dialect) - present)
             for dialect in bvh_dialects.DIALECTS}
  best = min(missing, key=lambda d: len(missing[d]) / len(_dialect_joints(d)))
  if missing[best]:
    raise ValueError(f'{source}: unknown BVH skeleton; best guess the {best!r} dialect '
                     f'({bvh_dialects.DIALECTS.keys()}), but these joints could not be '
                     f'mapped (not in HIERARCHY): {missing[best]}')
  return best


_LEG_JOINTS = ('l_hip', 'l_knee', 'l_ankle', 'r_hip', 'r_knee', 'r_ankle')


def bvh_leg_length(hierarchy: bvh.BvhSkeleton, dialect: str) -> float:
  """Mean rest-pose thigh + shin length, in file units."""
  joints = bvh_dialects.DIALECTS[dialect]['joints']
  rest = bvh_rest_segments(hierarchy, 1.0)
  points = points_on_segments(rest, [joints[j][:2] for j in _LEG_JOINTS])[0].reshape(2, 3, 3)
  bones = np.linalg.norm(np.diff(points, axis=1), axis=-1)  # [side, thigh / shin]
  return float(bones.sum(axis=1).mean())


def infer_meters_per_unit(leg_length: float, source: str = 'BVH') -> float:
  """The circulating unit (`bvh_dialects.UNITS`) that makes the leg length human.

  Args:
    leg_length: rest-pose thigh + shin, file units.
    source: the file, for the error message.
  Raises:
    ValueError: if no unit gives a leg length in `bvh_dialects.LEG_LENGTH_RANGE`.
  """
  low, high = bvh_dialects.LEG_LENGTH_RANGE
  middle = np.sqrt(low * high)
  scale = min(bvh_dialects.UNITS.values(),
              key=lambda unit: abs(np.log(max(leg_length * unit, 1e-12) / middle)))
  if not low <= leg_length * scale <= high:
    raise ValueError(f'{source}: leg length (thigh + shin) {leg_length:g} file units is '
                     f'not human in any unit of {bvh_dialects.UNITS} (expected '
                     f'{low}-{high} m); set the clip\'s meters_per_unit')
  return scale


def with_sites(hierarchy: bvh.BvhSkeleton, dialect: str, leg_length: float
               ) -> bvh.BvhSkeleton:
  """`hierarchy` plus the dialect's virtual End Sites (appended rows, no channels).

  Args:
    hierarchy: the file's HIERARCHY.
    dialect: a `bvh_dialects.DIALECTS` key.
    leg_length: the rest leg length in file units (site offsets are in leg lengths).
  """
  sites = bvh_dialects.DIALECTS[dialect]['sites']
  if not sites:
    return hierarchy
  parents = tuple(hierarchy.names.index(parent) for parent, _ in sites.values())
  offsets = np.array([offset for _, offset in sites.values()], np.float64) * leg_length
  return bvh.BvhSkeleton(names=hierarchy.names + tuple(sites),
                         parents=hierarchy.parents + parents,
                         offsets=np.concatenate([hierarchy.offsets, offsets]),
                         channels=hierarchy.channels + ((),) * len(sites))


def restore_back(hierarchy: bvh.BvhSkeleton, dialect: str) -> bvh.BvhSkeleton:
  """`hierarchy` with the dialect's dropped back bone regrown (`bvh_dialects` 'restore').

  Only zero offsets are replaced, so a file that has the bone keeps its own.
  """
  offsets = hierarchy.offsets.copy()
  for joint, source in bvh_dialects.DIALECTS[dialect]['restore']['offsets'].items():
    row = hierarchy.names.index(joint)
    if not np.any(offsets[row]):
      offsets[row] = offsets[hierarchy.names.index(source)]
  return dataclasses.replace(hierarchy, offsets=offsets)
