"""Shared helpers of the benchmark scripts: flags, timing, FLOP counts, JSON and tables.

Every script defines `run(...) -> dict` (the JSON report, plain Python values) and an
absl `main` that calls it with flag values, prints a table and writes the JSON. The
flags below are shared by all scripts (defined once here, so several scripts can be
imported into one process, as the tests do).

Timing. `time_call` compiles first (the first call), then takes the best of several
repeats of a loop that runs at least `min_time` seconds: the minimum is the figure least
disturbed by other processes on a shared machine. `time_interleaved` runs the variants
being compared round-robin, so a burst of foreign load hits all of them alike and their
ratios stay meaningful.

FLOPs come from XLA's cost analysis of the compiled executable. XLA counts the body of a
while loop (`lax.scan`, `lax.map`) once, whatever its trip count, so callers add the
missing executions (`bench.decoding.uncounted_scan_flops` for generation's scan; the
chunked and multi-device pipelines are credited with the plain pipeline's count).
"""

from __future__ import annotations

import functools
import importlib
import time
from typing import Any, Callable, Mapping, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bench.reporting import machine_info  # pylint: disable=unused-import
from bench.reporting import write_json

SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny sizes and one repeat: checks that the '
                          'script runs and emits every key, in seconds (no timing value).')
OUTPUT = flags.DEFINE_string('output', None, 'Write the JSON report to this file.')
REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats per measurement (best kept).')
DOT_CEILING = flags.DEFINE_bool('dot_ceiling', True, 'Time every matrix product of the '
                                 'compiled programs alone (efficiency_ceiling columns).')
CONFIG = flags.DEFINE_string(
    'config', 'synthetic', 'Config prefix: model sizes and batch sizes from '
    'launch/configs/<prefix>_{msst,hiarm,lifter}.py.')
MIN_TIME = flags.DEFINE_float('min_time', 0.5, 'Minimum seconds of one timed repeat.')


# XLA options for code whose speed does not matter (initializers, smoke runs): about half
# the compile time of the default optimization level on CPU, slower code.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def compiler_options(smoke: bool) -> dict[str, Any] | None:
  return FAST_COMPILE if smoke else None


# --------------------------------------------------------------------------------------
# Timing.


def block(tree: Any) -> Any:
  """Waits for every array of a pytree."""
  return jax.block_until_ready(tree)


def _one_repeat(fn: Callable[[], Any], min_time: float) -> float:
  """Seconds per call of `fn`, looping until `min_time` has passed."""
  calls, start = 0, time.perf_counter()
  while True:
    block(fn())
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_time:
      return elapsed / calls


def time_call(fn: Callable[[], Any], *, repeats: int, min_time: float) -> dict[str, float]:
  """Times a thunk; the first call (compilation, warm-up) is timed on its own.

  Returns:
    {'first_call_s', 'best_s', 'median_s'} seconds per call.
  """
  start = time.perf_counter()
  block(fn())
  first = time.perf_counter() - start
  samples = [_one_repeat(fn, min_time) for _ in range(max(repeats, 1))]
  return dict(first_call_s=first, best_s=min(samples), median_s=float(np.median(samples)))


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, repeats: int,
                     min_time: float) -> dict[str, dict[str, float]]:
  """Times several thunks round-robin (each warmed up first); see `time_call`."""
  first = {}
  for name, fn in fns.items():
    start = time.perf_counter()
    block(fn())
    first[name] = time.perf_counter() - start
  samples = {name: [] for name in fns}
  for _ in range(max(repeats, 1)):
    for name, fn in fns.items():
      samples[name].append(_one_repeat(fn, min_time))
  return {name: dict(first_call_s=first[name], best_s=min(samples[name]),
                     median_s=float(np.median(samples[name]))) for name in fns}


# --------------------------------------------------------------------------------------
# Compilation, FLOPs and memory.


def _first(analysis: Any) -> Mapping[str, Any]:
  """cost_analysis() returns a dict (newer JAX) or a one-element list of dicts."""
  if isinstance(analysis, (list, tuple)):
    return analysis[0] if analysis else {}
  return analysis or {}


