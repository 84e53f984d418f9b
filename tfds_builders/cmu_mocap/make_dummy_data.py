r"""Writes `dummy_data/`: tiny fake CMU-style ASF/AMC and BVH files for the builder test.

The files follow the real formats and the CMU bone / joint names (which the Human3.6M
mapping needs), but every number is invented here: a stick figure of made-up
proportions and small random joint angles. No CMU data is copied. One BVH file per
dialect of `bvh_dialects`: 131_01 (3ds-Max, CMU units), 02_01 (MotionBuilder, CMU units,
a T-pose lead-in frame, no thorax bone) and 10_04 (Daz, centimetres, Z X Y channels).

  python tfds_builders/cmu_mocap/make_dummy_data.py
"""

from __future__ import annotations

import pathlib

import numpy as np

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / 'dummy_data'
SEED = 0
NUM_FRAMES = 9
AMC_CLIPS = tuple(f'01_{trial:02d}' for trial in range(1, 13))
BVH_CLIPS = ('131_01',)
MOTIONBUILDER_CLIP = '02_01'
DAZ_CLIP = '10_04'
MULTI_SUBJECT_TEST_MOTIONBUILDER = ('06_01', '09_01')
MULTI_SUBJECT_TEST_DAZ = '13_11'
# Random joint angles are drawn uniformly from ±MAX_ANGLE degrees.
MAX_ANGLE = 15.0

# name, parent, direction, length (ASF units), axis (deg), dof. Invented proportions.
_ASF_BONES = (
    ('lhipjoint', 'root', (0.6, -0.7, 0.3), 2.0, (0, 0, 0), ''),
    ('lfemur', 'lhipjoint', (0.3, -0.95, 0.0), 7.0, (0, 0, 20), 'rx ry rz'),
    ('ltibia', 'lfemur', (0.3, -0.95, 0.0), 7.0, (0, 0, 20), 'rx'),
    ('lfoot', 'ltibia', (0.1, -0.2, 0.97), 2.0, (-90, 0, 20), 'rx rz'),
    ('ltoes', 'lfoot', (0.0, 0.0, 1.0), 1.0, (-90, 0, 20), 'rx'),
    ('rhipjoint', 'root', (-0.6, -0.7, 0.3), 2.0, (0, 0, 0), ''),
    ('rfemur', 'rhipjoint', (-0.3, -0.95, 0.0), 7.0, (0, 0, -20), 'rx ry rz'),
    ('rtibia', 'rfemur', (-0.3, -0.95, 0.0), 7.0, (0, 0, -20), 'rx'),
    ('rfoot', 'rtibia', (-0.1, -0.2, 0.97), 2.0, (-90, 0, -20), 'rx rz'),
    ('rtoes', 'rfoot', (0.0, 0.0, 1.0), 1.0, (-90, 0, -20), 'rx'),
    ('lowerback', 'root', (0.0, 1.0, 0.0), 2.0, (0, 0, 0), 'rx ry rz'),
    ('upperback', 'lowerback', (0.0, 1.0, 0.0), 2.0, (0, 0, 0), 'rx ry rz'),
    ('thorax', 'upperback', (0.0, 1.0, 0.0), 2.0, (0, 0, 0), 'rx ry rz'),
    ('lowerneck', 'thorax', (0.0, 1.0, 0.1), 1.5, (0, 0, 0), 'rx ry rz'),
    ('upperneck', 'lowerneck', (0.0, 1.0, -0.1), 1.5, (0, 0, 0), 'rx ry rz'),
    ('head', 'upperneck', (0.0, 1.0, 0.0), 1.5, (0, 0, 0), 'rx ry rz'),
    ('lclavicle', 'thorax', (0.9, 0.4, 0.0), 3.0, (0, 0, 0), 'ry rz'),
    ('lhumerus', 'lclavicle', (1.0, 0.0, 0.0), 5.0, (180, -30, -90), 'rx ry rz'),
    ('lradius', 'lhumerus', (1.0, 0.0, 0.0), 3.5, (180, -30, -90), 'rx'),
    ('lwrist', 'lradius', (1.0, 0.0, 0.0), 1.5, (0, 90, 90), 'ry'),
    ('lhand', 'lwrist', (1.0, 0.0, 0.0), 0.7, (0, 90, 90), 'rx rz'),
    ('lfingers', 'lhand', (1.0, 0.0, 0.0), 0.5, (0, 90, 90), 'rx'),
    ('lthumb', 'lwrist', (0.7, 0.0, 0.7), 0.8, (-90, 45, 0), 'rx rz'),
    ('rclavicle', 'thorax', (-0.9, 0.4, 0.0), 3.0, (0, 0, 0), 'ry rz'),
    ('rhumerus', 'rclavicle', (-1.0, 0.0, 0.0), 5.0, (180, 30, 90), 'rx ry rz'),
    ('rradius', 'rhumerus', (-1.0, 0.0, 0.0), 3.5, (180, 30, 90), 'rx'),
    ('rwrist', 'rradius', (-1.0, 0.0, 0.0), 1.5, (0, -90, -90), 'ry'),
    ('rhand', 'rwrist', (-1.0, 0.0, 0.0), 0.7, (0, -90, -90), 'rx rz'),
    ('rfingers', 'rhand', (-1.0, 0.0, 0.0), 0.5, (0, -90, -90), 'rx'),
    ('rthumb', 'rwrist', (-0.7, 0.0, 0.7), 0.8, (-90, -45, 0), 'rx rz'),
)

