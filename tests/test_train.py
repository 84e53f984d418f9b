"""Tests for hipart_jax.training: steps, optimizer, resumption, 1 vs 8 devices, SIGTERM,
non-finite losses.

A toy stage (linear regression of `sparse_3d` from `inputs_2d`, with a running target
mean kept in a non-param collection and synchronized over devices) stands in for the
real stages, on in-memory fake examples through the real input pipeline.
"""

import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

import fake_examples
import suite_xla_flags
from hipart_jax import checkpoints
from hipart_jax import execution
from hipart_jax import input_pipeline
from hipart_jax import skeleton
from hipart_jax.training import loop
from hipart_jax.training import run as run_lib
from hipart_jax.training import trainer
from launch.configs import base

AXIS = trainer.AXIS
HIERARCHY = skeleton.default_hierarchy()
NUM_STEPS = 6
REPO = pathlib.Path(__file__).resolve().parents[1]


class ToyStage:
  """Linear regression sparse_3d ← inputs_2d; 'stats' holds an EMA of the target mean.

  `nan_from_update` > 0 makes the loss NaN from that update on (the NaN switch).
  """

  def __init__(self, momentum: float = 0.5, nan_from_update: int = 0):
    self.momentum = momentum
    self.nan_from_update = nan_from_update

  def init_variables(self, rng, batch):
    num_in = batch['inputs_2d'][0].size
    num_out = batch['sparse_3d'][0].size
    return {'params': {'w': 0.01 * jax.random.normal(rng, (num_in, num_out)),
                       'b': jnp.zeros(num_out)},
            'stats': {'target_mean': jnp.zeros(num_out), 'updates': jnp.zeros((), jnp.int32)}}

  def _errors(self, params, batch):
    size = batch['inputs_2d'].shape[0]
    prediction = batch['inputs_2d'].reshape(size, -1) @ params['w'] + params['b']
    return prediction - batch['sparse_3d'].reshape(size, -1)

  def loss_fn(self, params, collections, batch, rng, train):
    del train
    errors = self._errors(params, batch)
    loss = jnp.mean(errors ** 2)
    stats = collections['stats']
    if self.nan_from_update:
      loss = jnp.where(stats['updates'] + 1 >= self.nan_from_update, jnp.nan, loss)
    batch_mean = lax.pmean(jnp.mean(batch['sparse_3d'].reshape(errors.shape), 0), AXIS)
    new_stats = {'target_mean': self.momentum * stats['target_mean']
                                + (1 - self.momentum) * batch_mean,
                 'updates': stats['updates'] + 1}
    return loss, ({'mse': loss, 'rng_sample': jax.random.uniform(rng)}, {'stats': new_stats})

  def eval_metrics(self, variables, batch):
    errors = self._errors(variables['params'], batch)
    valid = batch['valid'].astype(jnp.float32)
    per_example = jnp.mean(errors ** 2, axis=-1)
    return {'loss': jnp.sum(per_example * valid) / jnp.sum(valid),
            'index_mean': jnp.sum(batch['index'] * valid) / jnp.sum(valid)}


def make_config(**overrides):
  config = base.get_config()
  config.stage = 'toy'
  config.tensorboard = False
  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = NUM_STEPS
  config.log_every_steps = 1
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 2
  config.dataset.prefetch_batches = 1
  config.optimizer.lr = 1e-2
  config.optimizer.warmup_steps = 2
  config.update(overrides)
  return config


def sources():
  return (fake_examples.fake_examples(40, HIERARCHY, seed=1),
          fake_examples.fake_examples(13, HIERARCHY, seed=2))  # 13: eval has padding.


def run(config, workdir, stage=None):
  train_source, eval_source = sources()
  return loop.train_and_evaluate(config, workdir, stage=stage or ToyStage(),
                                 train_source=train_source, eval_source=eval_source,
                                 hierarchy=HIERARCHY)


def read_metrics(workdir):
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line) for line in lines]


