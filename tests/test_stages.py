"""One real train step per stage through the real trainer, and the jitted inference."""

import jax
import numpy as np
import pytest

import fake_examples
import pipeline_fixture
from hipart_jax import checkpoints
from hipart_jax import execution
from hipart_jax import input_pipeline
from hipart_jax import skeleton
from hipart_jax.models import hipart
from hipart_jax.training import loop
from hipart_jax.training import stages
from hipart_jax.training import trainer


def _metrics(workdir):
  import json  # pylint: disable=g-import-not-at-top
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


@pytest.mark.parametrize('name, stage', [('msst', 'msst'), ('hiarm', 'hiarm'),
                                         ('lifter_hierarchical', 'lifter'),
                                         ('lifter_sparse', 'lifter')])
def test_each_stage_trains_evaluates_and_checkpoints(tiny_pipeline, name, stage):
  rows = _metrics(tiny_pipeline[name])
  train_rows = [r for r in rows if 'train/loss' in r]
  eval_rows = [r for r in rows if 'eval/loss' in r]
  assert train_rows and eval_rows
  assert np.isfinite(train_rows[-1]['train/loss']) and np.isfinite(eval_rows[-1]['eval/loss'])
  _, meta = checkpoints.restore_params(tiny_pipeline[name], expected_stage=stage)
  assert skeleton.Hierarchy.from_json(meta['hierarchy']) == pipeline_fixture.HIERARCHY


def test_stage_metrics_are_logged(tiny_pipeline):
  msst = _metrics(tiny_pipeline['msst'])[-1]
  for level in ('sparse', 'dense', 'fine'):
    assert msst[f'eval/recon_{level}_px'] > 0
    assert msst[f'eval/recon_{level}_mm_equivalent'] > 0
  hiarm = _metrics(tiny_pipeline['hiarm'])[-1]
  assert 0 <= hiarm['eval/sparse_accuracy'] <= 1
  assert hiarm['eval/generated_fine_px'] > 0
  lifter = _metrics(tiny_pipeline['lifter_hierarchical'])[-1]
  assert lifter['eval/mpjpe_mm'] > lifter['eval/p_mpjpe_mm'] > 0


def test_later_stage_refuses_a_wrong_checkpoint(tiny_pipeline):
  config = pipeline_fixture.hiarm_config(tiny_pipeline['hiarm'])  # Not an MSST run.
  with pytest.raises(ValueError, match="expected stage 'msst'"):
    stages.make_stage(config, pipeline_fixture.HIERARCHY)
  config = pipeline_fixture.lifter_config('hierarchical', msst_dir=tiny_pipeline['msst'])
  with pytest.raises(ValueError, match='init_from.hiarm'):
    stages.make_stage(config, pipeline_fixture.HIERARCHY)


