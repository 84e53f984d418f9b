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

Step cost. A cached step costs about a + b W (a: the step's fixed cost, b: the cost of one
slot, W: its slots). Raster runs G_r = 65 steps of W_r = 2 slots, hierarchical G_h = 33 of
W_h = 4: the same slot passes (every token once as a context slot, once as a query slot),
so hierarchical saves only fixed costs and

  speedup = G_r (a + W_r b) / (G_h (a + W_h b)),  at most G_r / G_h (when b = 0).

The raster order is also timed with its steps padded to W_h slots (same steps, more
slots), which gives a and b side by side; `step_costs` reports them, the speedup they
predict, the slot cost a given speedup target needs, the throughput that cost means for
the slot's FLOPs, and the speedup the fixed cost allows with slots at the matmul peak.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

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

# The target for the hierarchical order's speed-up over raster.
TARGET_SPEEDUP = 1.7

SMOKE_BATCH_SIZES = (2,)
# Smoke runs compile two orderings: the baseline and the paper's.
SMOKE_ORDERINGS = ('hierarchical', 'raster')


@dataclasses.dataclass(frozen=True)
class WidenedOrdering(orderings.Ordering):
  """An ordering whose decoding steps are padded to `width` slots (padding slots are
  masked out): the same steps, more slots, to measure a slot's cost."""

  width: int = 0

  @functools.cached_property
  def step_width(self) -> int:
    return max(self.width, orderings.Ordering.step_width.func(self))


def step_cost(*, base_s: float, widened_s: float, base_steps: int, base_width: int,
              widened_width: int, fast_s: float, fast_steps: int, fast_width: int,
              slot_flops: float, peak_flops_per_s: float,
              target_speedup: float = TARGET_SPEEDUP) -> dict[str, float | None]:
  """Splits a cached step into a + b W and bounds an ordering's speed-up with it.

  Args:
    base_s, widened_s: seconds of the baseline ordering (raster) with its own step width
      and padded to `widened_width`; base_steps, base_width: its steps and width.
    fast_s, fast_steps, fast_width: the ordering compared (hierarchical).
    slot_flops: FLOPs of one slot of one step (the whole batch).
    peak_flops_per_s: the matmul peak.
    target_speedup: the speed-up of interest.
  Returns:
    step_fixed_s (a), slot_s (b), fixed_per_slot (a / b), predicted_fast_s and
    predicted_speedup (from a and b), measured_speedup, step_count_limit
    (base_steps / fast_steps, the speed-up as b → 0), needed_slot_s (the largest b that
    gives target_speedup with this a; 0 if none does), needed_slot_flops_per_s and
    needed_share_of_peak (that b's throughput on slot_flops; None if no b does),
    speedup_at_peak (the speed-up with this a and slots at the matmul peak).
  """
  if widened_width <= base_width:
    raise ValueError(f'widened_width {widened_width} must exceed base_width {base_width}')
  slot_s = (widened_s - base_s) / (base_steps * (widened_width - base_width))
  fixed_s = base_s / base_steps - base_width * slot_s
  speedup = lambda a, b: base_steps * (a + base_width * b) / (fast_steps * (a + fast_width * b))
  # speedup(a, b) = R  <=>  a (G_b - R G_f) = b (R G_f W_f - G_b W_b).
  numerator = base_steps - target_speedup * fast_steps
  denominator = target_speedup * fast_steps * fast_width - base_steps * base_width
  if denominator <= 0:
    raise ValueError(f'target_speedup {target_speedup} is reached whatever the slot cost')
  needed_slot_s = max(fixed_s * numerator / denominator, 0.0)
  peak_slot_s = slot_flops / peak_flops_per_s
  needed_rate = slot_flops / needed_slot_s if needed_slot_s > 0 else None
  return dict(step_fixed_s=fixed_s, slot_s=slot_s, fixed_per_slot=fixed_s / slot_s,
              predicted_fast_s=fast_steps * (fixed_s + fast_width * slot_s),
              predicted_speedup=speedup(fixed_s, slot_s), measured_speedup=base_s / fast_s,
              step_count_limit=base_steps / fast_steps, slot_flops=slot_flops,
              needed_slot_s=needed_slot_s, needed_slot_flops_per_s=needed_rate,
              needed_share_of_peak=needed_rate and needed_rate / peak_flops_per_s,
              speedup_at_peak=speedup(fixed_s, peak_slot_s))


def _step_flops(hiarm: hiarm_lib.HiARM, variables: Any, rows: int, use_cache: bool
                ) -> float:
  """FLOPs of one decoding step for `rows` rows.

  Cached: `HiARM.decode_step` (W packed slots) on a [rows, H, S + T + W, Dh] cache;
  recompute: the full teacher-forced pass. The sampling (argmax over the vocabulary) is
  left out: it is comparisons, not FLOPs.
  """
  order = hiarm.decoding_order
  s, t = order.num_sparse, order.num_tokens
  if use_cache:
    shape = (rows, hiarm.num_heads, s + t + order.step_width, hiarm.head_dim)  # Head-major.
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
                         use_cache: bool = True, *, step_flops: float | None = None
                         ) -> float:
  """The FLOPs of `decoding.generate` that XLA's cost analysis leaves out: it counts the
  body of the scan over the G groups once, so G - 1 steps are missing. `step_flops`:
  one step's FLOPs when already known (else lowered here)."""
  if step_flops is None:
    step_flops = _step_flops(hiarm, variables, rows, use_cache)
  return (hiarm.decoding_order.num_groups - 1) * step_flops


