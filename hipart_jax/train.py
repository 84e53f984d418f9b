"""One trainer for every stage: train state, optimizer, parallel steps and the loop.

A stage (MSST, HiARM, lifter; see `hipart_jax.stages`) supplies its variables, its loss
and its evaluation metrics (`Stage`); this module owns everything else. Steps see one
device's shard of a batch and average gradients and metrics over the named axis
`AXIS`; `parallelize` maps them over the local devices. The train state is passed
*unreplicated* (pmap's `in_axes=None`), so it is never replicated or unreplicated by
hand and a checkpoint holds exactly one copy of it.

Step numbering: `state.step` counts finished updates. The update that takes the state
from step s to s + 1 reads batch s of the input pipeline and draws its randomness from
`fold_in(fold_in(key, s), device)`, so a run resumed from a checkpoint at step s
repeats an uninterrupted run exactly.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pathlib
import signal
import time
from typing import Any, Callable, Iterable, Mapping, Protocol

from absl import logging
import chex
import flax
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hipart_jax import checkpoints
from hipart_jax import drawn_batches
from hipart_jax import skeleton

AXIS = 'batch'
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a SIGTERM death.
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class Stage(Protocol):
  """What a training stage provides to the trainer.

  `batch` is one device's shard of a batch (docs/ARCHITECTURE.md, "Batches"), arrays
  shaped [per_device, ...]. Functions run inside `parallelize`, so they may use
  collectives over `AXIS` (e.g. to keep EMA statistics identical on every device).

  The loss and every metric are means over the examples with `batch['valid']` (of
  per-example terms): `make_train_step` relies on it to split a batch into microbatches.
  A stage whose loss updates collections can be split only if it also provides

    microbatch_loss_fn(params, collections, batch, rng) -> (loss, (metrics, statistics)):
      `loss_fn(train=True)` that leaves the collections alone and returns what their
      update needs instead, as per-example arrays {name: [per_device, ...]};
    update_collections(params, collections, statistics, batch) -> (collections, metrics):
      the update from the whole batch's statistics, and the metrics computed from it
      (replacing the microbatch means of those names).
  """

  def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
    """Returns {'params': ..., other collections, e.g. 'vq_stats': ...}."""

  def loss_fn(self, params: Any, collections: Mapping[str, Any], batch: Batch,
              rng: jax.Array, train: bool) -> tuple[jax.Array, tuple[Metrics, dict]]:
    """Returns `(loss [], (metrics {name: []}, new_collections))`.

    `new_collections` must be identical on all devices (reduce them over `AXIS`).
    """

  def eval_metrics(self, variables: Mapping[str, Any], batch: Batch) -> Metrics:
    """Returns {name: []} means over the examples with `batch['valid']`."""


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint must hold to continue training.

  Attributes:
    step: [] int32, finished updates.
    params: trainable parameters.
    collections: non-trainable variable collections ({name: pytree}).
    opt_state: optimizer state of `tx`.
    rng: [2] uint32 raw key data (orbax saves plain arrays); see `key`.
    tx: the optimizer (static, not saved).
  """
  step: jax.Array
  params: Any
  collections: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @property
  def key(self) -> jax.Array:
    """The run's base typed PRNG key."""
    return jax.random.wrap_key_data(self.rng)

  def apply_gradients(self, grads: Any, collections: Any = None) -> TrainState:
    """One optimizer update; `collections` replaces the non-param collections if given."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(
        step=self.step + 1, params=optax.apply_updates(self.params, updates),
        opt_state=opt_state,
        collections=self.collections if collections is None else collections)


def make_schedule(config: ml_collections.ConfigDict, num_train_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr`, then cosine decay to `lr * end_lr_factor`.

  Args:
    config: the optimizer config: `lr`, `warmup_steps`, `end_lr_factor`, `decay_steps`
      (length of the whole schedule, warmup included; None: `num_train_steps`).
    num_train_steps: the run's length.
  """
  decay_steps = config.decay_steps or num_train_steps
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.lr, warmup_steps=config.warmup_steps,
      decay_steps=max(decay_steps, config.warmup_steps + 1),
      end_value=config.lr * config.end_lr_factor)