def test_hierarchical_lifter_generates_its_eval_hierarchies_once_per_run(tiny_pipeline,
                                                                        tmp_path):
  config = pipeline_fixture.lifter_config('hierarchical', tiny_pipeline['msst'],
                                          tiny_pipeline['hiarm'])
  config.eval_every_steps = 2  # Two evaluations: the second reuses the first's inputs.
  generations = []
  metrics = {}
  for cached in (True, False):
    stage = stages.make_stage(config, pipeline_fixture.HIERARCHY)
    if cached:
      generate = stage.eval_inputs
      stage.eval_inputs = lambda collections, batch: (
          jax.debug.callback(lambda: generations.append(1)), generate(collections, batch))[1]
    else:
      stage.eval_inputs = None  # Generated inside every eval step.
    train_source, eval_source = pipeline_fixture.sources()
    loop.train_and_evaluate(config, tmp_path / str(cached), stage=stage,
                            train_source=train_source, eval_source=eval_source,
                            hierarchy=pipeline_fixture.HIERARCHY)
    metrics[cached] = [r for r in _metrics(tmp_path / str(cached)) if 'eval/loss' in r]
  num_batches = -(-pipeline_fixture.NUM_EVAL // config.eval_batch_size)
  assert len(generations) == num_batches  # Once per eval batch, not per evaluation.
  assert [r['step'] for r in metrics[True]] == [2, 4]
  for with_inputs, generated_each_time in zip(metrics[True], metrics[False]):
    assert with_inputs == pytest.approx(generated_each_time, rel=1e-5)
  for mode in ('sparse', 'oracle'):
    config = pipeline_fixture.lifter_config(mode)
    assert trainer.make_eval_inputs_step(
        stages.make_stage(config, pipeline_fixture.HIERARCHY)) is None


@pytest.fixture(scope='module')
def loaded(tiny_pipeline):
  return checkpoints.load_hipart(str(tiny_pipeline['lifter_hierarchical']))


def _pixels(n):
  examples = fake_examples.fake_examples(n, pipeline_fixture.HIERARCHY, seed=3)
  keypoints = np.stack([e['keypoints_2d']['gt'][:, :2] for e in examples])
  confidence = np.stack([e['keypoints_2d']['gt'][:, 2] for e in examples])
  image_size = np.stack([e['image_size'] for e in examples])
  return keypoints, confidence, image_size


def test_pipeline_runs_jitted_end_to_end(loaded):
  model, variables, _ = loaded
  keypoints, confidence, image_size = _pixels(3)
  confidence[0, 13] = 0.0  # An occluded wrist.
  out = hipart.predict(model, variables, keypoints, confidence, image_size,
                         jax.random.key(0))
  h = pipeline_fixture.HIERARCHY
  assert out['pose_3d'].shape == (3, 17, 3)
  assert out['fine_2d'].shape == (3, 1, h.num_fine, 2)
  for value in out.values():
    assert np.all(np.isfinite(value))
  np.testing.assert_array_equal(out['uncertainty_mm'], 0.0)
  # The generated hierarchy is mapped back to pixels, near the person.
  assert np.abs(out['sparse_2d'][:, 0] - keypoints).mean() < 300


def test_execution_in_chunks_and_on_devices(loaded):
  """7 poses in chunks of 3 (the last padded), and split over the local devices: the
  whole batch's results."""
  model, variables, _ = loaded
  keypoints, confidence, image_size = _pixels(7)
  key = jax.random.key(0)
  whole = hipart.predict(model, variables, keypoints, confidence, image_size, key)
  chunked = execution.predict(model, variables, keypoints, confidence, image_size, key,
                              chunk_size=3)
  devices = tuple(jax.local_devices())[:1]
  on_devices = execution.predict(model, variables, keypoints, confidence, image_size, key,
                                 devices=devices, chunk_size=3)
  for out in (chunked, on_devices):
    assert set(out) == set(whole)
    np.testing.assert_allclose(out['pose_3d'], whole['pose_3d'], atol=1e-5)
    np.testing.assert_allclose(out['fine_2d'], whole['fine_2d'], atol=1e-2)  # pixels
  with pytest.raises(ValueError, match='chunk_size'):
    execution.predict(model, variables, keypoints, confidence, image_size, key,
                      chunk_size=-1)
  with pytest.raises(ValueError, match='split evenly'):
    execution.predict(model, variables, keypoints, confidence, image_size, key,
                      devices=devices * 2)


def test_pipeline_hypotheses_and_uncertainty(loaded):
  model, variables, _ = loaded
  keypoints, confidence, image_size = _pixels(2)
  out = hipart.predict(model, variables, keypoints, confidence, image_size,
                         jax.random.key(1), temperature=1.0, num_samples=4)
  assert out['hypotheses_3d'].shape == (2, 4, 17, 3)
  np.testing.assert_allclose(out['pose_3d'], out['hypotheses_3d'].mean(1), atol=1e-6)
  assert np.all(out['uncertainty_mm'][:, 1:] > 0)  # The root is 0 by construction.


def test_sparse_pipeline_and_oracle_rejected(tiny_pipeline, loaded):
  model, variables, _ = checkpoints.load_hipart(str(tiny_pipeline['lifter_sparse']))
  assert model.msst is None
  keypoints, confidence, image_size = _pixels(2)
  out = hipart.predict(model, variables, keypoints, confidence, image_size,
                         jax.random.key(0))
  assert out['pose_3d'].shape == (2, 17, 3) and 'fine_2d' not in out
  oracle = hipart.HiPART(loaded[0].lifter.clone(mode='oracle'))
  with pytest.raises(ValueError, match='ground-truth'):
    hipart.predict(oracle, variables, keypoints, confidence, image_size,
                     jax.random.key(0))


def test_short_msst_run_lowers_reconstruction_error(tiny_pipeline):
  """Issue 4: a short synthetic run lowers the reconstruction error by a clear margin."""
  rows = [r for r in _metrics(tiny_pipeline['msst']) if 'train/recon_fine_mse' in r]
  assert len(rows) == pipeline_fixture.MSST_STEPS
  first = np.mean([r['train/recon_fine_mse'] for r in rows[:3]])
  last = np.mean([r['train/recon_fine_mse'] for r in rows[-3:]])
  assert last < 0.2 * first, (first, last)
  assert rows[-1]['train/usage_dense'] > 0.3


@pytest.mark.parametrize('name', ['hiarm', 'lifter_hierarchical'])
def test_microbatched_gradient_equals_the_whole_batch(tiny_pipeline, name):
  """The real stages' losses are valid-masked means: a batch of 16 split into
  microbatches of 6, 6 and 4 (padded) gives the whole batch's loss, metrics and
  gradients, and the trainer's step runs split to the whole batch's metrics."""
  if name == 'hiarm':
    config = pipeline_fixture.hiarm_config(tiny_pipeline['msst'])
  else:
    config = pipeline_fixture.lifter_config('hierarchical', tiny_pipeline['msst'],
                                            tiny_pipeline['hiarm'])
  stage = stages.make_stage(config, pipeline_fixture.HIERARCHY)
  batch, state = _first_batch_and_state(config, stage)
  # The randomness of the train step from `state` on the one device (trainer's docstring).
  rng = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 0)

  def gradient(size):
    def per_device(batch):
      loss_fn = lambda p, b, r: stage.loss_fn(p, state.collections, b, r, True)
      return execution.microbatched_value_and_grad(
          loss_fn, state.params, batch, rng, size, state.collections)
    (loss, (metrics, _)), grads = jax.jit(jax.vmap(per_device, axis_name=trainer.AXIS))(
        batch)
    return {**metrics, 'loss': loss}, grads

  (whole_metrics, whole), (split_metrics, split) = gradient(0), gradient(6)
  assert set(split_metrics) == set(whole_metrics)
  for key, value in whole_metrics.items():
    np.testing.assert_allclose(split_metrics[key], value, rtol=2e-5, atol=1e-6,
                               err_msg=key)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(whole))
  for got, want in zip(jax.tree.leaves(split), jax.tree.leaves(whole)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
  # The split train step against the whole batch's values above (one compile fewer than
  # a whole-batch train step, which runs in every training test).
  split_state, step_metrics = execution.map_step(
      trainer.make_train_step(stage, microbatch_size=6))(state, batch)
  assert int(split_state.step) == 1
  np.testing.assert_array_equal(step_metrics.pop(trainer.FINITE), True)
  whole_norm = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64))
                           for g in jax.tree.leaves(whole)))
  assert set(step_metrics) == set(whole_metrics) | {'grad_norm'}
  for key, value in {**whole_metrics, 'grad_norm': whole_norm}.items():
    np.testing.assert_allclose(step_metrics[key], value, rtol=2e-5, atol=1e-6,
                               err_msg=key)


def test_msst_refuses_microbatches(tiny_pipeline):
  """The MSST's codebook EMA needs the whole batch: a split step is refused."""
  del tiny_pipeline  # Shares the compilation cache only.
  config = pipeline_fixture.msst_config()
  stage = stages.make_stage(config, pipeline_fixture.HIERARCHY)
  batch, state = _first_batch_and_state(config, stage)
  with pytest.raises(ValueError, match='collections'):
    execution.map_step(trainer.make_train_step(stage, microbatch_size=6))(state, batch)


def _first_batch_and_state(config, stage):
  train_source, _ = pipeline_fixture.sources()
  batch = input_pipeline.TrainBatches(
      train_source, pipeline_fixture.HIERARCHY, config.dataset,
      global_batch_size=config.batch_size, num_local_devices=1, seed=0).batch(0)
  batch['valid'][0, 3] = False  # An invalid example weighs nothing either way.
  state = trainer.create_train_state(stage, config, jax.random.key(0),
                                     jax.tree.map(lambda x: x[0], batch))
  return batch, state
