"""launch/infer.py lifts every keypoint format to the same 3D poses as the npz input.

One pose set (tests/keypoint_files.py: two people, three frames, a missing wrist) is
written as npz and in each detector format; each file goes through `infer.run` with the
session's tiny hierarchical lifter. Every run has the same number of rows and batch size,
so `pipeline.predict` compiles once for the module.
"""

import numpy as np
import pytest

import keypoint_files
from hipart_jax import skeleton
from hipart_jax.models import pipeline
from launch import infer

BATCH = 4  # 6 rows: a full batch and a padded one.
IMAGE_SIZE_FLAG = '{},{}'.format(*keypoint_files.IMAGE_SIZE)
# Arrays of the output that must not depend on the input format, with the tolerance of
# each: meters, fractions, pixels (float32 pixels near 1000 are 1e-4 apart), exact.
SAME_ARRAYS = {'pose_3d': 1e-5, 'confidence': 1e-6, 'keypoints_2d': 1e-3, 'sparse_2d': 1e-3,
               'dense_2d': 1e-3, 'fine_2d': 1e-3, 'track': 0, 'image_size': 0,
               'no_visible_joint': 0}


def _predict_compiles():
  return pipeline.predict._cache_size()  # pylint: disable=protected-access


@pytest.fixture(scope='module')
def checkpoint(tiny_pipeline):
  return str(tiny_pipeline['lifter_hierarchical'])


@pytest.fixture(scope='module')
def from_npz(checkpoint, tmp_path_factory):
  """infer.run's arrays for the npz file (this run compiles `pipeline.predict`)."""
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
