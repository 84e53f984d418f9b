"""The trainer's pure parts: the train state, the optimizer and the per-device steps.

A stage (MSST, HiARM, lifter; `training.stages`) supplies its variables, its loss and
its evaluation metrics (`Stage`); this module turns them into steps. Steps see one
device's shard of a batch and average gradients and metrics over the named axis
`AXIS`; `execution.map_step` maps them over the local devices. The train state goes in
*unreplicated*, so a checkpoint holds exactly one copy of it.

Step numbering: `state.step` counts finished updates. The update that takes the state
from step s to s + 1 reads batch s of the input pipeline and draws its randomness from
`fold_in(fold_in(key, s), device)`, so a run resumed from a checkpoint at step s
repeats an uninterrupted run exactly.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Protocol

import chex
import flax
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hipart_jax import execution

AXIS = execution.AXIS
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
# The train step's extra output: [1 + number of gradient leaves] bool, the loss and then
# each gradient leaf (in `jax.tree.leaves` order) finite or not.
FINITE = 'finite'


class Stage(Protocol):
  """What a training stage provides to the trainer.

  `batch` is one device's shard of a batch (docs/ARCHITECTURE.md, "Batches"), arrays
  shaped [per_device, ...]. Functions run inside `execution.map_step`, so they may use
  collectives over `AXIS` (e.g. to keep EMA statistics identical on every device).
  The loss and every metric are means over the examples with `batch['valid']` (of
  per-example terms), so that microbatches average to the whole batch's values.
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

  # Optional: None, or `eval_inputs(collections, batch) -> {name: [per_device, ...]}`,
  # per-example arrays that depend on the frozen collections only; the trainer computes
  # them once per run and adds them to every evaluation's batches (`make_eval_inputs_step`).
  eval_inputs: Callable[[Mapping[str, Any], Batch], dict[str, jax.Array]] | None


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


def make_train_step(stage: Stage, *, microbatch_size: int = 0
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """A pure per-device train step (run it through `execution.map_step`).

  Args:
    stage: the stage to train.
    microbatch_size: evaluate the gradient this many examples at a time
      (`execution.microbatched_value_and_grad`; the same update); 0: the whole batch.
  Returns:
    `train_step(state, batch [per_device, ...]) -> (state, metrics)`; metrics are
    'loss', the stage's metrics and 'grad_norm' (after averaging, before clipping),
    all averaged over devices, and `FINITE` (see above) for `first_nonfinite`.
  """

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                             lax.axis_index(AXIS))
    loss_fn = lambda params, batch, rng: stage.loss_fn(params, state.collections, batch,
                                                       rng, True)
    (loss, (metrics, collections)), grads = execution.microbatched_value_and_grad(
        loss_fn, state.params, batch, rng, microbatch_size, state.collections)
    chex.assert_rank([loss, *metrics.values()], 0)
    grads = lax.pmean(grads, AXIS)
    metrics = lax.pmean({'loss': loss, **metrics}, AXIS)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics[FINITE] = jnp.stack([jnp.isfinite(metrics['loss'])] + [
        jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(grads)])
    return state.apply_gradients(grads, collections), metrics

  return train_step


def first_nonfinite(finite: np.ndarray, params: Any) -> str | None:
  """What a train step's `FINITE` flags blame first: 'loss', a gradient leaf's path
  (e.g. "gradient of params['block_0']['kernel']"), or None when all are finite."""
  finite = np.asarray(finite)
  if finite.all():
    return None
  if not finite[0]:
    return 'loss'
  paths = [jax.tree_util.keystr(path) for path, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  return f'gradient of params{paths[int(np.argmin(finite[1:]))]}'


def make_eval_step(stage: Stage) -> Callable[[TrainState, Batch], Metrics]:
  """A pure per-device eval step (run it through `execution.map_step`).

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


def make_eval_inputs_step(stage: Stage) -> Callable[[TrainState, Batch], Batch] | None:
  """A pure per-device step of the stage's `eval_inputs` (run it through
  `execution.map_step(..., per_device_outputs=True)`), or None when it has none.

  Returns:
    `eval_inputs_step(state, batch) -> {name: [per_device, ...]}`, to add to the batch.
  """
  eval_inputs = getattr(stage, 'eval_inputs', None)
  if eval_inputs is None:
    return None
  return lambda state, batch: eval_inputs(state.collections, batch)


def finalize_eval(sums: Iterable[Mapping[str, Any]]) -> dict[str, float]:
  """Averages eval-step sums over batches, weighting by valid examples."""
  total = functools.reduce(lambda a, b: {k: a[k] + b[k] for k in a},
                           (jax.tree.map(np.float64, s) for s in jax.device_get(list(sums))))
  count = total.pop('count')
  return {name: float(value / count) for name, value in total.items()}


def count_parameters(params: Any) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
