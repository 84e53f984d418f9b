"""Tests for hipart_jax.checkpoints: retention, round trips, loading earlier stages."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from hipart_jax import checkpoints
from hipart_jax.training import trainer


def make_config(keep=2, mode='min'):
  return ml_collections.ConfigDict(dict(keep_checkpoints=keep, best_metric='eval/loss',
                                        best_mode=mode))


def make_state(step=0, scale=1.0):
  params = {'dense': {'kernel': scale * jnp.arange(6.0).reshape(2, 3), 'bias': jnp.ones(3)}}
  tx = optax.adam(1e-3)
  return trainer.TrainState(
      step=jnp.asarray(step, jnp.int32), params=params,
      collections={'vq_stats': {'counts': jnp.full((4,), scale)}},
      opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(3)), tx=tx)


def saved_steps(manager):
  checkpoints.wait_until_finished(manager)
  return sorted(manager.all_steps())


@pytest.mark.parametrize('mode,best', [('min', 2), ('max', 4)])
def test_keeps_the_last_k_and_the_best(tmp_path, mode, best):
  manager = checkpoints.make_manager(tmp_path, make_config(keep=2, mode=mode))
  losses = {1: 5.0, 2: 1.0, 3: None, 4: 9.0, 5: None, 6: 3.0, 7: None}
  for step, loss in losses.items():
    metrics = None if loss is None else {'eval/loss': loss}
    assert checkpoints.save(manager, step, make_state(step), {'stage': 'msst'}, metrics)
  assert saved_steps(manager) == sorted({best, 6, 7})
  assert manager.best_step() == best
  # Saving an existing step is a no-op, not an error.
  assert not checkpoints.save(manager, 7, make_state(7), {'stage': 'msst'})
  manager.close()


def test_restore_latest_round_trip(tmp_path):
  manager = checkpoints.make_manager(tmp_path, make_config())
  template = make_state(0)
  assert checkpoints.restore_latest(manager, template) is None
  checkpoints.save(manager, 3, make_state(3, scale=2.0), {'stage': 'hiarm', 'x': [1, 2]})
  checkpoints.save(manager, 5, make_state(5, scale=3.0), {'stage': 'hiarm', 'x': [3]})
  checkpoints.wait_until_finished(manager)
  state, meta = checkpoints.restore_latest(manager, template)
  manager.close()
  assert isinstance(state, trainer.TrainState) and state.tx is template.tx
  assert meta == {'stage': 'hiarm', 'x': [3]}
  expected = make_state(5, scale=3.0)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype


@pytest.fixture()
def saved_stage(tmp_path):
  manager = checkpoints.make_manager(tmp_path, make_config())
  for step, scale in ((2, 2.0), (4, 4.0)):
    checkpoints.save(manager, step, make_state(step, scale), {'stage': 'msst', 'model': {}})
  checkpoints.wait_until_finished(manager)
  manager.close()
  return tmp_path


def test_restore_params_loads_variables(saved_stage):
  for directory in (saved_stage, saved_stage / checkpoints.CHECKPOINT_SUBDIR):
    variables, meta = checkpoints.restore_params(directory, expected_stage='msst')
    assert set(variables) == {'params', 'vq_stats'}
    assert meta['stage'] == 'msst'
    np.testing.assert_array_equal(variables['params']['dense']['kernel'],
                                  4.0 * np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(variables['vq_stats']['counts'], np.full(4, 4.0))
  variables, _ = checkpoints.restore_params(saved_stage, step=2)
  np.testing.assert_array_equal(variables['vq_stats']['counts'], np.full(4, 2.0))


def test_restore_params_errors(saved_stage, tmp_path_factory):
  missing = saved_stage / 'nope'
  with pytest.raises(FileNotFoundError, match='nope.*does not exist'):
    checkpoints.restore_params(missing)
  with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
    checkpoints.restore_params(tmp_path_factory.mktemp('empty'))
  with pytest.raises(FileNotFoundError, match='has no step 3'):
    checkpoints.restore_params(saved_stage, step=3)
  with pytest.raises(ValueError, match="holds stage 'msst', expected stage 'hiarm'"):
    checkpoints.restore_params(saved_stage, expected_stage='hiarm')


def test_make_manager_rejects_bad_mode(tmp_path):
  with pytest.raises(ValueError, match='best_mode'):
    checkpoints.make_manager(tmp_path, make_config(mode='lowest'))
