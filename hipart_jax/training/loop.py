"""The training loop: data wiring, steps, evaluation, checkpoints, resumption.

`train_and_evaluate(config, workdir)` trains `config.stage` to `config.num_train_steps`,
resuming from the latest checkpoint of `workdir`. How the steps run on this host
(devices, microbatches, XLA options) is `execution.Execution.for_backend(
config.execution)`. The loop stops with `NonFiniteError` when a step's loss or gradient
is not finite; such a state is never saved, so the workdir keeps the last good
checkpoint.
"""

from __future__ import annotations

import functools
import pathlib
import time
from typing import Any, Mapping

from absl import logging
import jax
import ml_collections
import numpy as np

from hipart_jax import checkpoints
from hipart_jax import drawn_batches
from hipart_jax import execution
from hipart_jax import input_pipeline
from hipart_jax import progress
from hipart_jax import skeleton
from hipart_jax.training import run as run_lib
from hipart_jax.training import stages
from hipart_jax.training import trainer


class NonFiniteError(FloatingPointError):
  """A train step produced a non-finite loss or gradient."""


def _make_data(config, train_source, eval_source, hierarchy):
  """(TrainBatches, eval batch factory, hierarchy) for this process."""
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
      global_batch_size=config.eval_batch_size,
      occlusion=data.get('eval_occlusion') or None, **layout)
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
              stage: trainer.Stage | None = None) -> dict[str, Any]:
  """What a checkpoint records beside the state, for later stages and tools: the stage
  name, its model config, the hierarchy, the run config, and what the stage adds
  (`stage.meta()`, e.g. the configs of the frozen models it embeds)."""
  meta = {'stage': config.stage, 'model': config.model.to_dict(),
          'hierarchy': hierarchy.to_json(), 'config': config.to_json_best_effort()}
  if hasattr(stage, 'meta'):
    meta.update(stage.meta())
  return meta


