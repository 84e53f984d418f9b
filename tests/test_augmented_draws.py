"""Augmented draws (write once, train many lifters) and the SimpleBaseline lifter."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import augmented_draws
from hipart_jax import checkpoints
from hipart_jax import drawn_batches
from hipart_jax import input_pipeline
from hipart_jax import skeleton
from hipart_jax.models import hipart
from hipart_jax.models import msst as msst_lib
from hipart_jax.models import simple_baseline
from hipart_jax.training import stages
from launch.configs import cmu_lifter
import pipeline_fixture
import test_lifter

HIERARCHY = pipeline_fixture.HIERARCHY
NUM_DRAWS = 2


def _generator(hiarm_dir):
  variables, meta = checkpoints.restore_params(hiarm_dir, expected_stage='hiarm')
  msst = hipart.build_msst(meta['frozen_models']['msst'], HIERARCHY)
  hiarm = hipart.build_hiarm(meta['model'], HIERARCHY, msst)
  return msst, hiarm, {'frozen_msst': variables['frozen_msst'], 'frozen_hiarm': variables}


@pytest.fixture(scope='module')
def draws(tiny_pipeline, tmp_path_factory):
  """(directory, data config, generator) of two draws of the fake training split."""
  directory = tmp_path_factory.mktemp('draws')
  data = pipeline_fixture.lifter_config('sparse').dataset
  data.name = 'fake'
  source, _ = pipeline_fixture.sources()
  generator = _generator(tiny_pipeline['hiarm'])
  written = augmented_draws.write_draws(*generator, source, HIERARCHY, data, directory,
                                        split='train', num_draws=NUM_DRAWS, seed=3,
                                        generator={'hiarm': 'tiny'}, chunk_size=40)
  assert written == ['draw-000.npz', 'draw-001.npz']
  return directory, data, generator


def test_draw_rows_are_the_pipelines_augmentation_and_its_generation(draws):
  directory, data, (msst, hiarm, collections) = draws
  rows = drawn_batches.load_draws(directory)
  source, _ = pipeline_fixture.sources()
  n = len(source)
  assert all(v.shape[0] == NUM_DRAWS * n for v in rows.values())
  np.testing.assert_array_equal(rows['index'], np.tile(np.arange(n), NUM_DRAWS))
  # Chunk 1 of draw 1 (examples 40..79) is TrainBatches' augmentation of step 1 * 3 + 1.
  batches = input_pipeline.TrainBatches(source, HIERARCHY, data, global_batch_size=40,
                                        num_local_devices=1, seed=3)
  indices = np.arange(40, 80)
  expected = batches.batch_from_stacked(4, indices, batches.stacked(indices))
  for key in ('inputs_2d', 'inputs_confidence', 'sparse_3d', 'fine_2d', 'visible'):
    np.testing.assert_array_equal(rows[key][n + 40:n + 80], expected[key][0])
  generated = hipart.generate_hierarchy(msst, hiarm, collections, expected['inputs_2d'][0],
                                        expected['inputs_confidence'][0], jax.random.key(0))
  np.testing.assert_allclose(rows['generated_fine_2d'][n + 40:n + 80],
                             generated['fine'][:, 0], atol=1e-5)
  # The two draws differ (augmentation), and occlusion reached some rows.
  assert not np.array_equal(rows['inputs_2d'][:n], rows['inputs_2d'][n:])
  assert (~rows['visible']).any()


def test_tokenized_truth_draws_hold_the_tokenizers_reconstruction(draws, tmp_path):
  """The perfect-HiARM draws: the same augmented rows, the MSST's reconstruction of their
  truth as the hierarchy, and the choice recorded."""
  directory, data, (msst, hiarm, collections) = draws
  source, _ = pipeline_fixture.sources()
  augmented_draws.write_draws(msst, hiarm, collections, source, HIERARCHY, data, tmp_path,
                              split='train', num_draws=1, seed=3,
                              generator={'hiarm': 'tiny'}, chunk_size=40,
                              hierarchy_source='tokenized_truth')
  rows = drawn_batches.load_draws(tmp_path)
  generated = drawn_batches.load_draws(directory)
  n = len(source)
  np.testing.assert_array_equal(rows['inputs_2d'], generated['inputs_2d'][:n])
  truth = [jnp.asarray(rows[f'{level}_2d']) for level in skeleton.LEVELS]
  ids = msst.apply(collections['frozen_msst'], *truth, method=msst_lib.MSST.encode)
  expected = msst.apply(collections['frozen_msst'], *ids, method=msst_lib.MSST.decode)
  for level in skeleton.LEVELS:
    np.testing.assert_allclose(rows[f'generated_{level}_2d'], expected[level], atol=1e-5)
  assert not np.allclose(rows['generated_fine_2d'], generated['generated_fine_2d'][:n])
  manifest = drawn_batches.read_manifest(tmp_path)
  assert manifest['settings']['generator']['hierarchy_source'] == 'tokenized_truth'
  with pytest.raises(ValueError, match='hierarchy_source'):
    augmented_draws.write_draws(msst, hiarm, collections, source, HIERARCHY, data,
                                tmp_path / 'other', split='train', num_draws=1, seed=3,
                                generator={}, hierarchy_source='truth')


def test_rerun_skips_and_other_settings_are_refused(draws):
  directory, data, generator = draws
  source, _ = pipeline_fixture.sources()
  args = (*generator, source, HIERARCHY, data, directory)
  assert augmented_draws.write_draws(*args, split='train', num_draws=NUM_DRAWS, seed=3,
                                     generator={'hiarm': 'tiny'}, chunk_size=40) == []
  with pytest.raises(ValueError, match=r"other settings \(differing: \['seed'\]\)"):
    augmented_draws.write_draws(*args, split='train', num_draws=NUM_DRAWS, seed=4,
                                generator={'hiarm': 'tiny'}, chunk_size=40)


def test_load_draws_names_a_missing_or_broken_draw(draws, tmp_path):
  directory, _, _ = draws
  (tmp_path / 'manifest.json').write_text((directory / 'manifest.json').read_text())
  (tmp_path / 'draw-000.npz').write_bytes((directory / 'draw-000.npz').read_bytes())
  with pytest.raises(FileNotFoundError, match='draw-001.npz: missing'):
    drawn_batches.load_draws(tmp_path)
  with np.load(directory / 'draw-001.npz') as data:
    rows = {k: data[k] for k in data if k != 'generated_fine_2d'}
  np.savez(tmp_path / 'draw-001.npz', **rows)
  with pytest.raises(ValueError, match=r"draw-001.npz: missing arrays \['generated_fine_2d'\]"):
    drawn_batches.load_draws(tmp_path)


def test_drawn_batches_are_pure_and_cover_every_row_each_epoch(draws):
  rows = drawn_batches.load_draws(draws[0])
  batches = drawn_batches.DrawnBatches(rows, global_batch_size=16, num_local_devices=2,
                                       seed=5)
  per_epoch = len(batches) // 16
  seen = np.concatenate([batches.indices(step) for step in range(per_epoch)])
  np.testing.assert_array_equal(np.sort(seen), np.arange(per_epoch * 16))
  first = batches.batch(3)
  assert first['inputs_2d'].shape == (2, 8, skeleton.NUM_JOINTS, 2)
  iterator = batches.iterate(3)
  again = next(iterator)
  iterator.close()
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])


def test_lifters_train_from_draws(draws, tiny_pipeline, tmp_path):
  """Every mode reads the stored rows; HiPART's hierarchy is the stored generation."""
  directory, _, _ = draws
  manifest = json.loads((directory / 'manifest.json').read_text())
  for mode in ('mlp', 'mlp_hierarchical', 'oracle'):
    config = pipeline_fixture.lifter_config('sparse', tiny_pipeline['msst'],
                                            tiny_pipeline['hiarm'], steps=2)
    config.model = cmu_lifter.lifter_model(mode)
    config.model.width = 32
    if mode == 'oracle':
      config.model.update(width=16, depth=1, num_heads=2, mlp_ratio=2)
    config.dataset.name = manifest['settings']['dataset']
    config.dataset.train_draws = str(directory)
    state, metrics = pipeline_fixture.run(config, tmp_path / mode)
    assert int(state.step) == 2 and np.isfinite(metrics['eval/mpjpe_mm'])
  stage = stages.make_stage(config.copy_and_resolve_references(), HIERARCHY)
  batch = {k: v[0] for k, v in drawn_batches.DrawnBatches(
      drawn_batches.load_draws(directory), global_batch_size=4, num_local_devices=1,
      seed=0).batch(0).items()}
  hipart_config = pipeline_fixture.lifter_config('hierarchical', tiny_pipeline['msst'],
                                          tiny_pipeline['hiarm'])
  hipart_stage = stages.make_stage(hipart_config, HIERARCHY)
  seen = hipart_stage.hierarchy_2d({}, batch, jax.random.key(0))
  np.testing.assert_array_equal(seen['dense'], batch['generated_dense_2d'])
  assert stage.mode == 'oracle'


