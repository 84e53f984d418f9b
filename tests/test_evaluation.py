"""hipart_jax/evaluation.py and launch/evaluate.py on the session's tiny trained pipeline."""

import dataclasses
import json

from absl import flags
import jax
import numpy as np
import pytest

import fake_examples
import pipeline_fixture
from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import input_pipeline
from hipart_jax import protocols
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import evaluate as evaluate_cli
from tfds_builders.synthetic_poses import synthetic_poses_dataset_builder as builder_lib

HIERARCHY = pipeline_fixture.HIERARCHY
NUM_EXAMPLES, BATCH = 20, 8  # 3 batches, the last one half padding.
# One sampling setting for every K > 1 evaluation here, so the lifter compiles once.
SAMPLING = dict(num_samples=3, temperature=1.0)


def synthetic_tiny(tmp_path_factory):
  """Data dir holding synthetic_poses/tiny (built once per session)."""
  data_dir = tmp_path_factory.getbasetemp() / 'synthetic_tiny_tfds'
  builder = builder_lib.SyntheticPoses(config='tiny', data_dir=str(data_dir))
  if not builder.is_prepared():
    builder.download_and_prepare()
  return data_dir


@pytest.fixture(scope='module')
def hierarchical(tiny_pipeline):
  return checkpoints.load_hipart(str(tiny_pipeline['lifter_hierarchical']))


@pytest.fixture(scope='module')
def sparse(tiny_pipeline):
  return checkpoints.load_hipart(str(tiny_pipeline['lifter_sparse']))


@pytest.fixture(scope='module')
def data():
  config = input_pipeline.default_data_config()
  config.prefetch_batches = 0
  return fake_examples.fake_examples(NUM_EXAMPLES, HIERARCHY, seed=5), config


def _first_batch(source, config, size):
  batch = next(input_pipeline.eval_batches(source, HIERARCHY, config, global_batch_size=size,
                                           num_local_devices=1))
  return {key: value[0] for key, value in batch.items()}


def test_lift_batch_reads_what_each_mode_needs(hierarchical, sparse, data):
  source, config = data
  batch = _first_batch(source, config, BATCH)
  rng = jax.random.key(0)
  # Sparse: the lifter on the input joints alone.
  model, variables, _ = sparse
  out = evaluation.lift_batch(model, variables, batch, rng)
  expected = jax.jit(model.lifter.apply)({'params': variables['params']}, batch['inputs_2d'],
                                         batch['inputs_confidence'])
  np.testing.assert_allclose(out['pose_3d'], expected, atol=1e-5)
  assert out['hypotheses_3d'].shape == (BATCH, 1, 17, 3)
  # Oracle: the same weights read the ground-truth hierarchy of the batch.
  model, variables, _ = hierarchical
  oracle = hipart.HiPART(model.lifter.clone(mode='oracle'), model.msst, model.hiarm)
  out = evaluation.lift_batch(oracle, variables, batch, rng)
  truth = {level: batch[f'{level}_2d'] for level in skeleton.LEVELS}
  expected = jax.jit(model.lifter.apply)({'params': variables['params']}, batch['inputs_2d'],
                                         batch['inputs_confidence'], truth)
  np.testing.assert_allclose(out['pose_3d'], expected, atol=1e-5)
  with pytest.raises(ValueError, match='ground-truth hierarchy'):
    hipart.predict(oracle, variables, np.zeros((1, 17, 2)), np.ones((1, 17)),
                     np.array([[100, 100]]), rng)


