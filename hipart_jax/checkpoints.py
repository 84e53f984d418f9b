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

Faults: a save that fails (a full disk, a broken filesystem) raises `CheckpointSaveError`
naming the workdir, and the earlier checkpoints stay as they were (orbax writes each step
into a temporary directory and renames it when complete; leftovers of an interrupted save
are deleted by the next manager). A step directory that cannot be restored (deleted or
truncated files, or bytes that differ from the SHA-256 the save recorded in
`<step>/checksums.json`, `checkpoint_checksums.py`) is refused by `restore_params` with
`CorruptCheckpointError` naming the directory and the problem; `restore_latest` (resuming
training) sets it aside as `corrupt-<step>` with a warning and resumes from the previous
step. A step without `checksums.json` is refused if its orbax step metadata says it was
saved with one (the manifest was deleted), and restored with a warning otherwise (a step
saved before checksums were kept: its files are checked only for presence).
"""

from __future__ import annotations

import errno
import functools
import pathlib
from typing import Any, Mapping

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from hipart_jax import checkpoint_checksums
from hipart_jax import skeleton
from hipart_jax.models import hipart

CHECKPOINT_SUBDIR = 'checkpoints'
_STATE = 'state'
_META = 'meta'
CORRUPT_PREFIX = 'corrupt-'  # Set-aside step directories: `corrupt-<step>`.
_REASON_LENGTH = 300  # Characters of a library error quoted in a one-line message.
# Files every complete step holds, relative to the step directory.
_REQUIRED_FILES = ('state/_METADATA', 'state/manifest.ocdbt', 'meta/metadata')
# Key of orbax's step `custom_metadata` that marks a step saved with `checksums.json`.
_CHECKSUMS_KEY = 'checksums'

CorruptCheckpointError = checkpoint_checksums.CorruptCheckpointError


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (the message names the workdir)."""


