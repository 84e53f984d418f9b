r"""Inference throughput of the full HiPART pipeline and of each of its stages.

  python -m bench.inference [--config=synthetic] [--checkpoint=LIFTER_WORKDIR] \
      [--inference_batch_sizes=1,64,256,1024] [--output=inference.json] [--smoke]

Times the jitted `hipart.predict` (pixels → model frame → HiARM generation → MSST
decoding → lifter → 3D) at each batch size, and its three stages on their own:
generation (`decoding.generate`, greedy), decode (`MSST.decode` of the generated ids)
and lift (`Lifter` on the decoded hierarchy). Reports poses/s, compile time, XLA's peak
memory estimate, FLOPs and efficiency = FLOP/s ÷ the float32 matmul peak measured in
the same process (`bench/roofline.py`). Models are randomly initialized at the sizes of
`launch/configs/<config>_{msst,hiarm,lifter}.py` unless `--checkpoint` names a trained
lifter workdir (the timing does not depend on the weights).

Two more rows time the same pipeline (equal FLOPs) run as a CPU host runs it best
(hipart_jax/execution.py, `launch/configs/base.py:inference_execution`): 'pipeline_chunked'
is `execution.predict_in_chunks`, C poses at a time on one device, and 'pipeline_devices'
is `execution.predict` over every local device, each device in chunks of C; both with the
lifter attention of the CPU plan (`execution.with_lifter_attention`).
'pipeline_expected_codes' is the pipeline with HiARM's `code_temperature` set
(`--code_temperature`): the cost of decoding expected codes, timed beside 'pipeline'.
Outside smoke runs the process gets one CPU device per core (`--cpu_devices`); the
other rows run on the first device.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bench import common
from bench import decoding as decoding_bench
from bench import roofline as roofline_lib
from hipart_jax import checkpoints
from hipart_jax import execution
from hipart_jax import skeleton
from hipart_jax.models import decoding
from hipart_jax.models import hipart
from launch.configs import base

_CHECKPOINT = flags.DEFINE_string('checkpoint', None,
                                  'A trained lifter workdir (hierarchical mode) to time '
                                  'instead of randomly initialized models.')
_BATCH_SIZES = flags.DEFINE_list('inference_batch_sizes', ['1', '64', '256', '1024'],
                                 'Batch sizes of the inference benchmark.')

_CHUNK = flags.DEFINE_integer('inference_chunk_size', 16,
                              'Poses per chunk of the pipeline_chunked and '
                              'pipeline_devices rows (only at larger batches).')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', 0, 'CPU devices of this process '
                                    '(0: one per core; see hipart_jax/execution.py).')
_CODE_TEMPERATURE = flags.DEFINE_float(
    'code_temperature', 0.7, 'HiARM code_temperature of the pipeline_expected_codes row '
    '(0.7: the CMU benchmark\'s); 0 leaves the row out.')

SMOKE_BATCH_SIZES = (2,)
SMOKE_CHUNK = 1
STAGES = ('generation', 'decode', 'lift')
# The pipeline run as a CPU host runs it best: the same FLOPs, in chunks.
CHUNKED_ROWS = ('pipeline_chunked', 'pipeline_devices')


def load_models(prefix: str, checkpoint: str | None, smoke: bool) -> dict[str, Any]:
  """{'model': hipart.HiPART, 'variables', 'configs', 'source'}."""
  if checkpoint:
    model, variables, meta = checkpoints.load_hipart(checkpoint)
    if model.lifter.mode != 'hierarchical':
      raise ValueError(f'{checkpoint}: the benchmark needs a hierarchical lifter, got '
                       f'{model.lifter.mode!r}')
    configs = dict(meta['frozen_models'], lifter=meta['model'])
    return dict(model=model, variables=variables, configs=configs, source=checkpoint)
  models = common.init_models(prefix, skeleton.default_hierarchy(), smoke=smoke)
  model = hipart.HiPART(models['lifter'], models['msst'], models['hiarm'])
  return dict(model=model, variables=models['variables'], configs=models['configs'],
              source=f'random init, launch/configs/{prefix}_*.py')


def _compile_all(model: hipart.HiPART, variables: Any, batch: int, smoke: bool,
                 chunk: int, code_temperature: float
                 ) -> dict[str, tuple[dict[str, Any], tuple]]:
  """Compiles the pipeline and each stage, feeding each stage the previous one's outputs.

  Returns:
    {name: (common.compile_stats(...) result, arguments of its compiled executable)}.
  """
  rng = np.random.default_rng(batch)
  keypoints, confidence, size = common.random_keypoints(rng, batch)
  inputs, _, _ = jax.jit(hipart.pixels_to_model_frame)(keypoints, confidence, size)
  confidence = jnp.asarray(confidence)
  key = jax.random.key(0)
  out = {}

  def add(name, fn, static, dynamic):
    out[name] = (common.compile_stats(fn, *static, *dynamic,
                                      compiler_options=common.compiler_options(smoke)),
                 dynamic)
    return out[name][0]['compiled'](*dynamic)

  add('pipeline', hipart.predict, (model,), (variables, keypoints, confidence, size, key))
  if code_temperature > 0:  # The same pipeline decoding expected codes, side by side.
    expected = dataclasses.replace(model, hiarm=model.hiarm.clone(
        code_temperature=code_temperature))
    add('pipeline_expected_codes', hipart.predict, (expected,),
        (variables, keypoints, confidence, size, key))
  devices = tuple(jax.local_devices())
  host_model = execution.with_lifter_attention(model, execution.Execution.for_backend(
      base.inference_execution()).lifter_attention)
  if batch > chunk:
    add('pipeline_chunked', jax.jit(lambda *a: execution.predict_in_chunks(
        host_model, *a, chunk_size=chunk)), (), (variables, keypoints, confidence, size, key))
  if batch > chunk and batch % len(devices) == 0:
    add('pipeline_devices', jax.jit(lambda *a: execution.predict(
        host_model, *a, devices=devices, chunk_size=chunk)), (),
        (variables, keypoints, confidence, size, key))
  generated = add('generation', decoding.generate, (model.hiarm,),
                  (variables['frozen_hiarm'], inputs, confidence, key))
  decode = jax.jit(lambda v, s, d: hipart.decode_tokens(model.msst, v, s, d))
  hierarchy_2d = add('decode', decode, (), (variables['frozen_msst'],
                                            generated['sparse_ids'][:, 0],
                                            generated['dense_ids'][:, 0]))
  lift = jax.jit(lambda p, x, c, h: model.lifter.apply({'params': p}, x, c, h))
  add('lift', lift, (), (variables['params'], inputs, confidence, hierarchy_2d))
  return out


def measure_batch(model: hipart.HiPART, variables: Any, batch: int, peak: float, *,
                  repeats: int, min_time: float, smoke: bool, chunk: int,
                  code_temperature: float = 0.0) -> list[dict[str, Any]]:
  """One row per function (pipeline, its variants and stages) at one batch size."""
  compiled = _compile_all(model, variables, batch, smoke, chunk, code_temperature)
  uncounted = dict(generation=decoding_bench.uncounted_scan_flops(
      model.hiarm, variables['frozen_hiarm'], batch))
  uncounted['pipeline'] = uncounted['pipeline_expected_codes'] = uncounted['generation']
  stats, thunks = {}, {}
  for name, (stat, args) in compiled.items():
    stat['flops'] += uncounted.get(name, 0.0)
    if name in CHUNKED_ROWS:  # Loop bodies and devices: count the pipeline's.
      stat['flops'] = stats['pipeline']['flops']
    stats[name] = stat
    thunks[name] = lambda c=stat['compiled'], a=args: c(*a)
  timings = common.time_interleaved(thunks, repeats=repeats, min_time=min_time)
  rows = []
  for name in compiled:
    seconds = timings[name]['best_s']
    rows.append(dict(
        batch_size=batch, function=name, seconds=seconds,
        median_seconds=timings[name]['median_s'], poses_per_s=batch / seconds,
        compile_s=stats[name]['compile_s'], flops=stats[name]['flops'],
        flops_per_pose=stats[name]['flops'] / batch,
        gflops_per_s=stats[name]['flops'] / seconds / 1e9,
        efficiency=common.efficiency(stats[name]['flops'], seconds, peak),
        peak_memory_bytes=stats[name]['peak_memory_bytes'],
        share_of_pipeline=seconds / timings['pipeline']['best_s'],
        chunk_size=chunk if name in CHUNKED_ROWS else 0,
        devices=len(jax.local_devices()) if name == 'pipeline_devices' else 1,
        **roofline_lib.ceiling_fields(
            stats[name], peak, enabled=(not smoke and common.DOT_CEILING.value
                                        and name not in CHUNKED_ROWS))))
  return rows


def run(*, prefix: str, checkpoint: str | None, batch_sizes: list[int], smoke: bool,
        repeats: int, min_time: float, chunk: int, code_temperature: float = 0.0
        ) -> dict[str, Any]:
  """The inference report (see the module docstring)."""
  roofline = roofline_lib.smoke_roofline() if smoke else roofline_lib.measure_roofline(
      repeats=repeats)
  peak = roofline['peak_flops_per_s']['float32']
  models = load_models(prefix, checkpoint, smoke)
  model, variables = models['model'], models['variables']
  rows = []
  for batch in batch_sizes:
    logging.info('Inference at batch %d.', batch)
    rows.extend(measure_batch(model, variables, batch, peak, repeats=repeats,
                              min_time=min_time, smoke=smoke, chunk=chunk,
                              code_temperature=code_temperature))
  parameters = {name: common.count_parameters(variables[key]['params'] if key != 'params'
                                              else variables['params'])
                for name, key in (('msst', 'frozen_msst'), ('hiarm', 'frozen_hiarm'),
                                  ('lifter', 'params'))}
  order = model.hiarm.decoding_order
  return dict(machine=common.machine_info(), roofline=roofline,
              config=dict(prefix=prefix, smoke=smoke, models=models['source'],
                          model_configs=models['configs'], parameters=parameters,
                          ordering=order.name, num_decoding_steps=order.num_groups,
                          device_peak_memory_bytes=common.device_peak_memory(),
                          chunk_size=chunk, devices=len(jax.local_devices()),
                          code_temperature=code_temperature,
                          batch_sizes=list(batch_sizes)),
              results=rows)


def tables(report: dict[str, Any]) -> list[str]:
  columns = ['batch_size', 'function', 'devices', 'seconds', 'poses_per_s', 'compile_s',
             'flops_per_pose', 'gflops_per_s', 'efficiency', 'efficiency_ceiling',
             'share_of_pipeline', 'peak_memory_bytes']
  return [roofline_lib.roofline_table(report['roofline']),
          common.format_table(report['results'], columns,
                              'HiPART inference (pipeline = generation + decode + lift)')]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  smoke = common.SMOKE.value
  batch_sizes = list(SMOKE_BATCH_SIZES) if smoke else [int(b) for b in _BATCH_SIZES.value]
  if not smoke:  # Before JAX starts.
    execution.configure_cpu_devices(_CPU_DEVICES.value)
  report = run(chunk=SMOKE_CHUNK if smoke else _CHUNK.value, prefix=common.CONFIG.value, checkpoint=_CHECKPOINT.value,
               batch_sizes=batch_sizes, smoke=smoke,
               repeats=1 if smoke else common.REPEATS.value,
               min_time=0.0 if smoke else common.MIN_TIME.value,
               code_temperature=_CODE_TEMPERATURE.value)
  common.finish(report, tables(report))


if __name__ == '__main__':
  app.run(main)
