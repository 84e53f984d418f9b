"""launch/infer.py and evaluation.predict_in_batches on the session's tiny trained pipeline."""

import json
import pathlib
import subprocess
import sys

from absl import flags
import jax
import numpy as np
import pytest

import fake_examples
import pipeline_fixture
from hipart_jax import checkpoints
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import infer

NUM_POSES, BATCH = 7, 3  # Batches of 3, 3 and 1 + 2 padding rows.
# COCO-17 keypoints from Human3.6M-17 joints: nose at the neck/nose joint, eyes and ears
# around the head, then shoulders, elbows, wrists, hips, knees, ankles (left first).
COCO_FROM_H36M = (9, 10, 10, 10, 10, 11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3)
FACE_OFFSETS = np.array([[0, 0], [8, -4], [-8, -4], [14, 0], [-14, 0]], np.float32)
IMAGE_SIZE = fake_examples.IMAGE_SIZE


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  """The same detections as COCO results JSON and as a Human3.6M-17 npz.

  Detection 2 has no confident joint (all scores 0).
  """
  root = tmp_path_factory.mktemp('infer_inputs')
  examples = fake_examples.fake_examples(NUM_POSES, pipeline_fixture.HIERARCHY, seed=7)
  h36m = np.stack([e['sparse_2d'] for e in examples])
  coco = h36m[:, COCO_FROM_H36M].copy()
  coco[:, :5] += FACE_OFFSETS
  scores = np.full(coco.shape[:2], 0.9, np.float32)
  scores[:, 3] = 0.0  # An ear the detector missed.
  scores[2] = 0.0
  records = [dict(image_id=k, category_id=1, score=0.8,
                  keypoints=np.concatenate([coco[k], scores[k][:, None]], -1).ravel().tolist())
             for k in range(NUM_POSES)]
  coco_path = root / 'detections.json'
  coco_path.write_text(json.dumps(records))
  keypoints, confidence = skeleton.COCO17.convert(coco, scores)
  npz_path = root / 'detections.npz'
  np.savez(npz_path, keypoints=keypoints, confidence=confidence,
           image_size=np.asarray(IMAGE_SIZE))
  return coco_path, npz_path


def test_npz_and_coco_give_the_same_3d_with_one_compile(tiny_pipeline, inputs, tmp_path):
  coco_path, npz_path = inputs
  checkpoint = str(tiny_pipeline['lifter_hierarchical'])
  before = hipart.predict._cache_size()  # pylint: disable=protected-access
  infer.run(checkpoint=checkpoint, input_path=str(npz_path), output=str(tmp_path / 'a.npz'),
            batch_size=BATCH, plot=True, num_plot_rows=2)
  assert hipart.predict._cache_size() - before == 1  # pylint: disable=protected-access
  infer.run(checkpoint=checkpoint, input_path=str(coco_path), output=str(tmp_path / 'b.json'),
            image_size=f'{IMAGE_SIZE[0]},{IMAGE_SIZE[1]}', batch_size=BATCH)
  assert hipart.predict._cache_size() - before == 1  # pylint: disable=protected-access
  with np.load(tmp_path / 'a.npz') as saved:
    saved = dict(saved)
  output = json.loads((tmp_path / 'b.json').read_text())
  assert output['meta']['units'] == 'meters'
  records = output['poses']
  assert len(records) == NUM_POSES == len(saved['pose_3d'])
  np.testing.assert_allclose(np.asarray([r['pose_3d'] for r in records]), saved['pose_3d'],
                             atol=1e-5)
  np.testing.assert_array_equal([r['frame'] for r in records], saved['frame'])
  np.testing.assert_array_equal(saved['frame'], np.arange(NUM_POSES))
  np.testing.assert_array_equal(saved['track'], 0)
  expected_empty = np.arange(NUM_POSES) == 2
  np.testing.assert_array_equal(saved['no_visible_joint'], expected_empty)
  assert [r['no_visible_joint'] for r in records] == expected_empty.tolist()
  np.testing.assert_array_equal(saved['pose_3d'][:, 0], 0.0)  # Root-relative.
  h = pipeline_fixture.HIERARCHY
  for level, size in (('sparse', 17), ('dense', h.num_dense), ('fine', h.num_fine)):
    assert saved[f'{level}_2d'].shape == (NUM_POSES, size, 2)
  # The generated joints are in pixels, near the input ones (rows with joints).
  seen = saved['confidence'] > 0
  assert np.abs(saved['sparse_2d'] - saved['keypoints_2d'])[seen].mean() < 300
  assert 'hypotheses_3d' not in saved and 'uncertainty_mm' not in records[0]
  # The padded tail batch gives the last row what a batch of real rows gives it, and
  # the plain attention what infer's CPU kernel gave (one more compile: another model).
  model, variables, _ = checkpoints.load_hipart(checkpoint)
  rows = slice(NUM_POSES - BATCH, NUM_POSES)
  tail = hipart.predict(model, variables, saved['keypoints_2d'][rows],
                        saved['confidence'][rows], saved['image_size'][rows],
                        jax.random.key(0), temperature=0.0, top_k=0, num_samples=1)
  np.testing.assert_allclose(tail['pose_3d'], saved['pose_3d'][rows], atol=1e-5)
  assert hipart.predict._cache_size() - before == 2  # pylint: disable=protected-access
  pngs = sorted(tmp_path.glob('a_*.png'))
  assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs)


