"""Tests of the MPI-INF-3DHP test-set builder, its .mat reading and its joint table."""

import importlib.util
import logging
import pathlib
import sys

import h5py
import numpy as np
import pytest
from scipy import io as scipy_io
import tensorflow_datasets as tfds

from hipart_jax import protocols
from hipart_jax import skeleton
from tfds_builders import pose_features
from tfds_builders.mpi_inf_3dhp import mat_annotations
from tfds_builders.mpi_inf_3dhp import mpi_inf_3dhp_dataset_builder as mpi

DUMMY_DIR = pathlib.Path(mpi.__file__).parent / 'dummy_data'
TEST_SET = DUMMY_DIR / 'mpi_inf_3dhp_test_set'
# make_dummy_data.py: valid, finite frames per sequence (see its docstring).
EXAMPLES_PER_SEQUENCE = {'TS1': 5, 'TS2': 2, 'TS3': 4, 'TS4': 2, 'TS5': 3, 'TS6': 2}
SPLITS = {'test': sum(EXAMPLES_PER_SEQUENCE.values())}
# Human3.6M-17 joint k ← MPI-INF-3DHP test joint H36M_FROM_MPI[k], written out by hand.
H36M_FROM_MPI = (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4)

if importlib.util.find_spec('dill') is not None:

  class MpiInf3dhpTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = mpi.Builder
    SPLITS = SPLITS

else:

  def test_dataset_builder_test_case():
    pytest.skip('tfds.testing.DatasetBuilderTestCase needs the `dill` package')


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """The dummy dataset built once: (builder, {key: record of the test split})."""
  builder = mpi.Builder(data_dir=tmp_path_factory.mktemp('tfds'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=DUMMY_DIR))
  source = builder.as_data_source(split='test')
  records = [source[i] for i in range(len(source))]
  return builder, {(r['subject'].decode(), int(r['frame'])): r for r in records}


def _raw(sequence, field):
  """A field straight from the dummy HDF5 file, h5py orientation."""
  with h5py.File(TEST_SET / sequence / 'annot_data.mat', 'r') as mat:
    return np.asarray(mat[field][()])


def test_build_counts_and_metadata(built):
  builder, records = built
  assert builder.info.file_format.value == 'array_record'
  assert builder.info.splits['test'].num_examples == SPLITS['test']
  counts = {}
  for sequence, _ in records:
    counts[sequence] = counts.get(sequence, 0) + 1
  assert counts == EXAMPLES_PER_SEQUENCE
  # Invalid frames (TS1/2, TS2/0, TS2/4) and the valid NaN frame TS2/2 are absent.
  assert {('TS1', 2), ('TS2', 0), ('TS2', 2), ('TS2', 4)}.isdisjoint(records)
  assert builder.info.metadata['dense_source'] == 'skeleton'
  assert pose_features.hierarchy_from_metadata(builder.info.metadata) == (
      skeleton.default_hierarchy())
  assert sum(1 for _ in builder.as_dataset(split='test')) == SPLITS['test']