def make_optimizer(config: ml_collections.ConfigDict,
                   num_train_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW on `make_schedule(config, num_train_steps)`.

  Args:
    config: the optimizer config: schedule keys (see `make_schedule`), `clip_norm`,
      `b1`, `b2`, `eps`, `weight_decay`, `decay_matrices_only` (no weight decay on
      biases and normalization scales, i.e. on parameters with fewer than 2 dims).
    num_train_steps: the run's length.
  """
  mask = None
  if config.decay_matrices_only:
    mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(config.clip_norm),
      optax.adamw(make_schedule(config, num_train_steps), b1=config.b1, b2=config.b2,
                  eps=config.eps, weight_decay=config.weight_decay, mask=mask))


def create_train_state(stage: Stage, config: ml_collections.ConfigDict, rng: jax.Array,
                       batch: Batch) -> TrainState:
  """Initializes the stage's variables and the optimizer.

  Args:
    stage: the stage to train.
    config: the run config (`optimizer`, `num_train_steps`).
    rng: typed key; split into the init key and the run's base key.
    batch: one device's shard of a batch, [per_device, ...] (shapes only matter).
  """
  init_rng, state_rng = jax.random.split(rng)
  variables = jax.jit(stage.init_variables)(init_rng, batch)
  params = variables['params']
  collections = {name: value for name, value in variables.items() if name != 'params'}
  tx = make_optimizer(config.optimizer, config.num_train_steps)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, collections=collections,
                    opt_state=jax.jit(tx.init)(params), rng=jax.random.key_data(state_rng),
                    tx=tx)


def microbatched_value_and_grad(
    loss_fn: Callable[[Any, Batch, jax.Array], tuple[jax.Array, tuple[Metrics, Any]]],
    params: Any, batch: Batch, rng: jax.Array, microbatch_size: int,
    collections: Any = None, *, per_example_aux: bool = False
    ) -> tuple[tuple[jax.Array, tuple[Metrics, Any]], Any]:
  """`jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)`, a few examples at
  a time.

  The batch is split into microbatches of `microbatch_size` examples, evaluated one
  after the other in a `lax.scan`, and their losses, metrics and gradients are averaged
  weighted by their valid examples: the whole batch's values, since the loss and the
  metrics are means over valid examples (`Stage`). A last, partial microbatch is
  filled with copies of the first examples marked invalid, which weigh nothing. Each
  microbatch draws its randomness from `fold_in(rng, index)`. On a CPU a microbatch's
  activations stay in cache: train steps run 1.2-1.6x faster (BENCHMARKS.md, change 11).

  Args:
    loss_fn: `(params, batch, rng) -> (loss [], (metrics {name: []}, collections))`.
    params: differentiated.
    batch: {name: [B, ...]}, with 'valid' [B].
    rng: the step's key.
    microbatch_size: examples per microbatch; 0 or >= B: the whole batch at once.
    collections: the collections `loss_fn` sees. Split, it must return them unchanged
      (a loss that updates statistics, e.g. the MSST's codebook EMA, would update them
      once per microbatch: that is refused, not approximated).
    per_example_aux: `loss_fn` returns per-example arrays {name: [b, ...]} in place of
      the collections; they are returned joined, [B, ...].
  Returns:
    `((loss, (metrics, collections or the joined per-example arrays)), grads)`.
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
    if not per_example_aux and not all(
        jax.tree.leaves(jax.tree.map(lambda a, b: a is b, aux, collections))):
      raise ValueError('microbatches need a stage whose loss leaves its collections '
                       'unchanged, or one with microbatch_loss_fn and '
                       'update_collections (train.Stage); this one updates them: set '
                       'config.train_step_microbatch_size to 0 for it')
    weight = jnp.sum(micro_batch['valid'].astype(jnp.float32)) / total
    carry = jax.tree.map(lambda a, b: a + weight * b, carry, (loss, metrics, grads))
    return carry, aux if per_example_aux else None

  first = jax.tree.map(lambda x: x[0], micro)
  (loss, (metrics, _)), grads = jax.eval_shape(grad_fn, params, first, rng)
  zeros = jax.tree.map(_zeros_like_shape, (loss, metrics, grads))
  (loss, metrics, grads), aux = lax.scan(one, zeros, (micro, jnp.arange(count)))
  if per_example_aux:  # [count, microbatch, ...] -> [B, ...], padding dropped.
    aux = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:size], aux)
  else:
    aux = collections
  return (loss, (metrics, aux)), grads