def train_losses(workdir):
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


def subprocess_main(mode, workdir):
  """Entry point of the subprocesses below (8 fake devices / SIGTERM)."""
  if mode == 'devices':
    jax.config.update('jax_num_cpu_devices', 8)
    assert jax.local_device_count() == 8
    results = {}
    for implementation in ('pmap',):
      path = pathlib.Path(workdir) / implementation
      state, eval_metrics = run(make_config(), path)
      results[implementation] = dict(
          losses=train_losses(path), eval=eval_metrics,
          params={k: np.asarray(v).tolist() for k, v in state.params.items()},
          target_mean=np.asarray(state.collections['stats']['target_mean']).tolist())
    print('RESULTS ' + json.dumps(results), flush=True)
  elif mode == 'sigterm':
    run(make_config(num_train_steps=10**6, eval_every_steps=10**6,
                    checkpoint_every_steps=10**6), workdir)


def start_subprocess(mode, workdir):
  code = (f'import sys; sys.path.insert(0, {str(REPO / "tests")!r}); import test_train; '
          f'test_train.subprocess_main({mode!r}, {str(workdir)!r})')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = suite_xla_flags.suite_flags()  # None of this process's additions.
  return subprocess.Popen([sys.executable, '-c', code], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope='module')
def devices_process(tmp_path_factory):
  """The 8-device run, started first so it overlaps the in-process tests."""
  process = start_subprocess('devices', tmp_path_factory.mktemp('devices'))
  yield process
  if process.poll() is None:
    process.kill()


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, devices_process):
  del devices_process  # Only started earlier.
  workdir = tmp_path_factory.mktemp('full')
  state, eval_metrics = run(make_config(), workdir)
  return workdir, state, eval_metrics


def fake_batch(config):
  train_source, _ = sources()
  batches = input_pipeline.TrainBatches(
      train_source, HIERARCHY, config.dataset, global_batch_size=config.batch_size,
      num_local_devices=jax.local_device_count(), seed=0)
  return batches.batch(0)


def test_train_step_updates_params_and_collections():
  stage = ToyStage()
  config = make_config()
  config.optimizer.warmup_steps = 0  # A non-zero learning rate from step 0.
  batch = fake_batch(config)
  state = trainer.create_train_state(stage, config, jax.random.key(0),
                                     jax.tree.map(lambda x: x[0], batch))
  before = jax.tree.map(np.asarray, state.params)
  step = execution.map_step(trainer.make_train_step(stage), donate_state=True)
  new_state, metrics = step(state, batch)
  assert int(new_state.step) == 1
  assert set(metrics) == {'loss', 'mse', 'rng_sample', 'grad_norm', trainer.FINITE}
  np.testing.assert_array_equal(metrics.pop(trainer.FINITE), True)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics['grad_norm']) > 0
  assert not np.allclose(before['w'], new_state.params['w'])
  assert int(new_state.collections['stats']['updates']) == 1
  expected_mean = 0.5 * batch['sparse_3d'].reshape(config.batch_size, -1).mean(0)
  np.testing.assert_allclose(new_state.collections['stats']['target_mean'], expected_mean,
                             rtol=1e-5, atol=1e-7)
  # The per-step RNG moves with the step.
  _, metrics_2 = step(new_state, batch)
  assert float(metrics_2['rng_sample']) != float(metrics['rng_sample'])