def generation_cost(hiarm: hiarm_lib.HiARM, variables: Any, cond_2d: jax.Array,
                    cond_confidence: jax.Array, *, use_cache: bool = True,
                    num_samples: int = 1, smoke: bool = False) -> dict[str, Any]:
  """Compiles greedy `decoding.generate`; FLOPs corrected for the scan's trip count.

  Returns `common.compile_stats`'s dict, plus 'step_flops': one step's FLOPs."""
  stats = common.compile_stats(decoding.generate, hiarm, variables, cond_2d,
                               cond_confidence, jax.random.key(0), use_cache=use_cache,
                               num_samples=num_samples,
                               compiler_options=common.compiler_options(smoke))
  rows = cond_2d.shape[0] * num_samples
  stats['step_flops'] = _step_flops(hiarm, variables, rows, use_cache)
  stats['flops'] += uncounted_scan_flops(hiarm, variables, rows, use_cache,
                                         step_flops=stats['step_flops'])
  return stats


def measure_step_cost(thunks: dict[str, Callable[[], Any]],
                      orders: dict[str, orderings.Ordering], step_flops: dict[str, float],
                      *, repeats: int, min_time: float,
                      peak_flops_per_s: float) -> dict[str, float | None]:
  """`step_cost` of greedy generation from the raster, widened and fast orderings.

  Args:
    thunks: {'raster', 'widened', 'fast'}: a call of each one's compiled generation.
    orders: their orderings, same keys.
    step_flops: {'raster', 'widened'}: the FLOPs of one cached step of each
      (`generation_cost`'s 'step_flops').
    repeats, min_time: the report's timing settings.
    peak_flops_per_s: the matmul peak.

  The step cost is a difference of times, so the three are timed round-robin with three
  times the repeats, each a fifth as long: their best is less exposed to the slow spells
  of a shared machine. A slot's FLOPs are the two raster steps' difference per extra slot.
  """
  timings = common.time_interleaved(thunks, repeats=3 * repeats, min_time=min_time / 5)
  best = lambda name: timings[name]['best_s']
  extra_slots = orders['widened'].step_width - orders['raster'].step_width
  slot_flops = (step_flops['widened'] - step_flops['raster']) / extra_slots
  return step_cost(base_s=best('raster'), widened_s=best('widened'),
                   base_steps=orders['raster'].num_groups,
                   base_width=orders['raster'].step_width,
                   widened_width=orders['widened'].step_width, fast_s=best('fast'),
                   fast_steps=orders['fast'].num_groups, fast_width=orders['fast'].step_width,
                   slot_flops=slot_flops, peak_flops_per_s=peak_flops_per_s)


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
  widened = None  # Raster padded to the hierarchical width: the step cost's second point.
  if 'hierarchical' in modules:
    raster_order = modules['raster'].decoding_order
    width = modules['hierarchical'].decoding_order.step_width
    widened = base.clone(ordering=WidenedOrdering(
        hierarchy, f'raster_w{width}', raster_order.group_tuples, width=width))
  rows, step_costs = [], []
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
    if widened is not None:
      widened_cost = generation_cost(widened, variables, cond, conf, smoke=smoke)
      compiled = widened_cost['compiled']
      thunks = dict(raster=variants[('raster', True)], fast=variants[('hierarchical', True)],
                    widened=lambda c=compiled: c(variables, cond, conf, jax.random.key(0)))
      orders = dict(raster=modules['raster'].decoding_order,
                    widened=widened.decoding_order,
                    fast=modules['hierarchical'].decoding_order)
      step_flops = dict(raster=costs[('raster', True)]['step_flops'],
                        widened=widened_cost['step_flops'])
      step_costs.append(dict(batch_size=batch, **measure_step_cost(
          thunks, orders, step_flops, repeats=repeats, min_time=min_time,
          peak_flops_per_s=peak)))
  return dict(machine=common.machine_info(), roofline=roofline,
              config=dict(prefix=prefix, smoke=smoke, hiarm=models['configs']['hiarm'],
                          parameters=common.count_parameters(variables['params']),
                          batch_sizes=list(batch_sizes),
                          recompute_max_batch=recompute_max_batch,
                          orderings=list(ordering_names),
                          target_speedup=TARGET_SPEEDUP),
              results=rows, step_costs=step_costs)


def tables(report: dict[str, Any]) -> list[str]:
  columns = ['batch_size', 'ordering', 'num_steps', 'step_width', 'seconds',
             'poses_per_s', 'efficiency', 'speedup_vs_raster']
  if any('cache_speedup' in row for row in report['results']):
    columns += ['recompute_seconds', 'cache_speedup']
  out = [roofline_lib.roofline_table(report['roofline']),
         common.format_table(report['results'], columns,
                             'HiARM greedy generation (cached unless stated)')]
  if report['step_costs']:
    target = report['config']['target_speedup']
    out.append(common.format_table(
        report['step_costs'],
        ['batch_size', 'step_fixed_s', 'slot_s', 'fixed_per_slot', 'predicted_speedup',
         'measured_speedup', 'needed_slot_s', 'needed_share_of_peak', 'speedup_at_peak'],
        f'Cached step = a + b W (raster at W = 2 and padded): hierarchical vs raster, and '
        f'the slot cost b a {target}x speed-up needs'))
  return out


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
