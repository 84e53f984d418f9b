"""Batch-chunked dot-product attention: the same numbers with cache-sized temporaries.

`nn.dot_product_attention` materializes the attention logits and weights of the whole
batch, [B, H, N, N]: for the lifter (N = 178 points, H = 4) that is 0.5 MB per example,
0.5 GB at B = 1024, written and read several times per layer. On a CPU those passes run
at memory (and first-touch page-fault) speed and the batched [N, Dh] x [Dh, N] products
are too small to amortize it. Evaluating the attention a few examples at a time
(`lax.map` with `batch_size`) keeps the temporaries in cache and reuses one buffer for
every chunk: the lifter at B = 1024 runs 3.7x faster on 2 CPU cores, the whole pipeline
1.7x, with identical results (BENCHMARKS.md). Training steps at B = 128 gain nothing
(and 17 points lose 10%), and on GPU/TPU chunking only serializes work: use 0 there.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def batch_chunked_attention(chunk_size: int) -> Callable[..., jnp.ndarray]:
  """An `attention_fn` for `nn.MultiHeadDotProductAttention`, chunked over the batch.

  Args:
    chunk_size: examples per chunk; 0 returns `nn.dot_product_attention` itself.
  Returns:
    `fn(query, key, value, mask=None, dropout_rng=None, dropout_rate=0.,
    broadcast_dropout=True, deterministic=False, dtype=None, precision=None)` with
    query [B, Nq, H, Dh], key/value [B, Nk, H, Dh], mask broadcastable to
    [B, H, Nq, Nk] → [B, Nq, H, Dh], equal to `nn.dot_product_attention` (dropout masks
    are drawn per example from `dropout_rng`, so they differ from the unchunked draw).
  """
  if chunk_size < 0:
    raise ValueError(f'chunk_size must be >= 0, got {chunk_size}')
  if chunk_size == 0:
    return nn.dot_product_attention

  def attention(query, key, value, mask=None, dropout_rng=None, dropout_rate=0.0,
                broadcast_dropout=True, deterministic=False, dtype=None, precision=None):
    batch = query.shape[0]
    use_dropout = not deterministic and dropout_rate > 0.0
    per_example: dict[str, Any] = dict(query=query, key=key, value=value)
    if mask is not None:
      per_example['mask'] = jnp.broadcast_to(mask, (batch,) + mask.shape[1:])
    if use_dropout:
      per_example['rng'] = jax.random.split(dropout_rng, batch)

    def one(example):
      add_batch = lambda x: None if x is None else x[None]
      return nn.dot_product_attention(
          add_batch(example['query']), add_batch(example['key']),
          add_batch(example['value']), mask=add_batch(example.get('mask')),
          dropout_rng=example.get('rng'), dropout_rate=dropout_rate,
          broadcast_dropout=broadcast_dropout, deterministic=not use_dropout, dtype=dtype,
          precision=precision)[0]

    return jax.lax.map(one, per_example, batch_size=min(chunk_size, batch))

  return attention
