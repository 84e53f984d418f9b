"""Tests of the cmu_mocap builder: parsers, forward kinematics, mapping, examples.

Dummy-data tests always run; tests on the shared real clips skip when they are absent
(the `cmu_mocap_dir` fixture) and parse one clip each.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

from hipart_jax import skeleton
from tfds_builders import markers
from tfds_builders.cmu_mocap import asf_amc
from tfds_builders.cmu_mocap import bvh
from tfds_builders.cmu_mocap import cmu_mocap_dataset_builder as builder_lib
from tfds_builders.cmu_mocap import euler
from tfds_builders.cmu_mocap import h36m_map

DUMMY = pathlib.Path(builder_lib.__file__).parent / 'dummy_data'
NAMES = skeleton.H36M_JOINT_NAMES
CMU_SCALE = 0.0254 / 0.45


def _rx(degrees):
  a = np.deg2rad(degrees)
  return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _ry(degrees):
  a = np.deg2rad(degrees)
  return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _rz(degrees):
  a = np.deg2rad(degrees)
  return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


@pytest.fixture(scope='module')
def dummy_asf():
  return asf_amc.read_asf(DUMMY / 'asf_amc' / '01' / '01.asf')


@pytest.fixture(scope='module')
def real_asf(cmu_mocap_dir):
  return asf_amc.read_asf(cmu_mocap_dir / 'asf_amc' / '01' / '01.asf')


@pytest.fixture(scope='module')
def real_amc(cmu_mocap_dir, real_asf):
  return asf_amc.read_amc(cmu_mocap_dir / 'asf_amc' / '01' / '01_01.amc', real_asf)


@pytest.fixture(scope='module')
def real_bvh(cmu_mocap_dir):
  return bvh.read_bvh(cmu_mocap_dir / 'bvh' / '131_01.bvh')


# ---------------------------------------------------------------------------- rotations


def test_euler_conventions():
  angles = np.array([10.0, -25.0, 40.0])
  expected = _rz(40.0) @ _ry(-25.0) @ _rx(10.0)
  np.testing.assert_allclose(euler.euler_to_matrix(angles, 'XYZ', extrinsic=True), expected,
                             atol=1e-12)
  np.testing.assert_allclose(euler.euler_to_matrix(angles[::-1], 'ZYX', extrinsic=False),
                             expected, atol=1e-12)
  quarter = euler.axis_rotation('z', np.pi / 2)
  np.testing.assert_allclose(quarter @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-12)


# ------------------------------------------------------------------------------ parsers


def test_parse_dummy_asf(dummy_asf):
  assert dummy_asf.units['length'] == 0.45 and dummy_asf.degrees
  assert dummy_asf.root_order == ('TX', 'TY', 'TZ', 'RX', 'RY', 'RZ')
  assert len(dummy_asf.bones) == 30
  bones = {b.name: b for b in dummy_asf.bones}
  assert bones['lclavicle'].dof == ('ry', 'rz') and len(bones['lclavicle'].limits) == 2
  assert bones['lhipjoint'].dof == ()
  assert bones['ltibia'].parent == 'lfemur' and bones['lowerback'].parent == 'root'
  np.testing.assert_allclose(bones['lhumerus'].axis, [180, -30, -90])
  parents = dummy_asf.parents
  assert all(parent < row for row, parent in enumerate(parents))  # Topological order.
  assert dummy_asf.meters_per_unit() == pytest.approx(CMU_SCALE)


def test_amc_missing_bone_is_an_error(dummy_asf):
  text = (DUMMY / 'asf_amc' / '01' / '01_01.amc').read_text()
  motion = asf_amc.parse_amc(text, dummy_asf)
  assert motion.num_frames == 9 and motion.values['lfemur'].shape == (9, 3)
  broken = '\n'.join(line for line in text.splitlines() if not line.startswith('ltibia'))
  with pytest.raises(ValueError, match='ltibia'):
    asf_amc.parse_amc(broken, dummy_asf)


def test_parse_dummy_bvh():
  hierarchy, motion = bvh.read_bvh(DUMMY / 'bvh' / '131_01.bvh')
  assert hierarchy.names[0] == 'Hips' and 'Head_end' in hierarchy.names
  assert hierarchy.channels[0][:3] == ('Xposition', 'Yposition', 'Zposition')
  assert hierarchy.channels[hierarchy.names.index('LeftElbow')] == (
      'Zrotation', 'Xrotation', 'Yrotation')
  assert motion.values.shape == (9, hierarchy.num_channels)
  text = (DUMMY / 'bvh' / '131_01.bvh').read_text()
  with pytest.raises(ValueError, match='motion values'):
    bvh.parse_bvh(text.rsplit('\n', 2)[0])  # The last frame is cut short.


def test_bvh_forward_kinematics_by_hand():
  text = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Arm
  {
    OFFSET 1 0 0
    CHANNELS 3 Yrotation Xrotation Zrotation
    End Site
    {
      OFFSET 0 2 0
    }
  }
}
MOTION
Frames: 1
Frame Time: 0.1
1 2 3 30 -20 50 15 25 -35
"""
  hierarchy, motion = bvh.parse_bvh(text)
  kinematics = bvh.forward_kinematics(hierarchy, motion, meters_per_unit=0.5)
  hips = _rz(30) @ _rx(-20) @ _ry(50)
  arm = hips @ _ry(15) @ _rx(25) @ _rz(-35)
  root = np.array([1.0, 2, 3])
  elbow = root + hips @ [1.0, 0, 0]
  hand = elbow + arm @ [0, 2.0, 0]
  np.testing.assert_allclose(kinematics.positions[0], 0.5 * np.stack([root, elbow, hand]),
                             atol=1e-12)