def test_hypotheses_and_flags(tiny_pipeline, inputs, tmp_path, caplog):
  _, npz_path = inputs
  flag_values = flags.FlagValues()
  infer.define_flags(flag_values)
  output = tmp_path / 'k.npz'
  flag_values(['infer', f'--checkpoint={tiny_pipeline["lifter_sparse"]}',
               f'--input={npz_path}', f'--output={output}', '--num_samples=2',
               '--cpu_devices=1'])  # This process's JAX has started: keep its device.
  infer.main(['infer'], flag_values)
  with np.load(output) as saved:
    assert saved['hypotheses_3d'].shape == (NUM_POSES, 2, 17, 3)
    assert saved['uncertainty_mm'].shape == (NUM_POSES, 17)
    np.testing.assert_array_equal(saved['uncertainty_mm'], 0.0)  # A sparse lifter.
    assert 'fine_2d' not in saved
  assert 'hypotheses identical' in caplog.text


@pytest.mark.parametrize('case, message', [
    ('missing', 'does not exist'), ('empty', 'holds no checkpoint'),
    ('msst', "expected stage 'lifter'"), ('oracle', "'oracle' mode needs"),
    ('input', 'path: does not exist'), ('extension', 'extension must be one of')])
def test_errors_are_one_line(tiny_pipeline, inputs, tmp_path, monkeypatch, case, message):
  _, npz_path = inputs
  (tmp_path / 'empty').mkdir()
  checkpoint = {'missing': tmp_path / 'nowhere', 'msst': tiny_pipeline['msst'],
                'empty': tmp_path / 'empty'}.get(case, tiny_pipeline['lifter_sparse'])
  if case == 'oracle':  # No oracle run in the fixture: relabel the sparse lifter.
    model, variables, meta = checkpoints.load_hipart(str(checkpoint))
    oracle = hipart.HiPART(model.lifter.clone(mode='oracle'))
    monkeypatch.setattr(checkpoints, 'load_hipart', lambda _: (oracle, variables, meta))
  input_path = tmp_path / 'none.json' if case == 'input' else npz_path
  output = tmp_path / ('out.csv' if case == 'extension' else 'out.npz')
  with pytest.raises(SystemExit) as info:
    infer.run(checkpoint=str(checkpoint), input_path=str(input_path), output=str(output))
  text = str(info.value.code)
  assert text.startswith('infer: error: ') and message in text and '\n' not in text
  if case == 'input':
    assert text.startswith(f'infer: error: {input_path}: ')
  assert not output.exists()


def test_command_line_error_has_no_traceback(tiny_pipeline, inputs, tmp_path):
  _, npz_path = inputs
  result = subprocess.run(
      [sys.executable, '-m', 'launch.infer', f'--checkpoint={tiny_pipeline["hiarm"]}',
       f'--input={npz_path}', f'--output={tmp_path / "out.npz"}'],
      capture_output=True, text=True, timeout=300, check=False,
      cwd=str(pathlib.Path(__file__).resolve().parents[1]))
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('infer: error: --checkpoint: ')
  assert "expected stage 'lifter'" in result.stderr


def test_command_line_splits_batches_over_cpu_devices(tiny_pipeline, inputs, tmp_path):
  """`--cpu_devices=2 --chunk_size=2`: each batch of 4 (3 rounded up to the devices)
  split over two CPU devices, in chunks: the poses of one device, whole batches (this
  process's one device; a process of its own only where the device count matters)."""
  _, npz_path = inputs
  checkpoint = str(tiny_pipeline['lifter_hierarchical'])
  result = subprocess.run(
      [sys.executable, '-m', 'launch.infer', f'--checkpoint={checkpoint}',
       f'--input={npz_path}', f'--batch_size={BATCH}', f'--output={tmp_path}/split.npz',
       '--cpu_devices=2', '--chunk_size=2'],
      capture_output=True, text=True, timeout=300, check=False,
      cwd=str(pathlib.Path(__file__).resolve().parents[1]))
  assert result.returncode == 0, result.stderr[-2000:]
  assert jax.local_device_count() == 1
  infer.run(checkpoint=checkpoint, input_path=str(npz_path),
            output=str(tmp_path / 'one.npz'), batch_size=BATCH, chunk_size=0)
  with np.load(tmp_path / 'split.npz') as split, np.load(tmp_path / 'one.npz') as one:
    assert split['pose_3d'].shape == (NUM_POSES, 17, 3)
    np.testing.assert_allclose(split['pose_3d'], one['pose_3d'], atol=1e-5)