def test_draws_of_another_dataset_are_refused(draws, tiny_pipeline, tmp_path):
  config = pipeline_fixture.lifter_config('sparse')
  config.dataset.name = 'another'
  config.dataset.train_draws = str(draws[0])
  with pytest.raises(ValueError, match="draws of fake split 'train'"):
    pipeline_fixture.run(config, tmp_path / 'w')


@pytest.mark.parametrize('mode', ['sparse', 'hierarchical'])
def test_simple_baseline_shapes_and_root(mode):
  h = HIERARCHY
  model = simple_baseline.SimpleBaseline(hierarchy=h, mode=mode, width=32, dropout=0.5)
  b = 3
  inputs = jnp.ones((b, 17, 2))
  confidence = jnp.ones((b, 17))
  levels = {'sparse': jnp.ones((b, h.num_sparse, 2)), 'dense': jnp.ones((b, h.num_dense, 2)),
            'fine': jnp.ones((b, h.num_fine, 2))}
  variables = model.init(jax.random.key(0), inputs, confidence, levels)
  np.testing.assert_array_equal(model.apply(variables, inputs, confidence, levels), 0)
  variables = test_lifter.with_random_head(variables)
  assert variables['params']['embedding']['kernel'].shape[0] == 17 * 3
  hierarchy_inputs = variables['params'].get('hierarchy_embedding', {}).get('kernel')
  assert (hierarchy_inputs is None) == (mode == 'sparse')
  if hierarchy_inputs is not None:
    assert hierarchy_inputs.shape[0] == 2 * (17 + h.num_dense + h.num_fine)
  pose = model.apply(variables, inputs, confidence, levels, train=True,
                     rngs={'dropout': jax.random.key(1)})
  assert pose.shape == (b, 17, 3)
  np.testing.assert_array_equal(pose[:, 0], 0)
  # Dropout acts in training only.
  assert not np.allclose(pose, model.apply(variables, inputs, confidence, levels))
  if mode == 'hierarchical':
    with pytest.raises(ValueError, match='needs hierarchy_2d'):
      model.apply(variables, inputs, confidence, None)


