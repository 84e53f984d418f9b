"""How steps run on the hardware: the one module that knows about backends.

The method code (models/, training/stages.py, losses.py) is written for one batch on
one device. Everything below is chosen here, by config, and changes the speed of a run
but never its result:

  map_step                  a per-device step over the local devices: `jax.vmap` on one
                            device (the same collectives, XLA's single-device program),
                            `jax.pmap` over several (data parallel, multi-host pods);
  microbatched_value_and_grad  the gradient a few examples at a time;
  predict                   inference in chunks of poses, split over devices;
  with_lifter_attention     the lifter's attention as a kernel faster on a CPU;
  configure_cpu_devices     one XLA device per CPU core, on enough client threads
                            (`cpu_client_threads`) that their steps cannot deadlock.

Several CPU devices share the thread pool of XLA's CPU client (`max(cores, devices)`
threads unless `PJRT_NPROC` says otherwise). A device in a collective (the gradient
`pmean`) holds a thread until its peers arrive, and once the host is 32 computations per
device ahead (XLA's in-flight limit) a launch of the next step blocks a thread too; with
fewer than two threads per device a peer's part finds no thread, a deadlock that XLA
ends by aborting the process after its collective timeouts. `configure_cpu_devices`
therefore gives the client `cpu_client_threads` threads, and a collective timeout that
waits for a peer slowed by other processes but still ends a real hang within minutes.

`Execution.for_backend` resolves a config's `execution` block: only its `cpu` entry
holds tricks, and they apply only when the process's backend is the CPU, so a GPU/TPU
run always takes whole batches on plain programs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

from absl import logging
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hipart_jax.models import hipart
from hipart_jax.models import lifter as lifter_lib

AXIS = 'batch'  # The named axis steps reduce over (gradients, metrics, statistics).
Batch = Mapping[str, jax.Array]
# After how long a CPU collective logs that it is stuck, and how long it waits after
# that for a late device before XLA aborts the process (seconds).
COLLECTIVE_WARN_STUCK_S = 60
COLLECTIVE_TERMINATE_TIMEOUT_S = 300
# The environment variable XLA's CPU client sizes both of its thread pools by.
CLIENT_THREADS_ENV = 'PJRT_NPROC'
_TERMINATE_FLAG = '--xla_cpu_collective_call_terminate_timeout_seconds'
_WARN_STUCK_FLAG = '--xla_cpu_collective_call_warn_stuck_timeout_seconds'


@dataclasses.dataclass(frozen=True)
class Execution:
  """Execution choices of one process (all plain by default).

  Attributes:
    devices: XLA devices of a CPU host (1: JAX's default, 0: one per core).
    microbatch_size: examples per gradient evaluation (0: the whole per-device batch).
    compiler_options: XLA options of the train step (`jax.jit(compiler_options=...)`).
    predict_chunk_size: poses per chunk of `predict` (0: the whole batch at once).
    lifter_attention: the transformer lifter's attention kernel at inference, a key of
      `LIFTER_ATTENTION` (`with_lifter_attention`).
  """

  devices: int = 1
  microbatch_size: int = 0
  compiler_options: Mapping[str, Any] | None = None
  predict_chunk_size: int = 0
  lifter_attention: str = 'flax'

  @classmethod
  def for_backend(cls, config: ml_collections.ConfigDict | Mapping[str, Any] | None,
                  backend: str | None = None) -> Execution:
    """The choices of `config` (an `execution` block, {'cpu': {...}}) for `backend`
    (default: this process's); every backend but the CPU gets the plain defaults."""
    backend = backend or jax.default_backend()
    entry = (config or {}).get('cpu') if backend == 'cpu' else None
    if not entry:
      return cls()
    entry = entry.to_dict() if isinstance(entry, ml_collections.ConfigDict) else dict(entry)
    unknown = set(entry) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f'unknown execution.cpu fields {sorted(unknown)}')
    options = entry.get('compiler_options')
    entry['compiler_options'] = dict(options) if options else None
    execution = cls(**entry)
    if execution.lifter_attention not in LIFTER_ATTENTION:
      raise ValueError(f'execution.cpu.lifter_attention={execution.lifter_attention!r}; '
                       f'expected one of {sorted(LIFTER_ATTENTION)}')
    for name in ('devices', 'microbatch_size', 'predict_chunk_size'):
      if getattr(execution, name) < 0:
        raise ValueError(f'execution.cpu.{name} must be >= 0, got {getattr(execution, name)}')
    return execution


def per_example_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          mask: jax.Array | None = None, dropout_rng: jax.Array | None = None,
                          dropout_rate: float = 0.0, broadcast_dropout: bool = True,
                          deterministic: bool = True, dtype: Any = None,
                          precision: Any = None) -> jax.Array:
  """`nn.dot_product_attention` for inference, one example at a time, head-major, with
  the softmax normalized after the value product.

  On XLA:CPU the whole batch's [B, H, N, N] weights run at memory speed; one example's
  stay in cache, and normalizing after the product (the row sums come out of it as an
  extra value column) saves a pass over them.

  Args:
    query: [B, Nq, H, Dh]; key: [B, Nk, H, Dh]; value: [B, Nk, H, Dv].
    mask: bool, broadcastable to [B, H, Nq, Nk].
  Returns:
    [B, Nq, H, Dv], `nn.dot_product_attention`'s result up to float rounding.
  Raises:
    ValueError: dropout is asked for (this kernel is for inference only).
  """
  del dropout_rng, broadcast_dropout
  if not deterministic and dropout_rate > 0.0:
    raise ValueError('per_example_attention is an inference kernel: it has no dropout')
  if dtype is not None:
    query, key, value = (x.astype(dtype) for x in (query, key, value))
  batch = query.shape[0]
  examples = dict(query=query, key=key, value=value)
  if mask is not None:
    examples['mask'] = jnp.broadcast_to(mask, (batch,) + mask.shape[1:])

  def one(example):  # [N, H, D] each → [H, N, D]
    q, k, v = (jnp.swapaxes(example[name], 0, 1) for name in ('query', 'key', 'value'))
    logits = jnp.einsum('hqd,hkd->hqk', q / jnp.sqrt(q.shape[-1]).astype(q.dtype), k,
                        precision=precision)
    if 'mask' in example:
      logits = jnp.where(example['mask'], logits, jnp.finfo(logits.dtype).min)
    weights = jnp.exp(logits - jnp.max(logits, -1, keepdims=True))
    ones = jnp.ones(v.shape[:-1] + (1,), v.dtype)
    both = jnp.einsum('hqk,hkd->hqd', weights, jnp.concatenate([v, ones], -1),
                      precision=precision)
    return jnp.swapaxes(both[..., :-1] / both[..., -1:], 0, 1)

  return lax.map(one, examples)


