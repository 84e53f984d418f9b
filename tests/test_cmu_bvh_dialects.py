"""Tests of the BVH dialects of the cmu_mocap builder and its `multi_subject` config.

Dummy-data tests always run (one tiny file per dialect); tests on the shared real clips
skip when they are absent (the `cmu_mocap_dir` fixture) and read few frames.
"""

import dataclasses
import pathlib

import numpy as np
import pytest

from hipart_jax import skeleton
from tfds_builders import markers
from tfds_builders.cmu_mocap import bvh
from tfds_builders.cmu_mocap import bvh_dialects
from tfds_builders.cmu_mocap import cmu_mocap_dataset_builder as builder_lib
from tfds_builders.cmu_mocap import h36m_map
from tfds_builders.cmu_mocap import multi_subject

DUMMY = pathlib.Path(builder_lib.__file__).parent / 'dummy_data'
NAMES = skeleton.H36M_JOINT_NAMES
DUMMY_DIALECTS = {'131_01': '3ds_max', '02_01': 'motionbuilder', '10_04': 'daz'}
# Root-relative Human3.6M joints of 01_01 as ASF/AMC and as MotionBuilder BVH (back bone
# restored) differ by at most 5.3 mm (the regrown thorax bone is the upper back's copy);
# the legs agree to the files' 5 printed digits.
CROSS_FORMAT_TOLERANCE_M = 0.006
CROSS_FORMAT_LEG_TOLERANCE_M = 1e-5


def _hierarchy_only(path: pathlib.Path) -> bvh.BvhSkeleton:
  """The HIERARCHY of a BVH file, without parsing its MOTION values."""
  header = path.read_text().split('MOTION')[0]
  hierarchy, _ = bvh.parse_bvh(header + 'MOTION\nFrames: 0\nFrame Time: 0.1\n')
  return hierarchy


# ----------------------------------------------------------------------- dialect tables


def test_dialect_tables_are_complete():
  extra_names = {point.name for point in h36m_map.EXTRA_POINTS}
  for name, table in bvh_dialects.DIALECTS.items():
    assert set(table['joints']) == set(NAMES), name
    assert set(table['extra_points']) == extra_names, name
    assert set(table['restore']['joints']) <= set(NAMES), name
  # The 3ds-Max table is the map `shared_clips` was built with.
  assert h36m_map.dialect_extra_points('3ds_max') == tuple(
      point.bvh for point in h36m_map.EXTRA_POINTS)
  assert h36m_map.BVH_TO_H36M.points[NAMES.index('spine')] == ('Chest', 1.0)
  assert h36m_map.BVH_TO_H36M.bone_segments[NAMES.index('neck_nose')] == 'Neck'
  assert bvh_dialects.UNITS['cmu'] == builder_lib.CMU_METERS_PER_UNIT


@pytest.mark.parametrize('clip', sorted(DUMMY_DIALECTS))
def test_detect_dummy_dialects(clip):
  hierarchy = _hierarchy_only(DUMMY / 'bvh' / f'{clip}.bvh')
  assert h36m_map.detect_bvh_dialect(hierarchy.names) == DUMMY_DIALECTS[clip]


def test_unknown_skeleton_names_file_guess_and_joints():
  names = tuple(n.replace('lShin', 'lCalf') for n in _hierarchy_only(
      DUMMY / 'bvh' / '10_04.bvh').names)
  with pytest.raises(ValueError, match=r"my\.bvh: unknown BVH skeleton.*'daz'.*lShin"):
    h36m_map.detect_bvh_dialect(names, 'my.bvh')


def test_units_from_leg_length():
  cmu = _hierarchy_only(DUMMY / 'bvh' / '131_01.bvh')
  daz = _hierarchy_only(DUMMY / 'bvh' / '10_04.bvh')
  cmu_legs = h36m_map.bvh_leg_length(cmu, '3ds_max')
  assert h36m_map.infer_meters_per_unit(cmu_legs) == bvh_dialects.UNITS['cmu']
  assert h36m_map.infer_meters_per_unit(h36m_map.bvh_leg_length(daz, 'daz')) == 0.01
  in_meters = dataclasses.replace(cmu, offsets=cmu.offsets * bvh_dialects.UNITS['cmu'])
  assert h36m_map.infer_meters_per_unit(h36m_map.bvh_leg_length(in_meters, '3ds_max')) == 1.0
  inches = cmu_legs * bvh_dialects.UNITS['cmu'] / 0.0254
  assert h36m_map.infer_meters_per_unit(inches) == 0.0254
  with pytest.raises(ValueError, match='giant.bvh: leg length'):
    h36m_map.infer_meters_per_unit(5000.0, 'giant.bvh')


