"""Batch-chunked attention equals flax's dot-product attention."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax.models import attention


@pytest.mark.parametrize('batch, chunk', [(5, 2), (4, 4), (3, 8)])
def test_matches_dot_product_attention(batch, chunk):
  keys = jax.random.split(jax.random.key(0), 3)
  query, key, value = (jax.random.normal(k, (batch, 7, 2, 4)) for k in keys)
  mask = jnp.asarray(np.random.default_rng(0).random((1, 1, 7, 7)) > 0.3) | jnp.eye(7, dtype=bool)
  expected = nn.dot_product_attention(query, key, value, mask=mask)
  got = jax.jit(attention.batch_chunked_attention(chunk))(query, key, value, mask=mask)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_dropout_is_drawn_and_zero_chunk_is_flax():
  assert attention.batch_chunked_attention(0) is nn.dot_product_attention
  query = jnp.ones((4, 3, 1, 2))
  fn = attention.batch_chunked_attention(2)
  kept = fn(query, query, query, dropout_rng=jax.random.key(1), dropout_rate=0.5,
            deterministic=False)
  plain = fn(query, query, query, deterministic=True)
  assert not np.allclose(kept, plain)
  with pytest.raises(ValueError):
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
