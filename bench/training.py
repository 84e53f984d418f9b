r"""Training speed: one train step per stage, the host input pipeline, weak scaling.

  python -m bench.training [--config=synthetic] [--data_dir=DIR] [--output=training.json]
      [--scaling_devices=1,2,4,8] [--nohost_pipeline] [--smoke]

On a GPU/TPU host: `--nohost_pipeline --scaling_devices=` times the train steps alone
(no TFDS needed; weak scaling is a CPU check).

1. Train steps. For each stage (msst, hiarm, lifter hierarchical, lifter sparse) at its
   config's batch size: the real `trainer.make_train_step` under `execution.map_step`
   (state donated, the config's XLA options and microbatches, as the trainer runs it),
   fed a fixed random batch, on as many CPU devices as the config's execution asks
   (`execution.Execution`; the process gets the most any stage asks for, and a
   one-device stage runs on the first), or every local GPU/TPU device.
   Reports steps/s, examples/s, compile time, FLOPs and efficiency (÷ the float32 matmul
   peak measured in this process; efficiency_alongside ÷ the peak's product timed
   round-robin with the step, so both see the same load on a shared machine). Earlier
   stages are randomly initialized and saved as checkpoints in a temporary directory,
   so the stages load them as in a real run.
2. Host input pipeline. `input_pipeline.TrainBatches` over the TFDS `synthetic_poses`
   source named by the stage config (`tfds.data_source`, array_record), with each stage's
   augmentation: seconds per batch of the first epoch, split into reading (TFDS
   decoding), stacking and augmentation + model frame, and of later epochs (examples
   from the warm `ExampleCache`); then the train step fed by the prefetching iterator,
   as in `loop.train_and_evaluate`. host_margin = host batches/s ÷ step rate: below 1
   the host is the bottleneck.
3. Weak scaling. Subprocesses with `XLA_FLAGS=--xla_force_host_platform_device_count=N`
   run one stage's step at a fixed per-device batch; steps/s for each N. Fake CPU
   devices share the machine's cores, so this checks the parallel code path and its
   overhead, not a speed-up.

The three measurements share the stages' setup (configs, frozen checkpoints, device
counts), which is why they stay one script of more than 400 lines.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from bench import common
from bench import decoding as decoding_bench
from bench import roofline as roofline_lib
from hipart_jax import input_pipeline
from hipart_jax import skeleton
from hipart_jax import execution
from hipart_jax.training import stages
from hipart_jax.training import trainer

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data directory of the host '
                                'pipeline benchmark (built there if missing).')
_DATASET = flags.DEFINE_string('dataset', None, 'TFDS name (default: the stage config\'s; '
                               'smoke: synthetic_poses/tiny).')
_HOST_BATCHES = flags.DEFINE_integer('host_batches', 20, 'Batches per host measurement.')
_HOST_PIPELINE = flags.DEFINE_bool('host_pipeline', True,
                                   'Measure the host input pipeline (needs TFDS).')
_SCALING_DEVICES = flags.DEFINE_list('scaling_devices', ['1', '2', '4', '8'],
                                     'Fake CPU device counts of the weak-scaling run '
                                     '(empty: no weak-scaling run).')
_SCALING_STAGE = flags.DEFINE_string('scaling_stage', 'msst',
                                     'Stage of the weak-scaling run (msst or lifter_sparse).')
_PER_DEVICE = flags.DEFINE_integer('scaling_per_device_batch', 32,
                                   'Per-device batch of the weak-scaling run.')
_WORKER = flags.DEFINE_bool('scaling_worker', False,
                            'Internal: run one weak-scaling measurement, print JSON.')
_STAGES = flags.DEFINE_list('stages', None, 'Stages to time (default: all).')

STAGE_NAMES = ('msst', 'hiarm', 'lifter_hierarchical', 'lifter_sparse')
SMOKE_BATCH = 8
SMOKE_DATASET = 'synthetic_poses/tiny'
SMOKE_SCALING_DEVICES = (1, 2)
# Smoke runs time the stages that need no checkpoint and one checkpoint (each train-step
# compilation costs 5-15 s on 2 cores, whatever the model size).
SMOKE_STAGES = ('hiarm', 'lifter_sparse')
SMOKE_SCALING_STAGE = 'lifter_sparse'
REPO = pathlib.Path(__file__).resolve().parents[1]


def stage_config(prefix: str, name: str, smoke: bool):
  """The config of a benchmark stage name ('lifter_sparse' → lifter config 'sparse')."""
  stage, _, arg = name.partition('_')
  config = common.stage_config(prefix, stage, arg or None, smoke=smoke)
  if smoke:
    config.batch_size = SMOKE_BATCH
  return config


def save_frozen_stages(prefix: str, hierarchy: skeleton.Hierarchy, workdir: pathlib.Path,
                       smoke: bool) -> dict[str, str]:
  """Randomly initialized MSST and HiARM checkpoints, as their trainers would save them.

  Returns:
    {'msst': workdir, 'hiarm': workdir} for `config.init_from`.
  """
  models = common.init_models(prefix, hierarchy, smoke=smoke)
  variables = models['variables']
  msst_vars, hiarm_vars = variables['frozen_msst'], variables['frozen_hiarm']
  items = dict(
      msst=(dict(params=msst_vars['params'],
                 collections={k: v for k, v in msst_vars.items() if k != 'params'}), {}),
      hiarm=(dict(params=hiarm_vars['params'], collections={'frozen_msst': msst_vars}),
             {'frozen_models': {'msst': models['configs']['msst']}}))
  dirs = {}
  for stage, (state, extra) in items.items():
    config = stage_config(prefix, stage, smoke)
    dirs[stage] = str(workdir / stage)
    meta = {'stage': stage, 'model': models['configs'][stage],
            'hierarchy': hierarchy.to_json(), **extra}
    common.save_step_zero(dirs[stage], config, state, meta)
  return dirs


def make_stage(prefix: str, name: str, hierarchy: skeleton.Hierarchy,
               frozen_dirs: dict[str, str], smoke: bool):
  """(config, stage) of a benchmark stage name, reading the frozen checkpoints."""
  config = stage_config(prefix, name, smoke)
  for earlier, directory in frozen_dirs.items():
    config.init_from[earlier] = directory
  return config, stages.make_stage(config, hierarchy)


def device_batch(batch: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
  return input_pipeline.shard_for_devices(batch, num_devices)


def stage_devices(config, smoke: bool) -> int:
  """Devices a stage's train step is mapped over: on a CPU host the config's
  `execution.cpu.devices` (smoke runs keep one), else every local device."""
  if jax.default_backend() != 'cpu':
    return jax.local_device_count()
  count = 1 if smoke else execution.resolve_cpu_devices(
      execution.Execution.for_backend(config.execution).devices)
  if count not in (1, jax.local_device_count()):
    raise ValueError(f'config.execution asks for {count} CPU devices; this process has '
                     f'{jax.local_device_count()} (main() creates the most any stage asks '
                     'for)')
  return count


def compile_step(stage, stage_name: str, config, state, batch, smoke: bool
                 ) -> dict[str, Any]:
  """Compiles the trainer's step (donated state, the config's XLA options and
  microbatches) once: executable, FLOPs and memory.

  `batch` is [devices, per_device, ...]: one device runs the step under 'vmap', several
  under the config's parallelism. FLOPs are always counted on one device, whole batch.
  """
  devices = jax.tree.leaves(batch)[0].shape[0]
  plan = execution.Execution.for_backend(config.execution)
  microbatch_size = plan.microbatch_size
  step = execution.map_step(
      trainer.make_train_step(stage, microbatch_size=microbatch_size), donate_state=True,
      compiler_options=plan.compiler_options, num_devices=devices)
  stats = common.compile_stats(step, state, batch,
                               compiler_options=common.compiler_options(smoke))
  # The same step with every loop body counted once only, on one device: the whole
  # batch at once (no microbatch scan); generation (a scan inside the hierarchical
  # lifter's step) corrected separately.
  whole = jax.tree.map(lambda x: x.reshape((1, -1) + x.shape[2:]), batch)
  stats['flops'] = common.lowered_flops(
      execution.map_step(trainer.make_train_step(stage), num_devices=1), state, whole)
  if stage_name == 'lifter_hierarchical':
    stats['flops'] += decoding_bench.uncounted_scan_flops(
        stage.hiarm, stage.frozen['frozen_hiarm'], jax.tree.leaves(whole)[0].shape[1])
  stats.update(microbatch_size=microbatch_size, devices=devices,
               implementation='vmap' if devices == 1 else 'pmap')
  return stats


def time_steps(step, state, batches: Iterator, *, repeats: int, min_time: float,
               alongside: Callable[[], Any] | None = None):
  """Times a donating step fed from an iterator; returns (timing dict, final state).

  With `alongside`, that thunk is timed round-robin with the step (`time_interleaved`)
  and its timing is returned under the key 'alongside'.
  """
  holder = [state]

  def one():
    holder[0], metrics = step(holder[0], next(batches))
    return metrics

  if alongside is None:
    return common.time_call(one, repeats=repeats, min_time=min_time), holder[0]
  timings = common.time_interleaved({'step': one, 'alongside': alongside}, repeats=repeats,
                                    min_time=min_time)
  return dict(timings['step'], alongside=timings['alongside']), holder[0]


def repeat_forever(value):
  while True:
    yield value


def measure_stage(prefix: str, name: str, hierarchy, frozen_dirs, peak: float, *,
                  smoke: bool, repeats: int, min_time: float, peak_matmul_size: int
                  ) -> tuple[dict[str, Any], Any]:
  """Steps/s and efficiency of one stage's train step; returns (row, stage objects).

  The float32 product of `peak_matmul_size` (the roofline's peak) is timed round-robin
  with the step: 'efficiency_alongside' divides by that peak, measured in the same
  minutes as the step, so a slow spell of a shared machine affects both.
  """
  config, stage = make_stage(prefix, name, hierarchy, frozen_dirs, smoke)
  num_actions = config.model.get('num_actions', 1)
  devices = stage_devices(config, smoke)
  batch = device_batch(common.random_batch(np.random.default_rng(0), hierarchy,
                                           config.batch_size, num_actions), devices)
  state = trainer.create_train_state(stage, config, jax.random.key(0),
                                   jax.tree.map(lambda x: x[0], batch))
  cost = compile_step(stage, name, config, state, batch, smoke)
  step = cost['compiled']
  timing, state = time_steps(step, state, repeat_forever(batch), repeats=repeats,
                             min_time=min_time,
                             alongside=roofline_lib.matmul_thunk(peak_matmul_size))
  seconds = timing['best_s']
  peak_alongside = (roofline_lib.matmul_flops(peak_matmul_size)
                    / timing['alongside']['best_s'])
  row = dict(stage=name, batch_size=config.batch_size, seconds=seconds,
             median_seconds=timing['median_s'], steps_per_s=1 / seconds,
             examples_per_s=config.batch_size / seconds,
             compile_s=cost['compile_s'], microbatch_size=cost['microbatch_size'],
             devices=devices, implementation=cost['implementation'],
             flops=cost['flops'], gflops_per_s=cost['flops'] / seconds / 1e9,
             efficiency=common.efficiency(cost['flops'], seconds, peak),
             peak_alongside_gflops_per_s=peak_alongside / 1e9,
             efficiency_alongside=common.efficiency(cost['flops'], seconds, peak_alongside),
             peak_memory_bytes=cost['peak_memory_bytes'],
             parameters=common.count_parameters(state.params),
             # The dots-alone ceiling times one program's dots; with several devices
             # running it side by side that is no bound: not measured.
             **roofline_lib.ceiling_fields(cost, peak,
                                           enabled=(not smoke and devices == 1
                                                    and common.DOT_CEILING.value)))
  return row, (config, stage, step, state)


def _host_phases(batches: input_pipeline.TrainBatches, source, data, hierarchy,
                 num: int) -> dict[str, float]:
  """Seconds per batch of each host phase of an uncached pipeline (the first epoch)."""
  totals = dict(read_s=0.0, stack_s=0.0, augment_s=0.0)
  for step in range(num):
    indices = batches.indices(step)
    start = time.perf_counter()
    examples = input_pipeline.read_examples(source, indices)
    read = time.perf_counter()
    stacked = input_pipeline.stack_examples(examples, data.input_source, hierarchy)
    stack = time.perf_counter()
    batches.batch_from_stacked(step, indices, stacked)
    totals['read_s'] += read - start
    totals['stack_s'] += stack - read
    totals['augment_s'] += time.perf_counter() - stack
  return {key: value / num for key, value in totals.items()}


def measure_host(config, name: str, dataset: str | None, data_dir: str | None,
                 num_batches: int, step, state, step_seconds: float, devices: int
                 ) -> dict[str, Any]:
  """Host pipeline rates of one stage config, and the step fed by the real iterator.

  First epoch: read (TFDS decoding) + stack + augmentation/model frame, uncached. Later
  epochs: batches from the warm `input_pipeline.ExampleCache`. Fed: the train step
  driven by `TrainBatches.iterate` (prefetching thread, warm cache), as in the trainer.
  """
  data = config.dataset
  data.name = dataset or data.name
  data.data_dir = data_dir
  source, hierarchy, _ = input_pipeline.load_source(data)
  layout = dict(global_batch_size=config.batch_size, num_local_devices=devices, seed=0)
  uncached = data.copy_and_resolve_references()
  uncached.cache_max_examples = 0
  phases = _host_phases(input_pipeline.TrainBatches(source, hierarchy, uncached, **layout),
                        source, data, hierarchy, num_batches)
  batches = input_pipeline.TrainBatches(source, hierarchy, data, **layout)
  start = time.perf_counter()
  batches.stacked(np.arange(len(source)))  # Fills the cache (one pass over the split).
  fill_s = time.perf_counter() - start
  start = time.perf_counter()
  for step_number in range(num_batches):
    batches.batch(step_number)
  cached_s = (time.perf_counter() - start) / num_batches
  iterator = batches.iterate(0)
  try:
    state, metrics = step(state, next(iterator))  # Starts the prefetching thread.
    common.block(metrics)
    start = time.perf_counter()
    for _ in range(num_batches):
      state, metrics = step(state, next(iterator))
    common.block(metrics)
    fed_seconds = (time.perf_counter() - start) / num_batches
  finally:
    iterator.close()
  first_epoch_s = phases['read_s'] + phases['stack_s'] + phases['augment_s']
  return dict(stage=name, dataset=data.name, batch_size=config.batch_size,
              examples=len(source), **phases,
              first_epoch_batches_per_s=1 / first_epoch_s,
              cache_fill_s=fill_s, cached_s=cached_s, host_batches_per_s=1 / cached_s,
              host_examples_per_s=config.batch_size / cached_s,
              step_batches_per_s=1 / step_seconds,
              host_margin=step_seconds / cached_s,
              first_epoch_host_margin=step_seconds / first_epoch_s,
              fed_steps_per_s=1 / fed_seconds,
              fed_slowdown=fed_seconds / step_seconds)


# --------------------------------------------------------------------------------------
# Weak scaling.


def scaling_worker(prefix: str, name: str, per_device: int, smoke: bool, repeats: int,
                   min_time: float) -> dict[str, Any]:
  """One weak-scaling point: this process's devices, `per_device` examples each."""
  if name not in ('msst', 'lifter_sparse'):
    raise ValueError(f'--scaling_stage must need no earlier stage, got {name!r}')
  hierarchy = skeleton.default_hierarchy()
  num_devices = jax.local_device_count()
  config, stage = make_stage(prefix, name, hierarchy, {}, smoke)
  config.batch_size = per_device * num_devices
  num_actions = config.model.get('num_actions', 1)
  batch = device_batch(common.random_batch(np.random.default_rng(0), hierarchy,
                                           config.batch_size, num_actions), num_devices)
  state = trainer.create_train_state(stage, config, jax.random.key(0),
                                   jax.tree.map(lambda x: x[0], batch))
  step = compile_step(stage, name, config, state, batch, smoke)['compiled']
  timing, _ = time_steps(step, state, repeat_forever(batch), repeats=repeats,
                         min_time=min_time)
  return dict(devices=num_devices, per_device_batch=per_device,
              global_batch=config.batch_size, seconds=timing['best_s'],
              steps_per_s=1 / timing['best_s'],
              examples_per_s=config.batch_size / timing['best_s'])


def run_scaling(prefix: str, name: str, per_device: int, device_counts: list[int], *,
                smoke: bool, repeats: int, min_time: float) -> list[dict[str, Any]]:
  """Runs `scaling_worker` in one subprocess per device count (in this process for the
  count this process already has, on the CPU backend)."""
  rows = []
  for count in device_counts:
    logging.info('Weak scaling: %d devices.', count)
    if count == jax.local_device_count() and jax.default_backend() == 'cpu':
      rows.append(scaling_worker(prefix, name, per_device, smoke, repeats, min_time))
      continue
    env = dict(os.environ)
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '')
                        + f' --xla_force_host_platform_device_count={count}').strip()
    env['JAX_PLATFORMS'] = 'cpu'
    env.pop(execution.CLIENT_THREADS_ENV, None)  # This process's, sized for its devices.
    env[execution.CLIENT_THREADS_ENV] = str(execution.cpu_client_threads(count, env))
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    command = [sys.executable, '-m', 'bench.training', '--scaling_worker',
               f'--config={prefix}', f'--scaling_stage={name}',
               f'--scaling_per_device_batch={per_device}', f'--repeats={repeats}',
               f'--min_time={min_time}'] + (['--smoke'] if smoke else [])
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode:
      raise RuntimeError(f'weak-scaling worker with {count} devices failed:\n'
                         f'{result.stderr[-3000:]}')
    rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
  base = rows[0]['steps_per_s']
  for row in rows:
    row['relative_steps_per_s'] = row['steps_per_s'] / base
  return rows