# The transformer lifter's attention kernels by `Execution.lifter_attention`.
LIFTER_ATTENTION = {'flax': nn.dot_product_attention,
                    'per_example': per_example_attention}


def with_lifter_attention(model: hipart.HiPART, name: str) -> hipart.HiPART:
  """`model` whose transformer lifter attends with `LIFTER_ATTENTION[name]`; the same
  parameters and results. Other lifters come back unchanged."""
  if name not in LIFTER_ATTENTION:
    raise ValueError(f'lifter attention {name!r}; expected one of {sorted(LIFTER_ATTENTION)}')
  if not isinstance(model.lifter, lifter_lib.Lifter):
    return model
  return dataclasses.replace(model,
                             lifter=model.lifter.clone(attention_fn=LIFTER_ATTENTION[name]))


def resolve_cpu_devices(count: int) -> int:
  """A `devices` count → CPU devices: 0 means one per core this process may use."""
  if count < 0:
    raise ValueError(f'the CPU device count must be >= 0 (0: one per core), got {count}')
  return count or len(os.sched_getaffinity(0))


def cpu_client_threads(count: int, environ: Mapping[str, str] = os.environ) -> int:
  """Threads XLA's CPU client needs so that `count` CPU devices cannot deadlock.

  XLA runs one multi-device step at a time, each of its `count` parts holding a thread
  until the collective completes, and a host thread's launch of the next step blocks up
  to `count` more (module docstring), so `2 * count` leave every part a thread. XLA's own
  base wins when larger: `NPROC` if set, else the cores this process may use.

  Args:
    count: CPU devices (> 1).
    environ: where `PJRT_NPROC` and `NPROC` are read.
  Returns:
    the `PJRT_NPROC` to run under: `environ`'s own if it is set and large enough.
  Raises:
    ValueError: `environ` sets `PJRT_NPROC` to fewer threads, or to no integer.
  """
  needed = 2 * count
  given = environ.get(CLIENT_THREADS_ENV)
  if given is not None:
    if not given.strip().isdigit() or int(given) < needed:
      raise ValueError(
          f'{CLIENT_THREADS_ENV}={given!r} sizes the thread pools of XLA\'s CPU client; '
          f'{count} CPU devices need at least {needed} threads there (two per device), '
          'or a multi-device step can deadlock: unset it or raise it')
    return int(given)
  base = environ.get('NPROC', '').strip()
  return max(int(base) if base.isdigit() else len(os.sched_getaffinity(0)), needed)


