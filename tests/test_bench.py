"""Smoke runs of the benchmark scripts: each emits valid JSON with every promised key.

No timing is asserted (the values of a smoke run mean nothing); the checks are that the
scripts run end to end on tiny models and report what BENCHMARKS.md reads.
"""

import json
import math
import pathlib
import subprocess
import sys
import textwrap

from absl import flags
from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import checkpoint_checksums
from bench import common
from bench import decoding
from bench import hiarm_attention
from bench import inference
from bench import roofline
from bench import training

FLAGS = flags.FLAGS
REPO = pathlib.Path(__file__).resolve().parents[1]

MACHINE_KEYS = {'date', 'cpu_model', 'cpu_cores', 'jax', 'backend', 'device', 'num_devices'}


def run_main(module, tmp_path, *extra):
  """Runs `module.main` with --smoke and returns the JSON it wrote.

  Unparsing the flags sets absl's logger to WARNING; its level is put back afterwards,
  so later tests in the same worker still see INFO records (caplog).
  """
  output = tmp_path / f'{module.__name__.split(".")[-1]}.json'
  absl_logger = absl_logging.get_absl_logger()
  level = absl_logger.level
  FLAGS.unparse_flags()
  FLAGS(['bench', '--smoke', f'--output={output}', *extra])
  try:
    module.main(['bench'])
  finally:
    FLAGS.unparse_flags()
    absl_logger.setLevel(level)
  return json.loads(output.read_text())


@pytest.fixture(scope='module')
def tiny_tfds_dir(tmp_path_factory):
  """A TFDS data directory the scripts that read `synthetic_poses/tiny` share (the first
  one builds it there)."""
  return tmp_path_factory.mktemp('tfds')


def assert_finite_positive(row, keys):
  for key in keys:
    value = row[key]
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, row)


def check_roofline(report):
  assert MACHINE_KEYS <= set(report['machine'])
  rf = report['roofline']
  assert set(rf['peak_flops_per_s']) == set(roofline.DTYPES)
  assert {(r['dtype'], r['size']) for r in rf['matmul']} == {
      (d, s) for d in roofline.DTYPES for s in roofline.SMOKE_SIZES}
  assert_finite_positive(rf, ['bandwidth_bytes_per_s', 'ridge_flops_per_byte'])
  for row in rf['matmul']:
    assert_finite_positive(row, ['seconds', 'gflops_per_s'])


def test_roofline(tmp_path):
  check_roofline(run_main(roofline, tmp_path))


def test_checkpoint_checksums(tmp_path):
  report = run_main(checkpoint_checksums, tmp_path)
  assert MACHINE_KEYS <= set(report['machine'])
  rows = report['results']
  assert [row['state'] for row in rows] == [
      'lifter', f'lifter + {checkpoint_checksums.SMOKE_EXTRA_MB} MiB']
  for row in rows:
    assert_finite_positive(row, ['parameters', 'state_floats', 'files', 'bytes_checked',
                                 'save_s', 'write_checksums_s', 'restore_s', 'verify_s',
                                 'verify_share_of_restore', 'hash_bytes_per_s'])
  # The extra MiB of random floats is written (and checked): most of it survives the
  # writer's compression, whose ratio varies from run to run.
  assert rows[1]['bytes_checked'] - rows[0]['bytes_checked'] > 0.5 * (1 << 20)


