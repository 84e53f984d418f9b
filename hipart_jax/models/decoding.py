"""HiARM generation: one `lax.scan` over the decoding groups of an ordering.

`decode` is the loop, independent of the network: at step g it calls a step function
with the tokens generated so far, receives logits for the W packed slots of the step
(`Ordering.step_tokens`: the context slots of group g - 1, then the query slots of
group g) and samples the query slots (greedy at temperature 0, else temperature
sampling with an optional top-k filter). The loop state is a small named structure, so
the loop compiles once; the step function's own state (HiARM's key/value cache) rides
along in it untouched.

Two step functions drive HiARM: `cached_step_fn` runs only the step's W slots through
the network against a key/value cache (`HiARM.decode_step`; the condition's keys and
values are computed once, before the scan), and `recompute_step_fn` runs the full
teacher-forced pass on the current token buffer (the baseline). `generate` builds
K hypotheses per input as K repeated rows of one batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from hipart_jax import orderings
from hipart_jax.models import hiarm as hiarm_lib

Array = jax.Array
# (tokens [B, T] int32, step state, step g []) -> (logits [B, W, V], step state).
StepFn = Callable[[Array, Any, Array], tuple[Array, Any]]


class DecodeState(NamedTuple):
  """Loop state of the scan over groups.

  Attributes:
    tokens: [B, T] int32 token ids so far (groups not yet generated hold 0).
    step_state: the step function's state (e.g. a key/value cache); opaque here.
    rng: the key for the remaining steps.
  """

  tokens: Array
  step_state: Any
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


def _to_token_order(per_step: Array, order: orderings.Ordering) -> Array:
  """[G, B, W, ...] per-step slot outputs → [B, T, ...] in token order."""
  out = per_step[order.token_group, :, order.token_step_slot]  # [T, B, ...]
  return jnp.moveaxis(out, 0, 1)


def decode(step_fn: StepFn, order: orderings.Ordering, batch_size: int,
           step_state: Any, rng: jax.Array, *, temperature: float = 0.0, top_k: int = 0,
           return_logits: bool = False) -> dict[str, Array]:
  """Generates every token of `order`, one group per step.

  Args:
    step_fn: `(tokens [B, T], step_state, g) -> (logits [B, W, V], step_state)`: the
      logits of step g's W slots (`order.step_tokens[g]`); only those of query slots
      are sampled.
    order: the decoding ordering.
    batch_size: B.
    step_state: the step function's initial state.
    rng: the key of the whole batch.
    temperature, top_k: sampling (see `sample_tokens`).
    return_logits: also return the logits each token was sampled from.
  Returns:
    {'tokens': [B, T] int32, 'log_probs': [B, T] (log-probability of each chosen id,
    temperature 1, no top-k), and with return_logits 'logits': [B, T, V]}.
  """
  t = order.num_tokens
  step_tokens = jnp.asarray(order.step_tokens)
  step_streams = jnp.asarray(order.step_streams)

  def step(state: DecodeState, g: Array):
    logits, step_state = step_fn(state.tokens, state.step_state, g)  # [B, W, V]
    rng, sample_rng = jax.random.split(state.rng)
    ids = sample_tokens(logits, sample_rng, temperature=temperature, top_k=top_k)
    slot_tokens, slot_streams = step_tokens[g], step_streams[g]  # [W], -1 padded.
    # Only query slots are predictions: context and padding slots write out of bounds.
    is_query = (slot_tokens >= 0) & (slot_streams == orderings.QUERY)
    tokens = state.tokens.at[:, jnp.where(is_query, slot_tokens, t)].set(ids, mode='drop')
    outputs = dict(log_probs=_chosen_log_prob(logits, ids))
    if return_logits:
      outputs['logits'] = logits
    return DecodeState(tokens, step_state, rng), outputs

  initial = DecodeState(jnp.zeros((batch_size, t), jnp.int32), step_state, rng)
  state, per_step = jax.lax.scan(step, initial, jnp.arange(order.num_groups))
  out = dict(tokens=state.tokens, log_probs=_to_token_order(per_step['log_probs'], order))
  if return_logits:
    out['logits'] = _to_token_order(per_step['logits'], order)
  return out


def _slot_logits(model: hiarm_lib.HiARM, sparse_logits: Array, dense_logits: Array,
                 slot_tokens: Array) -> Array:
  """Each slot's logits from its level's head, padded with -inf to a common width.

  Args:
    sparse_logits: [B, W, Vs]; dense_logits: [B, W, Vd]; slot_tokens: [W] (-1 padded).
  Returns:
    [B, W, max(Vs, Vd)]; padded ids have probability 0 (never sampled).
  """
  level = jnp.asarray(model.decoding_order.token_level)[jnp.maximum(slot_tokens, 0)]
  width = max(sparse_logits.shape[-1], dense_logits.shape[-1])
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, width - x.shape[-1])),
                          constant_values=-jnp.inf)
  return jnp.where((level == orderings.SPARSE)[:, None], pad(sparse_logits),
                   pad(dense_logits))


def cached_step_fn(model: hiarm_lib.HiARM, variables: Any) -> StepFn:
  """HiARM's cached step: state = (keys, values), per layer [B, H, S + T + W, Dh]."""
  step_tokens = jnp.asarray(model.decoding_order.step_tokens)

  def step_fn(tokens, cache, g):
    slot_tokens = step_tokens[g]
    sparse_logits, dense_logits, keys, values = model.apply(
        variables, *cache, g, tokens[:, jnp.maximum(slot_tokens, 0)],
        method=hiarm_lib.HiARM.decode_step)
    return _slot_logits(model, sparse_logits, dense_logits, slot_tokens), (keys, values)

  return step_fn