def _zeros_like_shape(shape: jax.ShapeDtypeStruct) -> jax.Array:
  """Zeros of an `eval_shape` result, varying over the same `shard_map` axes (a scan's
  carry must keep its type)."""
  zeros = jnp.zeros(shape.shape, shape.dtype)
  varying = tuple(shape.manual_axis_type.varying) if shape.manual_axis_type else ()
  return lax.pcast(zeros, varying, to='varying') if varying else zeros


def make_train_step(stage: Stage, *, vary_params: bool = False, microbatch_size: int = 0
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """A pure per-device train step (run it through `parallelize`).

  Args:
    stage: the stage to train.
    vary_params: differentiate a device-varying view of the params (`lax.pcast`); needed
      under `parallelize(implementation='shard_map')`, whose varying-axes checks would
      otherwise return gradients of unvarying params already summed over devices. pmap
      and vmap need (and vmap accepts) no such view.
    microbatch_size: evaluate the gradient this many examples at a time
      (`microbatched_value_and_grad`; the same update); 0: the whole per-device batch.
      A stage with `update_collections` (see `Stage`) then updates its collections
      once, from the statistics of all microbatches.
  Returns:
    `train_step(state, batch [per_device, ...]) -> (state, metrics)`; metrics are
    'loss', the stage's metrics and 'grad_norm' (after averaging, before clipping),
    all averaged over devices.
  """

  deferred = bool(microbatch_size) and hasattr(stage, 'update_collections')

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                             lax.axis_index(AXIS))

    def loss_fn(params, batch, rng):
      if deferred:
        return stage.microbatch_loss_fn(params, state.collections, batch, rng)
      return stage.loss_fn(params, state.collections, batch, rng, True)

    params = state.params
    if vary_params:  # Each device gets its own gradient, averaged below.
      params = jax.tree.map(lambda p: lax.pcast(p, AXIS, to='varying'), params)
    (loss, (metrics, collections)), grads = microbatched_value_and_grad(
        loss_fn, params, batch, rng, microbatch_size, state.collections,
        per_example_aux=deferred)
    if deferred:  # `collections` holds the whole batch's statistics.
      collections, updated = stage.update_collections(state.params, state.collections,
                                                      collections, batch)
      metrics = {**metrics, **updated}
    chex.assert_rank([loss, *metrics.values()], 0)
    grads = lax.pmean(grads, AXIS)
    metrics = lax.pmean({'loss': loss, **metrics}, AXIS)
    metrics['grad_norm'] = optax.tree.norm(grads)
    return state.apply_gradients(grads, collections), metrics

  return train_step