def compile_stats(jitted: Any, *args, compiler_options: Mapping[str, Any] | None = None,
                  **kwargs) -> dict[str, Any]:
  """Compiles `jitted` (a jit or pmap function) for these arguments.

  `compiler_options`: XLA options, e.g. `FAST_COMPILE` for smoke runs.

  Returns:
    compiled: the executable; compile_s: lowering + compilation seconds;
    flops, xla_flops: XLA's FLOP count (while-loop bodies counted once, see the module
      doc); callers correct `flops` for loops and keep `xla_flops`;
    bytes_accessed: XLA's estimate of memory traffic;
    peak_memory_bytes: arguments + outputs + temporaries - aliased (XLA's buffer
      assignment; on GPU/TPU the allocator's peak is reported beside it).
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile(compiler_options)
  compile_s = time.perf_counter() - start
  cost = _first(compiled.cost_analysis())
  memory = compiled.memory_analysis()
  peak = None
  if memory is not None:
    peak = int(memory.argument_size_in_bytes + memory.output_size_in_bytes
               + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  return dict(compiled=compiled, compile_s=compile_s, flops=float(cost.get('flops', 0.0)),
              xla_flops=float(cost.get('flops', 0.0)),
              bytes_accessed=float(cost.get('bytes accessed', 0.0)),
              peak_memory_bytes=peak)


def lowered_flops(jitted: Any, *args, **kwargs) -> float:
  """XLA's FLOP count of `jitted` at these arguments.

  From the unoptimized program where the backend analyses it before compilation (CPU:
  fast); backends behind the PJRT plugin API (GPU) do not, so there it comes from the
  compiled program (the two counts agree to 1-2 % on CPU). A program XLA reports no
  FLOP count for raises: a silent 0 would corrupt every correction built on it.
  """
  lowered = jitted.lower(*args, **kwargs)
  flops = _first(lowered.cost_analysis()).get('flops')
  if flops is None:
    flops = _first(lowered.compile().cost_analysis()).get('flops')
  if flops is None:
    raise RuntimeError(f'XLA reports no FLOP count for {getattr(jitted, "__name__", jitted)}'
                       f' on {jax.default_backend()}')
  return float(flops)


def device_peak_memory() -> int | None:
  """The allocator's peak bytes on device 0 (GPU/TPU; None on CPU)."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  return int(stats.get('peak_bytes_in_use', stats.get('bytes_in_use', 0)))


def efficiency(flops: float, seconds: float, peak_flops_per_s: float) -> float:
  """Achieved FLOP/s as a fraction of the measured matmul peak."""
  return flops / seconds / peak_flops_per_s if seconds > 0 and peak_flops_per_s > 0 else 0.0


# --------------------------------------------------------------------------------------
# Inputs.