def _reason(error: BaseException) -> str:
  """A library error as one short line: the type and first message line of its root
  cause (orbax wraps tensorstore's precise error in a generic one)."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = str(error).strip().splitlines()
  text = f'{type(error).__name__}: {lines[0] if lines else ""}'
  return text if len(text) <= _REASON_LENGTH else text[:_REASON_LENGTH] + '...'


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
  directory = checkpoint_dir(workdir).absolute()
  options = ocp.CheckpointManagerOptions(
      best_fn=best_fn, best_mode=config.best_mode, preservation_policy=policy,
      enable_async_checkpointing=True, create=True, cleanup_tmp_directories=True,
      async_options=ocp.AsyncOptions(post_finalization_callback=functools.partial(
          _write_checksums_of_pending_save, directory)))
  return ocp.CheckpointManager(directory, options=options)


def _write_checksums_of_pending_save(directory: pathlib.Path) -> None:
  """Writes `checksums.json` into the temporary directory of the step being committed.

  orbax calls this (on the primary process) after the items are finalized and just
  before it renames the temporary directory to `<step>`; it commits one step at a time.
  """
  pending = [path for path in directory.iterdir()
             if path.is_dir() and path.name.endswith(ocp.path.step.TMP_DIR_SUFFIX)]
  if len(pending) != 1:
    raise RuntimeError(f'{directory}: expected the temporary directory of one step being '
                       f'committed, found {sorted(path.name for path in pending)}')
  checkpoint_checksums.write_checksums(pending[0], (_STATE, _META))


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
  Raises:
    CheckpointSaveError: this save or an earlier asynchronous one failed.
  """
  step = int(step)
  if step in manager.all_steps():
    return False
  if metrics is not None:
    metrics = {name: float(value) for name, value in metrics.items()}
  args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                               _META: ocp.args.JsonSave(dict(meta))})
  try:
    return manager.save(step, args=args, metrics=metrics, force=force,
                        custom_metadata={_CHECKSUMS_KEY: checkpoint_checksums.CHECKSUMS_FILE})
  except Exception as e:  # pylint: disable=broad-except  # orbax and tensorstore raise many kinds.
    raise _save_error(manager, f'step {step}', e) from e


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Blocks until every pending asynchronous save is committed.

  Raises:
    CheckpointSaveError: a pending save failed.
  """
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except  # Errors of the background writes.
    raise _save_error(manager, 'a pending step', e) from e


def _save_error(manager: ocp.CheckpointManager, what: str,
                error: BaseException) -> CheckpointSaveError:
  workdir = pathlib.Path(str(manager.directory)).parent
  cause = error
  while cause is not None and not isinstance(cause, OSError):
    cause = cause.__cause__ or cause.__context__
  full = isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
  steps = [step for step in manager.all_steps() if _is_complete(manager, step)]
  kept = (f'the checkpoint of step {max(steps)} is kept' if steps
          else 'no earlier checkpoint exists')
  return CheckpointSaveError(
      cause.errno if isinstance(cause, OSError) else errno.EIO,
      f'workdir {workdir}: saving {what} failed'
      f'{" (no space left on the device)" if full else ""}: {_reason(error)}; {kept}; '
      'rerun with the same workdir once the problem is fixed to resume')


def _is_complete(manager: ocp.CheckpointManager, step: int) -> bool:
  return (pathlib.Path(str(manager.directory)) / str(step)).is_dir()


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
  """Restores the newest checkpoint into the structure of `abstract_state`.

  Args:
    manager: from `make_manager`.
    abstract_state: a pytree like the saved state (arrays or `jax.ShapeDtypeStruct`s
      with shardings); its structure, dtypes and shardings are those of the result.
  Returns:
    `(state, meta)` of the newest step that restores, or None when the directory holds
    no checkpoint. A newer step that does not restore is moved aside to
    `corrupt-<step>` (a warning names it and the problem), so that training can save
    that step again.
  Raises:
    CorruptCheckpointError: no step restores.
  """
  abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  directory = pathlib.Path(str(manager.directory))
  set_aside = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      _check_step(manager, directory, step)
      restored = manager.restore(step, args=ocp.args.Composite(
          **{_STATE: ocp.args.StandardRestore(abstract_state),
             _META: ocp.args.JsonRestore()}))
    except Exception as e:  # pylint: disable=broad-except  # Any failure: try the previous.
      reason = e if isinstance(e, CorruptCheckpointError) else _reason(e)
      aside = directory / f'{CORRUPT_PREFIX}{step}'
      (directory / str(step)).rename(aside)
      manager.reload()
      logging.warning('Checkpoint step %d of %s does not restore (%s); moved it to %s and '
                      'trying the previous step.', step, directory, reason, aside)
      set_aside.append(step)
      continue
    logging.info('Restored checkpoint of step %d from %s', step, directory)
    return restored[_STATE], restored[_META]
  if set_aside:
    raise CorruptCheckpointError(f'{directory}: none of the steps {sorted(set_aside)} '
                                 f'restores; they were moved to {CORRUPT_PREFIX}<step>')
  return None


def _check_step(manager: ocp.CheckpointManager, directory: pathlib.Path,
                step: int) -> None:
  """Raises CorruptCheckpointError when a file of the step is missing, empty or not the
  one saved (its `checksums.json`)."""
  step_dir = directory / str(step)
  _check_files(step_dir)
  if (step_dir / checkpoint_checksums.CHECKSUMS_FILE).is_file():
    checkpoint_checksums.verify_checksums(step_dir,
                                          checkpoint_checksums.read_checksums(step_dir))
  elif _saved_with_checksums(manager, step):
    raise CorruptCheckpointError(f'checkpoint {step_dir}: '
                                 f'{checkpoint_checksums.CHECKSUMS_FILE} is missing (the '
                                 'step was saved with one)')
  else:
    logging.warning('Checkpoint %s has no %s (saved before checksums were kept): its '
                    'files are checked for presence, not for changed bytes.', step_dir,
                    checkpoint_checksums.CHECKSUMS_FILE)


def _saved_with_checksums(manager: ocp.CheckpointManager, step: int) -> bool:
  try:
    custom = manager.metadata(step).custom_metadata or {}
  except Exception:  # pylint: disable=broad-except  # Unreadable step metadata: no mark.
    return False
  return _CHECKSUMS_KEY in custom


def _check_files(step_dir: pathlib.Path) -> None:
  """Raises CorruptCheckpointError when an item or a file of a step is missing or empty."""
  for item in (_STATE, _META):
    if not (step_dir / item).is_dir():
      raise CorruptCheckpointError(f'checkpoint {step_dir}: the {item!r} item is missing')
    files = [p for p in (step_dir / item).rglob('*') if p.is_file()]
    if not files:
      raise CorruptCheckpointError(f'checkpoint {step_dir}: the {item!r} item holds no file')
  for name in _REQUIRED_FILES:
    if not (step_dir / name).is_file():
      raise CorruptCheckpointError(f'checkpoint {step_dir}: {name} is missing')
  for item in (_STATE, _META):
    files = [p for p in (step_dir / item).rglob('*') if p.is_file()]
    empty = [p for p in files if p.stat().st_size == 0]
    if empty:
      raise CorruptCheckpointError(f'checkpoint {step_dir}: {empty[0].relative_to(step_dir)}'
                                   ' is empty (truncated)')


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
    CorruptCheckpointError: the step's files are missing, truncated, unreadable or
      changed since the save (their SHA-256 differs from the step's checksums.json).
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
    _check_step(manager, path, step)
    try:
      meta = manager.restore(step, args=ocp.args.Composite(
          **{_META: ocp.args.JsonRestore()}))[_META]
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds.
      raise CorruptCheckpointError(f'checkpoint {path / str(step)}: the meta item does not '
                                   f'restore ({_reason(e)})') from None
    stage = meta.get('stage')
    if expected_stage is not None and stage != expected_stage:
      raise ValueError(f'checkpoint {str(path)!r} step {step} holds stage {stage!r}, '
                       f'expected stage {expected_stage!r}')
    state = _restore_state_on_one_device(manager, path, step)
  finally:
    manager.close()
  variables = {'params': state['params'], **(state.get('collections') or {})}
  meta = {**meta, 'step': step}
  logging.info('Loaded %s variables of step %d from %s', stage, step, path)
  return variables, meta


def _restore_state_on_one_device(manager: ocp.CheckpointManager, path: pathlib.Path,
                                 step: int) -> Any:
  """The saved state of `step` with every array on the first local device."""
  # The saved shardings may name devices this process lacks (e.g. a run on 8 devices
  # restored on 1).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    tree = manager.item_metadata(step)[_STATE].tree
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), tree,
        is_leaf=lambda leaf: isinstance(leaf, ocp.metadata.ArrayMetadata))
    return manager.restore(step, args=ocp.args.Composite(
        **{_STATE: ocp.args.StandardRestore(abstract)}))[_STATE]
  except Exception as e:  # pylint: disable=broad-except  # orbax and tensorstore raise many kinds.
    raise CorruptCheckpointError(f'checkpoint {path / str(step)}: the state item does not '
                                 f'restore ({_reason(e)})') from None


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