def test_example_values(built):
  """TS5 frame 1 against the raw HDF5 arrays, mapped by the hand-written table."""
  _, records = built
  record = records[('TS5', 1)]
  univ = _raw('TS5', 'univ_annot3')[1, 0]  # [17, 3] mm, 3DHP order.
  annot2 = _raw('TS5', 'annot2')[1, 0]
  np.testing.assert_allclose(record['sparse_3d'], univ[list(H36M_FROM_MPI)] / 1000,
                             rtol=1e-6)
  np.testing.assert_allclose(record['sparse_2d'], annot2[list(H36M_FROM_MPI)], rtol=1e-6)
  np.testing.assert_allclose(record['keypoints_2d']['gt'][:, :2], record['sparse_2d'])
  np.testing.assert_array_equal(record['keypoints_2d']['gt'][:, 2], 1.0)
  assert record['camera'] == b'ts5-6'
  np.testing.assert_array_equal(record['image_size'], [1920, 1080])
  assert records[('TS1', 0)]['camera'] == b'ts1-4'
  np.testing.assert_array_equal(records[('TS1', 0)]['image_size'], [2048, 2048])
  np.testing.assert_array_equal(record['camera_params']['rotation'], [1, 0, 0, 0])
  # Dense point 0 of r_hip lies 1/6 along pelvis → r_hip (in 2D and 3D); its first fine
  # point 1/12 along.
  hierarchy = skeleton.default_hierarchy()
  first_dense = hierarchy.dense_part.index(1)
  first_fine = hierarchy.fine_parent.index(first_dense)
  for dim, level in ((3, '3d'), (2, '2d')):
    pelvis, r_hip = record[f'sparse_{level}'][0], record[f'sparse_{level}'][1]
    np.testing.assert_allclose(record[f'dense_{level}'][first_dense],
                               pelvis + (r_hip - pelvis) / 6, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(record[f'fine_{level}'][first_fine],
                               pelvis + (r_hip - pelvis) / 12, rtol=1e-5, atol=1e-5)
    assert record[f'dense_{level}'].shape == (hierarchy.num_dense, dim)


def test_activities(built):
  _, records = built
  names = mat_annotations.ACTIVITIES
  assert names[records[('TS1', 0)]['action']] == 'Standing/Walking'
  assert names[records[('TS1', 4)]['action']] == 'On the Floor'
  assert names[records[('TS1', 5)]['action']] == 'Unknown'  # activity 0
  assert names[records[('TS2', 3)]['action']] == 'Miscellaneous'
  assert names[records[('TS5', 0)]['action']] == 'Sports'
  assert len(names) == 8 and names[0] == 'Unknown'
  # Out-of-range ids (TS4 frame 1 has 9) read as unknown.
  ts4 = mat_annotations.read_sequence(TEST_SET / 'TS4' / 'annot_data.mat')
  np.testing.assert_array_equal(ts4.activity, [3, 0, 3])


def test_nan_valid_frame_is_logged(caplog):
  sequence = mat_annotations.read_sequence(TEST_SET / 'TS2' / 'annot_data.mat')
  config = mpi.Builder.BUILDER_CONFIGS[0]
  with caplog.at_level(logging.WARNING):
    keys = [key for key, _ in mpi.sequence_examples('TS2', sequence, config)]
  assert keys == ['TS2/000001', 'TS2/000003']
  assert 'skipping 1 valid frames' in caplog.text and '[2]' in caplog.text


def test_stride_keeps_multiples():
  sequence = mat_annotations.read_sequence(TEST_SET / 'TS1' / 'annot_data.mat')
  config = mpi.MpiInf3dhpConfig(name='strided', stride=2)
  keys = [key for key, _ in mpi.sequence_examples('TS1', sequence, config)]
  assert keys == ['TS1/000000', 'TS1/000004']  # Frame 2 is invalid.


def test_v5_file_reads_like_v73(tmp_path):
  """A MATLAB v5 file (scipy, MATLAB dimension order) gives the same arrays."""
  v73 = mat_annotations.read_sequence(TEST_SET / 'TS6' / 'annot_data.mat')
  variables = {name: _raw('TS6', name).T for name in (
      'valid_frame', 'activity_annotation', 'annot2', 'univ_annot3')}
  assert variables['annot2'].shape == (2, 17, 1, 3)  # MATLAB: 2 x 17 x 1 x n.
  path = tmp_path / 'annot_data.mat'
  scipy_io.savemat(path, variables)
  v5 = mat_annotations.read_sequence(path)
  for field in ('valid', 'activity', 'annot2', 'univ_annot3'):
    np.testing.assert_array_equal(getattr(v5, field), getattr(v73, field))


def test_pose_orientations():
  points = np.arange(4 * 17 * 3, dtype=np.float64).reshape(4, 17, 3)
  matlab = points.transpose(2, 1, 0)[:, :, None, :]  # 3 x 17 x 1 x n
  for stored in (points[:, None], points, matlab, matlab[:, :, 0]):
    np.testing.assert_array_equal(
        mat_annotations.pose_array('f.mat', 'x', stored, 4, 3), points)
  with pytest.raises(ValueError, match=r'f\.mat: x has shape \(4, 17, 2\)'):
    mat_annotations.pose_array('f.mat', 'x', points[..., :2], 4, 3)
  with pytest.raises(ValueError, match='4 frames as in valid_frame'):
    mat_annotations.pose_array('f.mat', 'x', points[:3, None], 4, 3)
  square = np.random.default_rng(0).normal(size=(3, 17, 3))
  with pytest.raises(ValueError, match='ambiguous'):
    mat_annotations.pose_array('f.mat', 'x', square, 3, 3)


def test_file_errors(tmp_path, monkeypatch):
  text = tmp_path / 'annot_data.mat'
  text.write_text('not a mat file')
  with pytest.raises(ValueError, match='not a MATLAB v5 or v7.3 MAT-file'):
    mat_annotations.read_sequence(text)
  incomplete = tmp_path / 'incomplete.mat'
  with h5py.File(incomplete, 'w') as mat:
    mat['valid_frame'] = np.ones((3, 1))
  with pytest.raises(ValueError, match=r"incomplete\.mat: missing fields \['activity"):
    mat_annotations.read_sequence(incomplete)
  monkeypatch.setitem(sys.modules, 'h5py', None)
  with pytest.raises(ImportError, match='needs h5py'):
    mat_annotations.read_sequence(TEST_SET / 'TS1' / 'annot_data.mat')
  with pytest.raises(FileNotFoundError, match='TS3/annot_data.mat not found'):
    mpi.annotation_path(tmp_path, 'TS3')
  assert mpi.annotation_path(DUMMY_DIR, 'TS3') == TEST_SET / 'TS3' / 'annot_data.mat'
  assert mpi.annotation_path(TEST_SET, 'TS3') == TEST_SET / 'TS3' / 'annot_data.mat'


def test_joint_table():
  assert mat_annotations.TO_H36M == H36M_FROM_MPI
  assert sorted(mat_annotations.TO_H36M) == list(range(17))
  mapping = mat_annotations.check_tables()
  assert mapping['pelvis'] == 'pelvis' and mat_annotations.ROOT == 14
  assert (mapping['thorax'], mapping['neck_nose'], mapping['head']) == (
      'neck', 'head', 'head_top')
  # Left/right joints map to the same side.
  for h36m, mpi_name in mapping.items():
    assert h36m[:2] == mpi_name[:2] or not h36m.startswith(('l_', 'r_'))
  points = np.arange(17)[:, None] * np.ones((1, 2))
  np.testing.assert_array_equal(mat_annotations.to_h36m(points)[:, 0], H36M_FROM_MPI)
  bad = list(mat_annotations.JOINT_CORRESPONDENCE)
  bad[1], bad[4] = bad[4], bad[1]
  with pytest.raises(ValueError, match='Human3.6M-17 order'):
    mat_annotations.check_tables(correspondence=tuple(bad))


def test_sequences_match_protocol_scenes():
  assert mpi.SEQUENCES == tuple(protocols.SCENES)
  protocol = protocols.PROTOCOLS['mpi_inf_3dhp']
  assert (protocol.dataset, protocol.builder_config) == (
      'mpi_inf_3dhp', mpi.Builder.DEFAULT_BUILDER_CONFIG_NAME)
  assert protocol.input_source in mpi.INPUT_SOURCES
  for sequence in mpi.SEQUENCES:
    outdoor = protocols.scene_of(sequence) == 'outdoor'
    assert (mpi.SEQUENCE_CAMERA[sequence] == 'ts5-6') == outdoor