def configure_cpu_devices(count: int, *,
                          collective_timeout_s: int = COLLECTIVE_TERMINATE_TIMEOUT_S) -> int:
  """Makes JAX create `resolve_cpu_devices(count)` CPU devices; call it before any JAX
  operation. Only the CPU platform changes: accelerators stay the default devices.

  With more than one device, XLA's CPU client gets `cpu_client_threads(count)` threads
  (`PJRT_NPROC`), and CPU collectives log a stuck peer after `COLLECTIVE_WARN_STUCK_S`
  and abort `collective_timeout_s` later unless `XLA_FLAGS` already sets those timeouts.
  More devices than cores free to this process are allowed (tests, benchmarks) with a
  warning: they time-share the cores, so every collective waits for descheduled peers.

  Returns:
    the resolved count.
  Raises:
    RuntimeError: JAX's backends are already running with another count.
    ValueError: `PJRT_NPROC` is set to fewer threads than the devices need.
  """
  count = resolve_cpu_devices(count)
  if count != 1:
    threads = cpu_client_threads(count)
    jax.config.update('jax_num_cpu_devices', count)
    os.environ[CLIENT_THREADS_ENV] = str(threads)
    _set_collective_timeouts(collective_timeout_s)
    cores = len(os.sched_getaffinity(0))
    if count > cores:
      logging.warning('%d CPU devices on %d cores: the devices time-share the cores and '
                      'each collective waits for the descheduled ones (slower steps).',
                      count, cores)
  return count


def _set_collective_timeouts(terminate_s: int) -> None:
  """Adds the CPU collective timeouts to `XLA_FLAGS` (read when the CPU backend starts),
  keeping any the user set."""
  flags = os.environ.get('XLA_FLAGS', '')
  added = [f'{flag}={value}' for flag, value in (
      (_TERMINATE_FLAG, terminate_s),
      (_WARN_STUCK_FLAG, min(COLLECTIVE_WARN_STUCK_S, terminate_s)))
           if flag not in flags]
  os.environ['XLA_FLAGS'] = ' '.join([flags] + added).strip()


def map_step(step_fn: Callable, *, donate_state: bool = False,
             compiler_options: Mapping[str, Any] | None = None,
             num_devices: int | None = None, per_device_outputs: bool = False
             ) -> Callable:
  """Maps a per-device step over the local devices; the one place that does so.

  The state goes in unreplicated (`in_axes=None`) and identical outputs come out
  unreplicated (`out_axes=None`), so no code replicates or unreplicates by hand.

  Args:
    step_fn: `(state, batch) -> outputs`, using collectives over `AXIS`, returning
      outputs that are identical on every device (reduced over `AXIS`), or, with
      `per_device_outputs`, per-example outputs of its shard.
    donate_state: let XLA reuse the input state's buffers (train steps).
    compiler_options: XLA options of the single-device program (`jax.pmap` takes none:
      they are not applied over several devices).
    num_devices: the first this many local devices (benchmarks); None: all of them.
    per_device_outputs: outputs are each device's own ([devices, per_device, ...], like
      the batch) instead of identical on every device.
  Returns:
    `fn(state, batch [devices, per_device, ...]) -> outputs`.
  """
  donate = (0,) if donate_state else ()
  out_axes = 0 if per_device_outputs else None
  devices = jax.local_devices()[:num_devices]
  if len(devices) == 1 and jax.process_count() == 1:
    return jax.jit(jax.vmap(step_fn, in_axes=(None, 0), out_axes=out_axes, axis_name=AXIS),
                   donate_argnums=donate,
                   compiler_options=dict(compiler_options) if compiler_options else None)
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=(None, 0), out_axes=out_axes,
                  donate_argnums=donate,
                  devices=None if num_devices is None else devices)