def test_per_clip_unit_override():
  clip = 'bvh:10_04'
  files = builder_lib.clip_files(clip, DUMMY)
  config = builder_lib.CmuMocapConfig(name='x', clip_meters_per_unit=((clip, 0.02),))
  assert config.meters_per_unit(clip) == 0.02 and config.meters_per_unit('bvh:02_01') is None
  inferred = builder_lib.load_clip(files, 4)
  doubled = builder_lib.load_clip(files, 4, bvh_meters_per_unit=config.meters_per_unit(clip))
  np.testing.assert_allclose(doubled.joints, 2 * inferred.joints, atol=1e-12)


def test_bad_motion_names_the_file(tmp_path):
  text = (DUMMY / 'bvh' / '02_01.bvh').read_text().split('MOTION')[0]
  path = tmp_path / 'short.bvh'
  path.write_text(text + 'MOTION\nFrames: 1\nFrame Time: 0.1\n' + ' '.join(
      ['0'] * _hierarchy_only(DUMMY / 'bvh' / '02_01.bvh').num_channels) + '\n')
  with pytest.raises(ValueError, match=r'short\.bvh: MOTION: 1 frames.*lead-in'):
    builder_lib.load_bvh(path)


# ------------------------------------------------------------------ dummy clips per dialect


def _check_pose(poses):
  frames = poses.bone_frames
  assert np.abs(frames @ np.swapaxes(frames, -1, -2) - np.eye(3)).max() < 1e-9
  assert markers.bone_axis_error(poses.joints, frames).max() < 1e-6
  parents = list(skeleton.H36M_PARENTS[1:])
  bones = np.linalg.norm(poses.joints[:, 1:] - poses.joints[:, parents], axis=-1)
  assert 0.04 < bones.min() and bones.max() < 0.5
  assert 0.7 < poses.leg_length < 1.0


@pytest.mark.parametrize('clip', sorted(DUMMY_DIALECTS))
def test_dummy_clip_per_dialect(clip):
  poses = builder_lib.load_clip(builder_lib.clip_files(f'bvh:{clip}', DUMMY), 4)
  np.testing.assert_array_equal(poses.frames, [0, 4, 8])  # MotionBuilder: lead-in dropped.
  _check_pose(poses)
  # z-up world: head above thorax above pelvis above knees.
  height = poses.joints[..., 2]
  for low, high in (('l_knee', 'pelvis'), ('pelvis', 'thorax'), ('thorax', 'head')):
    assert np.all(height[:, NAMES.index(low)] < height[:, NAMES.index(high)]), (low, high)


def test_restore_back_on_dummy_motionbuilder():
  files = builder_lib.clip_files('bvh:02_01', DUMMY)
  filed = builder_lib.load_clip(files, 8, bvh_restore_back=False)
  restored = builder_lib.load_clip(files, 8)
  hierarchy, _, _, scale = builder_lib.load_bvh(files['bvh'], restore=True)
  back_bone = np.linalg.norm(hierarchy.offsets[hierarchy.names.index('Spine1')]) * scale
  for name in ('neck_nose', 'head', 'l_shoulder', 'r_wrist'):
    shift = np.linalg.norm(restored.joints[:, NAMES.index(name)]
                           - filed.joints[:, NAMES.index(name)], axis=-1)
    np.testing.assert_allclose(shift, back_bone, rtol=1e-9)
  np.testing.assert_allclose(restored.joints[:, :7], filed.joints[:, :7], atol=1e-12)


def test_builder_with_validation_split_on_dummy_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = builder_lib.CmuMocapConfig(
      name='dialects', train_clips=('01_01', 'bvh:131_01'), validation_clips=('bvh:02_01',),
      test_clips=('bvh:10_04',), actions=multi_subject.ACTIONS,
      clip_actions=tuple(multi_subject.CLIP_ACTIONS.items()), frame_stride=4,
      num_cameras=2)
  builder = builder_lib.Builder(config=config, data_dir=tmp_path)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(DUMMY)))
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  assert counts == {'train': 2 * 3 * 2, 'validation': 3 * 2, 'test': 3 * 2}
  assert builder.info.features['action'].names == list(multi_subject.ACTIONS)
  example = builder.as_data_source(split='test')[0]
  assert example['action'] == multi_subject.ACTIONS.index('sports')


# ------------------------------------------------------------------- multi_subject config


def _subject(clip):
  return builder_lib.parse_clip(clip)[1]


