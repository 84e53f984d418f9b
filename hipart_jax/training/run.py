"""Run plumbing of the training loop: metrics files, console lines, preemption,
distributed start-up."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import signal
from typing import Mapping, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from hipart_jax import progress

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a SIGTERM death.


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


def _number(value: float) -> str:
  if not math.isfinite(value):
    return str(value)
  return f'{value:.1f}' if abs(value) >= 10 else f'{value:.4g}'


def format_step_line(step: int, num_steps: int, fields: Sequence[tuple[str, float]],
                     steps_per_second: float | None = None) -> str:
  """The console's line for a step, e.g.
  'step 1200/3000  loss 0.1234  eval/mpjpe_mm 12.3  4.5 steps/s  ETA 6m40s'.

  Args:
    step, num_steps: the step just done and the run's last one.
    fields: (name, value) pairs in order; values of 10 or more with one decimal, others
      with 4 significant digits.
    steps_per_second: the recent rate; with it the line ends with the rate and the time
      the remaining steps take at that rate.
  """
  parts = [f'step {step}/{num_steps}'] + [f'{name} {_number(value)}'
                                          for name, value in fields]
  if steps_per_second is not None:
    remaining = ((num_steps - step) / steps_per_second if steps_per_second > 0
                 else float('inf'))
    parts += [f'{steps_per_second:.3g} steps/s', f'ETA {progress.format_duration(remaining)}']
  return '  '.join(parts)


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Starts multi-process JAX for pods (`config.multihost` or a coordinator address)."""
  if ((config.multihost or os.environ.get('JAX_COORDINATOR_ADDRESS'))
      and not jax.distributed.is_initialized()):
    jax.distributed.initialize()
