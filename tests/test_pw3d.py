"""Tests of the 3DPW builder, its SMPL code and the restricted unpickler on Python 2 pickles."""

import dataclasses
import importlib.util
import pathlib
import pickletools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hipart_jax import skeleton
from tfds_builders import pose_features
from tfds_builders import safe_pickle
from tfds_builders.pw3d import make_dummy_data
from tfds_builders.pw3d import pw3d_dataset_builder as pw3d
from tfds_builders.pw3d import smpl

DUMMY_DIR = pathlib.Path(pw3d.__file__).parent / 'dummy_data'
CONFIGS = {c.name: c for c in pw3d.Builder.BUILDER_CONFIGS}
# courtyard_backpack_00: 2 actors x 6 frames, 2 invalid; courtyard_arguing_00: 5 frames, 1
# invalid; courtyard_drinking_00: 4; outdoors_fencing_01: 5; downtown_walking_00: 3.
SPLITS = {'default': {'train': 14, 'validation': 4, 'test': 8},
          'smpl_regressed': {'train': 14, 'validation': 4, 'test': 8},
          'occ': {'test': 15}}

if importlib.util.find_spec('dill') is not None:

  class Pw3dTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = pw3d.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ['default', 'smpl_regressed']
    SPLITS = SPLITS['default']

  class Pw3dOccTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = pw3d.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ['occ']
    SPLITS = SPLITS['occ']

else:

  def test_dataset_builder_test_case():
    pytest.skip('tfds.testing.DatasetBuilderTestCase needs the `dill` package')


def _load(split, name):
  path = DUMMY_DIR / 'sequenceFiles' / split / f'{name}.pkl'
  return safe_pickle.load_pickle_file(path, encoding='latin1')


@pytest.fixture(scope='module')
def fencing():
  data = _load('test', 'outdoors_fencing_01')
  return data, dict(pw3d.sequence_examples(data, 'outdoors_fencing_01', CONFIGS['default']))


@pytest.mark.parametrize('config_name', sorted(SPLITS))
def test_build_and_read_back(config_name, tmp_path):
  """Builds from dummy_data, counts the splits, reads examples back through
  tfds.data_source (the training path) and tf.data (the tfrecord copy)."""
  builder = pw3d.Builder(config=config_name, data_dir=tmp_path)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=DUMMY_DIR))
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == SPLITS[config_name]
  assert pose_features.hierarchy_from_metadata(builder.info.metadata) == (
      skeleton.default_hierarchy())
  source = builder.as_data_source(split='test')
  cameras = {bytes(source[i]['camera']).decode() for i in range(len(source))}
  expected = ({'courtyard_backpack_00', 'outdoors_fencing_01'} if config_name == 'occ'
              else {'outdoors_fencing_01', 'downtown_walking_00'})
  assert cameras == expected
  assert sum(1 for _ in builder.as_dataset(split='test')) == SPLITS[config_name]['test']


def test_sequence_files_are_python2_pickles():
  data = (DUMMY_DIR / 'sequenceFiles' / 'test' / 'outdoors_fencing_01.pkl').read_bytes()
  opcodes = {op.name for op, _, _ in pickletools.genops(data)}
  assert {'SHORT_BINSTRING', 'BINSTRING'} <= opcodes
  assert not opcodes & {'BINUNICODE', 'SHORT_BINUNICODE', 'BINBYTES', 'SHORT_BINBYTES'}
  loaded = safe_pickle.loads(data, encoding='latin1')
  assert loaded['sequence'] == 'outdoors_fencing_01' and loaded['genders'] == ['m']
  assert loaded['poses2d'][0].shape == (5, 3, 18)


def test_restricted_unpickler_refuses_python2_os_system(tmp_path):
  marker = tmp_path / 'pwned'
  payload = f"cposix\nsystem\n(S'touch {marker}'\ntR.".encode()
  with pytest.raises(safe_pickle.UnsafePickleError, match='posix.system'):
    safe_pickle.loads(payload, encoding='latin1')
  assert not marker.exists()


def test_camera_conversion_matches_the_file(fencing):
  """Examples equal the file's joints through its own 4x4 extrinsics and 3x3 K."""
  data, examples = fencing
  joints = data['jointPositions'][0].reshape(-1, 24, 3)
  mapped = np.einsum('hs,nsc->nhc', smpl.smpl_to_h36m_matrix(), joints)
  for frame in range(5):
    example = examples[f'outdoors_fencing_01/0/{frame:05d}']
    extrinsics = data['cam_poses'][frame]
    cam = mapped[frame] @ extrinsics[:3, :3].T + extrinsics[:3, 3]
    np.testing.assert_allclose(example['sparse_3d'], cam, atol=1e-5)
    pixels = cam @ data['cam_intrinsics'].T
    np.testing.assert_allclose(example['sparse_2d'], pixels[:, :2] / pixels[:, 2:], atol=1e-2)
    np.testing.assert_allclose(example['keypoints_2d']['gt'][:, :2], example['sparse_2d'])
    assert tuple(example['image_size']) == (1080, 1920)


def test_openpose_inputs_are_converted(fencing):
  data, examples = fencing
  detections = np.swapaxes(data['poses2d'][0], 1, 2)  # [N, 18, 3]
  expected, confidence = skeleton.OPENPOSE_COCO18.convert(detections[..., :2],
                                                          detections[..., 2])
  for frame in range(5):
    got = examples[f'outdoors_fencing_01/0/{frame:05d}']['keypoints_2d']['openpose']
    np.testing.assert_allclose(got[:, :2], expected[frame], rtol=1e-6)
    np.testing.assert_allclose(got[:, 2], confidence[frame], rtol=1e-6)
  assert np.any(confidence == 0)  # the dummy detections miss some keypoints