def test_multi_subject_splits():
  config = builder_lib.MULTI_SUBJECT
  splits = config.splits()
  assert set(splits) == {'train', 'validation', 'test'}
  subjects = {name: {_subject(c) for c in clips} for name, clips in splits.items()}
  assert subjects['train'] == set(multi_subject.TRAIN_SUBJECTS)
  assert subjects['validation'] == {'08', '14'} and subjects['test'] == {'06', '09', '13'}
  assert not (subjects['train'] & subjects['validation'] or subjects['train'] & subjects['test']
              or subjects['validation'] & subjects['test'])
  all_clips = [c for clips in splits.values() for c in clips]
  assert len(all_clips) == len(set(all_clips)) == 12 + 61
  assert 'bvh:01_01' not in all_clips and '01_12' in splits['train']
  for clip in all_clips:
    assert config.action(clip) in config.actions
  test_actions = {_subject(c): config.action(c) for c in splits['test']
                  if config.action(c) != 'walk'}
  assert test_actions == {'06': 'sports', '09': 'run', '13': 'everyday'}
  assert config.frame_stride == 4 and config.num_cameras == 4
  assert builder_lib.SHARED_CLIPS.splits().keys() == {'train', 'test'}
  assert builder_lib.SHARED_CLIPS.actions == builder_lib.ACTIONS


# ------------------------------------------------------------------------- real clips


def test_every_real_bvh_has_a_dialect(cmu_mocap_dir):
  found = {}
  for path in sorted((cmu_mocap_dir / 'bvh').glob('*.bvh')):
    found[path.stem] = h36m_map.detect_bvh_dialect(_hierarchy_only(path).names, str(path))
  assert len(found) == 62
  assert found['131_01'] == '3ds_max' and found['01_01'] == 'motionbuilder'
  assert {c for c, d in found.items() if d == 'daz'} == {
      '10_04', '11_01', '12_01', '12_02', '13_11', '13_13', '13_39', '14_07'}
  train = {builder_lib.parse_clip(c)[2] for c in builder_lib.MULTI_SUBJECT.train_clips}
  assert {found[c] for c in train if c in found} == set(bvh_dialects.DIALECTS)


def test_cross_format_01_01(cmu_mocap_dir):
  """ASF/AMC and MotionBuilder BVH of one take give the same root-relative joints."""
  asf = builder_lib.load_clip(builder_lib.clip_files('01_01', cmu_mocap_dir), 50)
  bvh_ = builder_lib.load_clip(builder_lib.clip_files('bvh:01_01', cmu_mocap_dir), 50)
  np.testing.assert_array_equal(asf.frames, bvh_.frames)
  relative = [p.joints - p.joints[:, :1] for p in (asf, bvh_)]
  error = np.linalg.norm(relative[0] - relative[1], axis=-1)  # [T, 17]
  assert error.max() < CROSS_FORMAT_TOLERANCE_M
  legs = [NAMES.index(n) for n in ('r_hip', 'r_knee', 'r_ankle', 'l_hip', 'l_knee',
                                    'l_ankle')]
  assert error[:, legs].max() < CROSS_FORMAT_LEG_TOLERANCE_M
  # Bone frames (what the markers hang on) agree within 2 degrees.
  cosine = (np.trace(np.swapaxes(asf.bone_frames, -1, -2) @ bvh_.bone_frames, axis1=-2,
                     axis2=-1) - 1) / 2
  assert np.degrees(np.arccos(np.clip(cosine, -1, 1))).max() < 2.0


@pytest.mark.parametrize('clip', ['bvh:10_04', 'bvh:09_01', 'bvh:131_01'])
def test_real_dialect_geometry_against_asf(cmu_mocap_dir, clip):
  """Each dialect's mapped skeleton has the ASF subject's proportions (within 35 %) and
  its knee frames face the way the pelvis faces, as on the ASF clips."""
  reference = builder_lib.load_clip(builder_lib.clip_files('01_01', cmu_mocap_dir), 100)
  poses = builder_lib.load_clip(builder_lib.clip_files(clip, cmu_mocap_dir), 40)
  _check_pose(poses)
  parents = list(skeleton.H36M_PARENTS[1:])

  def proportions(p):
    bones = np.linalg.norm(p.joints[:, 1:] - p.joints[:, parents], axis=-1).mean(0)
    return bones / p.leg_length

  ratio = proportions(poses) / proportions(reference)
  wide = [NAMES.index(n) - 1 for n in ('l_shoulder', 'r_shoulder')]  # Daz: narrow.
  assert np.all(np.abs(np.delete(ratio, wide) - 1) < 0.35), dict(zip(NAMES[1:], ratio))
  for p in (reference, poses):
    pelvis_y = p.bone_frames[:, 0, :, 1]
    for knee in ('l_knee', 'r_knee'):
      knee_y = p.bone_frames[:, NAMES.index(knee), :, 1]
      assert np.median(np.sum(pelvis_y * knee_y, -1)) > 0.7, (clip, knee)