def test_first_nonfinite_names_the_loss_or_the_leaf():
  params = {'a': {'kernel': np.ones(2)}, 'b': np.ones(3)}
  assert trainer.first_nonfinite(np.array([True, True, True]), params) is None
  assert trainer.first_nonfinite(np.array([False, False, True]), params) == 'loss'
  assert trainer.first_nonfinite(np.array([True, True, False]), params) == (
      "gradient of params['b']")
  assert trainer.first_nonfinite(np.array([True, False, False]), params) == (
      "gradient of params['a']['kernel']")


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  """The loss turns NaN at update 5: the loop stops naming step 5, and the workdir keeps
  the step-4 checkpoint (saved every 2 steps), no NaN state."""
  config = make_config(log_every_steps=3)
  with pytest.raises(loop.NonFiniteError, match=r'step 5: non-finite loss.*step 4'):
    run(config, tmp_path, ToyStage(nan_from_update=5))
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert max(steps) == 4
  variables, _ = checkpoints.restore_params(tmp_path, expected_stage='toy')
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(variables))
  assert int(variables['stats']['updates']) == 4
  assert max(train_losses(tmp_path)) == 3  # Steps 4-5 were never logged.


def test_schedule_and_weight_decay_mask():
  config = make_config()
  config.optimizer.update(lr=0.1, warmup_steps=10, end_lr_factor=0.01, weight_decay=0.5)
  schedule = trainer.make_schedule(config.optimizer, 100)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(100)],
                             [0.0, 0.05, 0.1, 0.001], rtol=1e-5)
  config.optimizer.decay_steps = 50
  np.testing.assert_allclose(trainer.make_schedule(config.optimizer, 100)(50), 0.001,
                             rtol=1e-5)
  tx = trainer.make_optimizer(config.optimizer, 100)
  params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  for _ in range(6):
    updates, state = tx.update(zeros, state, params)
  # With zero gradients only weight decay moves parameters, and only matrices decay.
  np.testing.assert_array_equal(updates['b'], 0.0)
  np.testing.assert_allclose(updates['w'], -0.5 * 0.05 * params['w'], rtol=1e-5)


def test_full_run_saves_evaluates_and_keeps_last_and_best(full_run):
  workdir, state, eval_metrics = full_run
  assert int(state.step) == NUM_STEPS
  assert set(eval_metrics) == {'eval/loss', 'eval/index_mean'}
  assert eval_metrics['eval/index_mean'] == pytest.approx(6.0)  # Padding is ignored.
  records = read_metrics(workdir)
  assert sorted(train_losses(workdir)) == list(range(1, NUM_STEPS + 1))
  assert [r['step'] for r in records if 'eval/loss' in r] == [3, 6]
  assert all('steps_per_second' in r for r in records if 'train/loss' in r)
  losses = train_losses(workdir)
  assert losses[NUM_STEPS] < losses[1]
  # Saved: 2, 3 (eval), 4, 6 (eval, last); kept: the last 2, plus the best evaluated one.
  variables, meta = checkpoints.restore_params(workdir, expected_stage='toy')
  assert meta['stage'] == 'toy'
  assert skeleton.Hierarchy.from_json(meta['hierarchy']) == HIERARCHY
  np.testing.assert_array_equal(variables['params']['w'], state.params['w'])
  assert int(variables['stats']['updates']) == NUM_STEPS
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps[-2:] == [4, 6] and set(steps) <= {3, 4, 6}


