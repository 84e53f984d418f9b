"""Tests of the Human3.6M builder, its camera data, joint subset and the safe unpickler."""

import dataclasses
import importlib.util
import logging
import os
import pathlib
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hipart_jax import geometry
from hipart_jax import skeleton
from tfds_builders import pose_features
from tfds_builders import safe_pickle
from tfds_builders.human36m import bone_points
from tfds_builders.human36m import cameras
from tfds_builders.human36m import human36m_dataset_builder as h36m
from tfds_builders.human36m import skeleton32

DUMMY_DIR = pathlib.Path(h36m.__file__).parent / 'dummy_data'
CONFIGS = {c.name: c for c in h36m.Builder.BUILDER_CONFIGS}


# Train: S1 'Walking 1' 4 cameras x 10 frames + 'TakingPhoto' 3 cameras x 8 frames (one
# CPN sequence missing); test: S9 'Directions' 4 x 6 + 'Eating 2' 4 x 6 (trimmed). Without
# CPN inputs no camera is missing: 'TakingPhoto' has 4 x 8 and 'Eating 2' 4 x 7.
SPLITS = {'cpn': {'train': 64, 'test': 48}, 'cpn_external': {'train': 64, 'test': 48},
          'gt': {'train': 72, 'test': 52}}

if importlib.util.find_spec('dill') is not None:

  class Human36mCpnTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = h36m.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ['cpn', 'cpn_external']
    SPLITS = SPLITS['cpn']

  class Human36mGtTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = h36m.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ['gt']
    SPLITS = SPLITS['gt']

else:

  def test_dataset_builder_test_case():
    pytest.skip('tfds.testing.DatasetBuilderTestCase needs the `dill` package')


@pytest.mark.parametrize('config_name', sorted(SPLITS))
def test_build_and_read_back(config_name, tmp_path, cpn_examples):
  """Builds from dummy_data, counts the splits, reads examples back through
  tfds.data_source (the training path) and tf.data (the tfrecord copy)."""
  builder = h36m.Builder(config=config_name, data_dir=tmp_path)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=DUMMY_DIR))
  assert builder.info.file_format.value == 'array_record'
  assert {s: builder.info.splits[s].num_examples for s in SPLITS[config_name]} == (
      SPLITS[config_name])
  assert builder.info.metadata['dense_source'] == CONFIGS[config_name].dense_source
  assert pose_features.hierarchy_from_metadata(builder.info.metadata) == (
      skeleton.default_hierarchy())
  source = builder.as_data_source(split='test')
  records = [source[i] for i in range(len(source))]
  assert len(records) == SPLITS[config_name]['test']
  record = next(r for r in records if r['subject'] == b'S9' and r['frame'] == 2
                and r['camera'] == b'58860488' and r['action'] == h36m.ACTIONS.index('Eating'))
  assert set(record['keypoints_2d']) == set(CONFIGS[config_name].input_sources)
  if config_name == 'cpn':
    expected = cpn_examples['test']['S9/Eating 2/58860488/000002']
    for field in ('sparse_2d', 'dense_3d', 'fine_2d'):
      np.testing.assert_allclose(record[field], expected[field], rtol=1e-6)
  dataset = builder.as_dataset(split='train')
  assert sum(1 for _ in dataset) == SPLITS[config_name]['train']


@pytest.fixture(scope='module')
def cpn_data():
  return h36m.load_source_data(DUMMY_DIR, CONFIGS['cpn'])


@pytest.fixture(scope='module')
def cpn_examples(cpn_data):
  return {split: dict(h36m.generate_examples(cpn_data, subjects, 1, CONFIGS['cpn'], split))
          for split, subjects in h36m.SPLIT_SUBJECTS.items()}


# ----------------------------------------------------------------------------- unpickler


class _RunsCommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def test_safe_pickle_refuses_os_system(tmp_path):
  marker = tmp_path / 'pwned'
  payload = pickle.dumps({'positions_3d': _RunsCommand(f'touch {marker}')})
  with pytest.raises(safe_pickle.UnsafePickleError, match='system'):
    safe_pickle.loads(payload)
  assert not marker.exists()
  # The same payload inside an .npz object array (the VideoPose3D container).
  path = tmp_path / 'evil.npz'
  np.savez(path, positions_3d=np.array(_RunsCommand(f'touch {marker}'), dtype=object))
  with pytest.raises(safe_pickle.UnsafePickleError, match='system'):
    safe_pickle.load_npz(path)
  assert not marker.exists()