def test_asf_rest_pose_kinematics(dummy_asf):
  """All-zero AMC values: bones point along their ASF directions and each bone's local
  frame is its `axis` rotation C."""
  values = {'root': np.zeros((1, 6))}
  values.update({b.name: np.zeros((1, len(b.dof))) for b in dummy_asf.bones if b.dof})
  rest = asf_amc.forward_kinematics(dummy_asf, asf_amc.AmcMotion(np.ones(1), values, True))
  row = rest.names.index('lhumerus')
  bone = dummy_asf.bones[row - 1]
  np.testing.assert_allclose(rest.ends[0, row] - rest.starts[0, row],
                             bone.direction * bone.length * CMU_SCALE, atol=1e-12)
  np.testing.assert_allclose(rest.frames[0, row], _rz(-90) @ _ry(-30) @ _rx(180), atol=1e-12)


# ---------------------------------------------------------------------- real ASF / AMC


def test_real_asf_structure(real_asf, real_amc):
  assert len(real_asf.bones) == 30 and real_asf.units['length'] == 0.45
  assert real_amc.num_frames == 2751 and real_amc.degrees


def test_real_bone_lengths_constant(real_asf, real_amc):
  kinematics = asf_amc.forward_kinematics(real_asf, real_amc)
  lengths = np.linalg.norm(kinematics.ends - kinematics.starts, axis=-1)  # [T, B]
  assert np.abs(lengths - lengths[:1]).max() < 1e-6
  expected = [0.0] + [b.length * CMU_SCALE for b in real_asf.bones]
  np.testing.assert_allclose(lengths[0], expected, atol=1e-9)
  rotations = kinematics.rotations
  assert np.abs(rotations @ np.swapaxes(rotations, -1, -2) - np.eye(3)).max() < 1e-9


def test_real_first_frame_by_hand(real_asf, real_amc):
  """The left knee (lfemur end) of 01_01 frame 1, computed from the file's numbers."""
  # 01.asf: lhipjoint direction/length (no dof, axis 0 0 0); lfemur direction, length,
  # axis 0 0 20 XYZ. 01_01.amc frame 1: root and lfemur values. Directions are written
  # with 6 digits; the parser makes them unit vectors.
  unit = lambda v: np.asarray(v) / np.linalg.norm(v)
  root_position = np.array([9.37216, 17.8693, -17.3198])
  root_rotation = _rz(-3.23164) @ _ry(-7.59696) @ _rx(-2.01677)
  hip = root_position + root_rotation @ (unit([0.566809, -0.746272, 0.349008]) * 2.40479)
  axis = _rz(20.0)
  local = _rz(-13.8412) @ _ry(1.20472) @ _rx(4.00236)
  femur_rotation = root_rotation @ axis @ local @ axis.T
  knee = hip + femur_rotation @ (unit([0.34202, -0.939693, 0.0]) * 7.1578)
  kinematics = asf_amc.forward_kinematics(real_asf, real_amc)
  row = kinematics.names.index('lfemur')
  np.testing.assert_allclose(kinematics.starts[0, row], hip * CMU_SCALE, atol=1e-9)
  np.testing.assert_allclose(kinematics.ends[0, row], knee * CMU_SCALE, atol=1e-9)


