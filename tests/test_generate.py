"""hipart_jax/generated_cache.py and launch/generate.py on the session's tiny pipeline."""

import functools
import json

from absl import flags
import jax
import numpy as np
import pytest

import pipeline_fixture
from hipart_jax import checkpoints
from hipart_jax import drawn_batches
from hipart_jax import generated_cache
from hipart_jax import input_pipeline
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import generate
from tfds_builders.synthetic_poses import synthetic_poses_dataset_builder as builder_lib

BATCH, SHARD = 4, 8  # The tiny test split's 24 examples: 3 shards of 2 batches.
NUM_EXAMPLES = 24


def synthetic_tiny(tmp_path_factory):
  """Data dir holding synthetic_poses/tiny (built once per session)."""
  data_dir = tmp_path_factory.getbasetemp() / 'synthetic_tiny_tfds'
  builder = builder_lib.SyntheticPoses(config='tiny', data_dir=str(data_dir))
  if not builder.is_prepared():
    builder.download_and_prepare()
  return data_dir


def _cli(argv):
  flag_values = flags.FlagValues()
  generate.define_flags(flag_values)
  flag_values(['generate'] + argv)
  generate.main(['generate'], flag_values)


@pytest.fixture(scope='module')
def cache(tiny_pipeline, tmp_path_factory):
  """(output_dir, data_dir, argv) of one complete generation run over the test split."""
  data_dir = synthetic_tiny(tmp_path_factory)
  output_dir = tmp_path_factory.mktemp('generated')
  argv = [f'--checkpoint={tiny_pipeline["lifter_hierarchical"]}',
          '--dataset=synthetic_poses/tiny', '--split=test', f'--data_dir={data_dir}',
          f'--output_dir={output_dir}', f'--batch_size={BATCH}', f'--shard_size={SHARD}']
  _cli(argv)
  return output_dir, data_dir, argv


def test_writes_shards_and_manifest(cache, tiny_pipeline):
  output_dir, _, _ = cache
  manifest = json.loads((output_dir / 'manifest.json').read_text())
  assert manifest['complete']
  names = [f'test-{k:05d}.npz' for k in range(3)]
  assert [s['name'] for s in manifest['shards']] == names
  assert [(s['start'], s['stop']) for s in manifest['shards']] == [(0, 8), (8, 16), (16, 24)]
  settings = manifest['settings']
  assert settings['dataset'] == 'synthetic_poses/tiny' and settings['split'] == 'test'
  assert settings['num_examples'] == NUM_EXAMPLES and settings['temperature'] == 0.0
  assert settings['ordering'] == 'hierarchical' and settings['input_source'] == 'gt'
  assert settings['generator']['lifter'] == str(tiny_pipeline['lifter_hierarchical'])
  assert sorted(p.name for p in output_dir.glob('*.npz')) == names
  with np.load(output_dir / names[1]) as shard:
    np.testing.assert_array_equal(shard['index'], np.arange(8, 16))
    assert shard['fine_2d'].shape == (8, 1, pipeline_fixture.HIERARCHY.num_fine, 2)
    assert json.loads(shard['meta'].item()) == manifest['meta']
  _assert_describes(manifest['meta'], tiny_pipeline, 'lifter_hierarchical', 'lifter',
                    split='test')
  assert settings['generator']['model'] == manifest['meta']['model']


def _assert_describes(meta, tiny_pipeline, name, stage, split):
  """What a generated file states: the model frame, every level's joints, the split,
  and the identity of the generator with every stage's real step."""
  assert meta['units'].startswith('model frame') and 'norm_scale' in meta['coordinate_frame']
  h = pipeline_fixture.HIERARCHY
  assert meta['joint_names']['sparse'] == list(skeleton.H36M_JOINT_NAMES)
  assert [len(meta['joint_names'][level]) for level in ('dense', 'fine')] == [
      h.num_dense, h.num_fine]
  assert meta['input'] == dict(dataset='synthetic_poses/tiny', split=split,
                               input_source='gt')
  pipeline_fixture.assert_identity(meta['model'], tiny_pipeline, name, stage)
  assert meta['project_version']


def test_resume_rewrites_only_the_missing_shard(cache):
  output_dir, _, argv = cache
  before = {p.name: p.stat().st_mtime_ns for p in output_dir.glob('*.npz')}
  reference = generated_cache.load_generated(output_dir)
  (output_dir / 'test-00001.npz').unlink()
  with pytest.raises(FileNotFoundError, match='shard missing'):
    generated_cache.load_generated(output_dir)
  written = generate.run(**_run_kwargs(argv))
  assert written == ['test-00001.npz']
  after = {p.name: p.stat().st_mtime_ns for p in output_dir.glob('*.npz')}
  assert set(after) == set(before)
  for name in ('test-00000.npz', 'test-00002.npz'):
    assert after[name] == before[name]
  reloaded = generated_cache.load_generated(output_dir)
  for key, value in reference.items():
    np.testing.assert_array_equal(reloaded[key], value)
  with pytest.raises(SystemExit, match='other settings'):
    generate.run(**{**_run_kwargs(argv), 'temperature': 0.5})


