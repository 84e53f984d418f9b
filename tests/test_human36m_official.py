"""The human36m builder's official-release path (D3_Positions CDF files).

The tests write tiny CDF files in the official folder layout and, from the same fake
poses, the files VideoPose3D's `prepare_data_h36m.py` would make of them (`data_3d_h36m.npz`
with renamed action keys, meters; `data_2d_h36m_gt.npz` projected independently with
`make_dummy_data.project`), then build `official_gt` and `gt` and compare them.
"""

import dataclasses
import logging
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.human36m import cameras
from tfds_builders.human36m import human36m_dataset_builder as h36m
from tfds_builders.human36m import make_dummy_data
from tfds_builders.human36m import official

SEED = 3
# subject → official file name (no suffix) → frames. S11 'Directions' is discarded.
FILES = {'S1': {'Walking 1': 5, 'TakingPhoto': 4, 'WalkingDog 1': 3},
         'S9': {'Directions': 4},
         'S11': {'Directions': 3, 'Directions 1': 3}}
# The VideoPose3D keys of the kept files.
KEYS = {'S1': {'Walking 1': 'Walking 1', 'TakingPhoto': 'Photo', 'WalkingDog 1': 'WalkDog 1'},
        'S9': {'Directions': 'Directions'},
        'S11': {'Directions 1': 'Directions 1'}}
NUM_CAMERAS = len(cameras.CAMERA_IDS)
SPLITS = {'train': (5 + 4 + 3) * NUM_CAMERAS, 'test': (4 + 3) * NUM_CAMERAS}
# make_dummy_data.project uses the float64 camera constants, the builder float32 ones.
PIXEL_TOLERANCE = 1e-3
CONFIGS = {c.name: c for c in h36m.Builder.BUILDER_CONFIGS}


def write_pose_cdf(path, values, variable='Pose'):
  """Writes `values` [1, frames, columns] float32 like the official files."""
  cdfwrite = pytest.importorskip('cdflib.cdfwrite')
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = cdfwrite.CDF(str(path), delete=True)
  writer.write_var({'Variable': variable, 'Data_Type': cdfwrite.CDF.CDF_FLOAT,
                    'Num_Elements': 1, 'Rec_Vary': True, 'Dim_Sizes': list(values.shape[1:])},
                   var_data=values)
  writer.close()


@pytest.fixture(scope='module')
def release(tmp_path_factory):
  """(official folder, VideoPose3D folder, {(subject, key): [T, 32, 3] meters})."""
  pytest.importorskip('cdflib')
  root = tmp_path_factory.mktemp('h36m_official')
  official_dir, npz_dir = root / 'official', root / 'videopose3d'
  npz_dir.mkdir()
  rng = np.random.default_rng(SEED)
  positions_3d, positions_2d, expected = {}, {}, {}
  for subject, files in FILES.items():
    positions_3d[subject], positions_2d[subject] = {}, {}
    for stem, num_frames in files.items():
      millimeters = (make_dummy_data.fake_sequence(rng, num_frames) * 1000).astype(np.float32)
      write_pose_cdf(official_dir / subject / 'MyPoseFeatures' / 'D3_Positions' /
                     f'{stem}.cdf', millimeters.reshape(1, num_frames, 96))
      if stem not in KEYS[subject]:
        continue
      # VideoPose3D: positions /= 1000 (float32 file data), astype float32.
      meters = (millimeters / np.float32(1000)).astype(np.float32)
      key = KEYS[subject][stem]
      positions_3d[subject][key] = meters
      positions_2d[subject][key] = [
          make_dummy_data.project(subject, c, meters[:, list(make_dummy_data.KEPT)]
                                  ).astype(np.float32) for c in range(NUM_CAMERAS)]
      expected[(subject, key)] = meters
  np.savez(npz_dir / h36m.FILE_3D, positions_3d=positions_3d)
  np.savez(npz_dir / h36m.FILES_2D['gt'], positions_2d=positions_2d,
           metadata={'layout_name': 'h36m', 'num_joints': 17})
  return official_dir, npz_dir, expected


@pytest.fixture(scope='module')
def built(release, tmp_path_factory):
  """config name → built builder: `official_gt` from CDFs, `gt` from the npz files."""
  official_dir, npz_dir, _ = release
  out = {}
  for name, manual_dir in (('official_gt', official_dir), ('gt', npz_dir)):
    builder = h36m.Builder(config=name, data_dir=tmp_path_factory.mktemp(name))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    out[name] = builder
  return out


def _assert_records_equal(official_record, npz_record, where):
  assert set(official_record) == set(npz_record), where
  for field, value in official_record.items():
    other = npz_record[field]
    if field == 'keypoints_2d':
      assert set(value) == set(other) == {'gt'}, where
      np.testing.assert_allclose(value['gt'], other['gt'], rtol=0, atol=PIXEL_TOLERANCE,
                                 err_msg=where)
    elif isinstance(value, dict):
      assert set(value) == set(other), (where, field)
      for name in value:
        np.testing.assert_array_equal(value[name], other[name], err_msg=f'{where} {field}')
    else:
      np.testing.assert_array_equal(value, other, err_msg=f'{where} {field}')