def test_real_feet_touch_the_ground(real_asf, real_amc):
  """A plausibility check of the rotation conventions (wrong Euler orders or signs fail
  it): in 01_01 (jumps on a floor) the lowest foot point stays at one height, near
  y = 0, in most frames, and the head stays well above the pelvis."""
  kinematics = asf_amc.forward_kinematics(real_asf, real_amc)
  toes = [kinematics.names.index(n) for n in ('ltoes', 'rtoes', 'lfoot', 'rfoot')]
  low, high = np.percentile(kinematics.ends[:, toes, 1].min(axis=1), [25, 75])
  assert -0.05 < low and high < 0.1 and high - low < 0.03
  head, root = kinematics.names.index('head'), kinematics.names.index('root')
  assert np.all(kinematics.ends[:, head, 1] > kinematics.ends[:, root, 1] + 0.4)


# ---------------------------------------------------------------------------- real BVH


def test_real_bvh(real_bvh):
  hierarchy, motion = real_bvh
  assert motion.num_frames == 994 and motion.frame_time == pytest.approx(1 / 120, rel=1e-3)
  needed = {name for name, _ in h36m_map.BVH_TO_H36M.points}
  needed |= set(h36m_map.BVH_TO_H36M.bone_segments)
  assert needed <= set(hierarchy.names)
  kinematics = bvh.forward_kinematics(hierarchy, motion, CMU_SCALE)
  parents = np.asarray(kinematics.parents)
  child = np.flatnonzero(parents >= 0)
  lengths = np.linalg.norm(kinematics.positions[:, child] -
                           kinematics.positions[:, parents[child]], axis=-1)
  assert np.abs(lengths - lengths[:1]).max() < 1e-6
  np.testing.assert_allclose(lengths[0], np.linalg.norm(hierarchy.offsets[child], axis=-1)
                             * CMU_SCALE, atol=1e-9)


# ----------------------------------------------------------------- mapping and frames


def _check_frames(joints, frames):
  assert np.abs(frames @ np.swapaxes(frames, -1, -2) - np.eye(3)).max() < 1e-9
  assert np.linalg.det(frames).min() > 0.999
  assert markers.bone_axis_error(joints, frames).max() < 1e-6


def test_real_mapping_and_frames(real_asf, real_amc, real_bvh):
  for segments, rest, joint_map in (
      (h36m_map.asf_segments(asf_amc.forward_kinematics(real_asf, real_amc)),
       h36m_map.asf_rest_segments(real_asf), h36m_map.ASF_TO_H36M),
      (h36m_map.bvh_segments(bvh.forward_kinematics(*real_bvh, CMU_SCALE)),
       h36m_map.bvh_rest_segments(real_bvh[0], CMU_SCALE), h36m_map.BVH_TO_H36M)):
    joints = h36m_map.h36m_joints(segments, joint_map)
    _check_frames(joints, h36m_map.h36m_bone_frames(segments, rest, joint_map))
    rest_joints = h36m_map.h36m_joints(rest, joint_map)[0]
    # Left joints on the subject's left (+x in CMU rest poses, facing +z), right on -x.
    for side, sign in (('l', 1), ('r', -1)):
      for name in ('hip', 'knee', 'ankle', 'shoulder', 'elbow', 'wrist'):
        assert sign * rest_joints[NAMES.index(f'{side}_{name}'), 0] > 0.05, (side, name)
    # Bone lengths in Human3.6M's range (meters).
    bones = np.linalg.norm(joints[:, 1:] - joints[:, list(skeleton.H36M_PARENTS[1:])], axis=-1)
    assert 0.05 < bones.min() and bones.max() < 0.5
    # Back chain goes up: pelvis < spine < thorax < neck < head in the rest pose.
    chain = [NAMES.index(n) for n in ('pelvis', 'spine', 'thorax', 'neck_nose', 'head')]
    assert np.all(np.diff(rest_joints[chain, 1]) > 0.05)


