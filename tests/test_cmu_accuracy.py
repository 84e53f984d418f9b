"""The CMU benchmark's pieces: run configs, seed statistics, targets, custom clip lists.

The whole path (build, train, draws, evaluate, report) runs in
tests/test_configs.py::test_cmu_accuracy_smoke (HIPART_SLOW_TESTS=1).
"""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from bench import cmu_accuracy
from bench import cmu_report
from bench import stage_evals
from launch.configs import cmu_benchmark
from launch.configs import cmu_msst


def _runs(tmp_path, **overrides):
  c = cmu_benchmark.get_config('multi_subject')
  c.update(overrides)
  data = cmu_accuracy.data_block(c, '/data', None)
  return c, cmu_accuracy.stage_configs(c, tmp_path, data, num_actions=8)


def test_every_lifter_reads_the_same_draws_for_the_same_steps(tmp_path):
  c, runs = _runs(tmp_path)
  lifters = {name: config for name, config in runs.items() if name.startswith('lifter_')}
  assert len(lifters) == len(cmu_report.LIFTERS) * len(c.seeds)
  for config in lifters.values():
    assert config.dataset.train_draws == str(tmp_path / 'draws')
    assert (config.num_train_steps, config.batch_size) == (c.lifter_steps,
                                                           c.lifter_batch_size)
    assert config.dataset.eval_split == 'validation'  # Never the test split.
  models = {name: config.model for name, config in lifters.items()}
  assert models['lifter_mlp_seed0'].architecture == 'simple_baseline'
  assert models['lifter_mlp_seed0'].mode == 'sparse'
  assert models['lifter_transformer_seed0'].get('architecture', 'transformer') == (
      'transformer')
  for lifter, mode in (('hipart', 'hierarchical'), ('oracle', 'oracle')):
    assert models[f'lifter_{lifter}_seed1'].mode == mode
    assert models[f'lifter_{lifter}_seed1'].architecture == 'simple_baseline'
  assert runs['lifter_hipart_seed0'].init_from.hiarm == str(tmp_path / 'hiarm_hierarchical')
  assert [runs[f'lifter_mlp_seed{s}'].seed for s in c.seeds] == list(c.seeds)
  assert runs['msst'].model.num_actions == 8
  assert runs['hiarm_raster'].model.ordering == 'raster'
  assert runs['msst'].dataset.name == 'cmu_mocap/multi_subject'


@pytest.mark.parametrize('key', cmu_accuracy.HIARM_AUGMENT_OVERRIDES)
def test_hiarm_augment_override_changes_only_the_hiarm_runs(tmp_path, key):
  _, default = _runs(tmp_path)
  c, _ = _runs(tmp_path)
  c.hiarm[key] = 0.9
  runs = cmu_accuracy.stage_configs(c, tmp_path, cmu_accuracy.data_block(c, '/data', None),
                                    num_actions=8)
  for name, config in runs.items():
    want = 0.9 if name.startswith('hiarm_') else default[name].dataset.augment[key]
    assert config.dataset.augment[key] == want, name
  c.hiarm[key] = None  # The dataset's value, as every other stage.
  runs = cmu_accuracy.stage_configs(c, tmp_path, cmu_accuracy.data_block(c, '/data', None),
                                    num_actions=8)
  assert runs['hiarm_raster'].dataset.augment[key] == (
      runs['msst'].dataset.augment[key]) < 0.9


def test_hiarm_trains_on_occluded_inputs_only_by_default(tmp_path):
  _, runs = _runs(tmp_path)
  assert runs['hiarm_hierarchical'].dataset.augment.occlusion_prob == 1.0
  assert runs['msst'].dataset.augment.occlusion_prob < 1.0


def test_hipart_can_use_the_transformer(tmp_path):
  _, runs = _runs(tmp_path, hipart_architecture='transformer', hipart_hierarchy_points='all')
  model = runs['lifter_hipart_seed0'].model
  assert model.mode == 'hierarchical' and 'depth' in model
  with pytest.raises(ValueError, match="hipart_architecture='cnn'"):
    _runs(tmp_path, hipart_architecture='cnn')


def test_custom_clip_lists_make_a_config_of_their_own():
  assert cmu_accuracy.builder_config('multi_subject', {'train': None}) is None
  config = cmu_accuracy.builder_config(
      'multi_subject', {'train': ['01_01'], 'validation': None, 'test': ['bvh:09_01']})
  assert config.train_clips == ('01_01',) and config.test_clips == ('bvh:09_01',)
  assert config.validation_clips == cmu_accuracy.cmu_builder.MULTI_SUBJECT.validation_clips
  other = cmu_accuracy.builder_config('multi_subject', {'train': ['01_02']})
  assert config.name.startswith('multi_subject_') and config.name != other.name
  c = cmu_benchmark.get_config()
  data = cmu_accuracy.data_block(c, None, config)
  assert data.name == 'cmu_mocap' and data.builder_kwargs['config'] is config
  assert cmu_accuracy.dataset_name(data) == f'cmu_mocap/{config.name}'
  with pytest.raises(ValueError, match="unknown cmu_mocap config 'nope'"):
    cmu_accuracy.builder_config('nope', {'train': ['01_01']})


