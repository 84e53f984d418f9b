r"""HiARM generation speed: the four orderings, and the key/value cache vs recomputing.

  python -m bench.decoding [--config=synthetic] [--decoding_batch_sizes=1,256] \
      [--output=decoding.json] [--smoke]

For each batch size and ordering (raster, center_to_periphery, sparse_to_dense,
hierarchical) times greedy `decoding.generate` with the cache (`use_cache=True`, each step
runs only the new group's slots) and without it (`use_cache=False`, each step reruns the
full teacher-forced pass over S + 2T slots). All variants share one randomly initialized
HiARM (the parameters do not depend on the ordering) and are timed round-robin, so the
ratios are measured side by side:
  speedup_vs_raster = time(raster) / time(ordering)      (cached)
  cache_speedup     = time(recompute) / time(cached)     (same ordering)
"""

from __future__ import annotations

from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bench import common
from bench import roofline as roofline_lib
from hipart_jax import orderings
from hipart_jax import skeleton
from hipart_jax.models import decoding
from hipart_jax.models import hiarm as hiarm_lib

_BATCH_SIZES = flags.DEFINE_list('decoding_batch_sizes', ['1', '64', '256'],
                                 'Batch sizes of the decoding benchmark.')
_RECOMPUTE_MAX_BATCH = flags.DEFINE_integer(
    'recompute_max_batch', 64, 'Also time use_cache=False at batch sizes up to this (-1: '
    'never). Recomputing is slow: 65 full passes per call for raster.')

SMOKE_BATCH_SIZES = (2,)
# Smoke runs compile two orderings: the baseline and the paper's.
SMOKE_ORDERINGS = ('hierarchical', 'raster')


def _step_flops(hiarm: hiarm_lib.HiARM, variables: Any, rows: int, use_cache: bool
                ) -> float:
  """FLOPs of one decoding step for `rows` rows.

  Cached: `HiARM.decode_step` (W packed slots) on a [rows, H, S + T, Dh] cache;
  recompute: the full teacher-forced pass. The sampling (argmax over the vocabulary) is
  left out: it is comparisons, not FLOPs.
  """
  order = hiarm.decoding_order
  s, t = order.num_sparse, order.num_tokens
  if use_cache:
    shape = (rows, hiarm.num_heads, s + t, hiarm.head_dim)  # Head-major, condition first.
    cache = tuple(jnp.zeros(shape) for _ in range(hiarm.num_layers))
    fn = jax.jit(lambda v, k, val, step, ids: hiarm.apply(
        v, k, val, step, ids, method=hiarm_lib.HiARM.decode_step))
    return common.lowered_flops(fn, variables, cache, cache, jnp.int32(1),
                                jnp.zeros((rows, order.step_width), jnp.int32))
  cond = jnp.zeros((rows, s, 2))
  fn = jax.jit(lambda v, c, w, a, b: hiarm.apply(v, c, w, a, b))
  return common.lowered_flops(fn, variables, cond, cond[..., 0],
                             jnp.zeros((rows, s), jnp.int32),
                             jnp.zeros((rows, order.num_dense), jnp.int32))


def uncounted_scan_flops(hiarm: hiarm_lib.HiARM, variables: Any, rows: int,
                         use_cache: bool = True) -> float:
  """The FLOPs of `decoding.generate` that XLA's cost analysis leaves out: it counts the
  body of the scan over the G groups once, so G - 1 steps are missing."""
  return (hiarm.decoding_order.num_groups - 1) * _step_flops(hiarm, variables, rows,
                                                             use_cache)


def generation_cost(hiarm: hiarm_lib.HiARM, variables: Any, cond_2d: jax.Array,
                    cond_confidence: jax.Array, *, use_cache: bool = True,
                    num_samples: int = 1, smoke: bool = False) -> dict[str, Any]:
  """Compiles greedy `decoding.generate`; FLOPs corrected for the scan's trip count."""
  stats = common.compile_stats(decoding.generate, hiarm, variables, cond_2d,
                               cond_confidence, jax.random.key(0), use_cache=use_cache,
                               num_samples=num_samples,
                               compiler_options=common.compiler_options(smoke))
  rows = cond_2d.shape[0] * num_samples
  stats['flops'] += uncounted_scan_flops(hiarm, variables, rows, use_cache)
  return stats