def test_evaluate_reads_given_hierarchies_instead_of_generating(hierarchical, sparse, data):
  model, variables, _ = hierarchical
  source, config = data
  settings = dict(batch_size=BATCH, occlusion='one_limb', seed=1, return_predictions=True,
                  progress=False, **SAMPLING)
  first = evaluation.evaluate(model, variables, source, HIERARCHY, config, **settings)
  generated = first['predictions']['generated']
  assert {level: g.shape for level, g in generated.items()} == {
      'sparse': (NUM_EXAMPLES, 3, HIERARCHY.num_sparse, 2),
      'dense': (NUM_EXAMPLES, 3, HIERARCHY.num_dense, 2),
      'fine': (NUM_EXAMPLES, 3, HIERARCHY.num_fine, 2)}
  again = evaluation.evaluate(model, variables, source, HIERARCHY, config,
                              generated=generated, **settings)
  np.testing.assert_allclose(again['predictions']['hypotheses_3d'],
                             first['predictions']['hypotheses_3d'], atol=1e-6)
  assert again['mpjpe_mm'] == pytest.approx(first['mpjpe_mm'], rel=1e-6)
  # Other hierarchies give other poses: they are read, not generated again.
  moved = {level: g + 0.5 for level, g in generated.items()}
  other = evaluation.evaluate(model, variables, source, HIERARCHY, config,
                              generated=moved, **settings)
  np.testing.assert_allclose(other['predictions']['generated']['fine'], moved['fine'])
  assert not np.allclose(other['predictions']['hypotheses_3d'],
                         first['predictions']['hypotheses_3d'], atol=1e-4)
  with pytest.raises(ValueError, match=r"generated\['dense'\].*expected"):
    evaluation.evaluate(model, variables, source, HIERARCHY, config,
                        generated={**generated, 'dense': generated['dense'][:-1]},
                        **settings)
  model, variables, _ = sparse
  with pytest.raises(ValueError, match="'hierarchical' lifter only"):
    evaluation.evaluate(model, variables, source, HIERARCHY, config, generated=generated,
                        **settings)


def _by_action(values, actions):
  """Human3.6M averaging by hand: the mean over actions of per-action means."""
  return np.mean([values[actions == a].mean() for a in np.unique(actions)])


def test_evaluate_best_of_k_and_occlusion_by_hand(hierarchical, data):
  model, variables, _ = hierarchical
  source, config = data
  result = evaluation.evaluate(model, variables, source, HIERARCHY, config, batch_size=BATCH,
                               occlusion='one_limb', seed=1, return_predictions=True,
                               progress=False, **SAMPLING)
  pred = result['predictions']
  np.testing.assert_array_equal(pred['index'], np.arange(NUM_EXAMPLES))  # No padding.
  assert result['num_examples'] == NUM_EXAMPLES
  hypotheses, target, actions = pred['hypotheses_3d'], pred['target_3d'], pred['action']
  assert hypotheses.shape == (NUM_EXAMPLES, 3, 17, 3)
  per_hypothesis = np.linalg.norm(hypotheses - target[:, None], axis=-1).mean(-1) * 1000
  assert np.ptp(per_hypothesis, axis=1).max() > 0  # Sampling gives distinct hypotheses.
  best = per_hypothesis.min(axis=1)
  np.testing.assert_allclose(result['oracle_mpjpe_mm'], _by_action(best, actions), rtol=1e-5)
  for k in range(3):  # Best-of-K is never worse than any single hypothesis.
    assert result['oracle_mpjpe_mm'] <= _by_action(per_hypothesis[:, k], actions) + 1e-6
  mean = hypotheses.mean(1)
  np.testing.assert_allclose(pred['pose_3d'], mean, atol=1e-6)
  error = np.linalg.norm(mean - target, axis=-1) * 1000
  np.testing.assert_allclose(result['mpjpe_mm'], _by_action(error.mean(-1), actions),
                             rtol=1e-5)
  spread = np.sqrt(((hypotheses - mean[:, None]) ** 2).sum(-1).mean(1)) * 1000
  np.testing.assert_allclose(result['mean_uncertainty_mm'], spread.mean(), rtol=1e-4)
  occluded = ~pred['visible']
  assert 0 < occluded.sum() < occluded.size
  assert result['num_occluded_joints'] == occluded.sum()
  np.testing.assert_allclose(result['occluded_mpjpe_mm'], error[occluded].mean(), rtol=1e-5)


