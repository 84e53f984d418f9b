"""Checkpoint saving and restoring; every orbax call of the project lives here.

A checkpoint directory (`<workdir>/checkpoints/<step>/`) holds two items:
  state: the whole `TrainState` pytree (params, non-param collections, optimizer state,
    step and RNG key data), written with `StandardSave`;
  meta:  a JSON dict (stage name, model config, hierarchy, ...) that lets a later stage
    rebuild the module of an earlier one without its config file.

Retention keeps the last `keep_checkpoints` steps *and* the best step by
`config.best_metric`. orbax's `max_to_keep` with a `best_fn` keeps the top-K by metric
instead (recent checkpoints without a metric are then either never deleted or never
kept), so the rule is spelled as an explicit orbax preservation policy:
`AnyPreservationPolicy([LatestN(K), BestN(n=1)])`.

Saves are asynchronous: call `wait_until_finished(manager)` before the process exits.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from hipart_jax import skeleton
from hipart_jax.models import hipart

CHECKPOINT_SUBDIR = 'checkpoints'
_STATE = 'state'
_META = 'meta'


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  """The directory under a training workdir that holds its step checkpoints."""
  return pathlib.Path(workdir) / CHECKPOINT_SUBDIR


def make_manager(workdir: str | pathlib.Path,
                 config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """A checkpoint manager for one training run.

  Args:
    workdir: the run's work directory; checkpoints go to `<workdir>/checkpoints`.
    config: needs `keep_checkpoints` (K, the number of latest steps kept),
      `best_metric` (a key of the metrics passed to `save`, e.g. 'eval/loss') and
      `best_mode` ('min' or 'max').
  Returns:
    An asynchronous `ocp.CheckpointManager`.
  """
  if config.best_mode not in ('min', 'max'):
    raise ValueError(f"config.best_mode must be 'min' or 'max', got {config.best_mode!r}")
  metric = config.best_metric

  def best_fn(metrics: Mapping[str, float]) -> float:
    return float(metrics[metric])

  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=config.keep_checkpoints),
      # BestN sorts ascending unless `reverse` and keeps the tail, so 'min' reverses.
      checkpoint_managers.BestN(get_metric_fn=best_fn, reverse=config.best_mode == 'min',
                                n=1, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=best_fn, best_mode=config.best_mode, preservation_policy=policy,
      enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: Mapping[str, Any],
         metrics: Mapping[str, float] | None = None, *, force: bool = True) -> bool:
  """Starts an asynchronous save of `state` and `meta` at `step`.

  Args:
    manager: from `make_manager`.
    step: the training step the state has reached.
    state: a pytree of arrays (the `TrainState`).
    meta: JSON-serializable dict stored beside the state.
    metrics: evaluation metrics of this step (floats), used to track the best step;
      None for a step without evaluation (it is kept only while among the latest K).
    force: save even if the manager's save policy would skip this step.
  Returns:
    Whether a save was started (False if the step already exists).
  """
  step = int(step)
  if step in manager.all_steps():
    return False
  if metrics is not None:
    metrics = {name: float(value) for name, value in metrics.items()}
  args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                               _META: ocp.args.JsonSave(dict(meta))})
  return manager.save(step, args=args, metrics=metrics, force=force)


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Blocks until every pending asynchronous save is committed."""
  manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
  """Restores the newest checkpoint into the structure of `abstract_state`.

  Args:
    manager: from `make_manager`.
    abstract_state: a pytree like the saved state (arrays or `jax.ShapeDtypeStruct`s
      with shardings); its structure, dtypes and shardings are those of the result.
  Returns:
    `(state, meta)`, or None when the directory holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  restored = manager.restore(step, args=ocp.args.Composite(
      **{_STATE: ocp.args.StandardRestore(abstract_state), _META: ocp.args.JsonRestore()}))
  logging.info('Restored checkpoint of step %d from %s', step, manager.directory)
  return restored[_STATE], restored[_META]


def restore_params(directory: str | pathlib.Path, *, expected_stage: str | None = None,
                   step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """Loads the variables of a (frozen) earlier stage.

  Args:
    directory: a training workdir or its `checkpoints/` subdirectory.
    expected_stage: if given, `meta['stage']` must equal it.
    step: the step to load; the latest one when None.
  Returns:
    `(variables, meta)`: `variables = {'params': ..., **collections}` as host-local
    arrays on the first local device, ready for `module.apply`; `meta` the saved JSON
    plus 'step', the step restored (not saved: a later stage records it as a frozen
    stage's step).
  Raises:
    FileNotFoundError: the directory or the step does not exist, or holds no checkpoint.
    ValueError: the checkpoint belongs to another stage than `expected_stage`.
  """
  path = pathlib.Path(directory)
  if (path / CHECKPOINT_SUBDIR).is_dir():
    path = path / CHECKPOINT_SUBDIR
  if not path.is_dir():
    raise FileNotFoundError(f'checkpoint directory {str(directory)!r} does not exist')

  def read_only_notice(record) -> bool:
    # orbax warns that a read-only manager is read-only, which is what restoring asks for.
    return not record.getMessage().startswith('Given directory is read only')

  logging.get_absl_logger().addFilter(read_only_notice)
  try:
    manager = ocp.CheckpointManager(
        path.absolute(), options=ocp.CheckpointManagerOptions(
            read_only=True, create=False, save_interval_steps=0),
        item_handlers={_STATE: ocp.StandardCheckpointHandler(),
                       _META: ocp.JsonCheckpointHandler()})
  finally:
    logging.get_absl_logger().removeFilter(read_only_notice)
  try:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f'checkpoint directory {str(path)!r} holds no checkpoint')
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise FileNotFoundError(f'checkpoint directory {str(path)!r} has no step {step} '
                              f'(steps: {sorted(steps)})')
    meta = manager.restore(step, args=ocp.args.Composite(
        **{_META: ocp.args.JsonRestore()}))[_META]
    stage = meta.get('stage')
    if expected_stage is not None and stage != expected_stage:
      raise ValueError(f'checkpoint {str(path)!r} step {step} holds stage {stage!r}, '
                       f'expected stage {expected_stage!r}')
    # The saved shardings may name devices this process lacks (e.g. a run on 8 devices
    # restored on 1): restore every array onto the first local device.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tree = manager.item_metadata(step)[_STATE].tree
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), tree,
        is_leaf=lambda leaf: isinstance(leaf, ocp.metadata.ArrayMetadata))
    state = manager.restore(step, args=ocp.args.Composite(
        **{_STATE: ocp.args.StandardRestore(abstract)}))[_STATE]
  finally:
    manager.close()
  variables = {'params': state['params'], **(state.get('collections') or {})}
  meta = {**meta, 'step': step}
  logging.info('Loaded %s variables of step %d from %s', stage, step, path)
  return variables, meta


def load_hipart(lifter_workdir: str | pathlib.Path
                ) -> tuple[hipart.HiPART, dict[str, Any], dict[str, Any]]:
  """(HiPART, variables, meta) from a trained lifter's workdir.

  Variables: {'params': lifter params, 'frozen_msst': ..., 'frozen_hiarm': ...}; the
  lifter checkpoint embeds the frozen MSST and HiARM it was trained with.
  Raises FileNotFoundError for a missing directory and ValueError for a checkpoint of
  another stage (`restore_params`).
  """
  variables, meta = restore_params(lifter_workdir, expected_stage='lifter')
  return hipart.from_meta(meta), variables, meta


def load_frozen(directory: str, expected_stage: str, hierarchy: skeleton.Hierarchy
                ) -> tuple[dict[str, Any], dict[str, Any]]:
  """(variables, meta) of an earlier stage's checkpoint; checks the hierarchy matches."""
  if not directory:
    raise ValueError(f'config.init_from.{expected_stage} must name the workdir of a '
                     f'trained {expected_stage!r} stage')
  variables, meta = restore_params(directory, expected_stage=expected_stage)
  saved = skeleton.Hierarchy.from_json(meta['hierarchy'])
  if saved != hierarchy:
    raise ValueError(f'{directory}: the {expected_stage} checkpoint was trained on another '
                     'hierarchy than this dataset\'s')
  return variables, meta
