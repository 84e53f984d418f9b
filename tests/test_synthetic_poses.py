"""Tests for the synthetic_poses TFDS builder (tiny config) and its generator."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hipart_jax import geometry
from hipart_jax import skeleton
from tfds_builders import pose_features
from tfds_builders import synthetic_poses
from tfds_builders.synthetic_poses import body as body_lib
from tfds_builders.synthetic_poses import motions
from tfds_builders.synthetic_poses import synthetic_poses_dataset_builder as builder_lib

TINY = next(c for c in builder_lib.SyntheticPoses.BUILDER_CONFIGS if c.name == 'tiny')


try:
  tfds.testing.DatasetBuilderTestCase  # pylint: disable=pointless-statement
  _TESTING_UNAVAILABLE = ''
except ImportError as error:  # tfds.testing imports `dill`, which tfds does not declare.
  _TESTING_UNAVAILABLE = f'tfds.testing cannot be imported ({error}); pip install dill'

if not _TESTING_UNAVAILABLE:

  class SyntheticPosesBuilderTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's own checks: registration, generation, split sizes, reload, as_dataset."""

    DATASET_CLASS = synthetic_poses.SyntheticPoses
    BUILDER_CONFIG_NAMES_TO_TEST = ['tiny']
    SPLITS = {'train': 72, 'test': 24}

else:

  @pytest.mark.skip(reason=_TESTING_UNAVAILABLE)
  def test_dataset_builder_test_case():
    """Stands for SyntheticPosesBuilderTest where tfds.testing is missing."""


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  builder_lib.SyntheticPoses(config='tiny', data_dir=path).download_and_prepare()
  return path


@pytest.fixture(scope='module')
def train_examples(data_dir):
  source = tfds.data_source('synthetic_poses/tiny', split='train', data_dir=data_dir)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope='module')
def long_sequences():
  """Generated examples of 2 subjects with longer sequences at full frame rate."""
  config = dataclasses.replace(TINY, name='long', frames_per_sequence=10, frame_stride=1)
  return [example for _, example in builder_lib.generate_examples(config, [0, 1])]


def test_tiny_config_sizes_match_the_readme():
  assert TINY.examples_per_subject() * TINY.num_train_subjects == 72
  assert TINY.examples_per_subject() * TINY.num_test_subjects == 24


def test_load_and_data_source_read_the_same_examples(data_dir, train_examples):
  builder = tfds.builder('synthetic_poses/tiny', data_dir=data_dir)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  loaded = list(tfds.as_numpy(tfds.load('synthetic_poses/tiny', split='train[:4]',
                                        data_dir=data_dir)))
  assert len(loaded) == 4 and len(train_examples) == 72
  for from_load, from_source in zip(loaded, train_examples[:4]):
    assert from_load['subject'] == from_source['subject']
    for level in skeleton.LEVELS:
      np.testing.assert_array_equal(from_load[f'{level}_3d'], from_source[f'{level}_3d'])
  metadata = builder.info.metadata
  assert pose_features.hierarchy_from_metadata(metadata) == skeleton.default_hierarchy()
  assert metadata['dense_source'] == 'markers' and metadata['input_sources'] == ['gt']
  assert builder.info.features['action'].names == list(motions.ACTIONS)


def test_splits_are_by_subject(data_dir, train_examples):
  test_source = tfds.data_source('synthetic_poses/tiny', split='test', data_dir=data_dir)
  train_subjects = {e['subject'] for e in train_examples}
  test_subjects = {test_source[i]['subject'] for i in range(len(test_source))}
  assert train_subjects == {b'S1', b'S2', b'S3'} and test_subjects == {b'S4'}
  actions = collections.Counter(int(e['action']) for e in train_examples)
  assert sorted(actions) == list(range(len(motions.ACTIONS)))


def test_generation_is_deterministic():
  first = list(builder_lib.generate_examples(TINY, [0, 3]))
  second = list(builder_lib.generate_examples(TINY, [0, 3]))
  assert [k for k, _ in first] == [k for k, _ in second]
  assert len({k for k, _ in first}) == len(first)  # Keys are unique.
  for (_, a), (_, b) in zip(first, second):
    for field in ('sparse_3d', 'dense_2d', 'fine_3d'):
      np.testing.assert_array_equal(a[field], b[field])
    np.testing.assert_array_equal(a['camera_params']['rotation'],
                                  b['camera_params']['rotation'])
  # Subject 3 alone gives the same data as in company (no shared random state).
  alone = list(builder_lib.generate_examples(TINY, [3]))
  np.testing.assert_array_equal(alone[0][1]['dense_3d'], first[len(alone)][1]['dense_3d'])
  reseeded = dataclasses.replace(TINY, seed=TINY.seed + 1)
  other = next(builder_lib.generate_examples(reseeded, [0]))[1]
  assert not np.allclose(other['sparse_3d'], first[0][1]['sparse_3d'])