# --------------------------------------------------------------------------------------


def run(*, prefix: str, stage_names: list[str], dataset: str | None, data_dir: str | None,
        host_pipeline: bool, host_batches: int, scaling_stage: str, per_device: int,
        scaling_devices: list[int], smoke: bool, repeats: int, min_time: float) -> dict[str, Any]:
  """The training report (see the module docstring)."""
  roofline = roofline_lib.smoke_roofline() if smoke else roofline_lib.measure_roofline(
      repeats=repeats)
  peak = roofline['peak_flops_per_s']['float32']
  hierarchy = skeleton.default_hierarchy()
  rows, host_rows = [], []
  with tempfile.TemporaryDirectory() as workdir:
    frozen_dirs = save_frozen_stages(prefix, hierarchy, pathlib.Path(workdir), smoke)
    for name in stage_names:
      needed = {} if name in ('msst', 'lifter_sparse') else (
          {'msst': frozen_dirs['msst']} if name == 'hiarm' else frozen_dirs)
      logging.info('Train step of %s.', name)
      row, (config, _, step, state) = measure_stage(
          prefix, name, hierarchy, needed, peak, smoke=smoke, repeats=repeats,
          min_time=min_time, peak_matmul_size=roofline_lib.peak_size(roofline))
      rows.append(row)
      if host_pipeline:
        host_rows.append(measure_host(config, name, dataset, data_dir, host_batches, step,
                                      state, row['seconds'], row['devices']))
  scaling = run_scaling(prefix, scaling_stage, per_device, scaling_devices, smoke=smoke,
                        repeats=repeats, min_time=min_time) if scaling_devices else []
  return dict(machine=common.machine_info(), roofline=roofline,
              config=dict(prefix=prefix, smoke=smoke, stages=list(stage_names),
                          scaling_stage=scaling_stage, scaling_per_device_batch=per_device),
              train_steps=rows, host_pipeline=host_rows, weak_scaling=scaling)