def make_eval_step(stage: Stage) -> Callable[[TrainState, Batch], Metrics]:
  """A pure per-device eval step (run it through `parallelize`).

  Returns:
    `eval_step(state, batch) -> sums`: `sums['count']` the number of valid examples
    on all devices, `sums[name]` each metric times its device's valid count, summed
    over devices. `finalize_eval` turns accumulated sums into means.
  """

  def eval_step(state: TrainState, batch: Batch) -> Metrics:
    metrics = stage.eval_metrics({'params': state.params, **state.collections}, batch)
    chex.assert_rank([batch['valid'], *metrics.values()], [1] + [0] * len(metrics))
    count = jnp.sum(batch['valid'].astype(jnp.float32))
    # A device holding only padding has NaN means (0/0); it must add nothing.
    sums = {name: jnp.where(count > 0, value * count, 0.0) for name, value in metrics.items()}
    return lax.psum({'count': count, **sums}, AXIS)

  return eval_step


IMPLEMENTATIONS = ('auto', 'pmap', 'shard_map', 'vmap')


def resolve_implementation(implementation: str) -> str:
  """'auto' → 'vmap' on one local device of one process, else 'pmap'."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got '
                     f'{implementation!r}')
  if implementation == 'auto':
    single = jax.local_device_count() == 1 and jax.process_count() == 1
    return 'vmap' if single else 'pmap'
  return implementation


def train_step_compiler_options(config: ml_collections.ConfigDict, implementation: str
                                ) -> dict[str, Any] | None:
  """The XLA options of the train step: `config.train_step_compiler_options`' entry for
  this process's default backend (e.g. {'cpu': {...}} → the 'cpu' dict on a CPU host).
  None when there is none, and under 'pmap', which takes none (see `parallelize`)."""
  if resolve_implementation(implementation) == 'pmap':
    return None
  options = (config.get('train_step_compiler_options') or {}).get(jax.default_backend())
  return dict(options) if options else None


def train_step_microbatch_size(config: ml_collections.ConfigDict) -> int:
  """Examples per microbatch of the train step (`make_train_step`):
  `config.train_step_microbatch_size`' entry for this process's default backend, 0 (the
  whole per-device batch at once) when there is none."""
  sizes = config.get('train_step_microbatch_size') or {}
  return int(sizes.get(jax.default_backend(), 0))


def parallelize(step_fn: Callable, *, donate_state: bool = False,
                implementation: str = 'auto',
                compiler_options: Mapping[str, Any] | None = None) -> Callable:
  """Maps a per-device step over all local devices; the one place that does so.

  Args:
    step_fn: `(state, batch) -> outputs`, using collectives over `AXIS`, returning
      outputs that are identical on every device (reduced over `AXIS`).
    donate_state: let XLA reuse the input state's buffers (train steps).
    implementation: 'auto' (see `resolve_implementation`), 'pmap' (works on multi-host
      pods), 'vmap': `jax.jit(jax.vmap(..., axis_name=AXIS))` on the default device — the
      same collectives and results, and on one CPU device 8-15× faster than pmap or
      shard_map (measured: bench/training.py), whose CPU lowering loses XLA's
      single-device optimizations; or 'shard_map':
      `jax.jit(jax.shard_map(...))` over the local devices (single process), which also
      checks that every output is device-invariant (a stage that forgot to reduce its
      collections fails loudly instead of silently keeping device 0's copy).
    compiler_options: XLA options (`jax.jit(compiler_options=...)`) of the 'vmap' and
      'shard_map' implementations; `jax.pmap` takes none, so 'pmap' rejects them.
  Returns:
    `fn(state, batch [local_devices, per_device, ...]) -> outputs`, with `state` and
    the outputs unreplicated.
  """
  donate = (0,) if donate_state else ()
  implementation = resolve_implementation(implementation)
  options = dict(compiler_options) if compiler_options else None
  if implementation == 'vmap':
    return jax.jit(jax.vmap(step_fn, in_axes=(None, 0), out_axes=None, axis_name=AXIS),
                   donate_argnums=donate, compiler_options=options)
  if implementation == 'pmap':
    if options:
      raise ValueError(f"implementation='pmap' takes no compiler options, got {options}")
    return jax.pmap(step_fn, axis_name=AXIS, in_axes=(None, 0), out_axes=None,
                    donate_argnums=donate)
  if implementation == 'shard_map':
    if jax.process_count() > 1:
      raise ValueError("implementation='shard_map' is single-process; use 'pmap'")
    mesh = jax.make_mesh((jax.local_device_count(),), (AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,), devices=jax.local_devices())
    spec = jax.sharding.PartitionSpec
    batch_sharding = jax.sharding.NamedSharding(mesh, spec(AXIS))

    def per_device(state, batch):  # batch blocks are [1, per_device, ...]
      return step_fn(state, jax.tree.map(lambda x: x[0], batch))

    mapped = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(spec(), spec(AXIS)),
                                   out_specs=spec()), donate_argnums=donate,
                     compiler_options=options)
    return lambda state, batch: mapped(state, jax.device_put(batch, batch_sharding))
  raise AssertionError(implementation)


def finalize_eval(sums: Iterable[Mapping[str, Any]]) -> dict[str, float]:
  """Averages eval-step sums over batches, weighting by valid examples."""
  total = functools.reduce(lambda a, b: {k: a[k] + b[k] for k in a},
                           (jax.tree.map(np.float64, s) for s in jax.device_get(list(sums))))
  count = total.pop('count')
  return {name: float(value / count) for name, value in total.items()}


def count_parameters(params: Any) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


class PreemptionWatcher:
  """Records SIGTERM while training runs (a context manager); the loop polls it.

  Saving happens in the loop, between steps: a signal handler may run while donated
  buffers are in flight. On multi-process runs all processes must stop at the same
  step, so the flag is agreed on (any process) at `sync_every_steps`.
  """

  def __init__(self, sync_every_steps: int):
    self._requested = False
    self._sync_every_steps = sync_every_steps
    self._previous = None

  def _handle(self, signum, frame):
    del frame
    logging.warning('Received signal %d: checkpointing and stopping.', signum)
    self._requested = True

  def __enter__(self) -> PreemptionWatcher:
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      logging.warning('Not in the main thread: SIGTERM will not checkpoint.')
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def requested(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._requested
    if step % self._sync_every_steps:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.asarray(self._requested))))


class MetricWriter:
  """Scalars to `<workdir>/metrics.jsonl` and, where the `tensorboard` package is
  installed, TensorBoard summaries under `<workdir>/tensorboard` (process 0 only)."""

  def __init__(self, workdir: pathlib.Path, *, enabled: bool, tensorboard: bool):
    self._file = self._summaries = None
    if not enabled:
      return
    workdir.mkdir(parents=True, exist_ok=True)
    self._file = open(workdir / 'metrics.jsonl', 'a')  # pylint: disable=consider-using-with
    if tensorboard and importlib.util.find_spec('tensorboard') is None:
      logging.warning('The tensorboard package is not installed: writing %s only.',
                      workdir / 'metrics.jsonl')
    elif tensorboard:
      # Imports TensorFlow: only when summaries are wanted.
      from flax.metrics import tensorboard as tb  # pylint: disable=g-import-not-at-top
      self._summaries = tb.SummaryWriter(str(workdir / 'tensorboard'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._file is None:
      return
    self._file.write(json.dumps({'step': step, **scalars}) + '\n')
    self._file.flush()
    if self._summaries is not None:
      for name, value in scalars.items():
        self._summaries.scalar(name, value, step)
      self._summaries.flush()

  def close(self) -> None:
    for handle in (self._file, self._summaries):
      if handle is not None:
        handle.close()


def _maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  if ((config.multihost or os.environ.get('JAX_COORDINATOR_ADDRESS'))
      and not jax.distributed.is_initialized()):
    jax.distributed.initialize()


def _make_data(config, train_source, eval_source, hierarchy):
  """(TrainBatches, eval batch factory, hierarchy) for this process."""
  from hipart_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  data = config.dataset
  if train_source is None:
    train_source, hierarchy, _ = input_pipeline.load_source(data, data.train_split)
  if eval_source is None:
    eval_source, _, _ = input_pipeline.load_source(data, data.eval_split)
  if hierarchy is None:
    raise ValueError('pass the hierarchy of the injected sources')
  layout = dict(num_local_devices=jax.local_device_count(),
                process_index=jax.process_index(), process_count=jax.process_count())
  if data.get('train_draws'):
    train_batches = _drawn_batches(data, hierarchy, config, layout)
  else:
    train_batches = input_pipeline.TrainBatches(
        train_source, hierarchy, data, global_batch_size=config.batch_size,
        seed=config.seed, **layout)
  make_eval_batches = functools.partial(
      input_pipeline.eval_batches, eval_source, hierarchy, data,
      global_batch_size=config.eval_batch_size, **layout)
  return train_batches, make_eval_batches, hierarchy


def _drawn_batches(data, hierarchy, config, layout):
  """`drawn_batches.DrawnBatches` of `data.train_draws`, checked against the dataset."""
  settings = drawn_batches.read_manifest(data.train_draws)['settings']
  if settings['dataset'] != data.name or settings['split'] != data.train_split:
    raise ValueError(f'{data.train_draws}: draws of {settings["dataset"]} split '
                     f'{settings["split"]!r}, but the config trains on {data.name} split '
                     f'{data.train_split!r}')
  if skeleton.Hierarchy.from_json(settings['hierarchy']) != hierarchy:
    raise ValueError(f'{data.train_draws}: drawn with another hierarchy than the dataset\'s')
  return drawn_batches.DrawnBatches(drawn_batches.load_draws(data.train_draws),
                                      global_batch_size=config.batch_size,
                                      seed=config.seed, **layout)


def make_meta(config: ml_collections.ConfigDict, hierarchy: Any,
              stage: Stage | None = None) -> dict[str, Any]:
  """What a checkpoint records beside the state, for later stages and tools: the stage
  name, its model config, the hierarchy, the run config, and what the stage adds
  (`stage.meta()`, e.g. the configs of the frozen models it embeds)."""
  meta = {'stage': config.stage, 'model': config.model.to_dict(),
          'hierarchy': hierarchy.to_json(), 'config': config.to_json_best_effort()}
  if hasattr(stage, 'meta'):
    meta.update(stage.meta())
  return meta


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       stage: Stage | None = None, train_source: Any = None,
                       eval_source: Any = None, hierarchy: Any = None
                       ) -> tuple[TrainState, dict[str, float] | None]:
  """Trains `config.stage` to `config.num_train_steps`, resuming from `workdir`.

  Args:
    config: see `launch/configs/base.py`.
    workdir: checkpoints, `metrics.jsonl` and TensorBoard summaries go here.
    stage: the stage to train; `stages.make_stage(config, hierarchy)` when None.
    train_source, eval_source: random-access example sequences replacing the TFDS
      splits of `config.dataset` (tests); `hierarchy` must then be given too.
    hierarchy: the `skeleton.Hierarchy` of injected sources.
  Returns:
    (final state, last evaluation metrics or None if no evaluation ran).
  Raises:
    SystemExit: with `PREEMPTED_EXIT_CODE` after SIGTERM, once the checkpoint is saved.
  """
  _maybe_initialize_distributed(config)
  workdir = pathlib.Path(workdir)
  train_batches, make_eval_batches, hierarchy = _make_data(
      config, train_source, eval_source, hierarchy)
  if stage is None:
    from hipart_jax import stages  # pylint: disable=g-import-not-at-top
    stage = stages.make_stage(config, hierarchy)

  first_shard = jax.tree.map(lambda x: x[0], train_batches.batch(0))
  state = create_train_state(stage, config, jax.random.key(config.seed), first_shard)
  logging.info('Stage %s: %d parameters.', config.stage, count_parameters(state.params))
  manager = checkpoints.make_manager(workdir, config)
  restored = checkpoints.restore_latest(manager, state)
  if restored is not None:
    state, restored_meta = restored
    if restored_meta.get('stage') != config.stage:
      raise ValueError(f'{workdir} holds a checkpoint of stage '
                       f'{restored_meta.get("stage")!r}, not {config.stage!r}')
  meta = make_meta(config, hierarchy, stage)
  implementation = resolve_implementation(config.get('parallelism', 'auto'))
  step_options = train_step_compiler_options(config, implementation)
  microbatch_size = train_step_microbatch_size(config)
  logging.info('Train step: %s over %d local device(s), XLA options %s, microbatches of '
               '%s examples.', implementation, jax.local_device_count(), step_options,
               microbatch_size or 'all')
  train_step = parallelize(
      make_train_step(stage, vary_params=implementation == 'shard_map',
                      microbatch_size=microbatch_size),
      donate_state=True, implementation=implementation, compiler_options=step_options)
  eval_step = parallelize(make_eval_step(stage), implementation=implementation)
  schedule = make_schedule(config.optimizer, config.num_train_steps)
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0,
                        tensorboard=config.get('tensorboard', True))

  def evaluate(step: int) -> dict[str, float]:
    metrics = finalize_eval(eval_step(state, batch) for batch in make_eval_batches())
    metrics = {f'eval/{name}': value for name, value in metrics.items()}
    logging.info('step %d eval: %s', step, _format(metrics))
    writer.write(step, metrics)
    return metrics

  step = first_step = int(state.step)
  eval_metrics, pending = None, []
  last_log_time, last_log_step = time.perf_counter(), step
  batches = train_batches.iterate(step)
  try:
    with PreemptionWatcher(config.log_every_steps) as preemption:
      while step < config.num_train_steps:
        state, metrics = train_step(state, next(batches))
        step += 1
        pending.append(metrics)
        last = step == config.num_train_steps
        logs = step % config.log_every_steps == 0 or last
        if step == first_step + 1 and not logs:
          # The first step compiles the train step (tens of seconds on a CPU): keep it
          # out of the steps/s of the first window.
          jax.block_until_ready(metrics)
          logging.info('First step (compilation included): %.1f s.',
                       time.perf_counter() - last_log_time)
          last_log_time, last_log_step = time.perf_counter(), step
        if logs:
          # Fetching the metrics waits for the steps, so the timing below is honest.
          scalars = {f'train/{name}': float(np.mean(values)) for name, values in
                     jax.tree.map(lambda *v: np.stack(v), *jax.device_get(pending)).items()}
          steps_per_second = (step - last_log_step) / (time.perf_counter() - last_log_time)
          scalars.update({'train/learning_rate': float(schedule(step - 1)),
                          'steps_per_second': steps_per_second,
                          'examples_per_second': steps_per_second * config.batch_size})
          logging.info('step %d: %s', step, _format(scalars))
          writer.write(step, scalars)
          pending = []
          last_log_time, last_log_step = time.perf_counter(), step
        step_eval = None
        if step % config.eval_every_steps == 0 or last:
          eval_metrics = step_eval = evaluate(step)
        # Evaluated steps are always saved, so that the best one can be kept.
        if step_eval is not None or step % config.checkpoint_every_steps == 0:
          checkpoints.save(manager, step, state, meta, step_eval)
        if step_eval is not None:  # Evaluation time is not training time.
          last_log_time = time.perf_counter()
        if preemption.requested(step) and not last:
          checkpoints.save(manager, step, state, meta)
          checkpoints.wait_until_finished(manager)
          logging.warning('Preempted: saved step %d; exiting.', step)
          raise SystemExit(PREEMPTED_EXIT_CODE)
  finally:
    batches.close()
    checkpoints.wait_until_finished(manager)
    writer.close()
  return state, eval_metrics


def _format(scalars: Mapping[str, float]) -> str:
  return ', '.join(f'{name}={value:.6g}' for name, value in sorted(scalars.items()))
