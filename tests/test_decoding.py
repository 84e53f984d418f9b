"""Tests for HiARM generation: cached scan vs. recompute, sampling, compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import orderings
from hipart_jax import skeleton
from hipart_jax.models import decoding
from hipart_jax.models import hiarm as hiarm_lib

VS, VD = 11, 13
B = 3
UNEVEN = skeleton.Hierarchy.from_maps((3, 0, 3, 10, 3, 0, 3, 3), tuple(range(8)))


def _condition(seed, hierarchy):
  rng = np.random.default_rng(seed)
  s = hierarchy.num_sparse
  return (jnp.asarray(rng.normal(size=(B, s, 2)), jnp.float32),
          jnp.asarray(rng.uniform(0.5, 1.0, size=(B, s)), jnp.float32))


def _build(hierarchy, **kwargs):
  model = hiarm_lib.HiARM(hierarchy, VS, VD, ordering='hierarchical', width=16, num_lsab=1,
                          num_gcsab=1, num_heads=2, mlp_ratio=2, **kwargs)
  cond, conf = _condition(0, hierarchy)
  ids = (jnp.zeros((B, hierarchy.num_sparse), jnp.int32),
         jnp.zeros((B, hierarchy.num_dense), jnp.int32))
  params = jax.jit(model.init)(jax.random.key(0), cond, conf, *ids)['params']
  return model, params


@pytest.fixture(scope='module')
def default_model():
  return _build(skeleton.default_hierarchy())


@pytest.fixture(scope='module')
def greedy(default_model):
  """Cached greedy generation on the default model, with logits."""
  model, params = default_model
  cond, conf = _condition(1, model.hierarchy)
  return decoding.generate(model, params, cond, conf, jax.random.key(0), return_logits=True)


@pytest.mark.parametrize('which', ['default', 'uneven', 'condition_mlp'])
def test_cached_generation_equals_recompute_and_teacher_forcing(which, default_model, greedy):
  if which == 'default':
    model, params = default_model
    cached = greedy
  elif which == 'uneven':
    model, params = _build(UNEVEN)
  else:
    model, params = _build(skeleton.default_hierarchy(), condition_mlp_width=8,
                           condition_mlp_depth=1)
    # A nonzero readout, so the condition cache really carries the MLP's output.
    readout = params['condition_mlp_out']['kernel']
    params = {**params, 'condition_mlp_out': {
        **params['condition_mlp_out'],
        'kernel': jax.random.normal(jax.random.key(3), readout.shape)}}
  cond, conf = _condition(1, model.hierarchy)
  if which != 'default':
    cached = decoding.generate(model, params, cond, conf, jax.random.key(0),
                               return_logits=True)
  recomputed = decoding.generate(model, params, cond, conf, jax.random.key(0),
                                 return_logits=True, use_cache=False)
  s, d = model.hierarchy.num_sparse, model.hierarchy.num_dense
  assert cached['sparse_ids'].shape == (B, 1, s) and cached['dense_ids'].shape == (B, 1, d)
  assert cached['sparse_logits'].shape == (B, 1, s, VS)
  assert cached['dense_logits'].shape == (B, 1, d, VD)
  for key in ('sparse_ids', 'dense_ids'):
    np.testing.assert_array_equal(cached[key], recomputed[key])
  for key in ('sparse_logits', 'dense_logits', 'sparse_log_probs', 'dense_log_probs'):
    np.testing.assert_allclose(cached[key], recomputed[key], atol=1e-4, rtol=0)
  # The teacher-forced pass on the generated tokens gives the logits they were drawn from.
  teacher = jax.jit(model.apply)({'params': params}, cond, conf,
                                 cached['sparse_ids'][:, 0], cached['dense_ids'][:, 0])
  np.testing.assert_allclose(cached['sparse_logits'][:, 0], teacher[0], atol=1e-4, rtol=0)
  np.testing.assert_allclose(cached['dense_logits'][:, 0], teacher[1], atol=1e-4, rtol=0)
  # Greedy: every token is the argmax of its logits, and log-probs match them.
  for level in ('sparse', 'dense'):
    logits, ids = cached[f'{level}_logits'], cached[f'{level}_ids']
    np.testing.assert_array_equal(ids, np.argmax(logits, axis=-1))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    np.testing.assert_allclose(cached[f'{level}_log_probs'],
                               np.take_along_axis(log_probs, ids[..., None], -1)[..., 0],
                               atol=1e-5)


def test_greedy_is_deterministic(default_model, greedy):
  model, params = default_model
  cond, conf = _condition(1, model.hierarchy)
  again = decoding.generate(model, params, cond, conf, jax.random.key(42), return_logits=True)
  for key in greedy:
    np.testing.assert_array_equal(greedy[key], again[key])
  other = decoding.generate(model, params, *_condition(2, model.hierarchy), jax.random.key(0),
                            return_logits=True)
  assert np.any(np.asarray(other['dense_ids']) != np.asarray(greedy['dense_ids']))


def test_sampling_gives_distinct_valid_hypotheses_and_compiles_once(default_model):
  model, params = default_model
  settings = dict(temperature=1.0, num_samples=4)
  before = decoding.generate._cache_size()
  samples = decoding.generate(model, params, *_condition(1, model.hierarchy),
                              jax.random.key(0), **settings)
  resampled = decoding.generate(model, params, *_condition(3, model.hierarchy),
                                jax.random.key(1), **settings)
  assert decoding.generate._cache_size() == before + 1
  s, d = model.hierarchy.num_sparse, model.hierarchy.num_dense
  assert samples['sparse_ids'].shape == (B, 4, s) and samples['dense_ids'].shape == (B, 4, d)
  for out in (samples, resampled):
    for level, vocab in (('sparse', VS), ('dense', VD)):
      ids = np.asarray(out[f'{level}_ids'])
      assert ids.min() >= 0 and ids.max() < vocab
      log_probs = np.asarray(out[f'{level}_log_probs'])
      assert np.all(np.isfinite(log_probs)) and np.all(log_probs <= 0)
  tokens = np.concatenate([samples['sparse_ids'], samples['dense_ids']], axis=-1)
  for b in range(B):  # The K hypotheses of one input all differ.
    assert len({tuple(row) for row in tokens[b]}) == 4


def test_top_k_one_equals_greedy(default_model, greedy):
  model, params = default_model
  cond, conf = _condition(1, model.hierarchy)
  top1 = decoding.generate(model, params, cond, conf, jax.random.key(7), temperature=1.0,
                           top_k=1, num_samples=2)
  for key in ('sparse_ids', 'dense_ids'):
    np.testing.assert_array_equal(top1[key], np.repeat(greedy[key], 2, axis=1))


def test_sample_tokens_temperature_and_top_k():
  logits = jnp.broadcast_to(jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4])), (20000, 4))

  @jax.jit
  def sample_all(logits, rng):
    one, two = jax.random.split(rng)
    return (decoding.sample_tokens(logits, rng, temperature=0.0, top_k=0),
            decoding.sample_tokens(logits, one, temperature=1.0, top_k=0),
            decoding.sample_tokens(logits, two, temperature=1.0, top_k=2))

  greedy, full, top2 = (np.bincount(ids, minlength=4) / len(ids)
                        for ids in sample_all(logits, jax.random.key(0)))
  np.testing.assert_array_equal(greedy, [0, 0, 0, 1])
  np.testing.assert_allclose(full, [0.1, 0.2, 0.3, 0.4], atol=0.015)
  np.testing.assert_allclose(top2, [0, 0, 3 / 7, 4 / 7], atol=0.015)
  with pytest.raises(ValueError):
    decoding.sample_tokens(logits, jax.random.key(0), temperature=-1.0, top_k=0)


def test_bad_num_samples_raises(default_model):
  model, params = default_model
  with pytest.raises(ValueError, match='num_samples'):
    decoding.generate(model, params, *_condition(1, model.hierarchy), jax.random.key(0),
                      num_samples=0)



# The decoding loop with a fake step function (as flax's lm1b sampler test does it): the
# step's logits prefer, for each query slot's token t in row b, the id
# (3 t + sum of the tokens generated so far + b) % V. A query sees only earlier groups, so
# group mates share the sum; a context slot written back, or a token put at the wrong
# index, changes every later sum. The expected sequences follow from the groups alone.
FAKE_VOCAB = 7
EXPECTED_FAKE_TOKENS = {
    'hierarchical': [
        [0, 4, 1, 5, 3, 4, 0, 1, 3, 2, 4, 3, 3, 3, 1, 1, 1, 3, 5, 2, 3, 1, 3, 0, 3],
        [1, 3, 0, 4, 1, 2, 2, 4, 6, 6, 1, 4, 5, 4, 3, 5, 3, 1, 0, 0, 4, 6, 5, 5, 1]],
    'center_to_periphery': [
        [0, 2, 6, 3, 6, 0, 4, 0, 2, 3, 5, 5, 0, 5, 5, 2, 5, 6, 5, 4, 5, 0, 1, 6, 1],
        [1, 3, 0, 4, 1, 2, 5, 4, 6, 5, 0, 2, 1, 2, 6, 4, 6, 1, 0, 1, 2, 1, 5, 1, 5]],
    'sparse_to_dense': [
        [0, 4, 4, 4, 3, 2, 0, 3, 2, 0, 3, 3, 2, 0, 3, 2, 0, 1, 5, 0, 1, 6, 3, 5, 1],
        [1, 3, 2, 0, 4, 4, 4, 4, 4, 4, 4, 0, 3, 2, 0, 3, 2, 0, 0, 6, 3, 5, 5, 4, 0]],
    'raster': [
        [0, 3, 2, 0, 3, 2, 0, 3, 2, 0, 3, 2, 0, 3, 2, 0, 3, 2, 0, 3, 2, 0, 3, 2, 0],
        [1, 5, 6, 1, 5, 6, 1, 5, 6, 1, 5, 6, 1, 5, 6, 1, 5, 6, 1, 5, 6, 1, 5, 6, 1]],
}


def _fake_step_fn(order):
  step_tokens = jnp.asarray(order.step_tokens)

  def step_fn(tokens, calls, g):
    slot_tokens = jnp.maximum(step_tokens[g], 0)  # [W]
    rows = jnp.arange(tokens.shape[0])[:, None]
    favourite = (3 * slot_tokens[None] + tokens.sum(1, keepdims=True) + rows) % FAKE_VOCAB
    return 5.0 * jax.nn.one_hot(favourite, FAKE_VOCAB), calls + 1  # [B, W, V]

  return step_fn


@pytest.mark.parametrize('name', sorted(EXPECTED_FAKE_TOKENS))
def test_decode_with_fake_logits_gives_the_exact_sequence(name):
  order = orderings.make_ordering(UNEVEN, name)
  out = jax.jit(lambda rng: decoding.decode(_fake_step_fn(order), order, 2, jnp.int32(0),
                                            rng, return_logits=True))(jax.random.key(0))
  np.testing.assert_array_equal(out['tokens'], EXPECTED_FAKE_TOKENS[name])
  # Every token is scored under the logits it was drawn from: 5 against 0 elsewhere.
  np.testing.assert_allclose(out['log_probs'], 5.0 - np.log(np.e**5 + FAKE_VOCAB - 1),
                             rtol=1e-5)
  np.testing.assert_array_equal(np.argmax(out['logits'], -1), out['tokens'])