def test_inference(tmp_path):
  report = run_main(inference, tmp_path)
  check_roofline(report)
  rows = report['results']
  functions = ('pipeline', 'pipeline_expected_codes', 'pipeline_chunked',
               'pipeline_devices') + inference.STAGES
  assert [(r['batch_size'], r['function']) for r in rows] == [
      (b, f) for b in inference.SMOKE_BATCH_SIZES for f in functions]
  # The chunked variants do the pipeline's work: the same FLOPs, in chunks (smoke: of 1).
  assert rows[2]['flops'] == rows[3]['flops'] == rows[0]['flops']
  assert rows[2]['chunk_size'] == inference.SMOKE_CHUNK and rows[0]['chunk_size'] == 0
  # Decoding expected codes adds the codebook products to the pipeline's FLOPs.
  assert rows[1]['flops'] > rows[0]['flops'] and rows[1]['chunk_size'] == 0
  assert report['config']['code_temperature'] == 0.7
  for row in rows:
    assert_finite_positive(row, ['seconds', 'poses_per_s', 'compile_s', 'flops',
                                 'efficiency', 'peak_memory_bytes', 'share_of_pipeline'])
  pipeline_row = rows[0]
  assert pipeline_row['share_of_pipeline'] == 1.0
  # The scan correction counts every decoding step: more FLOPs than one step's worth.
  generation = rows[functions.index('generation')]
  assert generation['flops'] > report['config']['num_decoding_steps'] * 1000
  assert set(report['config']['parameters']) == {'msst', 'hiarm', 'lifter'}


def test_hiarm_attention(tmp_path):
  report = run_main(hiarm_attention, tmp_path, '--global_chunks=1,2')
  rows = report['results']
  assert [(r['size'], r['ordering']) for r in rows] == [('cmu_benchmark', 'hierarchical')]
  for row in rows:
    assert_finite_positive(row, ['blocks_s', 'chunks_1_s', 'full_masks_s', 'speedup',
                                 'parameters'])
    assert 0 < row['logits_share_local'] < row['logits_share_global'] < 1


def test_decoding(tmp_path):
  report = run_main(decoding, tmp_path)
  check_roofline(report)
  rows = report['results']
  assert [r['ordering'] for r in rows] == list(decoding.SMOKE_ORDERINGS)
  by_name = {r['ordering']: r for r in rows}
  assert by_name['raster']['speedup_vs_raster'] == 1.0
  assert by_name['raster']['num_steps'] == 65
  assert by_name['hierarchical']['num_steps'] < by_name['raster']['num_steps']
  for row in rows:
    assert_finite_positive(row, ['seconds', 'poses_per_s', 'flops', 'efficiency',
                                 'speedup_vs_raster', 'recompute_seconds',
                                 'recompute_flops', 'cache_speedup'])
    # Recomputing the prefix does more work than the cached step.
    assert row['recompute_flops'] > row['flops']
  (cost,) = report['step_costs']
  assert cost['batch_size'] == decoding.SMOKE_BATCH_SIZES[0]
  assert_finite_positive(cost, ['slot_flops', 'predicted_speedup', 'measured_speedup',
                                'step_count_limit', 'speedup_at_peak'])
  for key in ('step_fixed_s', 'slot_s', 'fixed_per_slot', 'predicted_fast_s',
              'needed_slot_s'):
    assert math.isfinite(cost[key]), key
  # A slot of the batch of 2 does work: its FLOPs are those of a few small products.
  assert cost['slot_flops'] > 2 * 1000


def test_step_cost_recovers_the_step_model():
  """Times made from a step of a + b W give back a and b, the speed-up and its bound."""
  a, b = 3e-3, 1e-3
  cost = decoding.step_cost(base_s=65 * (a + 2 * b), widened_s=65 * (a + 4 * b),
                            base_steps=65, base_width=2, widened_width=4,
                            fast_s=33 * (a + 4 * b), fast_steps=33, fast_width=4,
                            slot_flops=2e8, peak_flops_per_s=1e11, target_speedup=1.7)
  assert cost['step_fixed_s'] == pytest.approx(a)
  assert cost['slot_s'] == pytest.approx(b)
  assert cost['predicted_speedup'] == pytest.approx(cost['measured_speedup'])
  assert cost['step_count_limit'] == pytest.approx(65 / 33)
  needed = cost['needed_slot_s']  # The slot cost at which the speed-up is exactly 1.7.
  assert 65 * (a + 2 * needed) / (33 * (a + 4 * needed)) == pytest.approx(1.7)
  assert cost['needed_share_of_peak'] == pytest.approx(2e8 / needed / 1e11)
  at_peak = 2e8 / 1e11
  assert cost['speedup_at_peak'] == pytest.approx(65 * (a + 2 * at_peak) / (33 * (a + 4 * at_peak)))
  # Past the step-count limit no slot cost reaches the target.
  beyond = decoding.step_cost(base_s=1.0, widened_s=2.0, base_steps=65, base_width=2,
                              widened_width=4, fast_s=1.0, fast_steps=33, fast_width=4,
                              slot_flops=1.0, peak_flops_per_s=1.0, target_speedup=2.0)
  assert beyond['needed_slot_s'] == 0 and beyond['needed_share_of_peak'] is None