def test_simple_baseline_rejects_a_wrong_shape():
  model = simple_baseline.SimpleBaseline(hierarchy=HIERARCHY, width=8)
  with pytest.raises(AssertionError):
    model.init(jax.random.key(0), jnp.ones((2, 16, 2)), jnp.ones((2, 16)))


def test_simple_baseline_can_read_only_the_hierarchy_of_hidden_parts():
  """hierarchy_points='hidden_parts': moving the points of a part the input shows changes
  nothing, moving those of a hidden part does; 'all' reads every point."""
  h = HIERARCHY
  b = 2
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.normal(size=(b, 17, 2)), jnp.float32)
  confidence = np.ones((b, 17), np.float32)
  confidence[:, 14:17] = 0.0  # The left arm is hidden.
  levels = {level: jnp.asarray(rng.normal(size=(b, n, 2)), jnp.float32) for level, n in
            zip(skeleton.LEVELS, (h.num_sparse, h.num_dense, h.num_fine))}
  hidden_part = np.isin(h.fine_part, [14, 15, 16])
  assert hidden_part.any() and not hidden_part.all()

  def moved(mask):
    return dict(levels, fine=levels['fine'] + 0.5 * jnp.asarray(mask, jnp.float32)[:, None])

  poses = {}
  for points in ('all', 'hidden_parts'):
    model = simple_baseline.SimpleBaseline(hierarchy=h, mode='hierarchical', width=32,
                                           dropout=0.0, hierarchy_points=points)
    variables = model.init(jax.random.key(0), inputs, confidence, levels)
    variables = test_lifter.with_random_head(variables)
    variables['params']['hierarchy_embedding']['kernel'] = jnp.asarray(rng.normal(
        size=variables['params']['hierarchy_embedding']['kernel'].shape), jnp.float32)
    lift = lambda lv, m=model, v=variables: m.apply(v, inputs, jnp.asarray(confidence), lv)
    poses[points] = [lift(levels), lift(moved(~hidden_part)), lift(moved(hidden_part))]
  base, visible_moved, hidden_moved = poses['hidden_parts']
  np.testing.assert_array_equal(visible_moved, base)
  assert not np.allclose(hidden_moved, base, atol=1e-4)
  assert not np.allclose(poses['all'][1], poses['all'][0], atol=1e-4)
  bad = simple_baseline.SimpleBaseline(hierarchy=h, mode='oracle', width=8,
                                       hierarchy_points='visible')
  with pytest.raises(ValueError, match='hierarchy_points'):
    bad.init(jax.random.key(0), inputs, jnp.asarray(confidence), levels)
