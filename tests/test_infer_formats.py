"""launch/infer.py lifts every keypoint format to the same 3D poses as the npz input.

One pose set (tests/keypoint_files.py: two people, three frames, a missing wrist) is
written as npz and in each detector format; each file goes through `infer.run` with the
session's tiny hierarchical lifter. Every run has the same number of rows and batch size,
so `hipart.predict` compiles once for the module. The last tests check what the output
files state about themselves (launch/infer.py's output contract).
"""

import hashlib
import importlib.metadata
import json
import pathlib

from absl import flags
import numpy as np
import pytest

import keypoint_files
import pipeline_fixture
from hipart_jax import checkpoints
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import infer

BATCH = 4  # 6 rows: a full batch and a padded one.
IMAGE_SIZE_FLAG = '{},{}'.format(*keypoint_files.IMAGE_SIZE)
# Arrays of the output that must not depend on the input format, with the tolerance of
# each: meters, fractions, pixels (float32 pixels near 1000 are 1e-4 apart), exact.
SAME_ARRAYS = {'pose_3d': 1e-5, 'confidence': 1e-6, 'keypoints_2d': 1e-3, 'sparse_2d': 1e-3,
               'dense_2d': 1e-3, 'fine_2d': 1e-3, 'track': 0, 'image_size': 0,
               'no_visible_joint': 0}


def _predict_compiles():
  return hipart.predict._cache_size()  # pylint: disable=protected-access


@pytest.fixture(scope='module')
def checkpoint(tiny_pipeline):
  return str(tiny_pipeline['lifter_hierarchical'])


@pytest.fixture(scope='module')
def from_npz(checkpoint, tmp_path_factory):
  """infer.run's arrays for the npz file (this run compiles `hipart.predict`)."""
  root = tmp_path_factory.mktemp('infer_npz')
  return infer.run(checkpoint=checkpoint, input_path=str(keypoint_files.write_npz(root)),
                   output=str(root / 'poses_3d.npz'), batch_size=BATCH)


def test_npz_reference(from_npz):
  arrays = from_npz
  rows = keypoint_files.PEOPLE * len(keypoint_files.FRAMES)
  assert arrays['pose_3d'].shape == (rows, skeleton.NUM_JOINTS, 3)
  assert np.all(np.isfinite(arrays['pose_3d'])) and np.ptp(arrays['pose_3d']) > 0
  np.testing.assert_array_equal(arrays['track'], np.repeat(np.arange(keypoint_files.PEOPLE),
                                                           len(keypoint_files.FRAMES)))
  np.testing.assert_array_equal(arrays['frame'], keypoint_files.FRAMES * keypoint_files.PEOPLE)
  # Different 2D poses lift to different 3D poses (the comparisons below can fail).
  assert np.abs(arrays['pose_3d'][0] - arrays['pose_3d'][-1]).max() > 1e-3
  assert not arrays['no_visible_joint'].any()


@pytest.mark.parametrize('name', sorted(keypoint_files.WRITERS))
def test_format_lifts_like_the_npz(checkpoint, from_npz, tmp_path, name):
  reference = from_npz
  path = keypoint_files.WRITERS[name](tmp_path)
  before = _predict_compiles()
  requested = keypoint_files.FORMAT_OF[name] if name in keypoint_files.DETECTED_AS else None
  arrays = infer.run(checkpoint=checkpoint, input_path=str(path),
                     output=str(tmp_path / 'poses_3d.npz'), image_size=IMAGE_SIZE_FLAG,
                     batch_size=BATCH, input_format=requested)
  with np.load(tmp_path / 'poses_3d.npz') as saved:  # The file holds what run returns.
    np.testing.assert_array_equal(saved['pose_3d'], arrays['pose_3d'])
  for key, atol in SAME_ARRAYS.items():
    np.testing.assert_allclose(arrays[key], reference[key], rtol=0, atol=atol, err_msg=key)
  np.testing.assert_array_equal(arrays['frame'] + keypoint_files.FRAME_OFFSET[name],
                                reference['frame'])
  assert _predict_compiles() == before  # The npz run's compile serves every format.


def _model_meta(checkpoint):
  return checkpoints.load_hipart(checkpoint)[2]