def test_evaluate_reproduces_the_trainers_evaluation(tiny_pipeline, sparse):
  """Same data, batch size and averaging as the trainer's last evaluation: same numbers."""
  model, variables, _ = sparse
  rows = (tiny_pipeline['lifter_sparse'] / 'metrics.jsonl').read_text().splitlines()
  trainer = [row for row in map(json.loads, rows) if 'eval/mpjpe_mm' in row][-1]
  config = pipeline_fixture.lifter_config('sparse')
  _, eval_source = pipeline_fixture.sources()
  result = evaluation.evaluate(model, variables, eval_source, HIERARCHY, config.dataset,
                               batch_size=config.eval_batch_size, average='examples',
                               progress=False)
  assert result['num_examples'] == pipeline_fixture.NUM_EVAL
  for name in ('mpjpe_mm', 'p_mpjpe_mm', 'n_mpjpe_mm'):
    np.testing.assert_allclose(result[name], trainer[f'eval/{name}'], rtol=1e-4)


def test_robustness_table_and_text(sparse, data):
  model, variables, _ = sparse
  source, config = data
  table = evaluation.robustness_table(
      model, variables, source, HIERARCHY, config, levels=('none', 'two_limbs'),
      batch_size=BATCH, action_names=fake_examples.ACTION_NAMES, progress=False)
  assert list(table) == ['none', 'two_limbs']
  assert table['none']['occluded_mpjpe_mm'] is None
  assert table['two_limbs']['num_occluded_joints'] > 0
  assert table['none']['mpjpe_mm'] != table['two_limbs']['mpjpe_mm']
  assert 'oracle_mpjpe_mm' not in table['none']  # K = 1.
  assert set(table['none']['per_action']) <= set(fake_examples.ACTION_NAMES)
  text = evaluation.format_table(table)
  assert text.splitlines()[0].split()[:3] == ['occlusion', 'MPJPE', 'P-MPJPE']
  assert 'best-of-K' not in text and len(text.splitlines()) == 4
  assert 'walk' in evaluation.format_per_action(table['none'])


def test_evaluate_rejects_another_hierarchy_and_level(sparse, data):
  model, variables, _ = sparse
  source, config = data
  other = dataclasses.replace(HIERARCHY, dense_part=HIERARCHY.dense_part[:-1] + (15,))
  with pytest.raises(ValueError, match='hierarchy differs'):
    evaluation.evaluate(model, variables, source, other, config, batch_size=BATCH)
  with pytest.raises(ValueError, match='unknown occlusion level'):
    evaluation.evaluate(model, variables, source, HIERARCHY, config, batch_size=BATCH,
                        occlusion='three_limbs')


# ---- launch/evaluate.py


@pytest.fixture
def tiny_protocol(monkeypatch):
  """The `synthetic` protocol on synthetic_poses/tiny (whose test subject is S4)."""
  protocol = dataclasses.replace(protocols.PROTOCOLS['synthetic'], name='synthetic_tiny',
                                 builder_config='tiny', subjects=('S4',))
  monkeypatch.setattr(protocols, 'PROTOCOLS', {**protocols.PROTOCOLS, protocol.name: protocol})
  return protocol.name


def _cli(argv):
  flag_values = flags.FlagValues()
  evaluate_cli.define_flags(flag_values)
  flag_values(['evaluate'] + argv)
  evaluate_cli.main(['evaluate'], flag_values)


PROMISED = ('mpjpe_mm', 'p_mpjpe_mm', 'n_mpjpe_mm', 'pck150', 'auc', 'per_action', 'per_joint',
            'occluded_mpjpe_mm', 'num_examples')