def recompute_step_fn(model: hiarm_lib.HiARM, variables: Any, cond_2d: Array,
                      cond_confidence: Array) -> StepFn:
  """The baseline step: the full teacher-forced pass on the token buffer (no state)."""
  order = model.decoding_order
  s, t = order.num_sparse, order.num_tokens
  step_tokens = jnp.asarray(order.step_tokens)

  def step_fn(tokens, state, g):
    slot_tokens = jnp.maximum(step_tokens[g], 0)
    all_sparse, all_dense = model.apply(variables, cond_2d, cond_confidence,
                                        tokens[:, :s], tokens[:, s:])
    sparse_logits = all_sparse[:, jnp.clip(slot_tokens, 0, s - 1)]
    dense_logits = all_dense[:, jnp.clip(slot_tokens - s, 0, t - s - 1)]
    return _slot_logits(model, sparse_logits, dense_logits, step_tokens[g]), state

  return step_fn


def _empty_cache(model: hiarm_lib.HiARM, condition_cache) -> tuple[tuple[Array, ...], ...]:
  """The condition's keys/values [B, H, S, Dh] → the step cache [B, H, S + T + W, Dh]."""
  order = model.decoding_order

  def extend(cache):
    tail = cache.shape[:2] + (order.num_tokens + order.step_width, cache.shape[3])
    return jnp.concatenate([cache, jnp.zeros(tail, cache.dtype)], axis=2)

  return jax.tree.map(extend, condition_cache)


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
    num_samples: K, hypotheses per input, decoded as K copies of each input in one
      batch of B K rows (the condition is encoded once, then repeated).
    use_cache: True for the cached step; False recomputes the full teacher-forced pass
      at every step (the baseline, for tests and benchmarks).
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
  if use_cache:
    condition_cache = model.apply(variables, cond_2d, cond_confidence,
                                  method=hiarm_lib.HiARM.condition_cache)
    step_fn = cached_step_fn(model, variables)
    step_state = _empty_cache(model, jax.tree.map(repeat, condition_cache))
  else:
    step_fn = recompute_step_fn(model, variables, repeat(cond_2d), repeat(cond_confidence))
    step_state = ()
  out = decode(step_fn, model.decoding_order, batch * num_samples, step_state, rng,
               temperature=temperature, top_k=top_k, return_logits=return_logits)
  s = model.hierarchy.num_sparse
  result = dict(sparse_ids=out['tokens'][:, :s], dense_ids=out['tokens'][:, s:],
                sparse_log_probs=out['log_probs'][:, :s],
                dense_log_probs=out['log_probs'][:, s:])
  if return_logits:
    result['sparse_logits'] = out['logits'][:, :s, :model.sparse_vocab_size]
    result['dense_logits'] = out['logits'][:, s:, :model.dense_vocab_size]
  return jax.tree.map(lambda x: x.reshape((batch, num_samples) + x.shape[1:]), result)
