"""BVH (Biovision hierarchy) reader and forward kinematics, in numpy.

A BVH file has a HIERARCHY (ROOT / JOINT blocks with an OFFSET from the parent joint and
CHANNELS in the order their values appear, `End Site` leaves with an OFFSET only) and a
MOTION section (`Frames:`, `Frame Time:`, then one line of channel values per frame, the
joints' channels concatenated in file order).

Forward kinematics: a joint's local rotation is the product of its rotation channels in
the order listed (intrinsic: 'Zrotation Xrotation Yrotation' → Rz·Rx·Ry); its global
rotation is R = R_parent · R_local; its position is p_parent + R_parent · (offset +
translation channels). End Sites get the rotation of their parent joint.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from . import euler
from . import tokens as tokens_lib

END_SITE_SUFFIX = '_end'


@dataclasses.dataclass(frozen=True)
class BvhSkeleton:
  """The HIERARCHY section; rows in file order (every parent before its children).

  Attributes:
    names: joint names; an End Site is named '<parent name>_end'.
    parents: [J] parent row (-1 for the root).
    offsets: [J, 3] offset from the parent joint, file units.
    channels: per joint, its channel names in file order (empty for End Sites).
  """

  names: tuple[str, ...]
  parents: tuple[int, ...]
  offsets: np.ndarray
  channels: tuple[tuple[str, ...], ...]

  @property
  def num_channels(self) -> int:
    return sum(len(c) for c in self.channels)


@dataclasses.dataclass(frozen=True)
class BvhMotion:
  """The MOTION section.

  Attributes:
    frame_time: seconds per frame.
    values: [T, num_channels] channel values (degrees for rotations, file units for
      positions).
  """

  frame_time: float
  values: np.ndarray

  @property
  def num_frames(self) -> int:
    return self.values.shape[0]


@dataclasses.dataclass(frozen=True)
class BvhKinematics:
  """Forward-kinematics output; rows follow `BvhSkeleton.names`.

  Attributes:
    names: joint names (End Sites included).
    parents: parent row per joint (-1 for the root).
    positions: [T, J, 3] global joint positions.
    rotations: [T, J, 3, 3] global joint rotations (columns = the joint's local axes in
      world coordinates; identity in the rest pose of the file).
  """

  names: tuple[str, ...]
  parents: tuple[int, ...]
  positions: np.ndarray
  rotations: np.ndarray


def parse_bvh(text: str) -> tuple[BvhSkeleton, BvhMotion]:
  """Parses the text of a BVH file (raises ValueError naming the problem)."""
  tokens, token_lines = [], []
  for line_number, line in enumerate(text.splitlines(), start=1):
    words = line.split()
    tokens += words
    token_lines += [line_number] * len(words)
  position = 0

  def where() -> str:
    """The line of the token taken last, for error messages."""
    return f'BVH line {token_lines[position - 1]}' if position else 'BVH'

  def take() -> str:
    nonlocal position
    if position >= len(tokens):
      raise ValueError('BVH: unexpected end of file')
    position += 1
    return tokens[position - 1]

  def expect(word: str) -> None:
    got = take()
    if got != word:
      raise ValueError(f'{where()}: expected {word!r}, got {got!r}')

  def take_number(what: str, kind=float):
    token = take()
    try:
      value = kind(token)
    except ValueError:
      raise ValueError(f'{where()}: {what} {token!r} is not a number') from None
    if kind is float and not np.isfinite(value):
      raise ValueError(f'{where()}: {what} {token!r} is not finite')
    return value

  names, parents, offsets, channels = [], [], [], []
  expect('HIERARCHY')
  stack: list[int] = []
  pending_parent = -1
  while True:
    word = take()
    if word in ('ROOT', 'JOINT'):
      if (word == 'ROOT') != (not stack and not names):
        raise ValueError(f'{where()}: {word} at the wrong place')
      name = take()
      is_end = False
    elif word == 'End':
      expect('Site')
      if not stack:
        raise ValueError(f'{where()}: End Site outside a joint')
      name = names[stack[-1]] + END_SITE_SUFFIX
      is_end = True
    elif word == '}':
      if not stack:
        raise ValueError(f'{where()}: unbalanced braces')
      stack.pop()
      if not stack:
        break
      continue
    else:
      raise ValueError(f'{where()}: unexpected token {word!r} in HIERARCHY')
    pending_parent = stack[-1] if stack else -1
    expect('{')
    expect('OFFSET')
    offset = [take_number(f'joint {name} OFFSET') for _ in range(3)]
    joint_channels: tuple[str, ...] = ()
    if not is_end:
      expect('CHANNELS')
      count = take_number(f'joint {name} CHANNELS count', int)
      if count < 0:
        raise ValueError(f'{where()}: joint {name}: negative CHANNELS count {count}')
      joint_channels = tuple(take() for _ in range(count))
      unknown = [c for c in joint_channels
                 if c[1:] not in ('position', 'rotation') or c[0] not in 'XYZ']
      if unknown:
        raise ValueError(f'{where()}: joint {name}: unknown channels {unknown}')
    names.append(name)
    parents.append(pending_parent)
    offsets.append(offset)
    channels.append(joint_channels)
    stack.append(len(names) - 1)
    if is_end:
      expect('}')
      stack.pop()

  if len(set(names)) != len(names):
    raise ValueError('BVH: duplicate joint names')
  skeleton = BvhSkeleton(names=tuple(names), parents=tuple(parents),
                         offsets=np.asarray(offsets, np.float64), channels=tuple(channels))

  expect('MOTION')
  expect('Frames:')
  num_frames = take_number('Frames:', int)
  if num_frames < 0:
    raise ValueError(f'{where()}: negative Frames: {num_frames}')
  expect('Frame')
  expect('Time:')
  frame_time = take_number('Frame Time:')
  if frame_time <= 0:
    raise ValueError(f'{where()}: Frame Time: {frame_time} is not positive')
  try:
    values = np.asarray(tokens[position:], np.float64)
  except ValueError:
    bad = next(t for t in tokens[position:] if not tokens_lib.is_number(t))
    raise ValueError(f'BVH: MOTION value {bad!r} is not a number') from None
  expected = num_frames * skeleton.num_channels
  if values.size != expected:
    raise ValueError(f'BVH: {values.size} motion values, expected {num_frames} frames x '
                     f'{skeleton.num_channels} channels = {expected}')
  if not np.isfinite(values).all():
    row = int(np.argwhere(~np.isfinite(values))[0, 0]) // max(skeleton.num_channels, 1)
    raise ValueError(f'BVH: MOTION frame {row} has values that are not finite')
  return skeleton, BvhMotion(frame_time=frame_time,
                             values=values.reshape(num_frames, skeleton.num_channels))


def read_bvh(path: str | pathlib.Path) -> tuple[BvhSkeleton, BvhMotion]:
  path = pathlib.Path(path)
  try:
    return parse_bvh(path.read_text())
  except ValueError as error:
    raise ValueError(f'{path}: {error}') from error


def forward_kinematics(skeleton: BvhSkeleton, motion: BvhMotion,
                       meters_per_unit: float) -> BvhKinematics:
  """Global joint positions and rotations for every frame.

  Args:
    skeleton: the HIERARCHY.
    motion: T frames of channel values.
    meters_per_unit: length scale applied to offsets and position channels (CMU BVH
      conversions: 0.0254 / 0.45).
  Returns:
    `BvhKinematics` with [T, J, ...] arrays in the file's world axes, scaled.
  """
  num_frames = motion.num_frames
  num_joints = len(skeleton.names)
  positions = np.zeros((num_frames, num_joints, 3))
  rotations = np.zeros((num_frames, num_joints, 3, 3))
  column = 0
  for joint, parent in enumerate(skeleton.parents):
    joint_channels = skeleton.channels[joint]
    values = motion.values[:, column:column + len(joint_channels)]
    column += len(joint_channels)
    translation = np.broadcast_to(skeleton.offsets[joint], (num_frames, 3)).copy()
    rotation_axes, rotation_columns = '', []
    for k, channel in enumerate(joint_channels):
      if channel.endswith('position'):
        translation[:, 'XYZ'.index(channel[0])] += values[:, k]
      else:
        rotation_axes += channel[0]
        rotation_columns.append(k)
    if rotation_axes:
      local = euler.euler_to_matrix(values[:, rotation_columns], rotation_axes,
                                    extrinsic=False, degrees=True)
    else:
      local = np.broadcast_to(np.eye(3), (num_frames, 3, 3))
    translation = translation * meters_per_unit
    if parent < 0:
      positions[:, joint] = translation
      rotations[:, joint] = local
    else:
      positions[:, joint] = positions[:, parent] + np.einsum(
          'tij,tj->ti', rotations[:, parent], translation)
      rotations[:, joint] = rotations[:, parent] @ local
  return BvhKinematics(names=skeleton.names, parents=skeleton.parents, positions=positions,
                       rotations=rotations)
