"""Tests for tfds_builders/pose_features.py: the shared schema and its validation."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hipart_jax import skeleton
from tfds_builders import pose_features

NUM_DENSE, NUM_FINE = 5, 7
SOURCES = ('gt', 'cpn')
ACTIONS = ('walk', 'sit')


def _arrays(**overrides):
  rng = np.random.default_rng(0)
  quaternion = rng.normal(size=4)
  fields = dict(
      subject='S1', action='sit', camera='cam0', frame=3, image_size=(1000, 1002),
      camera_params=dict(focal=[1145.0, 1144.0], center=[512.0, 515.0],
                         radial=[-0.2, 0.24, 0.0], tangential=[-0.001, -0.002],
                         rotation=quaternion / np.linalg.norm(quaternion),
                         translation=[1.0, -4.0, 1.5]),
      keypoints_2d={s: np.concatenate([rng.uniform(0, 1000, (17, 2)),
                                       rng.uniform(0, 1, (17, 1))], -1) for s in SOURCES},
      sparse_2d=rng.normal(size=(17, 2)), dense_2d=rng.normal(size=(NUM_DENSE, 2)),
      fine_2d=rng.normal(size=(NUM_FINE, 2)), sparse_3d=rng.normal(size=(17, 3)),
      dense_3d=rng.normal(size=(NUM_DENSE, 3)), fine_3d=rng.normal(size=(NUM_FINE, 3)),
      num_dense=NUM_DENSE, num_fine=NUM_FINE, input_sources=SOURCES, action_names=ACTIONS)
  fields.update(overrides)
  return fields


def test_schema_matches_architecture_table():
  features = pose_features.pose_features(ACTIONS, SOURCES, NUM_DENSE, NUM_FINE)
  info = features.get_tensor_info()
  assert set(info) == {'subject', 'action', 'camera', 'frame', 'image_size', 'camera_params',
                       'keypoints_2d', 'sparse_2d', 'dense_2d', 'fine_2d', 'sparse_3d',
                       'dense_3d', 'fine_3d'}
  assert info['dense_2d'].shape == (NUM_DENSE, 2) and info['fine_3d'].shape == (NUM_FINE, 3)
  assert info['sparse_3d'].shape == (17, 3) and info['sparse_3d'].dtype == np.float32
  assert info['frame'].shape == () and info['frame'].dtype == np.int32
  assert info['image_size'].shape == (2,) and info['image_size'].dtype == np.int32
  assert {k: v.shape for k, v in info['camera_params'].items()} == (
      pose_features.CAMERA_PARAM_SHAPES)
  assert {k: v.shape for k, v in info['keypoints_2d'].items()} == {
      'gt': (17, 3), 'cpn': (17, 3)}
  assert features['action'].names == list(ACTIONS)


def test_valid_example_encodes_and_decodes():
  features = pose_features.pose_features(ACTIONS, SOURCES, NUM_DENSE, NUM_FINE)
  example = pose_features.example_from_arrays(**_arrays())
  assert example['dense_3d'].dtype == np.float32 and example['frame'].dtype == np.int32
  encoded = features.encode_example(example)
  assert encoded['action'] == ACTIONS.index('sit')
  decoded = tfds.as_numpy(features.decode_example(
      features.deserialize_example(features.serialize_example(example))))
  np.testing.assert_allclose(decoded['fine_3d'], example['fine_3d'])
  np.testing.assert_allclose(decoded['camera_params']['rotation'],
                             example['camera_params']['rotation'])
  assert decoded['subject'] == b'S1'


@pytest.mark.parametrize('overrides, field', [
    (dict(dense_2d=np.zeros((NUM_DENSE + 1, 2))), 'dense_2d'),
    (dict(sparse_3d=np.zeros((17, 2))), 'sparse_3d'),
    (dict(fine_3d=np.full((NUM_FINE, 3), np.nan)), 'fine_3d'),
    (dict(keypoints_2d={'gt': np.zeros((17, 3))}), 'keypoints_2d'),
    (dict(keypoints_2d={'gt': np.zeros((17, 3)), 'cpn': np.full((17, 3), 2.0)}),
     'keypoints_2d/cpn'),
    (dict(keypoints_2d={'gt': np.zeros((16, 3)), 'cpn': np.zeros((17, 3))}),
     'keypoints_2d/gt'),
    (dict(camera_params=dict(focal=[1.0, 1.0], center=[0.0, 0.0])), 'camera_params'),
    (dict(action='run'), 'action'),
    (dict(action=5), 'action'),
    (dict(subject=''), 'subject'),
    (dict(frame=-1), 'frame'),
    (dict(frame=1.5), 'frame'),
    (dict(image_size=(1000, 0)), 'image_size'),
])
def test_invalid_example_names_the_field(overrides, field):
  with pytest.raises(ValueError, match=f'^{field}'):
    pose_features.example_from_arrays(**_arrays(**overrides))


def test_camera_params_are_checked():
  params = _arrays()['camera_params']
  with pytest.raises(ValueError, match='^camera_params/rotation: expected a unit quaternion'):
    pose_features.example_from_arrays(
        **_arrays(camera_params=dict(params, rotation=[1.0, 1.0, 0.0, 0.0])))
  with pytest.raises(ValueError, match='^camera_params/radial: expected shape'):
    pose_features.example_from_arrays(
        **_arrays(camera_params=dict(params, radial=[0.0, 0.0])))
  with pytest.raises(ValueError, match='^camera_params/focal: must be positive'):
    pose_features.example_from_arrays(
        **_arrays(camera_params=dict(params, focal=[-1.0, 1.0])))


def test_hierarchy_metadata_round_trip():
  hierarchy = skeleton.Hierarchy.from_maps([1, 1, 2, 4, 4, 5], [0, 0, 1, 2, 3, 4, 5, 5])
  metadata = pose_features.hierarchy_metadata(hierarchy, 'skeleton', ['gt', 'cpn'])
  assert isinstance(metadata, tfds.core.MetadataDict)
  assert metadata['dense_source'] == 'skeleton'
  assert metadata['input_sources'] == ['gt', 'cpn']
  assert pose_features.hierarchy_from_metadata(metadata) == hierarchy
  with pytest.raises(ValueError, match='dense_source'):
    pose_features.hierarchy_metadata(hierarchy, 'mesh', ['gt'])
  with pytest.raises(ValueError, match='input_sources'):
    pose_features.hierarchy_metadata(hierarchy, 'markers', ['gt', 'gt'])
