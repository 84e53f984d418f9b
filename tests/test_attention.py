"""Batch-chunked attention equals flax's dot-product attention, gradients included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax.models import attention


def _inputs(batch, points, heads=2, depth=4):
  keys = jax.random.split(jax.random.key(0), 3)
  return tuple(jax.random.normal(k, (batch, points, heads, depth)) for k in keys)


def _mask(points):
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.random((1, 1, points, points)) > 0.3) | jnp.eye(points, dtype=bool)


@pytest.mark.parametrize('batch, chunk, points', [(5, 2, 7), (4, 4, 7), (3, 8, 7),
                                                  (3, 2, 45)])
def test_matches_dot_product_attention(batch, chunk, points):
  query, key, value = _inputs(batch, points)
  mask = _mask(points)
  expected = nn.dot_product_attention(query, key, value, mask=mask)
  got = jax.jit(attention.batch_chunked_attention(chunk))(query, key, value, mask=mask)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_gradients_match_dot_product_attention():
  # Large logits: the row-max shift matters, and its stopped gradient must not change
  # the result's gradient.
  query, key, value = (8.0 * x for x in _inputs(3, 45))
  mask = _mask(45)
  weights = jax.random.normal(jax.random.key(1), query.shape)
  chunked = attention.batch_chunked_attention(2)
  loss = lambda fn: lambda q, k, v: jnp.sum(weights * fn(q, k, v, mask=mask))
  expected = jax.grad(loss(nn.dot_product_attention), argnums=(0, 1, 2))(query, key, value)
  got = jax.jit(jax.grad(loss(chunked), argnums=(0, 1, 2)))(query, key, value)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(jnp.abs(e).max()))


@pytest.mark.parametrize('broadcast', [True, False])
def test_dropout_matches_flax_per_example(broadcast):
  query, key, value = _inputs(4, 9)
  rng = jax.random.key(1)
  got = attention.batch_chunked_attention(2)(query, key, value, dropout_rng=rng,
                                             dropout_rate=0.5, broadcast_dropout=broadcast,
                                             deterministic=False)
  expected = jnp.concatenate([
      nn.dot_product_attention(query[i:i + 1], key[i:i + 1], value[i:i + 1],
                               dropout_rng=example_rng, dropout_rate=0.5,
                               broadcast_dropout=broadcast, deterministic=False)
      for i, example_rng in enumerate(jax.random.split(rng, 4))])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  plain = attention.batch_chunked_attention(2)(query, key, value, deterministic=True)
  assert not np.allclose(got, plain)


def test_zero_chunk_is_flax_and_negative_chunk_is_refused():
  assert attention.batch_chunked_attention(0) is nn.dot_product_attention
  with pytest.raises(ValueError, match='chunk_size'):
    attention.batch_chunked_attention(-1)


def test_lifter_output_does_not_depend_on_chunking():
  from hipart_jax import skeleton  # pylint: disable=g-import-not-at-top
  from hipart_jax.models import lifter as lifter_lib  # pylint: disable=g-import-not-at-top
  hierarchy = skeleton.default_hierarchy()
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.normal(size=(3, 17, 2)), jnp.float32)
  confidence = jnp.ones((3, 17))
  levels = {name: jnp.asarray(rng.normal(size=(3, n, 2)), jnp.float32) for name, n in
            (('sparse', 17), ('dense', hierarchy.num_dense), ('fine', hierarchy.num_fine))}
  plain = lifter_lib.Lifter(hierarchy, width=8, depth=1, num_heads=2)
  chunked = plain.clone(attention_batch_chunk=2)
  variables = plain.init(jax.random.key(0), inputs, confidence, levels)
  np.testing.assert_allclose(chunked.apply(variables, inputs, confidence, levels),
                             plain.apply(variables, inputs, confidence, levels),
                             rtol=1e-5, atol=1e-6)