def _table(mpjpe, hidden, spread=1.0):
  return {'mpjpe_mm': dict(mean=mpjpe, min=mpjpe - spread / 2, max=mpjpe + spread / 2),
          'occluded_mpjpe_mm': dict(mean=hidden, min=hidden, max=hidden)}


def test_targets_are_ratios_to_the_best_baseline():
  levels = ('none', 'one_limb')
  lifters = dict(mlp={'none': _table(50, None), 'one_limb': _table(80, 200)},
                 transformer={'none': _table(55, None), 'one_limb': _table(70, 150)},
                 hipart={'none': _table(50.5, None), 'one_limb': _table(72, 120)},
                 oracle={'none': _table(40, None), 'one_limb': _table(45, 60)})
  hiarm = {o: {l: {'generated_fine_px': px} for l in levels}
           for o, px in (('hierarchical', 10.0), ('raster', 11.0))}
  t = cmu_report.targets(lifters, hiarm, levels)
  assert t['best_baseline'] == 'mlp'  # By clean MPJPE.
  assert t['hipart_vs_best']['one_limb'] == pytest.approx(72 / 80)
  assert t['hipart_vs_best_hidden']['one_limb'] == pytest.approx(120 / 200)
  assert t['met'] == dict(baselines_le_60mm=True, transformer_no_worse_than_mlp=False,
                          hipart_le_0_92_occluded=True, hipart_le_0_85_hidden=True,
                          hipart_clean_within_spread=True, hierarchical_le_raster=True)
  lifters['hipart']['none'] = _table(52, None)
  assert not cmu_report.targets(lifters, hiarm, levels)['met'][
      'hipart_clean_within_spread']


def test_seed_statistics_and_aggregate():
  assert cmu_report.seed_stats([1.0, 3.0]) == dict(mean=2.0, min=1.0, max=3.0,
                                                      values=[1.0, 3.0])
  assert cmu_report.seed_stats([None, 3.0])['mean'] is None
  per_seed = {s: {'none': dict(mpjpe_mm=10.0 + s, p_mpjpe_mm=5.0, occluded_mpjpe_mm=None,
                               per_subject={'06': 9.0 + s, '09': 11.0})} for s in (0, 1)}
  table = cmu_report.aggregate(per_seed, ('none',))
  assert table['none']['mpjpe_mm']['mean'] == 10.5
  assert table['none']['per_subject']['06'] == dict(mean=9.5, min=9.0, max=10.0,
                                                    values=[9.0, 10.0])


def test_timings_accumulate_over_invocations(tmp_path):
  cmu_accuracy.Timings(tmp_path).add('msst', 2.0)
  timings = cmu_accuracy.Timings(tmp_path)
  timings.add('msst', 3.0)
  assert cmu_accuracy.Timings(tmp_path).seconds == {'msst': 5.0}


def test_in_memory_reads_every_example_in_order():
  source = [{'i': i} for i in range(10)]
  assert cmu_accuracy.in_memory(source, 'x', chunk=3) == source


def test_missing_manual_dir_is_named(tmp_path):
  data = cmu_msst.get_config().dataset
  with pytest.raises(FileNotFoundError, match='no CMU clips at'):
    cmu_accuracy.prepare_dataset(data, pathlib.Path(tmp_path) / 'none')


def test_fit_to_image_recovers_hidden_joints_of_an_affine_image():
  """Hidden joints (weight 0) are placed by the map the visible ones fix, and do not
  move it."""
  rng = np.random.default_rng(0)
  pose = rng.normal(size=(2, 17, 3))
  affine = rng.normal(size=(2, 2, 2))
  offset = rng.normal(size=(2, 1, 2))
  image = np.einsum('bji,bik->bjk', pose[..., :2], affine) + offset
  weights = np.ones((2, 17))
  weights[:, [3, 7, 12]] = 0.0
  moved = image.copy()
  moved[:, [3, 7, 12]] += 5.0  # Where the hidden joints really are must not matter.
  fitted = stage_evals.fit_to_image(jnp.asarray(pose), jnp.asarray(moved),
                                    jnp.asarray(weights))
  np.testing.assert_allclose(fitted, image, atol=1e-4)


def _lifter_tables(levels, value=1.0):
  table = {key: dict(mean=value, min=value, max=value) for key in
           ('mpjpe_mm', 'p_mpjpe_mm', 'occluded_mpjpe_mm')}
  return {l: {level: dict(table, per_subject={}) for level in levels}
          for l in cmu_report.LIFTERS}


