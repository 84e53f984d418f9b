"""Tests for the EMA vector quantizer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax.models import quantizer as quantizer_lib

VQ = quantizer_lib.VQ_COLLECTION


def _stats(codebook):
  """Fresh statistics for a given codebook: cluster_size 1, cluster_sum = codebook."""
  codebook = jnp.asarray(codebook, jnp.float32)
  num_codes = codebook.shape[0]
  return dict(codebook=codebook, cluster_size=jnp.ones((num_codes,), jnp.float32),
              cluster_sum=codebook, steps_since_used=jnp.zeros((num_codes,), jnp.int32),
              num_updates=jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnums=0)
def _train_step(vq, stats, z, mask=None, rngs=None):
  """One jitted training call: (quantized, out, new_stats)."""
  (quantized, out), new = vq.apply({VQ: stats}, z, mask, train=True, mutable=[VQ], rngs=rngs)
  return quantized, out, new[VQ]


def test_init_puts_codebook_outside_params():
  vq = quantizer_lib.VectorQuantizer(num_codes=5, dim=3)
  variables = vq.init(jax.random.key(0), jnp.zeros((2, 4, 3)), train=True)
  assert 'params' not in variables
  stats = variables[VQ]
  assert stats['codebook'].shape == (5, 3)
  np.testing.assert_array_equal(stats['cluster_size'], np.ones(5))
  np.testing.assert_array_equal(stats['cluster_sum'], stats['codebook'])
  # The fresh statistics are consistent: codebook == cluster_sum / cluster_size.
  assert float(jnp.std(stats['codebook'])) > 0.1


def test_ema_update_matches_hand_computation():
  vq = quantizer_lib.VectorQuantizer(num_codes=3, dim=2, decay=0.5, epsilon=0.1)
  stats = _stats([[0., 0.], [10., 0.], [0., 10.]])
  z = jnp.array([[[1., 0.], [-1., 0.]], [[9., 1.], [0.5, 0.5]]])  # [B=2, N=2, 2]
  mask = jnp.array([[True, True], [True, False]])  # the last vector is padding
  quantized, out, new = _train_step(vq, stats, z, mask)

  np.testing.assert_array_equal(out['ids'], [[0, 0], [1, 0]])
  np.testing.assert_allclose(quantized, [[[0, 0], [0, 0]], [[10, 0], [0, 0]]], atol=1e-6)
  # Valid vectors: code 0 <- (1,0), (-1,0); code 1 <- (9,1); code 2 unused.
  # cluster_size = 0.5 * 1 + 0.5 * (2, 1, 0) = (1.5, 1, 0.5)
  np.testing.assert_allclose(new['cluster_size'], [1.5, 1.0, 0.5], rtol=1e-6)
  # cluster_sum = 0.5 * codebook + 0.5 * ((0,0), (9,1), (0,0))
  np.testing.assert_allclose(new['cluster_sum'], [[0, 0], [9.5, 0.5], [0, 5]], rtol=1e-6)
  # Laplace: (n + 0.1) / (3 + 3 * 0.1) * 3 = (16/11, 1, 6/11).
  np.testing.assert_allclose(new['codebook'], [[0, 0], [9.5, 0.5], [0, 5 * 11 / 6]],
                             rtol=1e-5)
  np.testing.assert_array_equal(new['steps_since_used'], [0, 0, 1])
  assert int(new['num_updates']) == 1
  # Commitment: squared distances 1 + 1 + 2 over 3 valid vectors x 2 channels.
  np.testing.assert_allclose(out['commitment_loss'], 4 / 6, rtol=1e-6)
  np.testing.assert_allclose(out['usage'], 2 / 3, rtol=1e-6)
  p = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(out['perplexity'], np.exp(-np.sum(p * np.log(p))), rtol=1e-5)


def test_no_update_in_eval_or_when_immutable():
  vq = quantizer_lib.VectorQuantizer(num_codes=3, dim=2, decay=0.5)
  stats = _stats([[0., 0.], [10., 0.], [0., 10.]])
  z = jnp.array([[[1., 0.], [9., 1.]]])
  _, new = vq.apply({VQ: stats}, z, train=False, mutable=[VQ])
  jax.tree.map(np.testing.assert_array_equal, new[VQ], stats)
  quantized, _ = vq.apply({VQ: stats}, z, train=True)  # not mutable: no error, no update
  np.testing.assert_allclose(quantized, [[[0, 0], [10, 0]]], atol=1e-6)
  # Without an update no collective runs: eval works outside a named axis.
  synced = quantizer_lib.VectorQuantizer(num_codes=3, dim=2, statistics_axis_name='batch')
  _, out = synced.apply({VQ: stats}, z, train=False)
  np.testing.assert_array_equal(out['ids'], [[0, 1]])


def test_straight_through_gradient_is_identity():
  vq = quantizer_lib.VectorQuantizer(num_codes=4, dim=3)
  variables = vq.init(jax.random.key(1), jnp.zeros((1, 3)), train=False)
  z = jax.random.normal(jax.random.key(2), (5, 3))
  weights = jax.random.normal(jax.random.key(3), (5, 3))

  def decoder_side_loss(z):
    quantized, _ = vq.apply(variables, z, train=False)
    return jnp.sum(quantized * weights)

  np.testing.assert_allclose(jax.jit(jax.grad(decoder_side_loss))(z), weights, rtol=1e-6)


def test_psum_statistics_match_single_device_on_concatenated_batch():
  dim, codes = 4, 6
  stats = quantizer_lib.VectorQuantizer(codes, dim).init(
      jax.random.key(0), jnp.zeros((1, dim)), train=False)[VQ]
  z = jax.random.normal(jax.random.key(1), (2, 3, 5, dim))  # [replicas, B, N, C]
  mask = jax.random.bernoulli(jax.random.key(2), 0.7, (2, 3, 5))
  replicated = quantizer_lib.VectorQuantizer(codes, dim, decay=0.9,
                                             statistics_axis_name='batch')
  single = quantizer_lib.VectorQuantizer(codes, dim, decay=0.9)

  def step(z, mask):
    _, out, new = _train_step(replicated, stats, z, mask)
    return out, new

  out_r, new_r = jax.jit(jax.vmap(step, axis_name='batch'))(z, mask)
  _, out_s, new_s = _train_step(single, stats, z.reshape(6, 5, dim), mask.reshape(6, 5))
  for key, value in new_s.items():
    for replica in range(2):
      np.testing.assert_allclose(new_r[key][replica], value, rtol=1e-5, atol=1e-6, err_msg=key)
  for key in ('perplexity', 'usage'):
    np.testing.assert_allclose(out_r[key], [out_s[key]] * 2, rtol=1e-5)
  # The statistics changed (the test would pass vacuously otherwise).
  assert float(jnp.abs(new_s['codebook'] - stats['codebook']).max()) > 1e-3


def _dead_code_setup():
  # Codes 2 and 3 are far from all data: never used.
  stats = _stats([[-1., 0.], [1., 0.], [100., 100.], [-100., 100.]])
  z = jnp.array([[[-1.2, 0.1], [0.9, -0.2], [-0.8, 0.3], [1.1, 0.0]]])
  mask = jnp.array([[False, True, True, True]])
  return stats, z, mask


@pytest.mark.parametrize('use_rng', [False, True])
def test_dead_codes_are_reseeded_from_valid_encoder_outputs(use_rng):
  vq = quantizer_lib.VectorQuantizer(num_codes=4, dim=2, decay=0.9, dead_after_steps=2)
  stats, z, mask = _dead_code_setup()
  rngs = {quantizer_lib.RESTART_RNG: jax.random.key(7)} if use_rng else None
  _, _, once = _train_step(vq, stats, z, mask, rngs)
  np.testing.assert_array_equal(once['steps_since_used'], [0, 0, 1, 1])
  np.testing.assert_allclose(once['codebook'][2:], stats['codebook'][2:], rtol=1e-4)
  _, _, twice = _train_step(vq, once, z, mask, rngs)

  valid_rows = np.asarray(z[0][np.asarray(mask[0])])
  reseeded = np.asarray(twice['codebook'][2:])
  for code in reseeded:
    assert np.any(np.all(np.isclose(valid_rows, code), axis=-1)), (code, valid_rows)
  assert not np.allclose(reseeded[0], reseeded[1])  # distinct rows for distinct codes
  np.testing.assert_array_equal(twice['steps_since_used'], [0, 0, 0, 0])
  np.testing.assert_array_equal(twice['cluster_size'][2:], [1.0, 1.0])
  np.testing.assert_array_equal(twice['cluster_sum'][2:], reseeded)


def test_dead_code_restart_is_identical_across_replicas():
  vq = quantizer_lib.VectorQuantizer(num_codes=4, dim=2, decay=0.9, dead_after_steps=1,
                                     statistics_axis_name='batch')
  stats, z, mask = _dead_code_setup()
  z = jnp.stack([z, z + 0.05])  # different data on the two replicas
  mask = jnp.stack([mask, jnp.ones_like(mask)])
  new = jax.jit(jax.vmap(lambda z, m: _train_step(vq, stats, z, m)[2],
                         axis_name='batch'))(z, mask)
  np.testing.assert_array_equal(new['codebook'][0], new['codebook'][1])
  replica0_rows = np.asarray(z[0, 0][np.asarray(mask[0, 0])])
  for code in np.asarray(new['codebook'][0, 2:]):
    assert np.any(np.all(np.isclose(replica0_rows, code), axis=-1))
