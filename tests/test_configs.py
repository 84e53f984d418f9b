"""Every config under launch/configs/ loads and is complete; paper scale; CMU benchmark smoke.

Stage configs (those naming a `stage`) must carry every key of `base.get_config()` with
its type, model blocks the modules accept, the loss weights their stage reads, a
dataset whose builder has the configured input source and action count, and a
`best_metric` the stage's evaluation emits. The paper-scale HiPART (h36m_*, cmu_*) must
be a few million parameters (the paper: 2.4 M). `bench/cmu_accuracy.py --smoke` runs
end to end on the cmu_mocap builder's dummy data (in a subprocess: it is an absl
program).
"""

import importlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hipart_jax import input_pipeline
from hipart_jax import orderings
from hipart_jax import checkpoints
from hipart_jax import skeleton
from hipart_jax.models import hipart
from hipart_jax.training import stages
from launch.configs import base
import fake_examples

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'launch' / 'configs'
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob('*.py') if p.stem != '__init__')
LIFTER_MODES = ('sparse', 'hierarchical', 'oracle')
# Configs that are not one training stage, and the keys their entry point reads.
NON_STAGE_KEYS = {
    'base': ('stage', 'seed', 'dataset', 'batch_size', 'optimizer', 'model', 'loss'),
    'demo': ('dataset', 'seed', 'batch_size', 'eval_batch_size', 'msst_steps', 'hiarm_steps',
             'lifter_steps', 'model_scale', 'lifter_modes', 'occlusion_levels', 'num_inference_examples',
             'num_samples', 'temperature'),
    'cmu_benchmark': ('builder_config', 'seeds', 'msst', 'hiarm', 'num_draws', 'lifters',
                      'hipart_architecture', 'lifter_steps', 'occlusion_levels'),
}
# The variants each config accepts after ':' (None: no argument).
NON_STAGE_VARIANTS = {'demo': (None, 'smoke'),
                      'cmu_benchmark': (None, 'multi_subject', 'shared_clips', 'smoke')}
# Loss weights each stage reads.
LOSS_KEYS = {'msst': ('sparse', 'commitment', 'local_alignment', 'global_alignment',
                      'la_temperature'),
             'hiarm': ('dense_weight', 'label_smoothing'),
             'lifter': ('bone_weight', 'generation_temperature')}
PAPER_SCALE_PREFIXES = ('h36m', 'cmu')
PAPER_SCALE_RANGE = (1.5e6, 4.0e6)

def _module(name):
  return importlib.import_module(f'launch.configs.{name}')


def _variants(name):
  """The config arguments to try: orderings for HiARM, modes for lifters, and 'tiny'."""
  if name in NON_STAGE_KEYS:
    return NON_STAGE_VARIANTS.get(name, (None,))
  if name.endswith('_hiarm'):
    return (None, 'tiny', 'raster,tiny') + orderings.ORDERING_NAMES
  if name == 'cmu_lifter':
    return ((None, 'tiny', 'sparse,tiny', 'mlp,tiny') + LIFTER_MODES
            + ('mlp', 'mlp_hierarchical', 'mlp_oracle'))
  if name.endswith('_lifter'):
    return (None, 'tiny', 'sparse,tiny') + LIFTER_MODES
  return (None, 'tiny')


def _choice(variant, default):
  """The ordering or mode a config argument names ('raster,tiny' → 'raster', 'mlp' →
  'sparse', 'mlp_oracle' → 'oracle')."""
  choice = base.parse_variant(variant, orderings.ORDERING_NAMES + LIFTER_MODES
                              + ('mlp', 'mlp_hierarchical', 'mlp_oracle'), default)[0]
  return 'sparse' if choice == 'mlp' else choice.replace('mlp_', '')


def _load(name, variant=None):
  module = _module(name)
  return module.get_config() if variant is None else module.get_config(variant)


STAGE_CONFIGS = [(name, variant) for name in CONFIG_NAMES if name not in NON_STAGE_KEYS
                 for variant in _variants(name)]


