r"""The device's measured matmul throughput: the reference every efficiency divides by.

  python -m bench.roofline [--output=roofline.json] [--smoke]

Times `jit(A @ B)` for square matrices of a few sizes in float32 and bfloat16 (best of
several runs) and a streaming elementwise kernel for memory bandwidth. Other scripts
call `measure_roofline()` in their own process, so the peak and the figures divided by
it are measured under the same conditions (load, thread count, device).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from bench import common

_SIZES = flags.DEFINE_list('roofline_sizes', None, 'Matrix sizes (default: by backend).')

CPU_SIZES = (256, 512, 1024, 2048)
ACCELERATOR_SIZES = (1024, 2048, 4096, 8192)
SMOKE_SIZES = (64, 128)
DTYPES = ('float32', 'bfloat16')
BANDWIDTH_ELEMENTS = 1 << 24  # 64 MiB per float32 array: well beyond the caches.
SMOKE_BANDWIDTH_ELEMENTS = 1 << 16


def default_sizes() -> tuple[int, ...]:
  return CPU_SIZES if jax.default_backend() == 'cpu' else ACCELERATOR_SIZES


def matmul_flops(size: int) -> float:
  """FLOPs of one [size, size] x [size, size] product."""
  return 2.0 * size**3


def matmul_thunk(size: int, dtype: str = 'float32') -> Callable[[], jax.Array]:
  """A thunk running `jit(A @ B)` on [size, size] random matrices (`matmul_flops`)."""
  keys = jax.random.split(jax.random.key(size), 2)
  a, b = (jax.random.normal(k, (size, size), jnp.dtype(dtype)) for k in keys)
  matmul = jax.jit(jnp.matmul)
  return lambda: matmul(a, b)


def peak_size(roofline: Mapping[str, Any], dtype: str = 'float32') -> int:
  """The matrix size at which `roofline` (a `measure_roofline` report) found the peak."""
  rows = [r for r in roofline['matmul'] if r['dtype'] == dtype]
  return max(rows, key=lambda r: r['gflops_per_s'])['size']


def _matmul_seconds(size: int, dtype: str, repeats: int, min_time: float) -> float:
  return common.time_call(matmul_thunk(size, dtype), repeats=repeats,
                          min_time=min_time)['best_s']


def _bandwidth(elements: int, repeats: int, min_time: float) -> float:
  """Bytes/s of x <- 0.5 x + 1 over a float32 array (one read, one write per element).

  The input buffer is donated, so the kernel streams through memory that is already
  mapped; without donation every call's fresh 64 MiB output is first-touch page faults
  and the figure measures the allocator instead (10x lower on the reference machine).
  """
  kernel = jax.jit(lambda v: v * 0.5 + 1.0, donate_argnums=0)
  state = [jnp.ones((elements,), jnp.float32)]

  def step():
    state[0] = kernel(state[0])
    return state[0]

  seconds = common.time_call(step, repeats=repeats, min_time=min_time)['best_s']
  return 2 * 4 * elements / seconds


def measure_roofline(sizes: Sequence[int] | None = None, dtypes: Sequence[str] = DTYPES, *,
                     repeats: int = 5, min_time: float = 0.3,
                     bandwidth_elements: int = BANDWIDTH_ELEMENTS) -> dict[str, Any]:
  """Measures the peak matmul FLOP/s per dtype and the streaming memory bandwidth.

  Args:
    sizes: square matrix sizes N (2 N^3 FLOPs per product); default by backend.
    dtypes: dtype names.
    repeats, min_time: see `common.time_call`.
    bandwidth_elements: float32 elements of the bandwidth kernel's array.
  Returns:
    {'matmul': [{'dtype', 'size', 'seconds', 'gflops_per_s'}, ...],
     'peak_flops_per_s': {dtype: best FLOP/s over sizes},
     'bandwidth_bytes_per_s': float,
     'ridge_flops_per_byte': float32 peak / bandwidth (the arithmetic intensity above
       which a kernel can be compute-bound)}.
  """
  sizes = tuple(sizes or default_sizes())
  rows, peaks = [], {}
  for dtype in dtypes:
    for size in sizes:
      seconds = _matmul_seconds(size, dtype, repeats, min_time)
      flops_per_s = matmul_flops(size) / seconds
      rows.append(dict(dtype=dtype, size=size, seconds=seconds,
                       gflops_per_s=flops_per_s / 1e9))
      peaks[dtype] = max(peaks.get(dtype, 0.0), flops_per_s)
  bandwidth = _bandwidth(bandwidth_elements, repeats, min_time)
  return dict(matmul=rows, peak_flops_per_s=peaks, bandwidth_bytes_per_s=bandwidth,
              ridge_flops_per_byte=peaks.get('float32', 0.0) / bandwidth)


# --------------------------------------------------------------------------------------
# The matrix products of a compiled program: an efficiency ceiling.

_INSTRUCTION = re.compile(r'%([\w.-]+) = (\w+)\[([\d,]*)\]')
_DOT = re.compile(r'%[\w.-]+ = \w+\[([\d,]*)\]\S* dot\(%([\w.-]+), %([\w.-]+)\)(.*)')
_DIMS = re.compile(r'(lhs_batch_dims|rhs_batch_dims|lhs_contracting_dims|'
                   r'rhs_contracting_dims)=\{([\d,]*)\}')


def hlo_dots(hlo_text: str) -> list[dict[str, Any]]:
  """The dot products of an optimized HLO module.

  Returns:
    [{'lhs', 'rhs': operand shapes, 'dimension_numbers': for `lax.dot_general`,
    'flops'}]; a dot inside a loop body is listed once (as XLA's cost analysis counts).
  """
  shapes = {}
  for name, _, dims in _INSTRUCTION.findall(hlo_text):
    shapes[name] = tuple(int(d) for d in dims.split(',') if d)
  dots = []
  for out, lhs, rhs, rest in _DOT.findall(hlo_text):
    numbers = {key: tuple(int(d) for d in value.split(',') if d)
               for key, value in _DIMS.findall(rest)}
    lhs_shape, rhs_shape = shapes[lhs], shapes[rhs]
    contracted = int(np.prod([lhs_shape[d] for d in numbers.get('lhs_contracting_dims', ())]))
    out_size = int(np.prod([int(d) for d in out.split(',') if d]))
    get = lambda key: numbers.get(key, ())
    dimension_numbers = ((get('lhs_contracting_dims'), get('rhs_contracting_dims')),
                         (get('lhs_batch_dims'), get('rhs_batch_dims')))
    dots.append(dict(lhs=lhs_shape, rhs=rhs_shape, flops=2.0 * out_size * contracted,
                     dimension_numbers=dimension_numbers))
  return dots


def ceiling_fields(stats: Mapping[str, Any], peak_flops_per_s: float, *,
                   enabled: bool) -> dict[str, float | None]:
  """Row fields from `dot_ceiling` of a `compile_stats` result (None when disabled).

  efficiency_ceiling: XLA's FLOPs ÷ the dots' isolated time ÷ peak (both count a loop
  body once); dot_flops_fraction: the share of XLA's FLOPs done by dots.
  """
  if not enabled:
    return dict(efficiency_ceiling=None, dot_flops_fraction=None, dot_efficiency=None)
  ceiling = dot_ceiling(stats['compiled'].as_text(), peak_flops_per_s)
  return dict(
      efficiency_ceiling=common.efficiency(stats['xla_flops'], ceiling['dot_seconds'],
                                           peak_flops_per_s),
      dot_flops_fraction=ceiling['dot_flops'] / max(stats['xla_flops'], 1.0),
      dot_efficiency=ceiling['dot_efficiency'])


def dot_ceiling(hlo_text: str, peak_flops_per_s: float, *, repeats: int = 3,
                min_time: float = 0.05) -> dict[str, float]:
  """How fast the program's matrix products alone run: an upper bound on its efficiency.

  Every dot of the optimized HLO is timed on its own (float32, its exact shapes and
  dimension numbers, best of `repeats`, minus the dispatch time of an empty jitted call
  with the same arguments). If everything else in the program were free,
  it would take `dot_seconds`; so FLOPs / dot_seconds / peak bounds the achievable
  efficiency from above, whatever is done to fusions, layouts or elementwise work.

  Returns:
    {'num_dots', 'dot_flops', 'dot_seconds', 'dot_efficiency' (the products' own
     FLOP/s ÷ peak)}.
  """
  timings = {}
  total_flops = total_seconds = 0.0
  dots = hlo_dots(hlo_text)
  # A jitted call costs microseconds of dispatch, more than a small dot itself: subtract
  # the time of a call that computes nothing (with the same arguments).
  empty = jax.jit(lambda a, b: jnp.zeros((), a.dtype))
  for dot in dots:
    key = (dot['lhs'], dot['rhs'], dot['dimension_numbers'])
    if key not in timings:
      lhs = jnp.ones(dot['lhs'], jnp.float32)
      rhs = jnp.ones(dot['rhs'], jnp.float32)
      fn = jax.jit(lambda a, b, n=dot['dimension_numbers']: jax.lax.dot_general(a, b, n))
      timing = lambda f, a=lhs, b=rhs: common.time_call(
          lambda: f(a, b), repeats=repeats, min_time=min_time)['best_s']
      timings[key] = max(timing(fn) - timing(empty), 0.0)
    total_flops += dot['flops']
    total_seconds += timings[key]
  return dict(num_dots=len(dots), dot_flops=total_flops,
              dot_seconds=total_seconds,
              dot_efficiency=common.efficiency(total_flops, total_seconds, peak_flops_per_s))


# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def smoke_roofline() -> dict[str, Any]:
  """A seconds-long version for `--smoke` runs (the values mean nothing; cached)."""
  return measure_roofline(SMOKE_SIZES, repeats=1, min_time=0.0,
                          bandwidth_elements=SMOKE_BANDWIDTH_ELEMENTS)


def roofline_for_flags() -> dict[str, Any]:
  """The roofline with the shared flags' repeats (smoke: `smoke_roofline`)."""
  if common.SMOKE.value:
    return smoke_roofline()
  sizes = [int(s) for s in _SIZES.value] if _SIZES.value else None
  return measure_roofline(sizes, repeats=common.REPEATS.value,
                          min_time=min(common.MIN_TIME.value, 0.3))


def roofline_table(roofline: dict[str, Any]) -> str:
  rows = [dict(r, gflops_per_s=r['gflops_per_s'], ms=r['seconds'] * 1e3)
          for r in roofline['matmul']]
  table = common.format_table(rows, ['dtype', 'size', 'ms', 'gflops_per_s'],
                              'Matmul roofline (best of runs)')
  peaks = ', '.join(f'{d} {v / 1e9:.1f} GFLOP/s'
                    for d, v in roofline['peak_flops_per_s'].items())
  return (f'{table}\npeak: {peaks}; bandwidth '
          f'{roofline["bandwidth_bytes_per_s"] / 1e9:.1f} GB/s; ridge '
          f'{roofline["ridge_flops_per_byte"]:.1f} FLOP/byte')


def run() -> dict[str, Any]:
  return dict(machine=common.machine_info(), roofline=roofline_for_flags())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  report = run()
  common.finish(report, [roofline_table(report['roofline'])])


if __name__ == '__main__':
  app.run(main)