def _run_kwargs(argv):
  parsed = dict(arg[2:].split('=', 1) for arg in argv)
  ints = ('batch_size', 'shard_size')
  return {key: int(value) if key in ints else value for key, value in parsed.items()}


def test_rows_match_a_direct_generation(cache, tiny_pipeline):
  output_dir, data_dir, _ = cache
  arrays = generated_cache.load_generated(output_dir)
  np.testing.assert_array_equal(arrays['index'], np.arange(NUM_EXAMPLES))
  config = input_pipeline.default_data_config()
  config.update(name='synthetic_poses/tiny', data_dir=str(data_dir), prefetch_batches=0)
  source, hierarchy, _ = input_pipeline.load_source(config, 'test')
  batch = next(input_pipeline.eval_batches(source, hierarchy, config,
                                           global_batch_size=NUM_EXAMPLES,
                                           num_local_devices=1))
  batch = {key: value[0] for key, value in batch.items()}
  model, variables, _ = checkpoints.load_hipart(str(tiny_pipeline['lifter_hierarchical']))
  direct = jax.jit(functools.partial(hipart.generate_hierarchy, model.msst, model.hiarm))(
      variables, batch['inputs_2d'], batch['inputs_confidence'], jax.random.key(0))
  for level in skeleton.LEVELS:
    np.testing.assert_allclose(arrays[f'{level}_2d'], direct[level], atol=1e-4)
  np.testing.assert_allclose(arrays['norm_center'], batch['norm_center'], atol=1e-6)
  np.testing.assert_allclose(arrays['norm_scale'], batch['norm_scale'], atol=1e-6)


@pytest.mark.parametrize('case, message', [
    ('sparse', "'sparse' mode"), ('both', 'either --checkpoint'),
    ('wrong_msst', "expected stage 'msst'"), ('missing', 'does not exist')])
def test_generator_errors(tiny_pipeline, tmp_path, case, message):
  kwargs = dict(sparse=dict(checkpoint=tiny_pipeline['lifter_sparse']),
                both=dict(checkpoint=tiny_pipeline['lifter_hierarchical'],
                          hiarm=tiny_pipeline['hiarm']),
                wrong_msst=dict(hiarm=tiny_pipeline['hiarm'], msst=tiny_pipeline['hiarm']),
                missing=dict(hiarm=tmp_path / 'nowhere'))[case]
  with pytest.raises(SystemExit) as info:
    generate.run(dataset='synthetic_poses/tiny', output_dir=str(tmp_path / 'out'),
                 **{key: str(value) for key, value in kwargs.items()})
  text = str(info.value.code)
  assert text.startswith('generate: error: ') and message in text and '\n' not in text
  assert not (tmp_path / 'out').exists()


def test_hiarm_with_its_msst_is_the_lifters_generator(tiny_pipeline):
  msst, hiarm, collections, generator, source = generate.load_generator(
      None, str(tiny_pipeline['hiarm']), str(tiny_pipeline['msst']))
  model, variables, _ = checkpoints.load_hipart(str(tiny_pipeline['lifter_hierarchical']))
  assert (msst, hiarm) == (model.msst, model.hiarm)
  for key in ('frozen_msst', 'frozen_hiarm'):
    for a, b in zip(jax.tree.leaves(collections[key]), jax.tree.leaves(variables[key])):
      np.testing.assert_array_equal(a, b)
  assert source == 'gt' and generator['hiarm'].endswith('hiarm')


def test_num_draws_writes_augmented_draws_a_lifter_trains_from(tiny_pipeline,
                                                                tmp_path_factory):
  data_dir = synthetic_tiny(tmp_path_factory)
  output_dir = tmp_path_factory.mktemp('draws')
  argv = [f'--hiarm={tiny_pipeline["hiarm"]}', '--dataset=synthetic_poses/tiny',
          '--split=train', f'--data_dir={data_dir}', f'--output_dir={output_dir}',
          '--batch_size=16', '--num_draws=2', '--seed=1']
  _cli(argv)
  manifest = json.loads((output_dir / 'manifest.json').read_text())
  assert manifest['draws'] == ['draw-000.npz', 'draw-001.npz']
  assert manifest['settings']['seed'] == 1 and manifest['settings']['split'] == 'train'
  rows = drawn_batches.load_draws(output_dir)
  _assert_describes(manifest['meta'], tiny_pipeline, 'hiarm', 'hiarm', split='train')
  assert 'sparse_3d meters' in manifest['meta']['units']
  with np.load(output_dir / 'draw-001.npz') as draw:
    assert json.loads(draw['meta'].item()) == manifest['meta']
  n = manifest['settings']['num_examples']
  assert rows['generated_dense_2d'].shape[0] == 2 * n
  assert not np.array_equal(rows['inputs_2d'][:n], rows['inputs_2d'][n:])
  with pytest.raises(SystemExit, match='--num_draws must be >= 0'):
    _cli(argv[:-2] + ['--num_draws=-1'])