def _check_finite(pending: list[tuple[int, Any]], params: Any, last_saved: int | None
                  ) -> None:
  """Raises `NonFiniteError` for the first of the pending steps' metrics that has a
  non-finite loss or gradient."""
  for step, finite in pending:
    culprit = trainer.first_nonfinite(finite, params)
    if culprit is not None:
      kept = ('no checkpoint was written' if last_saved is None
              else f'the last checkpoint (step {last_saved}) is kept')
      raise NonFiniteError(f'step {step}: non-finite {culprit}; training stopped and '
                           f'{kept}')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       stage: trainer.Stage | None = None, train_source: Any = None,
                       eval_source: Any = None, hierarchy: Any = None
                       ) -> tuple[trainer.TrainState, dict[str, float] | None]:
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
    NonFiniteError: a step's loss or gradient was not finite (nothing of it is saved).
    SystemExit: with `run.PREEMPTED_EXIT_CODE` after SIGTERM, once the checkpoint is
      saved.
  """
  run_lib.maybe_initialize_distributed(config)
  workdir = pathlib.Path(workdir)
  train_batches, make_eval_batches, hierarchy = _make_data(
      config, train_source, eval_source, hierarchy)
  if stage is None:
    stage = stages.make_stage(config, hierarchy)

  first_shard = jax.tree.map(lambda x: x[0], train_batches.batch(0))
  state = trainer.create_train_state(stage, config, jax.random.key(config.seed),
                                     first_shard)
  logging.info('Stage %s: %d parameters.', config.stage,
               trainer.count_parameters(state.params))
  manager = checkpoints.make_manager(workdir, config)
  restored = checkpoints.restore_latest(manager, state)
  if restored is not None:
    state, restored_meta = restored
    if restored_meta.get('stage') != config.stage:
      raise ValueError(f'{workdir} holds a checkpoint of stage '
                       f'{restored_meta.get("stage")!r}, not {config.stage!r}')
  meta = make_meta(config, hierarchy, stage)
  if restored is not None and 'frozen_steps' in restored_meta:
    # The restored state embeds the frozen stages of the first start, not today's.
    meta['frozen_steps'] = restored_meta['frozen_steps']
  plan = execution.Execution.for_backend(config.get('execution'))
  logging.info('Train step over %d local device(s): %s.', jax.local_device_count(), plan)
  train_step = execution.map_step(
      trainer.make_train_step(stage, microbatch_size=plan.microbatch_size),
      donate_state=True, compiler_options=plan.compiler_options)
  eval_step = execution.map_step(trainer.make_eval_step(stage))
  eval_inputs_step = trainer.make_eval_inputs_step(stage)
  if eval_inputs_step is not None:
    eval_inputs_step = execution.map_step(eval_inputs_step, per_device_outputs=True)
  eval_inputs = []  # Per eval batch, on the host: filled by the first evaluation.
  schedule = trainer.make_schedule(config.optimizer, config.num_train_steps)
  writer = run_lib.MetricWriter(workdir, enabled=jax.process_index() == 0,
                                tensorboard=config.get('tensorboard', True))
  # Params of the first state only name the leaves of a non-finite gradient.
  param_structure = jax.tree.map(lambda x: 0, state.params)

  def eval_batches():
    """The eval batches, with the stage's `eval_inputs` added: computed in the first
    pass, reused in later ones (eval batches are deterministic)."""
    if eval_inputs_step is None:
      yield from make_eval_batches()
      return
    first = not eval_inputs
    for index, batch in enumerate(make_eval_batches()):
      if first:
        eval_inputs.append(jax.device_get(eval_inputs_step(state, batch)))
      yield {**batch, **eval_inputs[index]}

  def evaluate(step: int) -> dict[str, float]:
    metrics = trainer.finalize_eval(eval_step(state, batch) for batch in eval_batches())
    metrics = {f'eval/{name}': value for name, value in metrics.items()}
    logging.info('%s', run_lib.format_step_line(
        step, config.num_train_steps,
        _console_fields(metrics, 'eval/loss', config.get('best_metric'), None)))
    logging.debug('step %d eval: %s', step, _format(metrics))
    writer.write(step, metrics)
    return metrics

  step = first_step = int(state.step)
  last_saved = step if restored is not None else None
  eval_metrics, pending = None, []
  last_log_time, last_log_step = time.perf_counter(), step
  batches = train_batches.iterate(step)
  # Steps on a bar where stderr is a terminal; the log lines below are the record.
  meter = progress.Progress('training', config.num_train_steps, unit='step',
                            initial=step, log_every_seconds=None)
  try:
    with run_lib.PreemptionWatcher(config.log_every_steps) as preemption:
      while step < config.num_train_steps:
        state, metrics = train_step(state, next(batches))
        step += 1
        meter.update(1)
        pending.append((step, metrics))
        last = step == config.num_train_steps
        logs = step % config.log_every_steps == 0 or last
        saves = (step % config.eval_every_steps == 0 or last
                 or step % config.checkpoint_every_steps == 0)
        preempted = preemption.requested(step) and not last
        if step == first_step + 1 and not (logs or saves or preempted):
          # The first step compiles the train step (tens of seconds on a CPU): keep it
          # out of the steps/s of the first window.
          jax.block_until_ready(metrics)
          logging.info('First step (compilation included): %.1f s.',
                       time.perf_counter() - last_log_time)
          last_log_time, last_log_step = time.perf_counter(), step
        if logs or saves or preempted:
          # Fetching the metrics waits for the steps, so the timing below is honest; a
          # non-finite step is caught here, before anything of it is saved.
          fetched = jax.device_get([m for _, m in pending])
          _check_finite([(s, m.pop(trainer.FINITE)) for (s, _), m in zip(pending, fetched)],
                        param_structure, last_saved)
        if logs:
          scalars = {f'train/{name}': float(np.mean(values)) for name, values in
                     jax.tree.map(lambda *v: np.stack(v), *fetched).items()}
          steps_per_second = (step - last_log_step) / (time.perf_counter() - last_log_time)
          scalars.update({'train/learning_rate': float(schedule(step - 1)),
                          'steps_per_second': steps_per_second,
                          'examples_per_second': steps_per_second * config.batch_size})
          logging.info('%s', run_lib.format_step_line(
              step, config.num_train_steps,
              _console_fields(scalars, 'train/loss', config.get('best_metric'),
                              eval_metrics), steps_per_second))
          logging.debug('step %d: %s', step, _format(scalars))
          writer.write(step, scalars)
          pending = []
          last_log_time, last_log_step = time.perf_counter(), step
        elif saves or preempted:  # Checked already; kept for the next log line.
          pending = [(s, {**m, trainer.FINITE: np.ones(1, bool)})
                     for (s, _), m in zip(pending, fetched)]
        step_eval = None
        if step % config.eval_every_steps == 0 or last:
          eval_metrics = step_eval = evaluate(step)
        # Evaluated steps are always saved, so that the best one can be kept.
        if step_eval is not None or step % config.checkpoint_every_steps == 0:
          checkpoints.save(manager, step, state, meta, step_eval)
          last_saved = step
        if step_eval is not None:  # Evaluation time is not training time.
          last_log_time = time.perf_counter()
        if preempted:
          checkpoints.save(manager, step, state, meta)
          checkpoints.wait_until_finished(manager)
          logging.warning('Preempted: saved step %d; exiting.', step)
          raise SystemExit(run_lib.PREEMPTED_EXIT_CODE)
  finally:
    meter.close()
    batches.close()
    checkpoints.wait_until_finished(manager)
    writer.close()
  return state, eval_metrics


def _console_fields(scalars: Mapping[str, float], loss_name: str, main_metric: str | None,
                    last_eval: Mapping[str, float] | None) -> list[tuple[str, float]]:
  """The console line's (name, value) pairs: the loss ('loss' for training's), then the
  stage's main metric (`config.best_metric`) from `scalars` or else the last evaluation."""
  fields = ([(loss_name.removeprefix('train/'), scalars[loss_name])]
            if loss_name in scalars else [])
  if main_metric and main_metric != loss_name:
    for source in (scalars, last_eval or {}):
      if main_metric in source and source[main_metric] is not None:
        fields.append((main_metric, source[main_metric]))
        break
  return fields


def _format(scalars: Mapping[str, float]) -> str:
  return ', '.join(f'{name}={value:.6g}' for name, value in sorted(scalars.items()))