def microbatched_value_and_grad(
    loss_fn: Callable[[Any, Batch, jax.Array], tuple[jax.Array, tuple[Any, Any]]],
    params: Any, batch: Batch, rng: jax.Array, microbatch_size: int, collections: Any
    ) -> tuple[tuple[jax.Array, tuple[Any, Any]], Any]:
  """`jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)`, a few examples at
  a time.

  The batch is split into microbatches of `microbatch_size` examples, evaluated one
  after the other in a `lax.scan`, and their losses, metrics and gradients are averaged
  weighted by their valid examples: the whole batch's values, since the loss and the
  metrics are means over valid examples (`training.trainer.Stage`). A last, partial
  microbatch is filled with copies of the first examples marked invalid, which weigh
  nothing. Microbatch i draws its randomness from `fold_in(rng, i)`.

  Args:
    loss_fn: `(params, batch, rng) -> (loss [], (metrics {name: []}, collections))`.
    params: differentiated.
    batch: {name: [B, ...]}, with 'valid' [B].
    rng: the step's key.
    microbatch_size: examples per microbatch; 0 or >= B: the whole batch at once.
    collections: the collections `loss_fn` sees. Split, it must return them unchanged:
      a loss that updates statistics (the MSST's codebook EMA) would update them once
      per microbatch, so it is refused, not approximated.
  Returns:
    `((loss, (metrics, collections)), grads)`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  size = batch['valid'].shape[0]
  if microbatch_size < 0:
    raise ValueError(f'microbatch_size must be >= 0, got {microbatch_size}')
  if not microbatch_size or size <= microbatch_size:
    return grad_fn(params, batch, rng)
  count = -(-size // microbatch_size)
  if count * microbatch_size != size:  # Pad with invalid copies of the first examples.
    index = np.arange(count * microbatch_size) % size
    padding = np.arange(count * microbatch_size) >= size
    batch = {name: x[index] for name, x in batch.items()}
    batch['valid'] = batch['valid'] & ~padding
  micro = jax.tree.map(lambda x: x.reshape((count, microbatch_size) + x.shape[1:]), batch)
  total = jnp.maximum(jnp.sum(batch['valid'].astype(jnp.float32)), 1.0)

  def one(carry, inputs):
    micro_batch, index = inputs
    (loss, (metrics, aux)), grads = grad_fn(params, micro_batch,
                                            jax.random.fold_in(rng, index))
    if not all(jax.tree.leaves(jax.tree.map(lambda a, b: a is b, aux, collections))):
      raise ValueError('microbatches need a stage whose loss leaves its collections '
                       'unchanged; this one updates them: set '
                       'config.execution.cpu.microbatch_size to 0 for it')
    weight = jnp.sum(micro_batch['valid'].astype(jnp.float32)) / total
    return jax.tree.map(lambda a, b: a + weight * b, carry, (loss, metrics, grads)), None

  first = jax.tree.map(lambda x: x[0], micro)
  (loss, (metrics, _)), grads = jax.eval_shape(grad_fn, params, first, rng)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss, metrics, grads))
  (loss, metrics, grads), _ = lax.scan(one, zeros, (micro, jnp.arange(count)))
  return (loss, (metrics, collections)), grads


@functools.partial(jax.jit, static_argnames=('model', 'temperature', 'top_k',
                                             'num_samples', 'chunk_size'))
def predict_in_chunks(model: hipart.HiPART, variables: Mapping[str, Any],
                      keypoints: jax.Array, confidence: jax.Array, image_size: jax.Array,
                      rng: jax.Array, *, chunk_size: int, temperature: float = 0.0,
                      top_k: int = 0, num_samples: int = 1) -> dict[str, jax.Array]:
  """`hipart.predict`, `chunk_size` poses at a time (`lax.map`), so that on a CPU each
  chunk's temporaries stay in the caches.

  The last chunk is padded with copies of the first poses, dropped from the outputs.
  Chunk i samples with `fold_in(rng, i)`, so sampled hypotheses (temperature > 0)
  depend on the chunk size; greedy results do not.

  Args:
    chunk_size: poses per chunk (>= 1).
    the rest: as in `hipart.predict`.
  """
  batch = keypoints.shape[0]
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
  settings = dict(temperature=temperature, top_k=top_k, num_samples=num_samples)
  count = -(-batch // chunk_size)
  index = np.arange(count * chunk_size) % batch
  chunks = jax.tree.map(lambda x: x[index].reshape((count, chunk_size) + x.shape[1:]),
                        (keypoints, confidence, image_size))
  out = lax.map(lambda args: hipart.predict(model, variables, *args[0],
                                            jax.random.fold_in(rng, args[1]), **settings),
                (chunks, jnp.arange(count)))
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:batch], out)


@functools.lru_cache(maxsize=None)
def _predict_over_devices(model: hipart.HiPART, devices: tuple[jax.Device, ...],
                          chunk_size: int, temperature: float, top_k: int,
                          num_samples: int) -> Callable:
  """A `jax.pmap` of one device's `predict` (compiled once per settings)."""

  def per_device(variables, keypoints, confidence, image_size, rng):
    rng = jax.random.fold_in(rng, lax.axis_index(AXIS))
    return _predict_one(model, variables, keypoints, confidence, image_size, rng,
                        chunk_size=chunk_size, temperature=temperature, top_k=top_k,
                        num_samples=num_samples)

  return jax.pmap(per_device, axis_name=AXIS, in_axes=(None, 0, 0, 0, None),
                  devices=devices)


