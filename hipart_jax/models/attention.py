"""Batch-chunked dot-product attention: the same numbers with cache-sized temporaries.

`nn.dot_product_attention` materializes the attention logits and weights of the whole
batch, [B, H, N, N]: for the lifter (N = 178 points, H = 4) that is 0.5 MB per example,
0.5 GB at B = 1024, written and read several times per layer. On a CPU those passes run
at memory (and first-touch page-fault) speed and the batched [N, Dh] x [Dh, N] products
are too small to amortize it. Evaluating the attention a few examples at a time
(`lax.map` with `batch_size`) keeps the temporaries in cache and reuses one buffer for
every chunk: the lifter at B = 1024 runs 3.7x faster on 2 CPU cores, the whole pipeline
1.7x (BENCHMARKS.md). On GPU/TPU chunking only serializes work: use 0 there.

Inside a chunk the softmax is normalized after the value product (`attend`): the
weights' row sums come out of the same product as an extra value column, so no pass
over the [H, N, N] weights sums or divides them, and the backward pass has no row
reduction either. XLA:CPU splits each reduction over 178 keys into padded 32-wide
windows; they were 11 % of the lifter's train step. The HiPART lifter's train step
runs 1.08x faster on 2 CPU cores, 1.16x on one (BENCHMARKS.md, change 10); the
forward pass alone gains nothing on 2 cores, and unchunked it is slower, so chunk size
0 keeps flax's function. The results equal `nn.dot_product_attention`'s up to float
rounding, gradients and dropout included (`tests/test_attention.py`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp


def attend(query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray,
           mask: jnp.ndarray | None = None, dropout_rng: jax.Array | None = None,
           dropout_rate: float = 0.0, broadcast_dropout: bool = True,
           precision: Any = None) -> jnp.ndarray:
  """Softmax attention, normalized after the value product.

  Args:
    query: [B, Nq, H, Dh]; key: [B, Nk, H, Dh]; value: [B, Nk, H, Dv].
    mask: bool, broadcastable to [B, H, Nq, Nk]; False entries get no weight (a row
      with none left attends uniformly, as in `nn.dot_product_attention`).
    dropout_rng: drop attention weights (after normalization, scaled by
      1 / (1 - dropout_rate)) with this key; None: no dropout.
    broadcast_dropout: one dropout mask for the whole batch and all heads.
  Returns:
    [B, Nq, H, Dv], `nn.dot_product_attention`'s result.
  """
  # Head-major operands, [B, H, N, D]: 1.02-1.06x faster than batch-major einsums here
  # (BENCHMARKS.md, change 10), as in HiARM.
  head_major = lambda x: jnp.swapaxes(x, 1, 2)
  query = head_major(query / jnp.sqrt(query.shape[-1]).astype(query.dtype))
  key, value = head_major(key), head_major(value)
  logits = jnp.einsum('bhqd,bhkd->bhqk', query, key, precision=precision)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  # Unnormalized softmax; shifting by the row max changes no result, only the range.
  weights = jnp.exp(logits - lax.stop_gradient(jnp.max(logits, -1, keepdims=True)))
  if dropout_rng is None:
    ones = jnp.ones(value.shape[:-1] + (1,), value.dtype)
    both = jnp.einsum('bhqk,bhkd->bhqd', weights, jnp.concatenate([value, ones], -1),
                      precision=precision)
    return head_major(both[..., :-1] / both[..., -1:])
  keep_prob = 1.0 - dropout_rate
  shape = (1, 1) + weights.shape[-2:] if broadcast_dropout else weights.shape
  keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
  kept = weights * (keep.astype(weights.dtype) / keep_prob)
  numerator = jnp.einsum('bhqk,bhkd->bhqd', kept, value, precision=precision)
  return head_major(numerator / jnp.sum(weights, -1, keepdims=True))


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
    if dtype is not None:
      query, key, value = (x.astype(dtype) for x in (query, key, value))
    batch = query.shape[0]
    per_example: dict[str, Any] = dict(query=query, key=key, value=value)
    if mask is not None:
      per_example['mask'] = jnp.broadcast_to(mask, (batch,) + mask.shape[1:])
    if not deterministic and dropout_rate > 0.0:
      per_example['dropout_rng'] = jax.random.split(dropout_rng, batch)

    def one(example):  # One example as a batch of one: faster on XLA:CPU than calling
      # `attend` on whole chunks (measured: 1.6x in the forward pass at chunk 8).
      arrays = {name: x[None] for name, x in example.items() if name != 'dropout_rng'}
      return attend(**arrays, dropout_rng=example.get('dropout_rng'),
                    dropout_rate=dropout_rate, broadcast_dropout=broadcast_dropout,
                    precision=precision)[0]

    return lax.map(one, per_example, batch_size=min(chunk_size, batch))

  return attention