def random_keypoints(rng: np.random.Generator, batch: int, image_size: int = 1000
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Plausible detector output: ([B, 17, 2] pixels, [B, 17] confidence, [B, 2] size)."""
  center = rng.uniform(0.4, 0.6, (batch, 1, 2)) * image_size
  points = center + rng.normal(0.0, 0.1 * image_size, (batch, 17, 2))
  confidence = (rng.random((batch, 17)) > 0.1).astype(np.float32)
  confidence[:, 0] = 1.0
  size = np.full((batch, 2), image_size, np.int32)
  return points.astype(np.float32), confidence, size


def random_batch(rng: np.random.Generator, hierarchy: Any, batch: int,
                 num_actions: int = 1) -> dict[str, np.ndarray]:
  """A batch with the keys and shapes of `input_pipeline.BATCH_KEYS`, random values.

  For timing train steps without a dataset (the values do not change the work done).
  """
  sizes = dict(sparse=hierarchy.num_sparse, dense=hierarchy.num_dense,
               fine=hierarchy.num_fine)
  out = dict(inputs_2d=rng.normal(0.0, 0.5, (batch, 17, 2)),
             inputs_confidence=(rng.random((batch, 17)) > 0.1).astype(np.float32),
             visible=rng.random((batch, 17)) > 0.1,
             action=rng.integers(0, max(num_actions, 1), batch).astype(np.int32),
             norm_center=rng.normal(0.0, 0.1, (batch, 2)),
             norm_scale=rng.uniform(0.2, 0.4, batch),
             image_size=np.full((batch, 2), 1000, np.int32),
             index=np.arange(batch, dtype=np.int32),
             valid=np.ones(batch, bool))
  for level, size in sizes.items():
    out[f'{level}_2d'] = rng.normal(0.0, 0.5, (batch, size, 2))
    out[f'{level}_3d'] = rng.normal(0.0, 0.3, (batch, size, 3))
  return {key: (value.astype(np.float32) if value.dtype == np.float64 else value)
          for key, value in out.items()}


def to_device(tree: Any) -> Any:
  return jax.tree.map(jnp.asarray, tree)


# --------------------------------------------------------------------------------------
# Models from stage configs.

# Model sizes of `--smoke` runs (compile in about a second each).
SMOKE_MODELS = dict(
    msst=dict(width=8, num_blocks=1, token_hidden=8, channel_hidden=8, member_dim=2,
              sparse_codebook_size=8, dense_codebook_size=8, code_dim=4),
    hiarm=dict(width=8, num_lsab=1, num_gcsab=1, num_heads=2, mlp_ratio=1),
    lifter=dict(width=8, depth=1, num_heads=2, mlp_ratio=1),
)


def stage_config(prefix: str, stage: str, arg: str | None = None, *,
                 smoke: bool = False) -> ml_collections.ConfigDict:
  """`launch/configs/<prefix>_<stage>.py`'s config (with `arg`), smoke-sized if asked.

  Args:
    prefix: the dataset prefix of the config files, e.g. 'synthetic'.
    stage: 'msst', 'hiarm' or 'lifter'.
    arg: the config's argument (HiARM ordering, lifter mode); None: its default.
    smoke: shrink the model to `SMOKE_MODELS[stage]`.
  """
  module = importlib.import_module(f'launch.configs.{prefix}_{stage}')
  config = module.get_config() if arg is None else module.get_config(arg)
  if smoke:
    config.model.update(SMOKE_MODELS[stage])
  return config


@functools.lru_cache(maxsize=4)
def init_models(prefix: str, hierarchy: Any, seed: int = 0, *, smoke: bool = False,
                ordering: str | None = None) -> dict[str, Any]:
  """Randomly initialized HiPART modules at the sizes of a config prefix's stage configs.

  Cached: scripts run in one process (tests) share the models. The initializers are
  compiled without XLA optimizations: their random-number code otherwise takes longer
  to optimize than the models themselves (10 s vs 2.6 s for the MSST on 2 cores).

  Returns:
    {'msst', 'hiarm', 'lifter': modules (the lifter in 'hierarchical' mode),
     'variables': {'params': lifter params, 'frozen_msst': MSST variables (params and
     codebooks), 'frozen_hiarm': HiARM variables}, 'configs': {stage: model config dict}}.
  """
  from hipart_jax.models import hipart  # pylint: disable=g-import-not-at-top
  configs = dict(msst=stage_config(prefix, 'msst', smoke=smoke).model,
                 hiarm=stage_config(prefix, 'hiarm', ordering, smoke=smoke).model,
                 lifter=stage_config(prefix, 'lifter', 'hierarchical', smoke=smoke).model)
  msst = hipart.build_msst(configs['msst'], hierarchy)
  hiarm = hipart.build_hiarm(configs['hiarm'], hierarchy, msst)
  lifter = hipart.build_lifter(configs['lifter'], hierarchy)
  batch = random_batch(np.random.default_rng(0), hierarchy, 2)
  levels = [batch[f'{level}_2d'] for level in ('sparse', 'dense', 'fine')]
  sparse_ids = np.zeros((2, hierarchy.num_sparse), np.int32)
  dense_ids = np.zeros((2, hierarchy.num_dense), np.int32)

  def init(rng):
    msst_rng, hiarm_rng, lifter_rng = jax.random.split(rng, 3)
    msst_variables = msst.init(msst_rng, *levels, train=False)
    hiarm_variables = hiarm.init(hiarm_rng, batch['inputs_2d'], batch['inputs_confidence'],
                                 sparse_ids, dense_ids)
    lifter_variables = lifter.init(lifter_rng, batch['inputs_2d'],
                                   batch['inputs_confidence'],
                                   dict(zip(('sparse', 'dense', 'fine'), levels)))
    return {'params': lifter_variables['params'], 'frozen_msst': dict(msst_variables),
            'frozen_hiarm': dict(hiarm_variables)}

  # One compilation instead of hundreds of eagerly dispatched initializer ops.
  rng = jax.random.key(seed)
  variables = jax.jit(init).lower(rng).compile(compiler_options=FAST_COMPILE)(rng)
  return dict(msst=msst, hiarm=hiarm, lifter=lifter, variables=variables,
              configs={name: c.to_dict() for name, c in configs.items()})


def save_step_zero(directory: str, config: ml_collections.ConfigDict,
                   state: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
  """Saves randomly initialized variables as a stage's trainer would its step 0
  (`state`: params and collections; `config`: the stage config's checkpoint fields)."""
  from hipart_jax import checkpoints  # pylint: disable=g-import-not-at-top
  manager = checkpoints.make_manager(directory, config)
  checkpoints.save(manager, 0, dict(step=np.zeros((), np.int32), **state), dict(meta))
  checkpoints.wait_until_finished(manager)
  manager.close()


def count_parameters(tree: Any) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------
# Output.


def _cell(value: Any) -> str:
  if isinstance(value, float):
    if value == 0 or 1e-3 <= abs(value) < 1e5:
      return f'{value:.4g}'
    return f'{value:.3e}'
  return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 title: str = '') -> str:
  """A fixed-width text table of `columns` from each row (missing cells blank)."""
  cells = [[_cell(row.get(c, '')) for c in columns] for row in rows]
  widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
  line = lambda values: '  '.join(v.rjust(w) for v, w in zip(values, widths))
  out = [title] if title else []
  out += [line(columns), line(['-' * w for w in widths])] + [line(r) for r in cells]
  return '\n'.join(out)


def finish(report: Mapping[str, Any], tables: Sequence[str]) -> None:
  """Prints the tables and writes the JSON (to `--output` when set)."""
  for table in tables:
    print(table, end='\n\n')
  write_json(report, OUTPUT.value)
  if OUTPUT.value:
    print(f'JSON report written to {OUTPUT.value}')


def gflops(value: float) -> float:
  return value / 1e9