def _flat_types(config, prefix=''):
  """{dotted key: type} of a ConfigDict, recursively (None values: no type)."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flat_types(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = None if value is None else type(value)
  return out


@pytest.fixture(scope='module')
def dataset_infos(tmp_path_factory):
  """{TFDS name: DatasetInfo} of every dataset a config names (no data is built)."""
  data_dir = tmp_path_factory.mktemp('tfds_infos')
  names = {_load(name, variant).dataset.name for name, variant in STAGE_CONFIGS}
  infos = {}
  for name in names:
    importlib.import_module('tfds_builders.' + name.split('/')[0])
    infos[name] = tfds.builder(name, data_dir=data_dir).info
  return infos


def _hierarchy(info):
  return skeleton.Hierarchy.from_json(info.metadata['hierarchy'])


def test_every_config_file_is_covered():
  # New config files must be stage configs or listed with their keys above.
  assert {'base', 'demo', 'synthetic_msst', 'cmu_msst', 'h36m_lifter'} <= set(CONFIG_NAMES)
  for name in CONFIG_NAMES:
    if name not in NON_STAGE_KEYS:
      assert _load(name).stage in stages.STAGES, name


@pytest.mark.parametrize('name', sorted(NON_STAGE_KEYS))
def test_non_stage_configs_load(name):
  for variant in _variants(name):
    config = _load(name, variant)
    missing = [key for key in NON_STAGE_KEYS[name] if key not in config]
    assert not missing, f'{name}:{variant} lacks {missing}'
  if name == 'demo':
    with pytest.raises(ValueError):
      _load('demo', 'no_such_variant')


@pytest.mark.parametrize('name,variant', STAGE_CONFIGS)
def test_stage_config_has_the_trainer_keys(name, variant, dataset_infos):
  config = _load(name, variant)
  assert config.stage == name.rsplit('_', 1)[1]
  expected, actual = _flat_types(base.get_config()), _flat_types(config)
  for key, kind in expected.items():
    if key.startswith(('model.', 'loss.', 'init_from.')):
      continue
    assert key in actual, f'{name}: missing {key}'
    if kind is not None and actual[key] is not None:
      assert issubclass(actual[key], kind) or {kind, actual[key]} <= {int, float}, (
          f'{name}: {key} is {actual[key]}, base has {kind}')
  assert not set(config.dataset.keys()) ^ set(input_pipeline.default_data_config().keys())
  for key in LOSS_KEYS[config.stage]:
    assert key in config.loss, f'{name}: loss.{key} missing'
  if config.stage != 'msst':
    assert 'msst' in config.init_from
  if config.stage == 'lifter':
    assert config.model.mode == _choice(variant, 'hierarchical')
    assert 'hiarm' in config.init_from
  if config.stage == 'hiarm':
    assert config.model.ordering == _choice(variant, 'hierarchical')
  assert 0 < config.optimizer.warmup_steps < config.num_train_steps
  assert config.best_mode in ('min', 'max')

  info = dataset_infos[config.dataset.name]
  assert config.dataset.input_source in info.features['keypoints_2d'].keys()
  if config.stage == 'msst':
    assert config.model.num_actions == len(info.features['action'].names)


def _paper_modules(prefix, hierarchy, **lifter_overrides):
  msst_config = _load(f'{prefix}_msst').model
  msst = hipart.build_msst(msst_config, hierarchy)
  hiarm = hipart.build_hiarm(_load(f'{prefix}_hiarm').model, hierarchy, msst)
  lifter_config = _load(f'{prefix}_lifter').model
  lifter_config.update(lifter_overrides)
  return msst, hiarm, hipart.build_lifter(lifter_config, hierarchy)


def _parameter_counts(msst, hiarm, lifter, hierarchy):
  """Parameters of each module, from abstract initialization (nothing is computed)."""
  batch = 2
  levels = [jax.ShapeDtypeStruct((batch, n, 2), np.float32)
            for n in (hierarchy.num_sparse, hierarchy.num_dense, hierarchy.num_fine)]
  inputs = levels[0]
  confidence = jax.ShapeDtypeStruct((batch, hierarchy.num_sparse), np.float32)
  ids = [jax.ShapeDtypeStruct((batch, n), np.int32)
         for n in (hierarchy.num_sparse, hierarchy.num_dense)]
  key = jax.random.key(0)
  shapes = dict(
      msst=jax.eval_shape(lambda *a: msst.init(key, *a, train=False), *levels),
      hiarm=jax.eval_shape(lambda *a: hiarm.init(key, *a), inputs, confidence, *ids),
      lifter=jax.eval_shape(lambda *a: lifter.init(key, a[0], a[1], dict(
          zip(skeleton.LEVELS, a[2:]))), inputs, confidence, *levels))
  return {name: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(v['params'])))
          for name, v in shapes.items()}


@pytest.mark.parametrize('prefix', PAPER_SCALE_PREFIXES)
def test_paper_scale_parameter_count(prefix, dataset_infos):
  hierarchy = _hierarchy(dataset_infos[_load(f'{prefix}_msst').dataset.name])
  counts = _parameter_counts(*_paper_modules(prefix, hierarchy), hierarchy)
  total = sum(counts.values())
  print(f'{prefix}: {counts}, total {total}')
  assert PAPER_SCALE_RANGE[0] <= total <= PAPER_SCALE_RANGE[1], counts
  # Every stage is a real share of it, not one stage carrying the budget.
  assert min(counts.values()) > 0.1 * total, counts
  # The synthetic configs are the small models (the CPU benchmarks use them).
  small = _parameter_counts(*_paper_modules('synthetic', hierarchy), hierarchy)
  assert sum(small.values()) < PAPER_SCALE_RANGE[0], small


def _eval_metric_names(stage, batch):
  variables = jax.eval_shape(stage.init_variables, jax.random.key(0), batch)
  return set(jax.eval_shape(stage.eval_metrics, variables, batch))


def test_best_metrics_are_evaluated(monkeypatch):
  """Each stage config's best_metric is among its stage's evaluation metrics."""
  hierarchy = skeleton.default_hierarchy()
  examples = fake_examples.fake_examples(2, hierarchy, seed=0)
  batch = next(input_pipeline.eval_batches(examples, hierarchy,
                                           input_pipeline.default_data_config(),
                                           global_batch_size=2, num_local_devices=1))
  batch = {key: value[0] for key, value in batch.items()}
  msst_config = _load('synthetic_msst', 'tiny').model
  msst = hipart.build_msst(msst_config, hierarchy)
  msst_variables = jax.jit(lambda *a: msst.init(jax.random.key(0), *a, train=False))(
      *[batch[f'{level}_2d'] for level in skeleton.LEVELS])

  def load_frozen(directory, expected_stage, hierarchy_):
    # A freshly initialized tiny tokenizer instead of a trained checkpoint.
    assert expected_stage == 'msst' and directory and hierarchy_ == hierarchy
    return dict(msst_variables), {'model': msst_config.to_dict(),
                                  'hierarchy': hierarchy.to_json()}

  monkeypatch.setattr(checkpoints, 'load_frozen', load_frozen)
  names = {}
  for stage_name in stages.STAGES:
    config = _load(f'synthetic_{stage_name}',
                   'sparse,tiny' if stage_name == 'lifter' else 'tiny')
    config.init_from.msst = 'unused'
    names[stage_name] = {f'eval/{n}' for n in _eval_metric_names(
        stages.make_stage(config, hierarchy), batch)}
  assert 'eval/generated_fine_px' in names['hiarm']
  for name, variant in STAGE_CONFIGS:
    config = _load(name, variant)
    assert config.best_metric in names[config.stage], (name, config.best_metric)


@pytest.mark.skipif(
    not os.environ.get('HIPART_SLOW_TESTS'),
    reason='trains and evaluates fourteen runs and two hidden-joint regressors in '
           'subprocesses (about five minutes of CPU); set HIPART_SLOW_TESTS=1 to run it')
def test_cmu_accuracy_smoke(tmp_path):
  """The benchmark's whole path (build, train, draws, evaluate, report) on the dummy clips."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')

  def run_smoke(module):
    result = subprocess.run(
        [sys.executable, '-m', module, '--config=launch/configs/cmu_benchmark.py:smoke',
         f'--workdir={tmp_path}'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

  run_smoke('bench.cmu_accuracy')
  report = json.loads((tmp_path / 'cmu_accuracy.json').read_text())
  # Dummy clips: 9 frames each, every 4th kept, 4 cameras; 10 / 2 / 3 clips per split.
  assert report['dataset']['train_examples'] == 10 * 3 * 4
  assert report['dataset']['validation_examples'] == 2 * 3 * 4
  levels = report['settings']['occlusion_levels']
  assert set(report['lifters']) == {'mlp', 'transformer', 'hipart', 'oracle'}
  for table in report['lifters'].values():
    assert list(table) == levels
    stats = table['one_limb']['mpjpe_mm']
    assert len(stats['values']) == 2 and stats['min'] <= stats['mean'] <= stats['max']
    assert table['none']['occluded_mpjpe_mm']['mean'] is None
    assert set(table['none']['per_subject']) == set(report['dataset']['test_subjects'])
  assert set(report['hiarm']) == {'hierarchical', 'raster'}
  assert set(report['lifters_validation']) == set(report['lifters'])
  assert list(report['lifters_validation']['hipart']) == levels
  assert report['targets']['best_baseline'] in ('mlp', 'transformer')
  assert len(report['diagnosis']['lifter_feeds']['none']) == 2 * 3
  imputation = report['diagnosis']['hidden_joint_imputation']
  assert list(imputation) == ['one_limb']  # Clean input hides no joint.
  assert set(imputation['one_limb']) == {
      'hiarm_generated', 'tokenized_truth', 'fit_of_the_true_3d', 'hipart_lifter',
      'mlp_lifter', 'transformer_lifter'}
  assert report['timings']['draws'] > 0
  # A rerun trains nothing and reports the same lifters.
  run_smoke('bench.cmu_accuracy')
  assert json.loads((tmp_path / 'cmu_accuracy.json').read_text())['lifters'] == (
      report['lifters'])
  # The hidden-joint regressor on the benchmark's draws, beside its imputation table.
  run_smoke('bench.imputation_bound')
  bound_report = json.loads((tmp_path / 'imputation_bound.json').read_text())
  assert set(bound_report['px']) == {'hidden_joint_regressor_seed0',
                                     'hidden_joint_regressor_seed1'}
  for splits in bound_report['px'].values():
    assert list(splits['test']) == ['one_limb'] and splits['test']['one_limb'] > 0
  assert 'hiarm generated' in (tmp_path / 'imputation_bound.md').read_text()