def test_stored_2d_is_the_projection_of_the_stored_3d(train_examples):
  for example in train_examples:
    params = example['camera_params']
    for level in skeleton.LEVELS:
      projected = geometry.project_to_pixels(
          example[f'{level}_3d'].astype(np.float64), params['focal'], params['center'],
          params['radial'], params['tangential'])
      np.testing.assert_allclose(example[f'{level}_2d'], projected, atol=1e-2)
    keypoints = example['keypoints_2d']['gt']
    np.testing.assert_array_equal(keypoints[:, :2], example['sparse_2d'])
    np.testing.assert_array_equal(keypoints[:, 2], 1.0)


def test_cameras_agree_on_the_world_pose(train_examples):
  """Camera-to-world with the stored extrinsics gives one world pose per frame."""
  world = collections.defaultdict(list)
  for example in train_examples:
    params = example['camera_params']
    points = np.concatenate([example[f'{level}_3d'] for level in skeleton.LEVELS]).astype(np.float64)
    world[example['subject'], int(example['action']), int(example['frame'])].append(
        geometry.camera_to_world(points, params['rotation'], params['translation']))
  assert all(len(poses) == TINY.num_cameras for poses in world.values())
  for poses in world.values():
    np.testing.assert_allclose(poses[0], poses[1], atol=1e-4)
    sparse = poses[0][:17]
    head, pelvis = skeleton.H36M_JOINT_NAMES.index('head'), 0
    assert sparse[head, 2] > sparse[pelvis, 2] > 0.3  # z up, standing on the ground.
    assert sparse[[3, 6], 2].min() == pytest.approx(0.08, abs=0.01)  # Lower ankle height.


def test_all_points_are_inside_the_image_and_in_front(train_examples):
  for example in train_examples:
    width, height = example['image_size']
    assert (width, height) == (1000, 1002)
    for level in skeleton.LEVELS:
      pixels = example[f'{level}_2d']
      assert np.all((pixels >= 0) & (pixels <= [width, height])), level
      assert np.all(example[f'{level}_3d'][:, 2] > 1.0), level


def _bone_lengths(sparse_3d):
  parents = np.asarray(skeleton.H36M_PARENTS)
  return np.linalg.norm(sparse_3d[1:] - sparse_3d[parents[1:]], axis=-1)


def test_bone_lengths_are_constant_per_subject(long_sequences):
  lengths = collections.defaultdict(list)
  for example in long_sequences:
    lengths[example['subject']].append(_bone_lengths(example['sparse_3d']))
  means = {}
  for subject, values in lengths.items():
    values = np.stack(values)
    np.testing.assert_allclose(values, np.broadcast_to(values[0], values.shape), atol=1e-5)
    means[subject] = values[0]
  h36m = np.array([body_lib.H36M_BONE_LENGTHS_MM[n] for n in skeleton.H36M_JOINT_NAMES[1:]])
  for value in means.values():
    ratio = value / (h36m / 1000)
    assert np.all((ratio > 0.85) & (ratio < 1.15))
  assert not np.allclose(means['S1'], means['S2'])  # Subjects differ.


def test_motion_is_smooth_and_moves(long_sequences):
  tracks = collections.defaultdict(list)
  for example in long_sequences:
    tracks[example['subject'], example['action'], example['camera']].append(
        example['fine_3d'])
  for key, frames in tracks.items():
    frames = np.stack(frames)  # [T, F, 3], consecutive frames 20 ms apart.
    step = np.linalg.norm(np.diff(frames, axis=0), axis=-1)
    assert step.max() < 0.15, key  # < 7.5 m/s for any marker.
    assert np.linalg.norm(frames[-1] - frames[0], axis=-1).max() > 0.02, key


def test_motion_angles_stay_within_limits():
  limits = body_lib.joint_limits()
  times = np.linspace(0, 4, 50)
  for index, action in enumerate(motions.ACTIONS):
    motion = motions.sample_motion(np.random.default_rng(index), action, times)
    assert np.all(motion.angles >= limits[..., 0] - 1e-12)
    assert np.all(motion.angles <= limits[..., 1] + 1e-12)
    np.testing.assert_allclose(np.linalg.det(motion.root_orientation), 1.0)
  with pytest.raises(ValueError, match='unknown action'):
    motions.sample_motion(np.random.default_rng(0), 'dance', times)