def test_rest_frames_face_anterior_and_mirror(dummy_asf):
  """Rest-pose frames: local y = anterior (+z), and mirrored parts are mirror images."""
  rest = h36m_map.asf_rest_segments(dummy_asf)
  frames = h36m_map.h36m_bone_frames(rest, rest, h36m_map.ASF_TO_H36M)[0]
  joints = h36m_map.h36m_joints(rest, h36m_map.ASF_TO_H36M)
  _check_frames(joints, frames[None])
  # y = anterior (+z) made perpendicular to the bone (x); the root: x = up, y = anterior.
  anterior = np.array([0, 0, 1.0])
  x_axis = frames[:, :, 0]
  expected = anterior - (x_axis @ anterior)[:, None] * x_axis
  expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
  np.testing.assert_allclose(frames[:, :, 1], expected, atol=1e-9)
  np.testing.assert_allclose(frames[0], np.array([[0, 1.0, 0], [0, 0, 1], [1, 0, 0]]).T,
                             atol=1e-9)
  np.testing.assert_allclose(frames[NAMES.index('r_knee'), :, 1], anterior, atol=1e-9)
  mirror = np.diag([-1.0, 1.0, 1.0])
  for a, b in skeleton.H36M_FLIP_PAIRS:
    np.testing.assert_allclose(mirror @ frames[a] @ np.diag([1, 1, -1.0]), frames[b],
                               atol=1e-6)


# ------------------------------------------------------------------------------ builder


def _dummy_config(**overrides):
  return builder_lib.CmuMocapConfig(name='dummy', **{
      **dict(train_clips=('01_01', '01_02'), test_clips=('bvh:131_01',), num_cameras=2,
             frame_stride=4), **overrides})


def test_clip_examples_on_dummy_data():
  config = _dummy_config()
  examples = list(builder_lib.generate_clip_examples(
      config, 'bvh:131_01', builder_lib.clip_files('bvh:131_01', DUMMY)))
  assert len(examples) == 3 * 2  # Frames 0, 4, 8 of 9; two cameras.
  keys = [key for key, _ in examples]
  assert len(set(keys)) == len(keys)
  _, example = examples[0]
  assert example['subject'] == '131' and example['action'] == 'walk'
  assert example['dense_3d'].shape == (48, 3) and example['fine_2d'].shape == (96, 2)
  np.testing.assert_array_equal(example['keypoints_2d']['gt'][:, :2], example['sparse_2d'])
  np.testing.assert_array_equal(example['keypoints_2d']['gt'][:, 2], 1.0)
  with pytest.raises(ValueError, match='action'):
    list(builder_lib.generate_clip_examples(
        _dummy_config(clip_actions=(('01_01', 'fly'),)), '01_01',
        builder_lib.clip_files('01_01', DUMMY)))


def test_extra_points_option():
  config = _dummy_config(extra_points=True)
  levels = builder_lib.hierarchy(config)
  extras = h36m_map.EXTRA_POINTS
  assert levels.num_dense == 48 + len(extras) and levels.num_fine == 96
  _, dense_perm, _ = levels.flip_permutations()  # Raises unless left/right symmetric.
  names = [p.name for p in extras]
  assert dense_perm[48 + names.index('l_thumb_tip')] == 48 + names.index('r_thumb_tip')
  for clip, toe_length in (('01_01', 1.0), ('bvh:131_01', 1.1)):
    _, example = next(builder_lib.generate_clip_examples(
        config, clip, builder_lib.clip_files(clip, DUMMY)))
    assert example['dense_3d'].shape == (levels.num_dense, 3)
    base, tip = (example['dense_3d'][48 + names.index(n)] for n in ('r_toe_base', 'r_toe_tip'))
    # The dummy toes are 1.0 (ASF) and 1.1 (BVH End Site) CMU units long.
    assert np.linalg.norm(tip - base) == pytest.approx(toe_length * CMU_SCALE, rel=1e-5)
    ankle = example['sparse_3d'][NAMES.index('r_ankle')]
    assert np.linalg.norm(tip - ankle) > np.linalg.norm(base - ankle)