def test_widened_ordering_decodes_like_its_base():
  """Padding every raster step to 4 slots changes the cost, not the tokens or logits."""
  from hipart_jax import orderings, skeleton
  from hipart_jax.models import decoding as generation
  from hipart_jax.models import hiarm as hiarm_lib
  hierarchy = skeleton.default_hierarchy()
  raster = orderings.make_ordering(hierarchy, 'raster')
  widened = decoding.WidenedOrdering(hierarchy, 'raster_w4', raster.group_tuples, width=4)
  assert (raster.step_width, widened.step_width) == (2, 4)
  model = hiarm_lib.HiARM(hierarchy, 7, 9, ordering=raster, width=16, num_lsab=1,
                          num_gcsab=1, num_heads=2, mlp_ratio=1)
  rng = np.random.default_rng(0)
  cond = jnp.asarray(rng.normal(size=(2, hierarchy.num_sparse, 2)), jnp.float32)
  conf = jnp.ones((2, hierarchy.num_sparse), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0), cond, conf,
                               jnp.zeros((2, hierarchy.num_sparse), jnp.int32),
                               jnp.zeros((2, hierarchy.num_dense), jnp.int32))
  out = [generation.generate(model.clone(ordering=o), params, cond, conf, jax.random.key(1),
                             return_logits=True) for o in (raster, widened)]
  np.testing.assert_array_equal(out[0]['dense_ids'], out[1]['dense_ids'])
  np.testing.assert_allclose(out[0]['dense_logits'], out[1]['dense_logits'], atol=1e-5)


def test_hlo_dots_and_ceiling_of_a_known_program():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  fn = jax.jit(lambda a, b, c: jnp.tanh(a @ b) @ c)
  args = (jnp.ones((32, 16)), jnp.ones((16, 8)), jnp.ones((8, 4)))
  stats = common.compile_stats(fn, *args)
  dots = roofline.hlo_dots(stats['compiled'].as_text())
  assert sorted(d['flops'] for d in dots) == [2 * 32 * 8 * 4, 2 * 32 * 16 * 8]
  fields = roofline.ceiling_fields(stats, 1e9, enabled=True)
  assert 0 < fields['dot_flops_fraction'] <= 1
  assert_finite_positive(fields, ['efficiency_ceiling', 'dot_efficiency'])
  assert roofline.ceiling_fields(stats, 1e9, enabled=False)['efficiency_ceiling'] is None


def test_lowered_flops_without_a_pre_compilation_analysis(monkeypatch):
  """GPU backends (PJRT plugins) give no cost analysis before compilation: the count
  then comes from the compiled program, never a silent 0."""
  matmul = jax.jit(jnp.matmul)
  a = jnp.ones((8, 16))
  b = jnp.ones((16, 4))
  assert common.lowered_flops(matmul, a, b) == 2 * 8 * 16 * 4
  monkeypatch.setattr(jax.stages.Lowered, 'cost_analysis', lambda self: None)
  assert common.lowered_flops(matmul, a, b) == 2 * 8 * 16 * 4
  monkeypatch.setattr(jax.stages.Compiled, 'cost_analysis', lambda self: {})
  with pytest.raises(RuntimeError, match='no FLOP count'):
    common.lowered_flops(matmul, a, b)