def test_cli_writes_metrics_per_occlusion_level(tiny_pipeline, tiny_protocol, tmp_path,
                                                tmp_path_factory, capsys):
  data_dir = synthetic_tiny(tmp_path_factory)
  _cli([f'--checkpoint={tiny_pipeline["lifter_hierarchical"]}', f'--workdir={tmp_path}',
        f'--protocol={tiny_protocol}', f'--data_dir={data_dir}', '--occlusion=none,one_limb',
        f'--num_samples={SAMPLING["num_samples"]}', f'--temperature={SAMPLING["temperature"]}',
        f'--batch_size={BATCH}'])
  written = json.loads((tmp_path / 'metrics.json').read_text())
  assert list(written['levels']) == ['none', 'one_limb']
  for level, summary in written['levels'].items():
    assert set(PROMISED + ('oracle_mpjpe_mm', 'headline')) <= set(summary), level
    assert summary['num_examples'] == 24  # The tiny test split.
    assert summary['oracle_mpjpe_mm'] > 0 and summary['mean_uncertainty_mm'] > 0
  assert written['levels']['none']['occluded_mpjpe_mm'] is None
  assert written['levels']['one_limb']['occluded_mpjpe_mm'] > 0
  assert set(written['table']) == {'none', 'one_limb'}
  assert written['table']['one_limb']['mpjpe_mm'] == written['levels']['one_limb']['mpjpe_mm']
  # Action names from the dataset info, not ids.
  assert all(not name.isdigit() for name in written['levels']['none']['per_action'])
  _assert_describes(written['meta'], tiny_pipeline, 'lifter_hierarchical', tiny_protocol)
  printed = capsys.readouterr().out
  assert 'one_limb' in printed and 'best-of-K' in printed and 'per action' in printed


def test_cli_single_level_keys_at_top(tiny_pipeline, tiny_protocol, tmp_path,
                                      tmp_path_factory):
  data_dir = synthetic_tiny(tmp_path_factory)
  _cli([f'--checkpoint={tiny_pipeline["lifter_sparse"]}', f'--workdir={tmp_path}',
        f'--protocol={tiny_protocol}', f'--data_dir={data_dir}', f'--batch_size={BATCH}'])
  written = json.loads((tmp_path / 'metrics.json').read_text())
  assert set(PROMISED) <= set(written)
  assert written['settings']['lifter_mode'] == 'sparse'
  assert written['protocol'] == tiny_protocol and 'oracle_mpjpe_mm' not in written
  _assert_describes(written['meta'], tiny_pipeline, 'lifter_sparse', tiny_protocol)


def _assert_describes(meta, tiny_pipeline, name, protocol):
  """metrics.json states its units, joints (per_joint's order), split and model."""
  spec = protocols.PROTOCOLS[protocol]
  assert meta['units'].startswith(spec.units_out)
  assert meta['coordinate_frame'].startswith(f'3D poses relative to {spec.root}')
  assert meta['joint_names'] == list(spec.joints)
  assert meta['input'] == dict(protocol=protocol, dataset=spec.tfds_name, split=spec.split,
                               input_source=spec.input_source)
  pipeline_fixture.assert_identity(meta['model'], tiny_pipeline, name, 'lifter')
  assert meta['project_version']


@pytest.mark.parametrize('case, message', [
    ('missing', 'does not exist'), ('msst', "expected stage 'lifter'"),
    ('protocol', 'unknown protocol'), ('occlusion', '--occlusion=')])
def test_cli_errors_are_one_line(tiny_pipeline, tmp_path, case, message):
  checkpoint = {'missing': tmp_path / 'nowhere', 'msst': tiny_pipeline['msst']}.get(
      case, tiny_pipeline['lifter_sparse'])
  argv = [f'--checkpoint={checkpoint}', f'--workdir={tmp_path}',
          f'--protocol={"nope" if case == "protocol" else "synthetic"}',
          f'--occlusion={"half" if case == "occlusion" else "none"}']
  with pytest.raises(SystemExit) as info:
    _cli(argv)
  text = str(info.value.code)
  assert text.startswith('evaluate: error: ') and message in text and '\n' not in text
  assert not (tmp_path / 'metrics.json').exists()