def test_official_and_videopose3d_builds_agree(built):
  official_builder, npz_builder = built['official_gt'], built['gt']
  for split, count in SPLITS.items():
    assert official_builder.info.splits[split].num_examples == count
    assert npz_builder.info.splits[split].num_examples == count
  assert official_builder.info.metadata == npz_builder.info.metadata
  seen = set()
  for split in SPLITS:
    official_source = official_builder.as_data_source(split=split)
    npz_source = npz_builder.as_data_source(split=split)
    for index in range(len(official_source)):
      official_record, npz_record = official_source[index], npz_source[index]
      where = f'{split}[{index}]'
      _assert_records_equal(official_record, npz_record, where)
      # The official gt input is the projection of the ground-truth joints, bit for bit.
      np.testing.assert_array_equal(official_record['keypoints_2d']['gt'][:, :2],
                                    official_record['sparse_2d'], err_msg=where)
      seen.add((official_record['subject'].decode(), int(official_record['action'])))
  labels = {(s, h36m.ACTIONS[a]) for s, a in seen}
  assert labels == {('S1', 'Walking'), ('S1', 'Photo'), ('S1', 'WalkDog'),
                    ('S9', 'Directions'), ('S11', 'Directions')}


def test_load_positions_3d_renames_discards_and_converts(release, caplog):
  official_dir, _, expected = release
  with caplog.at_level(logging.INFO):
    positions = official.load_positions_3d(official_dir, ['S1', 'S5', 'S9', 'S11'])
  assert {s: set(a) for s, a in positions.items()} == {
      s: set(keys.values()) for s, keys in KEYS.items()}
  for (subject, key), meters in expected.items():
    assert positions[subject][key].dtype == np.float32
    np.testing.assert_array_equal(positions[subject][key], meters)
  # Meters: the fake hips stand about 0.9 m above the floor.
  assert 0.5 < positions['S9']['Directions'][0, 0, 2] < 1.5
  assert 'S11/MyPoseFeatures/D3_Positions/Directions.cdf' in caplog.text
  assert "subjects ['S5']" in caplog.text
  assert 'has 3 .cdf files, the release has 30' in caplog.text


def test_ground_truth_2d_layout(release):
  _, _, expected = release
  meters = expected[('S9', 'Directions')]
  per_camera = official.ground_truth_2d({'S9': {'Directions': meters}})['S9']['Directions']
  assert len(per_camera) == NUM_CAMERAS
  for index, pixels in enumerate(per_camera):
    assert pixels.shape == (4, 17, 2) and pixels.dtype == np.float32
    reference = make_dummy_data.project('S9', index, meters[:, list(make_dummy_data.KEPT)])
    np.testing.assert_allclose(pixels, reference, rtol=0, atol=PIXEL_TOLERANCE)


def test_bad_pose_files_name_the_file(tmp_path):
  folder = tmp_path / 'S1' / 'MyPoseFeatures' / 'D3_Positions'
  write_pose_cdf(folder / 'Walking.cdf', np.zeros((1, 2, 95), np.float32))
  with pytest.raises(ValueError, match=r'Walking\.cdf.*\(1, frames, 96\).*\(1, 2, 95\)'):
    official.load_positions_3d(tmp_path, ['S1'])
  write_pose_cdf(folder / 'Walking.cdf', np.zeros((1, 2, 96), np.float32), variable='Other')
  with pytest.raises(ValueError, match=r"Walking\.cdf: cannot read CDF variable 'Pose'"):
    official.read_pose(folder / 'Walking.cdf')


def test_renames_that_collide_are_refused(tmp_path):
  folder = tmp_path / 'S5' / 'MyPoseFeatures' / 'D3_Positions'
  for stem in ('Photo', 'TakingPhoto'):
    write_pose_cdf(folder / f'{stem}.cdf', np.ones((1, 2, 96), np.float32))
  with pytest.raises(ValueError, match="two files map to action 'Photo'"):
    official.load_positions_3d(tmp_path, ['S5'])


def test_missing_release_folder(tmp_path):
  pytest.importorskip('cdflib')
  with pytest.raises(FileNotFoundError, match='MyPoseFeatures/D3_Positions'):
    h36m.load_source_data(tmp_path, CONFIGS['official_gt'])


def test_missing_cdflib_names_the_package(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'cdflib', None)  # makes `import cdflib` fail
  with pytest.raises(ImportError, match='pip install cdflib'):
    official.load_positions_3d(tmp_path, ['S1'])


def test_official_config_validation():
  with pytest.raises(ValueError, match=r"\['cpn'\] are not available in the official"):
    h36m.validate_config(dataclasses.replace(CONFIGS['official_gt'], name='official_cpn',
                                             input_sources=('cpn', 'gt')))
  with pytest.raises(ValueError, match='source_format must be one of'):
    h36m.validate_config(dataclasses.replace(CONFIGS['gt'], source_format='h5'))
  h36m.validate_config(CONFIGS['official_gt'])
  assert CONFIGS['official_gt'].input_sources == CONFIGS['gt'].input_sources
  assert CONFIGS['official_gt'].dense_source == CONFIGS['gt'].dense_source


def test_action_key_applies_videopose3d_renames():
  assert official.action_key('TakingPhoto 1') == 'Photo 1'
  assert official.action_key('WalkingDog') == 'WalkDog'
  assert official.action_key('Walking 1') == 'Walking 1'
  assert h36m.canonical_action(official.action_key('WalkingDog 1')) == 'WalkDog'