def test_format_table_aligns_columns():
  table = common.format_table([dict(a=1, b=0.5), dict(a=100)], ['a', 'b'], 'T')
  lines = table.splitlines()
  assert lines[0] == 'T'
  assert len({len(line) for line in lines[1:]}) == 1
  assert lines[-1].split() == ['100']


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_write_json_rejects_non_finite(bad):
  with pytest.raises(ValueError):
    common.write_json({'x': bad}, None)


def test_training(tmp_path, tiny_tfds_dir):
  report = run_main(training, tmp_path, f'--data_dir={tiny_tfds_dir}')
  check_roofline(report)
  steps = report['train_steps']
  assert [r['stage'] for r in steps] == list(training.SMOKE_STAGES)
  for row in steps:
    assert_finite_positive(row, ['seconds', 'steps_per_s', 'examples_per_s', 'compile_s',
                                 'flops', 'efficiency', 'efficiency_alongside',
                                 'peak_alongside_gflops_per_s', 'peak_memory_bytes',
                                 'parameters'])
    assert row['devices'] == 1 and row['implementation'] == 'vmap'  # Smoke: one device.
    assert row['microbatch_size'] >= 0
  host = report['host_pipeline']
  assert [r['stage'] for r in host] == list(training.SMOKE_STAGES)
  for row in host:
    assert row['dataset'] == training.SMOKE_DATASET
    assert_finite_positive(row, ['read_s', 'stack_s', 'augment_s', 'cached_s',
                                 'first_epoch_batches_per_s', 'host_batches_per_s',
                                 'step_batches_per_s', 'host_margin',
                                 'first_epoch_host_margin', 'fed_steps_per_s'])
  scaling = report['weak_scaling']
  assert [r['devices'] for r in scaling] == list(training.SMOKE_SCALING_DEVICES)
  assert [r['global_batch'] for r in scaling] == [
      2 * d for d in training.SMOKE_SCALING_DEVICES]
  for row in scaling:
    assert_finite_positive(row, ['steps_per_s', 'examples_per_s', 'relative_steps_per_s'])


def test_training_steps_alone(tmp_path):
  """The accelerator-host mode: train steps only, no TFDS, no weak scaling."""
  report = run_main(training, tmp_path, '--stages=lifter_sparse', '--nohost_pipeline',
                    '--scaling_devices=')
  assert [r['stage'] for r in report['train_steps']] == ['lifter_sparse']
  assert report['host_pipeline'] == [] and report['weak_scaling'] == []


def test_bench_and_trainer_import_without_tfds():
  """Accelerator hosts need not install TFDS (or TensorFlow) to run the speed scripts
  or the trainer's code: only opening a dataset imports it."""
  code = textwrap.dedent('''
      import sys
      class Block:
        def find_spec(self, name, path=None, target=None):
          if name.split('.')[0] in ('tensorflow_datasets', 'tensorflow'):
            raise ImportError('blocked ' + name)
      sys.meta_path.insert(0, Block())
      import bench.training, bench.inference, bench.decoding, bench.roofline
      import hipart_jax.training.loop, hipart_jax.training.stages, launch.infer
      ''')
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)


def test_example_cache_gives_the_uncached_batches_and_reads_once():
  """The input pipeline's ExampleCache (a speed-up of bench/training.py's host figures)."""
  import fake_examples  # pylint: disable=g-import-not-at-top
  from hipart_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from hipart_jax import skeleton  # pylint: disable=g-import-not-at-top

  class CountingSource(list):
    reads = 0

    def __getitem__(self, index):
      CountingSource.reads += 1
      return super().__getitem__(index)

  hierarchy = skeleton.default_hierarchy()
  source = CountingSource(fake_examples.fake_examples(11, hierarchy, seed=0))
  batches = {}
  for cache_max in (0, 100):
    config = input_pipeline.default_data_config()
    config.cache_max_examples = cache_max
    pipeline = input_pipeline.TrainBatches(source, hierarchy, config, global_batch_size=4,
                                           num_local_devices=2, seed=3)
    CountingSource.reads = 0
    batches[cache_max] = [pipeline.batch(step) for step in range(9)]  # Over 3 epochs.
    if cache_max:
      assert CountingSource.reads == len(source)
    else:
      assert CountingSource.reads == 9 * 4
  for uncached, cached in zip(batches[0], batches[100]):
    assert uncached.keys() == cached.keys()
    for key in uncached:
      np.testing.assert_array_equal(uncached[key], cached[key], err_msg=key)