def tables(report: dict[str, Any]) -> list[str]:
  out = [
      roofline_lib.roofline_table(report['roofline']),
      common.format_table(report['train_steps'],
                          ['stage', 'batch_size', 'devices', 'microbatch_size', 'seconds',
                           'steps_per_s', 'examples_per_s', 'compile_s', 'gflops_per_s',
                           'efficiency', 'efficiency_alongside', 'efficiency_ceiling',
                           'dot_flops_fraction', 'peak_memory_bytes'],
                          'Train step (the config\'s devices and microbatches, donated '
                          'state, fixed batch)')]
  if report['host_pipeline']:
    out.append(common.format_table(
        report['host_pipeline'],
        ['stage', 'read_s', 'stack_s', 'augment_s', 'first_epoch_batches_per_s', 'cached_s',
         'host_batches_per_s', 'step_batches_per_s', 'first_epoch_host_margin',
         'host_margin', 'fed_steps_per_s', 'fed_slowdown'],
        'Host input pipeline (seconds per batch; margin < 1: host-bound)'))
  if report['weak_scaling']:
    out.append(common.format_table(report['weak_scaling'],
                                   ['devices', 'per_device_batch', 'global_batch',
                                    'steps_per_s', 'examples_per_s', 'relative_steps_per_s'],
                                   f'Weak scaling ({report["config"]["scaling_stage"]}, '
                                   'fake CPU devices sharing the cores)'))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  smoke = common.SMOKE.value
  repeats = 1 if smoke else common.REPEATS.value
  min_time = 0.0 if smoke else common.MIN_TIME.value
  if _WORKER.value:
    print(json.dumps(scaling_worker(common.CONFIG.value, _SCALING_STAGE.value,
                                    _PER_DEVICE.value, smoke, common.REPEATS.value,
                                    common.MIN_TIME.value)))
    return
  stage_names = list(_STAGES.value or (SMOKE_STAGES if smoke else STAGE_NAMES))
  if not smoke:  # Before JAX starts: the most CPU devices any timed stage asks for.
    execution.configure_cpu_devices(max(
        execution.resolve_cpu_devices(execution.Execution.for_backend(
            stage_config(common.CONFIG.value, name, False).execution, 'cpu').devices)
        for name in stage_names))
  report = run(
      prefix=common.CONFIG.value,
      stage_names=stage_names,
      dataset=_DATASET.value or (SMOKE_DATASET if smoke else None),
      data_dir=_DATA_DIR.value, host_pipeline=_HOST_PIPELINE.value,
      host_batches=2 if smoke else _HOST_BATCHES.value,
      scaling_stage=SMOKE_SCALING_STAGE if smoke else _SCALING_STAGE.value,
      per_device=2 if smoke else _PER_DEVICE.value,
      scaling_devices=([] if not _SCALING_DEVICES.value else
                       list(SMOKE_SCALING_DEVICES) if smoke
                       else [int(d) for d in _SCALING_DEVICES.value]),
      smoke=smoke, repeats=repeats, min_time=min_time)
  common.finish(report, tables(report))


if __name__ == '__main__':
  app.run(main)