def _report(levels, imputation, lifters_validation=None):
  """A report as `cmu_accuracy.run` returns it, with constant tables."""
  lifters = _lifter_tables(levels)
  return dict(
      settings=dict(occlusion_levels=levels, seeds=[0, 1], lifter_steps=2,
                    lifter_batch_size=4, num_draws=1, eval_stride=4, train_eval_stride=8,
                    hiarm=dict(model=dict(code_temperature=0.7))),
      dataset=dict(name='cmu', train_examples=1, validation_examples=1, test_examples=1,
                   test_subjects=[]),
      lifter_epochs=1.0, lifters=lifters, lifters_validation=lifters_validation,
      targets=cmu_report.targets(lifters, {}, levels),
      msst={}, msst_by_occlusion={level: {f'recon_{lv}_px': 1.0 for lv in
                                          ('sparse', 'dense', 'fine')} for level in levels},
      hiarm={}, diagnosis=dict(lifter_feeds={level: {} for level in levels},
                               hidden_joint_imputation=imputation, hiarm_on_train={}),
      curves={}, best_metrics={}, timings={'msst': 1.0})


def test_report_has_the_hidden_joint_table_only_for_levels_that_hide_joints():
  levels = ['none', 'one_limb']
  imputation = {'one_limb': {'hiarm_generated': 25.0, 'fit_of_the_true_3d': 5.5,
                             'hipart_lifter': 17.1, 'mlp_lifter': 17.2,
                             'transformer_lifter': 19.3}}
  text = cmu_report.report_markdown(_report(levels, imputation))
  assert '| source | one_limb |' in text
  assert '| hiarm generated | 25.0 |' in text
  assert '| SimpleBaseline MLP (baseline) | 17.2 |' in text
  assert 'each token decoded as its expected code at code_temperature 0.7' in text
  assert 'validation split' not in text


def test_report_has_the_validation_table_when_the_lifters_were_validated():
  levels = ['none', 'one_limb']
  text = cmu_report.report_markdown(
      _report(levels, {}, lifters_validation=_lifter_tables(levels, value=62.5)))
  assert '| lifter | none | one_limb | hidden, one_limb |' in text
  assert ('| HiPART (generated hierarchy) | 62.5 (62.5–62.5) | 62.5 (62.5–62.5) | '
          '62.5 (62.5–62.5) |') in text


def test_hipart_hierarchy_points_reach_hiparts_lifter_only():
  c = cmu_benchmark.get_config('smoke')
  c.hipart_hierarchy_points = 'all'
  assert cmu_accuracy.lifter_model(c, 'hipart').hierarchy_points == 'all'
  c.hipart_hierarchy_points = 'hidden_parts'
  assert cmu_accuracy.lifter_model(c, 'hipart').hierarchy_points == 'hidden_parts'
  assert cmu_accuracy.lifter_model(c, 'oracle').hierarchy_points == 'all'
  c.hipart_architecture = 'transformer'
  with pytest.raises(ValueError, match='needs the SimpleBaseline lifter'):
    cmu_accuracy.lifter_model(c, 'hipart')


def test_hipart_seeds_share_the_hierarchies_their_hiarm_generates(tiny_pipeline):
  import fake_examples  # pylint: disable=g-import-not-at-top
  import pipeline_fixture  # pylint: disable=g-import-not-at-top
  from hipart_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  source = fake_examples.fake_examples(12, pipeline_fixture.HIERARCHY, seed=2)
  data = input_pipeline.default_data_config()
  data.prefetch_batches = 0
  evaluate = lambda generated: cmu_accuracy.evaluate_lifter(
      tiny_pipeline['lifter_hierarchical'], source, pipeline_fixture.HIERARCHY, data,
      ('none', 'one_limb'), batch_size=8, action_names=None,
      subjects=cmu_accuracy.subjects_of(source), generated=generated)
  alone = evaluate(None)
  shared = {}
  first = evaluate(shared)  # Generates and keeps them.
  assert set(shared) == {'generator', 'none', 'one_limb'}
  kept = {level: {k: v.copy() for k, v in g.items()} for level, g in shared.items()
          if level != 'generator'}
  second = evaluate(shared)  # Reads them.
  for level in ('none', 'one_limb'):
    for k in kept[level]:
      np.testing.assert_array_equal(shared[level][k], kept[level][k])
    for result in (first, second):
      assert result[level]['mpjpe_mm'] == pytest.approx(alone[level]['mpjpe_mm'], rel=1e-6)
  with pytest.raises(ValueError, match='frozen MSST \\+ HiARM differ'):
    evaluate({'generator': 'another generator'})