def test_grain_pipeline(tmp_path, tiny_tfds_dir):
  """grain's MapDataset beside TrainBatches: checks (1) and (2) hold, every rate is
  reported, and grain's own order is not TrainBatches' (a port changes the data order)."""
  pytest.importorskip('grain')
  from bench import grain_pipeline  # pylint: disable=g-import-not-at-top
  report = run_main(grain_pipeline, tmp_path, f'--data_dir={tiny_tfds_dir}')
  assert MACHINE_KEYS <= set(report['machine'])
  assert set(report['checks']) == {'grain', 'grain_cached'}
  for checks in report['checks'].values():
    assert checks['resumed_equal'] and checks['random_access_equal'], checks
    assert checks['shards_cover_global_batch'], checks
  assert report['cached_equals_records'] is True
  assert report['same_order_as_train_batches'] is False
  assert isinstance(report['epoch_seeds_overlap'], bool)
  threads = grain_pipeline.SMOKE_GRAIN_THREADS
  assert [r['pipeline'] for r in report['timings']] == ['train_batches'] + [
      f'{name}_t{t}' for t in threads for name in ('grain', 'grain_cached')]
  for row in report['timings']:
    assert_finite_positive(row, ['first_epoch_s', 'warm_s', 'first_epoch_batches_per_s',
                                 'warm_batches_per_s', 'first_epoch_ratio', 'warm_ratio'])
  assert [r['pipeline'] for r in report['batch_by_batch']] == [
      'train_batches', 'grain', 'grain_cached']
  for row in report['batch_by_batch']:
    assert_finite_positive(row, ['first_epoch_s', 'first_epoch_cpu_s', 'warm_s',
                                 'warm_cpu_s', 'first_epoch_cpu_ratio', 'warm_cpu_ratio'])
  verdict = report['verdict']
  assert verdict['pure_function_of_seed_step_process'] and verdict['per_process_sharding']
  assert isinstance(verdict['throughput_at_least_today'], bool)


def test_grain_checks_catch_broken_pipelines():
  """The checks fail for a pipeline whose shards overlap or whose restart reshuffles."""
  pytest.importorskip('grain')
  import fake_examples  # pylint: disable=g-import-not-at-top
  from bench import grain_pipeline  # pylint: disable=g-import-not-at-top
  from hipart_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from hipart_jax import skeleton  # pylint: disable=g-import-not-at-top
  hierarchy = skeleton.default_hierarchy()
  source = fake_examples.fake_examples(10, hierarchy, seed=0)
  data = input_pipeline.default_data_config()

  def make(seed=0, process_index=0, process_count=1):
    return grain_pipeline.grain_batches(source, hierarchy, data, global_batch_size=4,
                                        num_local_devices=1, seed=seed,
                                        process_index=process_index,
                                        process_count=process_count)

  assert grain_pipeline.check_sharding(make, [0, 2])['shards_cover_global_batch']
  every_process_reads_shard_0 = lambda process_index, process_count: make(
      process_count=process_count)
  assert not grain_pipeline.check_sharding(every_process_reads_shard_0,
                                           [0, 2])['shards_cover_global_batch']
  assert grain_pipeline.check_resume(make, 2, data, 4, 2, [0, 3])['resumed_equal']
  seeds = iter(range(100))
  reseeded_on_restart = lambda: make(seed=next(seeds))
  resume = grain_pipeline.check_resume(reseeded_on_restart, 2, data, 4, 2, [0, 3])
  assert not resume['resumed_equal'] and not resume['random_access_equal']