def test_resume_reproduces_the_uninterrupted_run(full_run, tmp_path):
  full_dir, full_state, full_eval = full_run
  config = make_config(num_train_steps=NUM_STEPS // 2)
  config.optimizer.decay_steps = NUM_STEPS  # The schedule of the full run.
  run(config, tmp_path)
  config = make_config()
  config.optimizer.decay_steps = NUM_STEPS
  state, eval_metrics = run(config, tmp_path)
  for name in ('w', 'b'):
    np.testing.assert_allclose(state.params[name], full_state.params[name], rtol=1e-6,
                               atol=1e-7)
  np.testing.assert_allclose(state.collections['stats']['target_mean'],
                             full_state.collections['stats']['target_mean'], rtol=1e-6)
  assert int(state.collections['stats']['updates']) == NUM_STEPS
  assert eval_metrics['eval/loss'] == pytest.approx(full_eval['eval/loss'], rel=1e-6)
  resumed, full = train_losses(tmp_path), train_losses(full_dir)
  assert sorted(resumed) == list(range(1, NUM_STEPS + 1))  # Nothing trained twice.
  np.testing.assert_allclose([resumed[s] for s in sorted(resumed)],
                             [full[s] for s in sorted(full)], rtol=1e-6)


def test_eight_devices_match_one_device(full_run, devices_process):
  full_dir, full_state, full_eval = full_run
  stdout, stderr = devices_process.communicate(timeout=240)
  assert devices_process.returncode == 0, stderr[-3000:]
  results = json.loads(stdout.split('RESULTS ', 1)[1])
  full_losses = train_losses(full_dir)
  for implementation, result in results.items():
    losses = {int(step): value for step, value in result['losses'].items()}
    assert sorted(losses) == sorted(full_losses), implementation
    np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                               [full_losses[s] for s in sorted(full_losses)], rtol=1e-5,
                               err_msg=implementation)
    for name in ('w', 'b'):
      np.testing.assert_allclose(result['params'][name], full_state.params[name],
                                 rtol=1e-4, atol=1e-6, err_msg=implementation)
    np.testing.assert_allclose(result['target_mean'],
                               full_state.collections['stats']['target_mean'], rtol=1e-5)
    assert result['eval']['eval/loss'] == pytest.approx(full_eval['eval/loss'], rel=1e-5)
    assert result['eval']['eval/index_mean'] == pytest.approx(6.0)


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
  process = start_subprocess('sigterm', tmp_path)
  metrics_file = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline and process.poll() is None:
    if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 3:
      break
    time.sleep(0.2)
  assert process.poll() is None, process.communicate()[1][-3000:]
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == run_lib.PREEMPTED_EXIT_CODE, stderr[-3000:]
  last_logged = max(train_losses(tmp_path))
  steps = [int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()]
  assert steps and max(steps) >= 3 and max(steps) >= last_logged
  variables, _ = checkpoints.restore_params(tmp_path, expected_stage='toy')
  assert int(variables['stats']['updates']) == max(steps)


def test_console_has_one_compact_line_per_log_step_and_jsonl_every_metric(tmp_path, caplog):
  config = make_config(best_metric='eval/index_mean', checkpoint_every_steps=NUM_STEPS)
  with caplog.at_level(logging.DEBUG):
    run(config, tmp_path)
  info = [r.getMessage() for r in caplog.records
          if r.levelno == logging.INFO and r.filename == 'loop.py']
  train_line = re.compile(r'^step (\d)/6  loss [\d.e-]+(  eval/index_mean 6)?  '
                          r'[\d.e+]+ steps/s  ETA \S+$')
  matches = [(m, line) for line in info if (m := train_line.match(line))]
  assert [int(m.group(1)) for m, _ in matches] == list(range(1, NUM_STEPS + 1))
  # The main metric appears once an evaluation (step 3) has given it.
  assert [bool(m.group(2)) for m, _ in matches] == [False] * 3 + [True] * 3
  eval_line = re.compile(r'^step (\d)/6  eval/loss [\d.e-]+  eval/index_mean 6$')
  assert [int(m.group(1)) for line in info if (m := eval_line.match(line))] == [3, 6]
  assert len(info) == len(matches) + 2 + 2  # And the parameter and device counts.
  # Full dictionaries are DEBUG lines; metrics.jsonl holds every metric of every step.
  assert not [line for line in info if 'train/learning_rate' in line]
  assert any('train/learning_rate=' in r.getMessage() for r in caplog.records
             if r.levelno == logging.DEBUG)
  records = read_metrics(tmp_path)
  train_keys = {'step', 'train/loss', 'train/mse', 'train/rng_sample', 'train/grad_norm',
                'train/learning_rate', 'steps_per_second', 'examples_per_second'}
  assert [set(r) for r in records if 'train/loss' in r] == [train_keys] * NUM_STEPS
  assert [set(r) for r in records if 'eval/loss' in r] == [
      {'step', 'eval/loss', 'eval/index_mean'}] * 2