# name, offset (CMU units), channel order ('' for an End Site), children. Invented.
_ARM = 'Zrotation Xrotation Yrotation'
_LEG = 'Zrotation Yrotation Xrotation'


def _chain(names_offsets, order):
  """Nested (name, offset, channels, children) for a chain ending in an End Site."""
  node = ('End Site', names_offsets[-1][1], '', ())
  for name, offset in reversed(names_offsets[:-1]):
    node = (name, offset, order, (node,))
  return node


def _arm(side: str, hand: str, sign: float):
  """Collar → shoulder → elbow → wrist, then a hand (fingers) and a thumb."""
  fingers = (f'{hand.lower()}hand', (0, 0, 0), _ARM, (_chain(
      [(f'{hand}Fingers', (0, -0.7, 0)), ('', (0, -0.5, 0))], _ARM),))
  thumb = _chain([(f'{hand}Thumb', (0, 0, 0)), ('', (0, -0.5, 0.5))], _ARM)
  wrist = (f'{side}Wrist', (0, -3.3, 0), _ARM, (fingers, thumb))
  elbow = (f'{side}Elbow', (0, -4.2, 0), _ARM, (wrist,))
  shoulder = (f'{side}Shoulder', (sign * 3.0, 1.5, 0), _ARM, (elbow,))
  return (f'{side}Collar', (0, 0, 0), _LEG, (shoulder,))


def _bvh_tree():
  left_leg = _chain([('LHipJoint', (0, 0, 0)), ('LeftHip', (1.2, -1.6, 0.7)),
                     ('LeftKnee', (2.5, -6.8, 0)), ('LeftAnkle', (2.4, -6.5, 0)),
                     ('LeftToe', (0.2, -0.4, 2.2)), ('', (0, 0, 1.1))], _LEG)
  right_leg = _chain([('RHipJoint', (0, 0, 0)), ('RightHip', (-1.2, -1.6, 0.7)),
                      ('RightKnee', (-2.5, -6.8, 0)), ('RightAnkle', (-2.4, -6.5, 0)),
                      ('RightToe', (-0.2, -0.4, 2.2)), ('', (0, 0, 1.1))], _LEG)
  neck = _chain([('lowerneck', (0, 0, 0)), ('Neck', (0, 1.6, 0.1)), ('Head', (0, 1.6, 0)),
                 ('', (0, 1.6, 0))], _LEG)
  left_arm, right_arm = (_arm(side, hand, sign) for side, hand, sign in (
      ('Left', 'L', 1.0), ('Right', 'R', -1.0)))
  chest2 = ('Chest2', (0, 2.0, 0), _LEG, (neck, left_arm, right_arm))
  back = ('lowerback', (0, 0, 0), _LEG, (('Chest', (0, 2.0, 0), _LEG, (chest2,)),))
  return ('Hips', (0, 0, 0), 'Xposition Yposition Zposition ' + _LEG,
          (left_leg, right_leg, back))


def _motionbuilder_arm(side: str, sign: float):
  """Shoulder (zero offset) → arm → forearm → hand → finger base → index, and a thumb."""
  index = _chain([(f'{side}HandIndex1', (sign * 0.7, 0, 0)), ('', (sign * 0.5, 0, 0))], _LEG)
  fingers = (f'{side}FingerBase', (0, 0, 0), _LEG, (index,))
  thumb = _chain([(f'{side[0]}Thumb', (0, 0, 0)), ('', (sign * 0.5, 0, 0.5))], _LEG)
  hand = (f'{side}Hand', (sign * 3.4, 0, 0), _LEG, (fingers, thumb))
  forearm = (f'{side}ForeArm', (sign * 5.0, 0, 0), _LEG, (hand,))
  arm = (f'{side}Arm', (sign * 3.2, 1.3, -0.3), _LEG, (forearm,))
  return (f'{side}Shoulder', (0, 0, 0), _LEG, (arm,))


