"""HiARM generation: one `lax.scan` over the decoding groups, with a key/value cache.

Step g embeds the context slots of group g - 1 (their just-sampled tokens) and the query
slots of group g, packed into W slots (`Ordering.step_tokens`: W = 4 for the
hierarchical order, 2 for one-token groups), runs only those through every layer
against the cache (`HiARM.decode_step`), and samples group g from the query outputs:
greedy when temperature == 0, else temperature sampling with an optional top-k filter. The
condition's keys/values are computed once, before the scan; K hypotheses per input are
K repeated rows of one batch. `use_cache=False` is the recompute baseline: every step
runs the full teacher-forced pass on the current token buffer.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from hipart_jax import orderings
from hipart_jax.models import hiarm as hiarm_lib

Array = jnp.ndarray


class DecodeState(NamedTuple):
  """Loop state of the scan over groups.

  Attributes:
    tokens: [B, T] int32 token ids so far (groups not yet generated hold 0).
    keys, values: per layer head-major [B, H, S + T + W, Dh] cache, condition and
      context slots then the step's W scratch entries (empty tuples without a cache).
    rng: the key for the remaining steps.
  """

  tokens: Array
  keys: tuple[Array, ...]
  values: tuple[Array, ...]
  rng: jax.Array


def sample_tokens(logits: Array, rng: jax.Array, *, temperature: float, top_k: int) -> Array:
  """Samples one id per row. logits: [..., V] → [...] int32.

  temperature == 0: argmax. Otherwise softmax(logits / temperature), restricted to the
  top_k largest logits when top_k > 0.
  """
  if temperature < 0 or top_k < 0:
    raise ValueError(f'temperature ({temperature}) and top_k ({top_k}) must be >= 0')
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  scaled = logits / temperature
  if top_k > 0:
    kth_largest = jax.lax.top_k(scaled, min(top_k, scaled.shape[-1]))[0][..., -1:]
    scaled = jnp.where(scaled < kth_largest, -jnp.inf, scaled)
  return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)


def _chosen_log_prob(logits: Array, ids: Array) -> Array:
  """log softmax(logits)[ids]. logits: [..., V], ids: [...] → [...]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs, ids[..., None], axis=-1)[..., 0]


def _slot_logits(sparse_logits: Array, dense_logits: Array, is_sparse: Array) -> Array:
  """Each slot's logits from its level's head, padded with -inf to a common width.

  Args:
    sparse_logits: [B, W, Vs]; dense_logits: [B, W, Vd]; is_sparse: [W] bool.
  Returns:
    [B, W, max(Vs, Vd)]; padded ids have probability 0 (never sampled).
  """
  width = max(sparse_logits.shape[-1], dense_logits.shape[-1])
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, width - x.shape[-1])),
                          constant_values=-jnp.inf)
  return jnp.where(is_sparse[:, None], pad(sparse_logits), pad(dense_logits))


def _to_token_order(per_step: Array, order: orderings.Ordering) -> Array:
  """[G, B, W, ...] per-step slot outputs → [B, T, ...] in token order."""
  out = per_step[order.token_group, :, order.token_step_slot]  # [T, B, ...]
  return jnp.moveaxis(out, 0, 1)


