"""Acclaim ASF (skeleton) / AMC (motion) reader and forward kinematics, in numpy.

The Acclaim format as the CMU Graphics Lab motion capture database writes it:

* ASF `:units` (`mass`, `length` — ASF lengths are in 1/`length` inches, 0.45 for CMU —
  and `angle` `deg`|`rad`), `:root` (`order` of the AMC root values, `axis` rotation
  order, `position`, `orientation`), `:bonedata` (per bone: `id`, `name`, unit
  `direction` and `length` in the rest pose, world axes; `axis` Euler angles + order
  giving the bone's local frame C; `dof`; `limits`) and `:hierarchy` (parent → children).
* AMC: header keywords (`:FULLY-SPECIFIED`, `:DEGREES`), then per frame its number and
  one line per moving bone: `name v1 v2 ...` in the order of that bone's `dof`.

Forward kinematics (vectorised over frames): with L the rotation built from a bone's dof
values (applied in the order they are listed: rx ry rz → Rz·Ry·Rx) and C from its
`axis` (angles applied in the listed order, e.g. 'XYZ' → Rz·Ry·Rx), the bone's global
rotation is R = R_parent · C · L · C⁻¹; the bone starts where its parent ends and ends at
start + R · (direction · length). The root starts and ends at `position` + (TX, TY, TZ)
and rotates by C_root · L_root · C_root⁻¹ with C_root from `orientation`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Mapping

import numpy as np

from . import euler
from . import tokens as tokens_lib

INCH_IN_METERS = 0.0254
ROOT = 'root'


@dataclasses.dataclass(frozen=True)
class Bone:
  """One ASF bone.

  Attributes:
    name: bone name, e.g. 'lfemur'.
    parent: parent bone name ('root' for the root's children).
    direction: [3] unit vector, the bone's rest direction in world axes.
    length: bone length in ASF length units.
    axis: [3] Euler angles of the bone's local frame C, in ASF angle units.
    axis_order: the order `axis` applies its angles in, e.g. 'XYZ'.
    dof: degrees of freedom in AMC value order, e.g. ('rx', 'ry', 'rz'); may be empty.
    limits: one (min, max) per dof.
  """

  name: str
  parent: str
  direction: np.ndarray
  length: float
  axis: np.ndarray
  axis_order: str
  dof: tuple[str, ...]
  limits: tuple[tuple[float, float], ...]


@dataclasses.dataclass(frozen=True)
class AsfSkeleton:
  """A parsed ASF file.

  Attributes:
    name: the `:name` field.
    units: `:units` values, e.g. {'mass': 1.0, 'length': 0.45, 'angle': 'deg'}.
    root_order: AMC root value order, e.g. ('TX', 'TY', 'TZ', 'RX', 'RY', 'RZ').
    root_axis: root rotation order, e.g. 'XYZ'.
    root_position: [3] rest position of the root.
    root_orientation: [3] Euler angles (order `root_axis`) of the root's frame.
    bones: all bones, every parent before its children.
  """

  name: str
  units: Mapping[str, float | str]
  root_order: tuple[str, ...]
  root_axis: str
  root_position: np.ndarray
  root_orientation: np.ndarray
  bones: tuple[Bone, ...]

  @property
  def bone_names(self) -> tuple[str, ...]:
    """('root', *bone names): the rows of the forward-kinematics outputs."""
    return (ROOT,) + tuple(b.name for b in self.bones)

  @property
  def parents(self) -> tuple[int, ...]:
    """Parent row in `bone_names` per row (-1 for the root)."""
    index = {name: i for i, name in enumerate(self.bone_names)}
    return (-1,) + tuple(index[b.parent] for b in self.bones)

  @property
  def degrees(self) -> bool:
    return str(self.units.get('angle', 'deg')).lower().startswith('deg')

  def meters_per_unit(self) -> float:
    """ASF lengths are in 1/`length` inches: meters = value · 0.0254 / length."""
    return INCH_IN_METERS / float(self.units.get('length', 1.0))


@dataclasses.dataclass(frozen=True)
class AmcMotion:
  """A parsed AMC file.

  Attributes:
    frame_numbers: [T] the frame numbers written in the file.
    values: bone name → [T, n] values in the bone's dof order (root: `root_order`).
    degrees: whether the angles are in degrees.
  """

  frame_numbers: np.ndarray
  values: Mapping[str, np.ndarray]
  degrees: bool

  @property
  def num_frames(self) -> int:
    return len(self.frame_numbers)


@dataclasses.dataclass(frozen=True)
class Kinematics:
  """Forward-kinematics output; rows follow `AsfSkeleton.bone_names` ('root' first).

  Attributes:
    names: row names.
    parents: parent row per row (-1 for the root).
    starts: [T, B, 3] bone start points (the root's start = its end = its position).
    ends: [T, B, 3] bone end points.
    rotations: [T, B, 3, 3] global rotations R (world ← rest pose).
    frames: [T, B, 3, 3] global orientation of each bone's local frame, R · C (columns =
      the bone's local x, y, z axes in world coordinates).
  """

  names: tuple[str, ...]
  parents: tuple[int, ...]
  starts: np.ndarray
  ends: np.ndarray
  rotations: np.ndarray
  frames: np.ndarray


def _tokens(line: str) -> list[str]:
  return line.replace('(', ' ').replace(')', ' ').split()


def _floats(values, count: int, what: str) -> np.ndarray:
  """[count] finite float64 values of `what`, or ValueError naming it."""
  try:
    array = np.asarray([float(v) for v in values], np.float64)
  except (TypeError, ValueError, OverflowError):
    raise ValueError(f'{what}: {list(values)} are not numbers') from None
  if array.shape != (count,):
    raise ValueError(f'{what}: expected {count} numbers, got {list(values)}')
  if not np.isfinite(array).all():
    raise ValueError(f'{what}: {list(values)} are not all finite')
  return array


def parse_asf(text: str) -> AsfSkeleton:
  """Parses the text of an ASF file (raises ValueError naming the line or bone)."""
  # Each section holds (line number, text) so that errors can point at the line.
  sections: dict[str, list[tuple[int, str]]] = {}
  current = None
  for line_number, line in enumerate(text.splitlines(), start=1):
    line = line.split('#', 1)[0].rstrip()
    if not line.strip():
      continue
    if line.lstrip().startswith(':'):
      keyword, _, rest = line.strip()[1:].partition(' ')
      current = keyword.lower()
      sections[current] = [(line_number, rest)] if rest.strip() else []
    elif current is not None:
      sections[current].append((line_number, line))
  for needed in ('root', 'bonedata', 'hierarchy'):
    if needed not in sections:
      raise ValueError(f'ASF: missing section :{needed}')

  units: dict[str, float | str] = {}
  for line_number, line in sections.get('units', []):
    tokens = line.split()
    if len(tokens) < 2:
      raise ValueError(f'ASF line {line_number}: :units entry {line.strip()!r} has no value')
    try:
      units[tokens[0]] = float(tokens[1])
    except ValueError:
      units[tokens[0]] = tokens[1]
  length_unit = units.get('length', 1.0)
  if not isinstance(length_unit, float) or not 0 < length_unit < np.inf:
    raise ValueError(f':units length {length_unit!r} is not a positive number')

  root = {line.split()[0]: (line_number, line.split()[1:])
          for line_number, line in sections['root']}
  root_order = tuple(v.upper() for v in root.get('order', (0, 'TX TY TZ RX RY RZ'.split()))[1])
  unknown_channels = [c for c in root_order if c not in ('TX', 'TY', 'TZ', 'RX', 'RY', 'RZ')]
  if unknown_channels:
    raise ValueError(f':root order: unknown channels {unknown_channels}')
  root_axis = ''.join(root.get('axis', (0, ['XYZ']))[1]).upper()
  if sorted(root_axis) != ['X', 'Y', 'Z']:
    raise ValueError(f':root axis {root_axis!r} is not an order of XYZ')
  root_fields = {}
  for key in ('position', 'orientation'):
    line_number, values = root.get(key, (0, [0, 0, 0]))
    root_fields[key] = _floats(values, 3, f'ASF line {line_number}: :root {key}')

  raw_bones: list[dict] = []
  fields: dict | None = None
  last_key = None
  for line_number, line in sections['bonedata']:
    tokens = _tokens(line)
    where = f'ASF line {line_number}'
    if not tokens:
      raise ValueError(f'{where}: :bonedata line {line.strip()!r} has no field name')
    if tokens[0] == 'begin':
      if fields is not None:
        raise ValueError(f'{where}: begin inside the bone begun on line {fields["line"]}')
      fields, last_key = {'limits': [], 'line': line_number}, None
    elif tokens[0] == 'end':
      if fields is None:
        raise ValueError(f"{where}: 'end' without a 'begin'")
      raw_bones.append(fields)
      fields = None
    elif fields is None:
      raise ValueError(f'{where}: bone field outside begin/end: {line.strip()!r}')
    elif tokens[0] == 'limits' or (last_key == 'limits' and tokens_lib.is_number(tokens[0])):
      numeric = all(map(tokens_lib.is_number, tokens[-2:]))
      limit = tuple(float(v) for v in tokens[-2:]) if numeric else ()
      if len(limit) != 2 or np.isnan(limit).any() or limit[0] > limit[1]:
        raise ValueError(f'{where}: limits {line.strip()!r} are not a (min max) pair')
      fields['limits'].append(limit)
      last_key = 'limits'
    else:
      fields[tokens[0]] = tokens[1:]
      last_key = tokens[0]
  if fields is not None:
    raise ValueError(f'ASF line {fields["line"]}: bone has no end')

  parent_of: dict[str, str] = {}
  for _, line in sections['hierarchy']:
    tokens = line.split()
    if tokens[0] in ('begin', 'end'):
      continue
    for child in tokens[1:]:
      parent_of[child] = tokens[0]

  bones = {}
  for fields_ in raw_bones:
    where = f'ASF line {fields_["line"]}: bone {" ".join(fields_.get("name", ["(unnamed)"]))}'
    try:
      name = fields_['name'][0]
      if name in bones or name == ROOT:
        raise ValueError(f'the name {name!r} is taken')
      dof = tuple(v.lower() for v in fields_.get('dof', []))
      unknown_dof = [d for d in dof if d not in ('rx', 'ry', 'rz')]
      if unknown_dof:
        raise ValueError(f'unknown dof {unknown_dof}')
      limits = tuple(fields_['limits'])
      if limits and len(limits) != len(dof):
        raise ValueError(f'{len(limits)} limits for dof {dof}')
      axis_values = fields_['axis']
      axis_order = (axis_values[3] if len(axis_values) > 3 else 'XYZ').upper()
      if sorted(axis_order) != ['X', 'Y', 'Z']:
        raise ValueError(f'axis order {axis_order!r} is not an order of XYZ')
      direction = _floats(fields_['direction'], 3, 'direction')
      norm = np.linalg.norm(direction)
      if not 0 < norm < np.inf:
        raise ValueError(f'direction {fields_["direction"]} is not a non-zero 3-vector')
      (length,) = _floats(fields_['length'][:1], 1, 'length')
      if length < 0:
        raise ValueError(f'length {length} is negative')
      bones[name] = Bone(
          name=name, parent=parent_of.get(name, ''),
          # Written with 6 digits; renormalized so bone lengths are exactly `length`.
          direction=direction / norm, length=float(length),
          axis=_floats(axis_values[:3], 3, 'axis'), axis_order=axis_order,
          dof=dof, limits=limits)
    except KeyError as error:
      raise ValueError(f'{where}: missing field {error}') from error
    except (IndexError, ValueError) as error:
      raise ValueError(f'{where}: {error}') from error
  orphans = [name for name, bone in bones.items() if not bone.parent]
  if orphans:
    raise ValueError(f'ASF: bones missing from :hierarchy: {orphans}')
  unknown = sorted({p for p in parent_of.values() if p != ROOT and p not in bones} |
                   {c for c in parent_of if c not in bones})
  if unknown:
    raise ValueError(f'ASF: :hierarchy names unknown bones {unknown}')

  ordered, placed = [], {ROOT}
  while len(ordered) < len(bones):
    ready = [b for b in bones.values() if b.name not in placed and b.parent in placed]
    if not ready:
      raise ValueError('ASF: :hierarchy has a cycle')
    for bone in ready:
      ordered.append(bone)
      placed.add(bone.name)
  name_line = sections.get('name', []) or [(0, '')]
  return AsfSkeleton(name=name_line[0][1].strip(), units=units, root_order=root_order,
                     root_axis=root_axis, root_position=root_fields['position'],
                     root_orientation=root_fields['orientation'], bones=tuple(ordered))


def parse_amc(text: str, skeleton: AsfSkeleton) -> AmcMotion:
  """Parses the text of an AMC file for `skeleton` (every frame must list every bone
  that has dof, and the root)."""
  degrees = skeleton.degrees
  frame_numbers: list[int] = []
  rows: dict[str, list[list[float]]] = {}
  for line_number, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    if line.startswith(':'):
      keyword = line[1:].upper()
      if keyword == 'DEGREES':
        degrees = True
      elif keyword == 'RADIANS':
        degrees = False
      continue
    tokens = line.split()
    if len(tokens) == 1 and tokens[0].isdigit():
      frame_numbers.append(int(tokens[0]))
      continue
    if not frame_numbers:
      raise ValueError(f'AMC line {line_number}: bone values before the first frame')
    try:
      row = [float(v) for v in tokens[1:]]
    except ValueError:
      raise ValueError(f'AMC line {line_number}: bone {tokens[0]}: values {tokens[1:]} '
                       'are not all numbers') from None
    if not np.isfinite(row).all():
      raise ValueError(f'AMC line {line_number}: bone {tokens[0]}: values {tokens[1:]} '
                       'are not all finite')
    rows.setdefault(tokens[0], []).append(row)

  num_frames = len(frame_numbers)
  expected = {ROOT: len(skeleton.root_order)}
  expected.update({b.name: len(b.dof) for b in skeleton.bones if b.dof})
  values = {}
  for name, count in expected.items():
    data = rows.get(name, [])
    if len(data) != num_frames:
      raise ValueError(f'AMC: bone {name} has values in {len(data)} of {num_frames} frames')
    array = np.asarray(data, np.float64) if data else np.zeros((0, count))
    if array.shape != (num_frames, count):
      raise ValueError(f'AMC: bone {name} needs {count} values per frame, got '
                       f'{array.shape[1:]}')
    values[name] = array
  unknown = sorted(set(rows) - set(expected))
  if unknown:
    raise ValueError(f'AMC: values for bones without dof or not in the ASF: {unknown}')
  return AmcMotion(frame_numbers=np.asarray(frame_numbers, np.int64), values=values,
                   degrees=degrees)


def read_asf(path: str | pathlib.Path) -> AsfSkeleton:
  path = pathlib.Path(path)
  try:
    return parse_asf(path.read_text())
  except ValueError as error:
    raise ValueError(f'{path}: {error}') from error


def read_amc(path: str | pathlib.Path, skeleton: AsfSkeleton) -> AmcMotion:
  path = pathlib.Path(path)
  try:
    return parse_amc(path.read_text(), skeleton)
  except ValueError as error:
    raise ValueError(f'{path}: {error}') from error


def _frame_matrix(angles: np.ndarray, order: str, degrees: bool) -> np.ndarray:
  """C from an `axis`/`orientation` triple: [3] angles, order like 'XYZ' → [3, 3]."""
  return euler.euler_to_matrix(angles, order, extrinsic=True, degrees=degrees)


def forward_kinematics(skeleton: AsfSkeleton, motion: AmcMotion,
                       meters_per_unit: float | None = None) -> Kinematics:
  """Global bone positions and rotations for every frame.

  Args:
    skeleton: the ASF skeleton.
    motion: T frames of AMC values for it.
    meters_per_unit: output length scale; None: `skeleton.meters_per_unit()` (meters).
  Returns:
    `Kinematics` with [T, 1 + num_bones, ...] arrays in the ASF's (y-up) world axes.
  """
  scale = skeleton.meters_per_unit() if meters_per_unit is None else meters_per_unit
  num_frames = motion.num_frames
  names = skeleton.bone_names
  starts = np.zeros((num_frames, len(names), 3))
  ends = np.zeros((num_frames, len(names), 3))
  rotations = np.zeros((num_frames, len(names), 3, 3))
  frames = np.zeros((num_frames, len(names), 3, 3))

  root_values = motion.values[ROOT]
  translation_axes = [c for c in skeleton.root_order if c.startswith('T')]
  rotation_channels = [c for c in skeleton.root_order if c.startswith('R')]
  translation = np.zeros((num_frames, 3))
  for channel in translation_axes:
    translation[:, 'XYZ'.index(channel[1])] = root_values[:, skeleton.root_order.index(channel)]
  root_angles = np.zeros((num_frames, 3))
  for channel in rotation_channels:
    root_angles[:, 'XYZ'.index(channel[1])] = root_values[:, skeleton.root_order.index(channel)]
  # The root's L applies RX, RY, RZ in the root `axis` order.
  ordered_angles = root_angles[:, ['XYZ'.index(a) for a in skeleton.root_axis]]
  root_local = euler.euler_to_matrix(ordered_angles, skeleton.root_axis, extrinsic=True,
                                     degrees=motion.degrees)
  root_frame = _frame_matrix(skeleton.root_orientation, skeleton.root_axis, skeleton.degrees)
  rotations[:, 0] = root_frame @ root_local @ root_frame.T
  frames[:, 0] = rotations[:, 0] @ root_frame
  starts[:, 0] = ends[:, 0] = (skeleton.root_position + translation) * scale

  parents = skeleton.parents
  for row, bone in enumerate(skeleton.bones, start=1):
    parent = parents[row]
    axis_frame = _frame_matrix(bone.axis, bone.axis_order, skeleton.degrees)
    if bone.dof:
      local = euler.euler_to_matrix(motion.values[bone.name], ''.join(d[1] for d in bone.dof),
                                    extrinsic=True, degrees=motion.degrees)
    else:
      local = np.broadcast_to(np.eye(3), (num_frames, 3, 3))
    rotations[:, row] = rotations[:, parent] @ axis_frame @ local @ axis_frame.T
    frames[:, row] = rotations[:, row] @ axis_frame
    starts[:, row] = ends[:, parent]
    offset = bone.direction * bone.length * scale
    ends[:, row] = starts[:, row] + np.einsum('tij,j->ti', rotations[:, row], offset)
  return Kinematics(names=names, parents=parents, starts=starts, ends=ends,
                    rotations=rotations, frames=frames)