def motionbuilder_tree():
  """MotionBuilder-friendly names, T-pose, CMU units; the neck starts at Spine1."""
  legs = [_chain([(f'{s[0]}HipJoint', (0, 0, 0)), (f'{s}UpLeg', (g * 1.3, -1.8, 0.8)),
                  (f'{s}Leg', (g * 2.5, -6.9, 0)), (f'{s}Foot', (g * 2.5, -7.0, 0)),
                  (f'{s}ToeBase', (g * 0.2, -0.4, 2.3)), ('', (0, 0, 1.2))], _LEG)
          for s, g in (('Left', 1.0), ('Right', -1.0))]
  head = _chain([('Neck', (0, 0, 0)), ('Neck1', (0, 1.7, 0.2)), ('Head', (0.1, 1.8, -0.1)),
                 ('', (0, 1.8, 0))], _LEG)
  spine1 = ('Spine1', (0.05, 2.0, 0), _LEG,
            (head, _motionbuilder_arm('Left', 1.0), _motionbuilder_arm('Right', -1.0)))
  back = ('LowerBack', (0, 0, 0), _LEG, (('Spine', (0, 2.0, -0.2), _LEG, (spine1,)),))
  return ('Hips', (0, 0, 0), 'Xposition Yposition Zposition ' + _LEG, (*legs, back))


_DAZ = 'Zrotation Xrotation Yrotation'


def _daz_arm(side: str, sign: float):
  """Collar → shoulder → forearm → hand, with a thumb and a middle finger (cm)."""
  thumb = _chain([(f'{side}Thumb1', (sign * 1.2, -0.5, 3.4)),
                  (f'{side}Thumb2', (sign * 3.4, -0.5, 3.4)), ('', (sign * 1.8, -1.2, 1.4))],
                 _DAZ)
  middle = _chain([(f'{side}Mid1', (sign * 8.0, 1.0, 3.0)), (f'{side}Mid2', (sign * 3.0, -0.6, 1.0)),
                   ('', (sign * 2.5, -0.3, 0.8))], _DAZ)
  hand = (f'{side}Hand', (sign * 22.0, 0.8, 7.0), _DAZ, (thumb, middle))
  forearm = (f'{side}ForeArm', (sign * 28.0, -1.7, 0.5), _DAZ, (hand,))
  shoulder = (f'{side}Shldr', (sign * 9.0, -2.0, 1.5), _DAZ, (forearm,))
  return (f'{side}Collar', (sign * 2.7, 19.0, -4.9), _DAZ, (shoulder,))


def daz_tree():
  """Daz-friendly names, T-pose, centimetres, Z X Y channels."""
  legs = [_chain([(f'{s}Buttock', (g * 8.8, 4.4, 1.2)), (f'{s}Thigh', (0, -1.7, -2.2)),
                  (f'{s}Shin', (0, -38.0, 0.7)), (f'{s}Foot', (g * 0.7, -44.0, -5.1)),
                  ('', (g * 1.1, -3.7, 12.0))], _DAZ)
          for s, g in (('l', 1.0), ('r', -1.0))]
  eyes = [_chain([(f'{name}Eye', (g * 3.8, 8.0, 8.0)), ('', (1, 0, 0))], _DAZ)
          for name, g in (('left', 1.0), ('right', -1.0))]
  head = ('head', (-0.2, 7.0, 1.2), _DAZ, tuple(eyes))
  chest = ('chest', (0, 11.7, -0.5), _DAZ, (('neck', (0, 22.0, -2.2), _DAZ, (head,)),
                                            _daz_arm('r', -1.0), _daz_arm('l', 1.0)))
  abdomen = ('abdomen', (0, 20.7, -0.7), _DAZ, (chest,))
  return ('hip', (0, 0, 0), 'Xposition Yposition Zposition Zrotation Yrotation Xrotation',
          (abdomen, *legs))


def _fmt(values) -> str:
  return ' '.join(f'{v:g}' for v in values)


def asf_text() -> str:
  lines = [':version 1.10', ':name DUMMY', ':units', '  mass 1.0', '  length 0.45',
           '  angle deg', ':documentation', '  fake skeleton for tests', ':root',
           '   order TX TY TZ RX RY RZ', '   axis XYZ', '   position 0 0 0',
           '   orientation 0 0 0', ':bonedata']
  for bone_id, (name, _, direction, length, axis, dof) in enumerate(_ASF_BONES, start=1):
    direction = np.asarray(direction, np.float64) / np.linalg.norm(direction)
    lines += ['  begin', f'     id {bone_id}', f'     name {name}',
              f'     direction {_fmt(np.round(direction, 6))}', f'     length {length:g}',
              f'     axis {_fmt(axis)}  XYZ']
    if dof:
      lines.append(f'    dof {dof}')
      limits = ['(-180.0 180.0)'] * len(dof.split())
      lines.append('    limits ' + limits[0])
      lines += ['           ' + limit for limit in limits[1:]]
    lines.append('  end')
  children: dict[str, list[str]] = {}
  for name, parent, *_ in _ASF_BONES:
    children.setdefault(parent, []).append(name)
  lines += [':hierarchy', '  begin']
  lines += [f'    {parent} {" ".join(kids)}' for parent, kids in children.items()]
  lines.append('  end')
  return '\n'.join(lines) + '\n'