def test_builder_writes_array_record(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = builder_lib.Builder(config=_dummy_config(), data_dir=tmp_path)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(DUMMY)))
  assert builder.info.splits['train'].num_examples == 2 * 3 * 2
  assert builder.info.splits['test'].num_examples == 3 * 2
  assert builder.info.metadata['dense_source'] == 'markers'
  source = builder.as_data_source(split='test')  # Random access: array_record files.
  assert len(source) == 3 * 2
  example = source[0]
  assert example['sparse_3d'].shape == (17, 3) and example['camera'].startswith(b'cam')


if importlib.util.find_spec('dill') is not None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class CmuMocapDatasetBuilderTest(tfds.testing.DatasetBuilderTestCase):
    """The standard TFDS builder test on dummy_data (config shared_clips)."""

    DATASET_CLASS = builder_lib.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ['shared_clips']
    # 9 frames per dummy clip, stride 8 → frames 0 and 8; 4 cameras.
    SPLITS = {'train': 10 * 2 * 4, 'test': 3 * 2 * 4}
    DUMMY_DATA = DUMMY

    def _make_builder(self, config=None):
      # This test reads through `as_dataset` (tf.data), which array_record files (the
      # builder's default, tested above) do not support.
      return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                                file_format='tfrecord')
else:

  def test_dataset_builder_test_case():
    pytest.skip('tfds.testing.DatasetBuilderTestCase needs the `dill` package')


# --------------------------------------------------------------------- real examples


def _render(example, path):
  """Draws one example's sparse skeleton and dense/fine points (pixels) to a PNG: the
  whole image on the left, a crop around the body on the right."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  width, height = example['image_size']
  sparse = example['sparse_2d']
  everything = np.concatenate([sparse, example['dense_2d'], example['fine_2d']])
  low, high = everything.min(0), everything.max(0)
  half = 0.6 * (high - low).max()
  figure, panels = plt.subplots(1, 2, figsize=(10, 5))
  for axes, (x_range, y_range) in zip(panels, (
      ((0, width), (height, 0)),
      (((low + high)[0] / 2 - half, (low + high)[0] / 2 + half),
       ((low + high)[1] / 2 + half, (low + high)[1] / 2 - half)))):
    for joint, parent in enumerate(skeleton.H36M_PARENTS):
      if parent >= 0:
        color = 'tab:red' if NAMES[joint].startswith('r_') else 'tab:blue'
        axes.plot(*sparse[[parent, joint]].T, color=color, linewidth=2)
    axes.scatter(*example['fine_2d'].T, s=4, color='tab:gray', label='fine (96)')
    axes.scatter(*example['dense_2d'].T, s=10, color='tab:green', label='dense (48)')
    axes.scatter(*sparse.T, s=18, color='black', label='sparse (17)')
    axes.set_xlim(*x_range)
    axes.set_ylim(*y_range)
    axes.set_aspect('equal')
  panels[1].legend(loc='lower right', fontsize=7)
  figure.suptitle(f"subject {example['subject']}, {example['camera']}, frame "
                  f"{example['frame']} (red = right side; right panel: crop)", fontsize=9)
  figure.savefig(path, dpi=80)
  plt.close(figure)


def test_real_clip_examples(cmu_mocap_dir, tmp_path):
  config = builder_lib.SHARED_CLIPS
  examples = [example for _, example in builder_lib.generate_clip_examples(
      config, 'bvh:131_01', builder_lib.clip_files('bvh:131_01', cmu_mocap_dir))]
  assert len(examples) == 4 * len(range(0, 994, config.frame_stride))
  for example in examples:
    pixels = np.concatenate([example[f'{level}_2d'] for level in ('sparse', 'dense', 'fine')])
    assert np.all(pixels >= 0) and np.all(pixels <= example['image_size'])
    depth = np.concatenate([example[f'{level}_3d'][:, 2] for level in ('sparse', 'dense',
                                                                       'fine')])
    assert depth.min() > 0.5
  # A frame from the middle of the walk, seen by the first camera.
  example = examples[len(examples) // 8]
  _render(example, tmp_path / 'cmu_frame.png')
  assert (tmp_path / 'cmu_frame.png').stat().st_size > 0
  _render(example, '/tmp/cmu_frame.png')