def test_npz_output_describes_itself(checkpoint, from_npz, tmp_path_factory,
                                     tiny_pipeline):
  """units, frame, joint order, input and its format, model identity, project version."""
  arrays = from_npz
  assert arrays['units'].item() == 'meters'
  assert arrays['coordinate_frame'].item().startswith('camera, root-relative')
  assert arrays['joint_names'].tolist() == list(skeleton.H36M_JOINT_NAMES)
  assert arrays['input_file'].item().endswith('poses.npz')
  assert pathlib.Path(arrays['input_file'].item()).is_absolute()
  assert (arrays['input_format'].item(), arrays['input_layout'].item()) == ('npz', 'h36m17')
  assert arrays['project_version'].item() == importlib.metadata.version('hipart-jax')
  assert json.loads(arrays['input'].item()) == dict(
      file=arrays['input_file'].item(), format='npz', layout='h36m17')
  model = json.loads(arrays['model'].item())
  meta = _model_meta(checkpoint)
  assert model['mode'] == 'hierarchical'
  # Every stage's step is the real one: the lifter's, and its frozen MSST's and HiARM's.
  pipeline_fixture.assert_identity(model, tiny_pipeline, 'lifter_hierarchical', 'lifter')
  assert model['config_sha256'] == hashlib.sha256(
      json.dumps(meta['model'], sort_keys=True).encode()).hexdigest()
  assert sorted(model['frozen']) == ['hiarm', 'msst']
  for name, frozen in model['frozen'].items():
    assert frozen['config_sha256'] == hashlib.sha256(json.dumps(
        meta['frozen_models'][name], sort_keys=True).encode()).hexdigest()
  with np.load(tmp_path_factory.getbasetemp() / 'infer_npz0' / 'poses_3d.npz') as saved:
    assert saved['units'].item() == 'meters'  # Saved without pickles, read back the same.
    assert json.loads(saved['model'].item()) == model


def test_json_output_is_the_npz_with_its_description(checkpoint, from_npz, tmp_path):
  path = keypoint_files.write_npz(tmp_path)
  infer.run(checkpoint=checkpoint, input_path=str(path), output=str(tmp_path / 'out.json'),
            batch_size=BATCH)
  document = json.loads((tmp_path / 'out.json').read_text())
  assert sorted(document) == ['meta', 'poses']
  meta = document['meta']
  for key in ('units', 'coordinate_frame', 'input_format', 'input_layout',
              'project_version'):
    assert meta[key] == from_npz[key].item(), key
  assert meta['joint_names'] == list(skeleton.H36M_JOINT_NAMES)
  assert meta['model'] == json.loads(from_npz['model'].item())
  assert meta['input_file'] == str(path.absolute())
  poses = document['poses']
  np.testing.assert_allclose([p['pose_3d'] for p in poses], from_npz['pose_3d'], atol=1e-6)
  assert [p['frame'] for p in poses] == from_npz['frame'].tolist()
  assert [p['track'] for p in poses] == from_npz['track'].tolist()


def test_body25b_needs_its_flag_on_the_command_line(checkpoint, tmp_path):
  folder = keypoint_files.WRITERS['openpose_body25b'](tmp_path)
  flag_values = flags.FlagValues()
  infer.define_flags(flag_values)
  flag_values(['infer', f'--checkpoint={checkpoint}', f'--input={folder}',
               f'--output={tmp_path / "out.json"}', f'--image_size={IMAGE_SIZE_FLAG}',
               f'--batch_size={BATCH}', '--cpu_devices=1'])  # Keep this process's devices.
  with pytest.raises(SystemExit) as info:
    infer.main(['infer'], flag_values)
  message = str(info.value.code)
  assert message.startswith(f'infer: error: {folder}: keypoint layout: ')
  assert '--format=openpose_body25b' in message and '--format=openpose ' in message
  assert not (tmp_path / 'out.json').exists()
  flag_values['format'].value = 'openpose_body25b'
  infer.main(['infer'], flag_values)
  meta = json.loads((tmp_path / 'out.json').read_text())['meta']
  assert (meta['input_format'], meta['input_layout']) == ('openpose_body25b',
                                                          'openpose_body25b')