def test_invalid_camera_frames_are_skipped():
  data = _load('train', 'courtyard_backpack_00')
  keys = list(dict(pw3d.sequence_examples(data, 'courtyard_backpack_00', CONFIGS['default'])))
  assert [k for k in keys if '/1/' in k] == [f'courtyard_backpack_00/1/{f:05d}'
                                            for f in (0, 1, 4, 5)]
  assert len(keys) == 10


def test_missing_field_error_names_file_and_field():
  data = dict(_load('test', 'downtown_walking_00'))
  del data['cam_poses']
  with pytest.raises(ValueError, match=r"downtown_walking_00.pkl: missing field 'cam_poses'"):
    list(pw3d.sequence_examples(data, 'downtown_walking_00', CONFIGS['default']))


def test_occluded_sequence_list():
  assert len(pw3d.OCCLUDED_SEQUENCES) == len(set(pw3d.OCCLUDED_SEQUENCES)) == 17
  assert pw3d.sequence_base('outdoors_fencing_01') == 'outdoors_fencing'
  files = pw3d.sequence_files(DUMMY_DIR, 'train', CONFIGS['occ'])
  assert [f.stem for f in files] == ['courtyard_backpack_00']


# ------------------------------------------------------------------------------- SMPL


def test_smpl_to_h36m_table():
  weights = smpl.smpl_to_h36m_matrix()
  np.testing.assert_allclose(weights.sum(axis=1), 1.0)
  joints = np.random.default_rng(0).normal(size=(24, 3))
  mapped = smpl.smpl_to_h36m(joints)
  names = smpl.SMPL_JOINT_NAMES
  np.testing.assert_allclose(mapped[1], joints[names.index('r_hip')])
  np.testing.assert_allclose(mapped[13], joints[names.index('l_wrist')])
  np.testing.assert_allclose(mapped[8], joints[[16, 17]].mean(axis=0))


@pytest.fixture(scope='module')
def fake_model():
  arrays = make_dummy_data.fake_smpl_arrays(np.random.default_rng(1), 1.0)
  return smpl.SmplModel.from_arrays(arrays)


def test_rodrigues():
  rotation = smpl.rodrigues(np.array([[0, 0, np.pi / 2], [0, 0, 0]]))
  np.testing.assert_allclose(rotation[0], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
  np.testing.assert_allclose(rotation[1], np.eye(3))


def test_smpl_rest_pose_is_the_template(fake_model):
  trans = np.array([[0.1, 0.2, 0.3]])
  vertices, joints = smpl.smpl_forward(fake_model, np.zeros(10), np.zeros((1, 72)), trans)
  np.testing.assert_allclose(vertices[0], fake_model.v_template + trans, atol=1e-12)
  np.testing.assert_allclose(joints[0], fake_model.joint_regressor @ fake_model.v_template
                             + trans, atol=1e-12)


def test_smpl_root_rotation_rotates_about_the_root(fake_model):
  poses = np.zeros((1, 72))
  poses[0, :3] = [0, np.pi / 2, 0]  # root only: pose blend shapes stay zero
  vertices, _ = smpl.smpl_forward(fake_model, np.zeros(10), poses, np.zeros((1, 3)))
  root = (fake_model.joint_regressor @ fake_model.v_template)[0]
  expected = (fake_model.v_template - root) @ smpl.rodrigues(poses[0, :3]).T + root
  np.testing.assert_allclose(vertices[0], expected, atol=1e-12)


def test_smpl_elbow_bend_moves_the_forearm_only(fake_model):
  model = dataclasses.replace(fake_model, posedirs=np.zeros_like(fake_model.posedirs))
  poses = np.zeros((1, 72))
  elbow, wrist = smpl.SMPL_JOINT_NAMES.index('l_elbow'), smpl.SMPL_JOINT_NAMES.index('l_wrist')
  poses[0, 3 * elbow:3 * elbow + 3] = [0, 0, 0.7]
  _, joints = smpl.smpl_forward(model, np.zeros(10), poses, np.zeros((1, 3)))
  rest = model.joint_regressor @ model.v_template
  moved = np.flatnonzero(np.linalg.norm(joints[0] - rest, axis=-1) > 1e-9).tolist()
  assert moved == [wrist, smpl.SMPL_JOINT_NAMES.index('l_hand')]
  expected = smpl.rodrigues(np.array([0, 0, 0.7])) @ (rest[wrist] - rest[elbow]) + rest[elbow]
  np.testing.assert_allclose(joints[0, wrist], expected, atol=1e-12)


def test_regressed_joints_config(fencing):
  config = CONFIGS['smpl_regressed']
  smpl_joints = pw3d.SmplJoints(DUMMY_DIR, config)
  data, table_examples = fencing
  examples = dict(pw3d.sequence_examples(data, 'outdoors_fencing_01', config, smpl_joints))
  key = 'outdoors_fencing_01/0/00002'
  offset = np.linalg.norm(examples[key]['sparse_3d'] - table_examples[key]['sparse_3d'], axis=-1)
  assert 0 < offset.max() < 0.1  # regressed from the mesh: near, not equal to, the table
  legs_swapped = np.arange(17)
  legs_swapped[[1, 2, 3, 4, 5, 6]] = [4, 5, 6, 1, 2, 3]
  smpl_joints.regressor = smpl_joints.regressor[legs_swapped]
  with pytest.raises(ValueError, match=r"\('r_knee', 'l_knee'\).*left/right swapped"):
    list(pw3d.sequence_examples(data, 'outdoors_fencing_01', config, smpl_joints))
