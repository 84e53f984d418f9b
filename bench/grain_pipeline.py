r"""Grain (Google's JAX data loader) beside `input_pipeline.TrainBatches`.

  python -m bench.grain_pipeline [--config=synthetic] [--pipeline_stage=msst]
      [--data_dir=DIR] [--dataset=NAME] [--grain_threads=2] [--warm_batches=0]
      [--repeats=3] [--output=grain.json] [--smoke]

The hand-written pipeline would give way to grain only if grain keeps three properties:
(1) a batch is a pure function of (seed, step, process), so a resumed job sees the
batches of an uninterrupted one; (2) per-process sharding of every global batch; (3)
host throughput at least that of `TrainBatches`. This script builds the grain
equivalent over the same TFDS source (the stage config's `synthetic_poses` split, as
`bench.training` reads it; built under --data_dir when missing) and measures all three.

The grain pipeline (`grain_batches`, grain's `MapDataset` API):
  source → shuffle(seed) (grain's per-epoch index shuffle, epoch e seeded seed + e)
  → repeat() → [process::process_count] → batch(local batch) → map_with_index(step →
  `TrainBatches.batch_from_stacked`: the project's augmentation and model frame with
  `default_rng([seed, step, process])`) → to_iter_dataset(ReadOptions(threads)).
Global step s takes positions [s*B, (s+1)*B) of grain's order, so the strided shard
keeps each process inside the global batch, as `TrainBatches`' contiguous slice does.
Two sources: 'grain' reads records through `MapDataset.source` and stacks them
(`input_pipeline.stack_examples`) in the batch function (grain 0.2.18's `batch` reads
its parent one element at a time: its batched-read pushdown is an experiment switched
off in the release); 'grain_cached' shuffles and batches indices only and takes
stacked rows from the project's `ExampleCache` (which reads missing examples with the
source's batched read), the cache `TrainBatches` uses for every epoch after the first.

Checks. (1) For each grain variant: the batches of an uninterrupted iterator equal
those of an iterator restored from the first one's checkpoint state (`get_state`, a
JSON round trip, `set_state` on a freshly built pipeline) and those of random access
(`dataset[step]`), bit for bit, across an epoch boundary. (2) At each checked step the
indices of two processes' shards together are the global batch's (as multisets: each
global position is read by exactly one process). Also reported: whether grain's order
is `TrainBatches`' (a port changes the data order of existing runs) and whether grain's
epoch seeds overlap between runs (seed s, epoch e + 1 is seed s + 1, epoch e).

Timing. The variants run round-robin in one process over the same source and batch
size, after one read of every record (the page cache is warm for all); each repeat builds
every pipeline afresh (cold caches) and times the first epoch (the steps covering it
once) and then `--warm_batches` later steps, each phase through a bounded iterator with
the pipeline's prefetching. Best of the repeats. A shared machine's load moves those
phase timings by more than the differences measured, so the same steps are also timed
without prefetching, batch by batch, every variant building each step's batch in turn
in one thread (`time_batch_by_batch`), in wall and thread CPU time.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator, Sequence

from absl import app
from absl import flags
from absl import logging
import grain
import numpy as np

from bench import common
from bench import training
from hipart_jax import input_pipeline
from hipart_jax import skeleton

FLAGS = flags.FLAGS
_STAGE = flags.DEFINE_string('pipeline_stage', 'msst', 'Stage whose config (dataset, '
                             'augmentation, batch size) the pipelines follow.')
_GRAIN_THREADS = flags.DEFINE_list('grain_threads', ['2'],
                                   'ReadOptions.num_threads of the timed grain pipelines '
                                   '(each a variant).')
_WARM_BATCHES = flags.DEFINE_integer('warm_batches', 0, 'Batches timed after the first '
                                     'epoch (0: one more epoch).')

SMOKE_GRAIN_THREADS = (2,)
PROCESS_COUNT = 2  # Processes of the sharding check.


def grain_batches(source: Sequence[input_pipeline.Example], hierarchy: skeleton.Hierarchy,
                  data, *, global_batch_size: int, num_local_devices: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  cached: bool = False) -> grain.MapDataset:
  """The grain equivalent of `TrainBatches`: a `MapDataset` whose item s is step s's batch.

  Args:
    source, hierarchy, data, global_batch_size, num_local_devices, seed, process_index,
      process_count: as for `input_pipeline.TrainBatches`.
    cached: shuffle indices and read stacked rows from `TrainBatches`' `ExampleCache`
      (the data config's `cache_max_examples` decides) instead of records through
      `MapDataset.source`.
  Returns:
    endless MapDataset of batches: dicts of `BATCH_KEYS`, each
    [num_local_devices, per_device, ...].
  """
  # Built for its augmentation and model frame (`batch_from_stacked`) and its cache only;
  # its constructor also validates the batch layout.
  project = input_pipeline.TrainBatches(
      source, hierarchy, data, global_batch_size=global_batch_size,
      num_local_devices=num_local_devices, seed=seed, process_index=process_index,
      process_count=process_count)
  num_examples = len(source)
  if cached:
    dataset = grain.MapDataset.range(num_examples)
  else:
    # Each record tagged with its index in the split (the batch's `index` key).
    dataset = grain.MapDataset.source(source).map_with_index(
        lambda position, example: (position % num_examples, example))
  dataset = dataset.shuffle(seed=seed).repeat()[process_index::process_count]

  def stack(items: Sequence[Any]) -> tuple[np.ndarray, input_pipeline.Batch]:
    if cached:
      indices = np.asarray(items, np.int64)
      return indices, project.stacked(indices)
    indices = np.asarray([index for index, _ in items], np.int64)
    return indices, input_pipeline.stack_examples([example for _, example in items],
                                                  data.input_source, hierarchy)

  dataset = dataset.batch(project.local_batch_size, drop_remainder=True, batch_fn=stack)
  return dataset.map_with_index(
      lambda step, stacked: project.batch_from_stacked(step, *stacked))


def read_options(threads: int, data) -> grain.ReadOptions:
  """`threads` workers, each building whole batches; as many batches ahead as
  `TrainBatches.iterate` keeps (`prefetch_batches`), at least one per thread."""
  return grain.ReadOptions(num_threads=threads,
                           prefetch_buffer_size=max(threads, data.prefetch_batches))


# --------------------------------------------------------------------------------------
# Checks.


def _equal(a: input_pipeline.Batch, b: input_pipeline.Batch) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def check_resume(make: Callable[[], grain.MapDataset], threads: int, data,
                 num_steps: int, resume_step: int, random_access_steps: Sequence[int]
                 ) -> dict[str, Any]:
  """Uninterrupted vs checkpoint-restored batches of steps [resume_step, num_steps), and
  random access (`dataset[step]`) at `random_access_steps`.

  `make` builds the pipeline afresh each time (a restarted job).
  """
  options = read_options(threads, data)
  iterator = iter(make().to_iter_dataset(options))
  uninterrupted = [next(iterator) for _ in range(num_steps)]
  first = iter(make().to_iter_dataset(options))
  for _ in range(resume_step):
    next(first)
  state = json.loads(json.dumps(first.get_state()))  # As a checkpoint stores it.
  restored = iter(make().to_iter_dataset(options))
  restored.set_state(state)
  resumed = [next(restored) for _ in range(resume_step, num_steps)]
  fresh = make()
  return dict(
      resumed_equal=all(_equal(a, b) for a, b in zip(uninterrupted[resume_step:], resumed)),
      random_access_equal=all(_equal(uninterrupted[s], fresh[s])
                              for s in random_access_steps),
      iterator_state=state)


def check_sharding(make: Callable[..., grain.MapDataset], steps: Sequence[int]
                   ) -> dict[str, bool]:
  """Two processes' shards of each step together read the global batch, once each."""
  whole = make(process_index=0, process_count=1)
  shards = [make(process_index=p, process_count=PROCESS_COUNT) for p in range(PROCESS_COUNT)]
  cover = True
  for step in steps:
    parts = [shard[step]['index'].ravel() for shard in shards]
    cover &= bool(np.array_equal(np.sort(np.concatenate(parts)),
                                 np.sort(whole[step]['index'].ravel())))
  return dict(shards_cover_global_batch=cover, processes=PROCESS_COUNT,
              checked_steps=list(steps))


def epoch_seeds_overlap(num_examples: int, seed: int) -> bool:
  """Whether grain's order of (seed, epoch 1) is that of (seed + 1, epoch 0)."""
  later = grain.MapDataset.range(num_examples).shuffle(seed=seed).repeat()
  other = grain.MapDataset.range(num_examples).shuffle(seed=seed + 1)
  return [later[num_examples + i] for i in range(num_examples)] == list(other)


# --------------------------------------------------------------------------------------
# Timing.


def time_round_robin(variants: dict[str, Callable[[], Callable[[int, int], Iterator]]],
                     first_batches: int, warm_batches: int, repeats: int
                     ) -> dict[str, dict[str, float]]:
  """Seconds per batch of the first epoch and of warm epochs; best and median of repeats.

  `variants[name]()` builds a pipeline afresh (cold caches) and returns `steps(start,
  stop)`: an iterator over the batches of those steps. Bounded iterators prefetch
  nothing past the timed steps, so prefetch depths do not move work between phases.
  The variants run interleaved, each repeat in the same order.
  """
  samples = {name: dict(first=[], warm=[]) for name in variants}
  for repeat in range(max(repeats, 1)):
    for name, build in variants.items():
      logging.info('Repeat %d: %s.', repeat, name)
      steps = build()
      for phase, start, stop in (('first', 0, first_batches),
                                 ('warm', first_batches, first_batches + warm_batches)):
        begin = time.perf_counter()
        for _ in steps(start, stop):
          pass
        samples[name][phase].append((time.perf_counter() - begin) / (stop - start))
  return {name: dict(first_epoch_s=min(s['first']), warm_s=min(s['warm']),
                     first_epoch_median_s=float(np.median(s['first'])),
                     warm_median_s=float(np.median(s['warm'])))
          for name, s in samples.items()}


def time_batch_by_batch(batch_fns: dict[str, Callable[[], Callable[[int], Any]]],
                        first_batches: int, warm_batches: int
                        ) -> dict[str, dict[str, float]]:
  """Seconds per batch without prefetching, the variants interleaved batch by batch.

  `batch_fns[name]()` builds a pipeline afresh and returns `batch(step)`. Step by step
  every variant builds its batch in this thread (the order rotating), so a spell of
  foreign load on a shared machine hits all of them alike; thread CPU time is reported
  beside wall time because it barely moves with that load.
  """
  fns = {name: build() for name, build in batch_fns.items()}
  names = list(fns)
  totals = {name: dict(first_wall=0.0, first_cpu=0.0, warm_wall=0.0, warm_cpu=0.0)
            for name in names}
  for step in range(first_batches + warm_batches):
    phase = 'first' if step < first_batches else 'warm'
    for name in names[step % len(names):] + names[:step % len(names)]:
      wall, cpu = time.perf_counter(), time.thread_time()
      fns[name](step)
      totals[name][f'{phase}_cpu'] += time.thread_time() - cpu
      totals[name][f'{phase}_wall'] += time.perf_counter() - wall
  return {name: dict(first_epoch_s=t['first_wall'] / first_batches,
                     first_epoch_cpu_s=t['first_cpu'] / first_batches,
                     warm_s=t['warm_wall'] / warm_batches,
                     warm_cpu_s=t['warm_cpu'] / warm_batches)
          for name, t in totals.items()}


def train_batches_variant(source, hierarchy, data, layout
                          ) -> Callable[[], Callable[[int, int], Iterator]]:
  """`TrainBatches` as the trainer iterates it (`iterate`'s prefetch, bounded)."""
  def build():
    batches = input_pipeline.TrainBatches(source, hierarchy, data, **layout)
    return lambda start, stop: input_pipeline.prefetch(
        batches.batch, range(start, stop), data.prefetch_batches)
  return build


def grain_variant(make: Callable[[], grain.MapDataset], options: grain.ReadOptions
                  ) -> Callable[[], Callable[[int, int], Iterator]]:
  """A grain pipeline's steps through its threaded iterator (`to_iter_dataset`)."""
  def build():
    dataset = make()
    return lambda start, stop: iter(dataset[start:stop].to_iter_dataset(options))
  return build


def run(*, prefix: str, stage: str, dataset: str | None, data_dir: str | None,
        grain_threads: Sequence[int], warm_batches: int, repeats: int, smoke: bool
        ) -> dict[str, Any]:
  """The comparison report (see the module docstring)."""
  config = training.stage_config(prefix, stage, smoke)
  data = config.dataset
  data.name = dataset or data.name
  data.data_dir = data_dir
  source, hierarchy, _ = input_pipeline.load_source(data)
  batch_size, seed = config.batch_size, 0
  layout = dict(global_batch_size=batch_size, num_local_devices=1, seed=seed)
  steps_per_epoch = -(-len(source) // batch_size)  # Covers the first epoch once.
  warm_batches = warm_batches or steps_per_epoch

  def make(cached: bool, **process) -> grain.MapDataset:
    return grain_batches(source, hierarchy, data, cached=cached, **{**layout, **process})

  # Steps 0 .. steps_per_epoch + 1 cross the first epoch boundary; the restored job
  # resumes before it.
  num_steps = steps_per_epoch + 2
  boundary_steps = [0, steps_per_epoch - 1, steps_per_epoch, steps_per_epoch + 1]
  checks = {}
  for cached in (False, True):
    name = 'grain_cached' if cached else 'grain'
    logging.info('Checks of %s.', name)
    checks[name] = dict(
        **check_resume(lambda c=cached: make(c), grain_threads[-1], data, num_steps,
                       min(2, steps_per_epoch - 1), boundary_steps),
        **check_sharding(lambda c=cached, **p: make(c, **p), boundary_steps[:3]))
  project = input_pipeline.TrainBatches(source, hierarchy, data, **layout)
  grain_records, grain_rows = make(False), make(True)
  same_as_cache = all(_equal(grain_records[s], grain_rows[s]) for s in range(2))
  order = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat()
  same_order = all(
      list(order[s * batch_size:(s + 1) * batch_size]) == project.indices(s).tolist()
      for s in range(num_steps))

  # Every record read once first: the source's files are in the page cache for all.
  input_pipeline.read_examples(source, range(len(source)))
  variants = {'train_batches': train_batches_variant(source, hierarchy, data, layout)}
  for threads in grain_threads:
    for cached in (False, True):
      name = f'{"grain_cached" if cached else "grain"}_t{threads}'
      variants[name] = grain_variant(lambda c=cached: make(c), read_options(threads, data))
  timings = time_round_robin(variants, steps_per_epoch, warm_batches, repeats)
  logging.info('Batch by batch, no prefetching.')

  def train_batch_fn():
    return input_pipeline.TrainBatches(source, hierarchy, data, **layout).batch

  in_thread = time_batch_by_batch(
      {'train_batches': train_batch_fn,
       'grain': lambda: make(False).__getitem__,
       'grain_cached': lambda: make(True).__getitem__},
      steps_per_epoch, warm_batches)
  base_thread = in_thread['train_batches']
  thread_rows = [dict(pipeline=name, **t,
                      first_epoch_ratio=base_thread['first_epoch_s'] / t['first_epoch_s'],
                      first_epoch_cpu_ratio=(base_thread['first_epoch_cpu_s']
                                             / t['first_epoch_cpu_s']),
                      warm_ratio=base_thread['warm_s'] / t['warm_s'],
                      warm_cpu_ratio=base_thread['warm_cpu_s'] / t['warm_cpu_s'])
                 for name, t in in_thread.items()]
  base = timings['train_batches']
  rows = []
  for name, timing in timings.items():
    rows.append(dict(
        pipeline=name, **timing, first_epoch_batches_per_s=1 / timing['first_epoch_s'],
        warm_batches_per_s=1 / timing['warm_s'],
        first_epoch_ratio=base['first_epoch_s'] / timing['first_epoch_s'],
        warm_ratio=base['warm_s'] / timing['warm_s']))
  grain_rows_only = [r for r in rows if r['pipeline'] != 'train_batches']
  grain_thread_rows = [r for r in thread_rows if r['pipeline'] != 'train_batches']
  best_cpu_first = max(r['first_epoch_cpu_ratio'] for r in grain_thread_rows)
  best_cpu_warm = max(r['warm_cpu_ratio'] for r in grain_thread_rows)
  verdict = dict(
      pure_function_of_seed_step_process=all(
          c['resumed_equal'] and c['random_access_equal'] for c in checks.values()),
      per_process_sharding=all(c['shards_cover_global_batch'] for c in checks.values()),
      best_grain_first_epoch_ratio=max(r['first_epoch_ratio'] for r in grain_rows_only),
      best_grain_warm_ratio=max(r['warm_ratio'] for r in grain_rows_only),
      best_grain_first_epoch_cpu_ratio=best_cpu_first,
      best_grain_warm_cpu_ratio=best_cpu_warm,
      # Judged on the batch-by-batch CPU time: the figure the machine's load moves least.
      throughput_at_least_today=bool(best_cpu_first >= 1 and best_cpu_warm >= 1))
  return dict(
      machine=common.machine_info(),
      config=dict(prefix=prefix, stage=stage, dataset=data.name, examples=len(source),
                  batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                  warm_batches=warm_batches, repeats=repeats,
                  grain_threads=list(grain_threads), grain=grain.__version__,
                  train_batches_prefetch=data.prefetch_batches, smoke=smoke),
      checks=checks, cached_equals_records=same_as_cache,
      same_order_as_train_batches=same_order,
      epoch_seeds_overlap=epoch_seeds_overlap(len(source), seed),
      timings=rows, batch_by_batch=thread_rows, verdict=verdict)


def tables(report: dict[str, Any]) -> list[str]:
  checks = [dict(pipeline=name, **{k: v for k, v in c.items() if k != 'iterator_state'})
            for name, c in report['checks'].items()]
  return [
      common.format_table(checks, ['pipeline', 'resumed_equal', 'random_access_equal',
                                   'shards_cover_global_batch'],
                          'Checks (1) resume and random access, (2) sharding'),
      common.format_table(report['timings'],
                          ['pipeline', 'first_epoch_s', 'first_epoch_batches_per_s',
                           'first_epoch_ratio', 'warm_s', 'warm_batches_per_s',
                           'warm_ratio'],
                          'Host batches, round-robin (ratio: TrainBatches time / this '
                          'time; > 1: faster than TrainBatches)'),
      common.format_table(report['batch_by_batch'],
                          ['pipeline', 'first_epoch_s', 'first_epoch_cpu_s',
                           'first_epoch_ratio', 'first_epoch_cpu_ratio', 'warm_s',
                           'warm_cpu_s', 'warm_ratio', 'warm_cpu_ratio'],
                          'Batch by batch in one thread, interleaved (no prefetching)'),
      '\n'.join(f'{key}: {value}' for key, value in report['verdict'].items())]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  smoke = common.SMOKE.value
  report = run(
      prefix=common.CONFIG.value, stage=_STAGE.value,
      dataset=FLAGS.dataset or (training.SMOKE_DATASET if smoke else None),
      data_dir=FLAGS.data_dir,
      grain_threads=(list(SMOKE_GRAIN_THREADS) if smoke
                     else [int(t) for t in _GRAIN_THREADS.value]),
      warm_batches=2 if smoke else _WARM_BATCHES.value,
      repeats=1 if smoke else common.REPEATS.value, smoke=smoke)
  common.finish(report, tables(report))


if __name__ == '__main__':
  app.run(main)