def test_safe_pickle_loads_numpy_containers(tmp_path):
  value = {'S1': {'Walking 1': np.arange(6.0).reshape(2, 3)}, 'meta': [1, 2.5, 'x', (None,)]}
  for protocol in (2, 3, 4, 5):
    loaded = safe_pickle.loads(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(loaded['S1']['Walking 1'], value['S1']['Walking 1'])
    assert loaded['meta'] == value['meta']
  path = tmp_path / 'ok.npz'
  np.savez(path, positions_3d=value, plain=np.ones(3, np.float32))
  arrays = safe_pickle.load_npz(path)
  assert arrays['positions_3d'].item()['meta'] == value['meta']
  assert arrays['plain'].dtype == np.float32


# ----------------------------------------------------------------------------- skeleton


def test_joint_subset_derivation():
  assert skeleton32.KEPT_JOINTS == (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26,
                                    27)
  induced = skeleton32.induced_parents(skeleton32.PARENTS_32, skeleton32.KEPT_JOINTS)
  differs = [j for j in range(17) if induced[j] != skeleton.H36M_PARENTS[j]]
  # Only the shoulders differ: they hang from Spine1 (sparse 7) through removed anchors.
  assert differs == [11, 14] and induced[11] == induced[14] == 7
  assert skeleton32.sparse_parents() == skeleton.H36M_PARENTS


def test_bone_chains_follow_the_32_joint_tree():
  chains = skeleton32.bone_chains()
  edges = {(p, j) for j, p in enumerate(skeleton32.PARENTS_32) if p >= 0}
  for j, chain in enumerate(chains):
    if skeleton.H36M_PARENTS[j] < 0:
      assert chain == ()
      continue
    assert chain[0] == skeleton32.KEPT_JOINTS[skeleton.H36M_PARENTS[j]]
    assert chain[-1] == skeleton32.KEPT_JOINTS[j]
    links = list(zip(chain[:-1], chain[1:]))
    rewired = j in skeleton32.SHOULDER_REWIRING
    assert all(link in edges for link in links[1:])
    assert (links[0] in edges) != rewired
  assert chains[7] == (0, 11, 12) and chains[11] == (13, 16, 17)


def test_chain_fractions_default_hierarchy():
  dense, fine = bone_points.chain_fractions(skeleton.default_hierarchy())
  np.testing.assert_allclose(dense[:3], [1 / 6, 1 / 2, 5 / 6], rtol=1e-6)
  np.testing.assert_allclose(fine[:6], np.arange(1, 12, 2) / 12, rtol=1e-6)
  # Fine points of a dense point stay inside its third of the bone.
  parent = skeleton.default_hierarchy().fine_parent_array
  assert np.all(np.abs(fine - dense[parent]) < 1 / 6)


def test_points_on_polyline_use_arc_length():
  # Chain 0 → 1 → 2 with segment lengths 1 and 3 and a zero-length detour (3 == 2).
  joints = np.array([[[0, 0, 0], [1, 0, 0], [1, 3, 0], [1, 3, 0]]], np.float64)
  points = bone_points.points_on_chains(joints, [(), (0, 1, 2, 3)], np.array([1, 1, 1]),
                                        np.array([0.125, 0.5, 1.0]))
  np.testing.assert_allclose(points[0], [[0.5, 0, 0], [1, 1, 0], [1, 3, 0]], atol=1e-9)


# ----------------------------------------------------------------------------- cameras


def test_camera_data_is_consistent():
  for subject in cameras.SUBJECTS:
    for camera_id in cameras.CAMERA_IDS:
      params = cameras.camera_params(subject, camera_id)
      assert abs(np.linalg.norm(params['rotation']) - 1) < 1e-6, (subject, camera_id)
      assert 3.0 < np.linalg.norm(params['translation']) < 7.0  # meters, not millimeters
      # The capture volume's centre, 1 m above the floor, is in front of every camera and
      # projects inside its image: catches conjugated rotations and swapped cameras.
      point = geometry.world_to_camera(np.array([[0.0, 0.0, 1.0]]), params['rotation'],
                                       params['translation'])
      assert point[0, 2] > 0
      pixel = geometry.project_to_pixels(point, params['focal'], params['center'],
                                         params['radial'], params['tangential'])[0]
      assert np.all(pixel > 0) and np.all(pixel < cameras.image_size(camera_id))


def test_projection_reproduces_gt_2d_file(cpn_examples):
  count = 0
  for examples in cpn_examples.values():
    for example in examples.values():
      gt = example['keypoints_2d']['gt']
      assert np.max(np.abs(example['sparse_2d'] - gt[:, :2])) < 1.0
      assert np.all(example['sparse_3d'][:, 2] > 0)
      assert np.all(gt[:, 2] == 1) and np.all(example['keypoints_2d']['cpn'][:, 2] == 1)
      count += 1
  assert count == 64 + 48


def test_dense_points_lie_on_bones(cpn_examples):
  example = cpn_examples['train']['S1/Walking 1/58860488/000003']
  hierarchy = CONFIGS['cpn'].hierarchy
  dense_fraction, _ = bone_points.chain_fractions(hierarchy)
  sparse = example['sparse_3d']
  for k, part in enumerate(hierarchy.dense_part):
    if len(skeleton32.bone_chains()[part]) != 2:
      continue  # spine and shoulders bend through removed joints
    start, end = sparse[skeleton.H36M_PARENTS[part]], sparse[part]
    expected = start + dense_fraction[k] * (end - start)
    np.testing.assert_allclose(example['dense_3d'][k], expected, atol=1e-5)
  assert example['action'] == 'Walking' and example['frame'] == 3


# ----------------------------------------------------------------------------- irregular


def test_irregular_sequences_are_trimmed_and_skipped_with_logs(cpn_data, caplog):
  with caplog.at_level(logging.WARNING):
    examples = dict(h36m.generate_examples(cpn_data, ['S1'], 1, CONFIGS['cpn'], 'train'))
  frames = {}
  for key in examples:
    subject, action, camera, _ = key.split('/')
    frames[(action, camera)] = frames.get((action, camera), 0) + 1
  assert all(frames[('Walking 1', c)] == 10 for c in cameras.CAMERA_IDS)  # CPN has 11
  assert ('TakingPhoto', '55011271') not in frames
  assert frames[('TakingPhoto', '54138969')] == 8
  assert 'skipped 1 (subject, action, camera)' in caplog.text
  assert "'TakingPhoto', '55011271'" in caplog.text
  assert 'trimmed 4 sequences' in caplog.text
  assert {e['action'] for e in examples.values()} == {'Walking', 'Photo'}


def test_train_stride(cpn_data):
  config = dataclasses.replace(CONFIGS['cpn'], name='cpn_stride3', train_stride=3)
  examples = dict(h36m.generate_examples(cpn_data, ['S1'], config.train_stride, config,
                                           'train'))
  assert sorted({int(e['frame']) for e in examples.values()}) == [0, 3, 6, 9]


def test_canonical_action():
  assert h36m.canonical_action('Walking 1') == 'Walking'
  assert h36m.canonical_action('WalkingDog 1') == 'WalkDog'
  assert len(h36m.ACTIONS) == 15
  with pytest.raises(ValueError, match='Dancing'):
    h36m.canonical_action('Dancing 2')


def test_external_points_shape_error_names_file_and_field(cpn_data):
  config = CONFIGS['cpn_external']
  data = h36m.load_source_data(DUMMY_DIR, config)
  fine = {s: dict(a) for s, a in data.external['fine_3d'].items()}
  fine['S9']['Directions'] = fine['S9']['Directions'][:, :10]
  bad = dataclasses.replace(data, external={**data.external, 'fine_3d': fine})
  with pytest.raises(ValueError) as error:
    list(h36m.generate_examples(bad, ['S9'], 1, config, 'test'))
  message = str(error.value)
  for part in ('dense_points_h36m.npz', 'fine_3d', "'S9'", "'Directions'", '(6, 96, 3)'):
    assert part in message


def test_external_file_without_field_is_refused(tmp_path):
  for name in ('data_3d_h36m.npz', 'data_2d_h36m_gt.npz', 'data_2d_h36m_cpn_ft_h36m_dbb.npz'):
    (tmp_path / name).write_bytes((DUMMY_DIR / name).read_bytes())
  np.savez(tmp_path / 'dense_points_h36m.npz', dense_3d={'S1': {}})
  with pytest.raises(ValueError, match=r"dense_points_h36m.npz: missing field 'fine_3d'"):
    h36m.load_source_data(tmp_path, CONFIGS['cpn_external'])