def run(*, prefix: str, batch_sizes: list[int], recompute_max_batch: int, smoke: bool,
        repeats: int, min_time: float,
        ordering_names: tuple[str, ...] = orderings.ORDERING_NAMES) -> dict[str, Any]:
  """The decoding report (see the module docstring)."""
  roofline = roofline_lib.smoke_roofline() if smoke else roofline_lib.measure_roofline(
      repeats=repeats)
  peak = roofline['peak_flops_per_s']['float32']
  hierarchy = skeleton.default_hierarchy()
  models = common.init_models(prefix, hierarchy, smoke=smoke)
  variables = models['variables']['frozen_hiarm']
  base = models['hiarm']
  if 'raster' not in ordering_names:
    raise ValueError('the ratios need the raster ordering')
  modules = {name: base.clone(ordering=name) for name in ordering_names}
  rows = []
  for batch in batch_sizes:
    points, confidence, _ = common.random_keypoints(np.random.default_rng(batch), batch)
    cond = jnp.asarray(points / 1000.0 - 0.5)  # Roughly the model frame; values irrelevant.
    conf = jnp.asarray(confidence)
    recompute = batch <= recompute_max_batch
    variants, costs = {}, {}
    for name, module in modules.items():
      logging.info('Compiling %s generation at batch %d.', name, batch)
      for cached in (True, False) if recompute else (True,):
        key = (name, cached)
        costs[key] = generation_cost(module, variables, cond, conf, use_cache=cached,
                                     smoke=smoke)
        compiled = costs[key]['compiled']
        variants[key] = (lambda c=compiled: c(variables, cond, conf, jax.random.key(0)))
    logging.info('Timing %d variants at batch %d.', len(variants), batch)
    timings = common.time_interleaved(variants, repeats=repeats, min_time=min_time)
    raster = timings[('raster', True)]['best_s']
    for name, module in modules.items():
      order = module.decoding_order
      cached = timings[(name, True)]
      cost = costs[(name, True)]
      row = dict(batch_size=batch, ordering=name, num_steps=order.num_groups,
                 step_width=order.step_width, seconds=cached['best_s'],
                 median_seconds=cached['median_s'], compile_s=cost['compile_s'],
                 poses_per_s=batch / cached['best_s'], flops=cost['flops'],
                 efficiency=common.efficiency(cost['flops'], cached['best_s'], peak),
                 speedup_vs_raster=raster / cached['best_s'])
      if recompute:
        slow = timings[(name, False)]
        row.update(recompute_seconds=slow['best_s'],
                   recompute_flops=costs[(name, False)]['flops'],
                   cache_speedup=slow['best_s'] / cached['best_s'])
      rows.append(row)
  return dict(machine=common.machine_info(), roofline=roofline,
              config=dict(prefix=prefix, smoke=smoke, hiarm=models['configs']['hiarm'],
                          parameters=common.count_parameters(variables['params']),
                          batch_sizes=list(batch_sizes),
                          recompute_max_batch=recompute_max_batch,
                          orderings=list(ordering_names)),
              results=rows)


def tables(report: dict[str, Any]) -> list[str]:
  columns = ['batch_size', 'ordering', 'num_steps', 'step_width', 'seconds',
             'poses_per_s', 'efficiency', 'speedup_vs_raster']
  if any('cache_speedup' in row for row in report['results']):
    columns += ['recompute_seconds', 'cache_speedup']
  return [roofline_lib.roofline_table(report['roofline']),
          common.format_table(report['results'], columns,
                              'HiARM greedy generation (cached unless stated)')]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  smoke = common.SMOKE.value
  batch_sizes = list(SMOKE_BATCH_SIZES) if smoke else [int(b) for b in _BATCH_SIZES.value]
  report = run(prefix=common.CONFIG.value, batch_sizes=batch_sizes,
               recompute_max_batch=_RECOMPUTE_MAX_BATCH.value,
               smoke=smoke, repeats=1 if smoke else common.REPEATS.value,
               min_time=0.0 if smoke else common.MIN_TIME.value,
               ordering_names=SMOKE_ORDERINGS if smoke else orderings.ORDERING_NAMES)
  common.finish(report, tables(report))


if __name__ == '__main__':
  app.run(main)