def amc_text(rng: np.random.Generator) -> str:
  lines = ['#!OML:ASF dummy', ':FULLY-SPECIFIED', ':DEGREES']
  start = rng.uniform(-5.0, 5.0, size=3) + np.array([0.0, 17.0, 0.0])
  for frame in range(1, NUM_FRAMES + 1):
    lines.append(str(frame))
    translation = start + 0.2 * frame * np.array([1.0, 0.0, 0.5])
    lines.append('root ' + _fmt(np.round(np.concatenate(
        [translation, rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=3)]), 2)))
    for name, _, _, _, _, dof in _ASF_BONES:
      if dof:
        angles = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=len(dof.split()))
        lines.append(f'{name} {_fmt(np.round(angles, 2))}')
  return '\n'.join(lines) + '\n'


def bvh_text(rng: np.random.Generator, tree=None, root_height: float = 17.0,
             lead_in_rest: bool = False) -> str:
  """A BVH file of `tree` (default: the 3ds-Max one) with random angles per frame.

  `lead_in_rest` writes a first frame of zero rotations (the T-pose lead-in frame of the
  MotionBuilder conversions) before the NUM_FRAMES motion frames.
  """
  tree = _bvh_tree() if tree is None else tree
  lines = ['HIERARCHY']
  num_channels = 0

  def write(node, depth, is_root):
    nonlocal num_channels
    name, offset, channels, children = node
    pad = '\t' * depth
    lines.append(pad + ('End Site' if name == 'End Site' else
                        f'{"ROOT" if is_root else "JOINT"} {name}'))
    lines.append(pad + '{')
    lines.append(pad + f'\tOFFSET {_fmt(offset)}')
    if channels:
      lines.append(pad + f'\tCHANNELS {len(channels.split())} {channels}')
      num_channels += len(channels.split())
    for child in children:
      write(child, depth + 1, False)
    lines.append(pad + '}')

  write(tree, 0, True)
  lines += ['MOTION', f'Frames: {NUM_FRAMES + int(lead_in_rest)}', 'Frame Time: .0083333']
  if lead_in_rest:
    lines.append(_fmt(np.concatenate([[0.0, root_height, 0.0], np.zeros(num_channels - 3)])))
  for frame in range(NUM_FRAMES):
    values = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=num_channels)
    values[:3] = [2.0 + 0.1 * frame, root_height, -3.0]
    lines.append(_fmt(np.round(values, 2)))
  return '\n'.join(lines) + '\n'


def main() -> None:
  rng = np.random.default_rng(SEED)
  asf_dir = DUMMY_DIR / 'asf_amc' / '01'
  bvh_dir = DUMMY_DIR / 'bvh'
  asf_dir.mkdir(parents=True, exist_ok=True)
  bvh_dir.mkdir(parents=True, exist_ok=True)
  (asf_dir / '01.asf').write_text(asf_text())
  for clip in AMC_CLIPS:
    (asf_dir / f'{clip}.amc').write_text(amc_text(rng))
  for clip in BVH_CLIPS:
    (bvh_dir / f'{clip}.bvh').write_text(bvh_text(rng))
  # Drawn after the files above, so those stay as they were.
  (bvh_dir / f'{MOTIONBUILDER_CLIP}.bvh').write_text(
      bvh_text(rng, motionbuilder_tree(), lead_in_rest=True))
  (bvh_dir / f'{DAZ_CLIP}.bvh').write_text(bvh_text(rng, daz_tree(), root_height=95.0))
  # One clip per `multi_subject` test subject, so its protocol's command runs on dummy data.
  for clip in MULTI_SUBJECT_TEST_MOTIONBUILDER:
    (bvh_dir / f'{clip}.bvh').write_text(
        bvh_text(rng, motionbuilder_tree(), lead_in_rest=True))
  (bvh_dir / f'{MULTI_SUBJECT_TEST_DAZ}.bvh').write_text(
      bvh_text(rng, daz_tree(), root_height=95.0))


if __name__ == '__main__':
  main()