def _decode(model: hiarm_lib.HiARM, variables: Any, cond_2d: Array,
                cond_confidence: Array, condition_cache, rng: jax.Array, *,
                temperature: float, top_k: int, use_cache: bool,
                return_logits: bool) -> dict[str, Array]:
  """Decodes every row of the batch; returns the `generate` dict without the K axis.

  Args:
    model, variables: the HiARM module and its variables.
    cond_2d: [N, S, 2]; cond_confidence: [N, S] (N = B K rows).
    condition_cache: `HiARM.condition_cache` keys/values of these rows (None without
      use_cache).
    rng: the key of the whole batch.
    temperature, top_k, use_cache, return_logits: as in `generate`.
  """
  order = model.decoding_order
  s, t = order.num_sparse, order.num_tokens
  batch = cond_2d.shape[0]
  step_tokens = jnp.asarray(order.step_tokens)
  step_streams = jnp.asarray(order.step_streams)
  token_level = jnp.asarray(order.token_level)

  if use_cache:
    def empty_tail(cache):  # [B, H, S, Dh] → [B, H, S + T + W, Dh]
      tail = (batch, model.num_heads, t + order.step_width, model.head_dim)
      return jnp.concatenate([cache, jnp.zeros(tail, cache.dtype)], axis=2)
    cache_keys, cache_values = jax.tree.map(empty_tail, condition_cache)
  else:
    cache_keys, cache_values = (), ()
  # Under shard_map the tokens vary over the devices' axes as the inputs do: the scan's
  # carry must start with the type it ends with.
  tokens = jnp.zeros((batch, t), jnp.int32)
  varying = tuple(jax.typeof(cond_2d).manual_axis_type.varying)
  if varying:
    tokens = jax.lax.pcast(tokens, varying, to='varying')
  state = DecodeState(tokens, cache_keys, cache_values, rng)

  def step(state: DecodeState, g: Array):
    slot_tokens, slot_streams = step_tokens[g], step_streams[g]  # [W], -1 padded.
    safe_tokens = jnp.maximum(slot_tokens, 0)
    if use_cache:
      sparse_logits, dense_logits, keys, values = model.apply(
          variables, state.keys, state.values, g, state.tokens[:, safe_tokens],
          method=hiarm_lib.HiARM.decode_step)
    else:
      keys, values = state.keys, state.values
      all_sparse, all_dense = model.apply(variables, cond_2d, cond_confidence,
                                          state.tokens[:, :s], state.tokens[:, s:])
      sparse_logits = all_sparse[:, jnp.clip(safe_tokens, 0, s - 1)]
      dense_logits = all_dense[:, jnp.clip(safe_tokens - s, 0, t - s - 1)]
    rng, sample_rng = jax.random.split(state.rng)
    is_sparse = token_level[safe_tokens] == orderings.SPARSE  # [W]
    logits = _slot_logits(sparse_logits, dense_logits, is_sparse)  # [B, W, Vmax]
    ids = sample_tokens(logits, sample_rng, temperature=temperature, top_k=top_k)
    # Only query slots are predictions: context and padding slots are dropped.
    is_query = (slot_tokens >= 0) & (slot_streams == orderings.QUERY)
    write_at = jnp.where(is_query, slot_tokens, t)
    tokens = state.tokens.at[:, write_at].set(ids, mode='drop')
    outputs = dict(log_probs=_chosen_log_prob(logits, ids))
    if return_logits:
      outputs['logits'] = logits
    return DecodeState(tokens, keys, values, rng), outputs

  state, per_step = jax.lax.scan(step, state, jnp.arange(order.num_groups))
  log_probs = _to_token_order(per_step['log_probs'], order)
  out = dict(sparse_ids=state.tokens[:, :s], dense_ids=state.tokens[:, s:],
             sparse_log_probs=log_probs[:, :s], dense_log_probs=log_probs[:, s:])
  if return_logits:
    logits = _to_token_order(per_step['logits'], order)  # [B, T, Vmax]
    out['sparse_logits'] = logits[:, :s, :model.sparse_vocab_size]
    out['dense_logits'] = logits[:, s:, :model.dense_vocab_size]
  return out


@functools.partial(jax.jit, static_argnames=('model', 'temperature', 'top_k', 'num_samples',
                                             'use_cache', 'return_logits'))
def generate(model: hiarm_lib.HiARM, params: Any, cond_2d: Array, cond_confidence: Array,
             rng: jax.Array, *, temperature: float = 0.0, top_k: int = 0,
             num_samples: int = 1, use_cache: bool = True,
             return_logits: bool = False) -> dict[str, Array]:
  """Generates K token hierarchies per input with HiARM.

  Args:
    model: the HiARM module (static: its ordering fixes the scan).
    params: its parameters, either the 'params' collection or the full variables dict.
    cond_2d: [B, S, 2] input joints in the model frame.
    cond_confidence: [B, S] confidence.
    rng: a key for the whole call.
    temperature: 0 for greedy decoding, else the sampling temperature.
    top_k: if > 0, sample only among the top_k most likely ids (temperature > 0).
    num_samples: K, hypotheses per input. They are decoded as K copies of each input in
      one batch of B K rows (the condition is encoded once, then repeated), which on
      CPU compiles about twice as fast as a vmap over K keys and samples identically
      distributed, independent hypotheses.
    use_cache: True for the cached decoder; False recomputes the full teacher-forced
      pass at every step (the baseline, for tests and benchmarks).
    return_logits: also return the logits every token was sampled from.
  Returns:
    {'sparse_ids': [B, K, S] int32, 'dense_ids': [B, K, D] int32,
     'sparse_log_probs': [B, K, S], 'dense_log_probs': [B, K, D] (log-probability of
     each chosen id under the model, temperature 1, no top-k), and with return_logits
     'sparse_logits': [B, K, S, Vs], 'dense_logits': [B, K, D, Vd]}.
  """
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1, got {num_samples}')
  variables = params if 'params' in params else {'params': params}
  batch = cond_2d.shape[0]
  chex.assert_shape(cond_2d, (batch, model.hierarchy.num_sparse, 2))
  chex.assert_shape(cond_confidence, (batch, model.hierarchy.num_sparse))
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)  # [B, ...] → [B K, ...]
  condition_cache = None
  if use_cache:
    condition_cache = jax.tree.map(repeat, model.apply(
        variables, cond_2d, cond_confidence, method=hiarm_lib.HiARM.condition_cache))
  out = _decode(model, variables, repeat(cond_2d), repeat(cond_confidence), condition_cache,
                rng, temperature=temperature, top_k=top_k, use_cache=use_cache,
                return_logits=return_logits)
  return jax.tree.map(lambda x: x.reshape((batch, num_samples) + x.shape[1:]), out)