def _predict_one(model, variables, keypoints, confidence, image_size, rng, *, chunk_size,
                 **settings):
  if chunk_size and keypoints.shape[0] > chunk_size:
    return predict_in_chunks(model, variables, keypoints, confidence, image_size, rng,
                             chunk_size=chunk_size, **settings)
  return hipart.predict(model, variables, keypoints, confidence, image_size, rng,
                        **settings)


def predict(model: hipart.HiPART, variables: Mapping[str, Any], keypoints: jax.Array,
            confidence: jax.Array, image_size: jax.Array, rng: jax.Array, *,
            chunk_size: int = 0, devices: tuple[jax.Device, ...] = (),
            temperature: float = 0.0, top_k: int = 0,
            num_samples: int = 1) -> dict[str, jax.Array]:
  """`hipart.predict` as this host runs it best: in chunks, split over devices.

  Args:
    chunk_size: poses per chunk on each device (`predict_in_chunks`; 0: all at once).
    devices: more than one: the batch is split evenly over them (`jax.pmap`), device i
      sampling with `fold_in(rng, i)`.
    the rest: as in `hipart.predict`.
  Returns:
    `hipart.predict`'s outputs for the whole batch.
  """
  if chunk_size < 0:
    raise ValueError(f'chunk_size must be >= 0, got {chunk_size}')
  settings = dict(temperature=float(temperature), top_k=int(top_k),
                  num_samples=int(num_samples))
  devices = tuple(devices)
  if len(devices) <= 1:
    return _predict_one(model, variables, keypoints, confidence, image_size, rng,
                        chunk_size=chunk_size, **settings)
  batch = keypoints.shape[0]
  if batch % len(devices):
    raise ValueError(f'batch of {batch} poses does not split evenly over '
                     f'{len(devices)} devices')
  split = lambda x: jnp.reshape(x, (len(devices), -1) + x.shape[1:])
  mapped = _predict_over_devices(model, devices, int(chunk_size), **settings)
  out = mapped(variables, split(keypoints), split(confidence), split(image_size), rng)
  return jax.tree.map(lambda x: x.reshape((batch,) + x.shape[2:]), out)
