"""Tests for hipart_jax.input_pipeline: order, resumption, sharding, batches, frames."""

import numpy as np
import pytest

import fake_examples
from hipart_jax import augment
from hipart_jax import geometry
from hipart_jax import input_pipeline
from hipart_jax import skeleton

HIERARCHY = skeleton.default_hierarchy()
NUM_EXAMPLES = 23  # Divisible by none of the batch sizes below.


@pytest.fixture(scope='module')
def source():
  return fake_examples.fake_examples(NUM_EXAMPLES, HIERARCHY, seed=0)


def _config(preset='default', input_source='gt', **augment_overrides):
  config = input_pipeline.default_data_config()
  config.input_source = input_source
  config.augment = augment.default_augment_config(preset)
  config.augment.update(augment_overrides)
  return config


def _train(source, config=None, *, seed=0, global_batch_size=8, num_local_devices=2,
           process_index=0, process_count=1):
  return input_pipeline.TrainBatches(
      source, HIERARCHY, config or _config(), global_batch_size=global_batch_size,
      num_local_devices=num_local_devices, seed=seed, process_index=process_index,
      process_count=process_count)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _flat(batch):
  """[devices, per_device, ...] → [devices * per_device, ...]."""
  return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}


def test_batch_keys_shapes_and_dtypes(source):
  batch = _train(source, global_batch_size=6, num_local_devices=3).batch(0)
  d, f = HIERARCHY.num_dense, HIERARCHY.num_fine
  expected = dict(
      inputs_2d=((17, 2), np.float32), inputs_confidence=((17,), np.float32),
      sparse_2d=((17, 2), np.float32), dense_2d=((d, 2), np.float32),
      fine_2d=((f, 2), np.float32), sparse_3d=((17, 3), np.float32),
      dense_3d=((d, 3), np.float32), fine_3d=((f, 3), np.float32),
      visible=((17,), np.bool_), action=((), np.int32), norm_center=((2,), np.float32),
      norm_scale=((), np.float32), image_size=((2,), np.int32), index=((), np.int32),
      valid=((), np.bool_))
  assert set(batch) == set(expected) == set(input_pipeline.BATCH_KEYS)
  for key, (shape, dtype) in expected.items():
    assert batch[key].shape == (3, 2, *shape), key
    assert batch[key].dtype == dtype, key
  assert batch['valid'].all()
  assert np.isfinite(batch['inputs_2d']).all()


def test_same_seed_and_step_give_identical_batches(source):
  a = _train(source, seed=5).batch(3)
  b = _train(source, seed=5).batch(3)
  _assert_batches_equal(a, b)
  other_seed = _train(source, seed=6).batch(3)
  assert not np.array_equal(a['index'], other_seed['index'])
  assert not np.array_equal(a['inputs_2d'], other_seed['inputs_2d'])
  other_step = _train(source, seed=5).batch(4)
  assert not np.array_equal(a['inputs_2d'], other_step['inputs_2d'])


def test_augmentation_is_redrawn_every_step_and_process(source):
  """An example read again at another step or by another process gets fresh noise."""
  small = source[:8]
  config = _config('none', noise_std=0.05)

  def noise_by_example(pipeline, step):
    batch = _flat(pipeline.batch(step))
    return {int(i): n for i, n in zip(batch['index'], batch['inputs_2d'] - batch['sparse_2d'])}

  pipeline = _train(small, config, global_batch_size=8)
  step0, step1 = noise_by_example(pipeline, 0), noise_by_example(pipeline, 1)
  assert step0.keys() == step1.keys() == set(range(8))
  for index in step0:
    assert not np.allclose(step0[index], step1[index], atol=1e-4)
  # Process 1 reading the second half of step 0 must not reuse process 0's draws.
  halves = [noise_by_example(_train(small, config, global_batch_size=8, num_local_devices=1,
                                    process_index=p, process_count=2), 0) for p in range(2)]
  first = np.stack(list(halves[0].values()))
  second = np.stack(list(halves[1].values()))
  assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.5


def test_restart_reproduces_uninterrupted_run(source):
  uninterrupted = _train(source, seed=1).iterate(0)
  run = [next(uninterrupted) for _ in range(7)]
  uninterrupted.close()
  resumed = _train(source, seed=1).iterate(4)  # A fresh object, as after a restart.
  for step in range(4, 7):
    _assert_batches_equal(next(resumed), run[step])
  resumed.close()
  _assert_batches_equal(_train(source, seed=1).batch(5), run[5])


def test_order_is_per_epoch_permutation(source):
  pipeline = _train(source, seed=2, global_batch_size=4, num_local_devices=1)
  positions = np.concatenate([pipeline.indices(s) for s in range(12)])  # 48 positions.
  np.testing.assert_array_equal(np.sort(positions[:NUM_EXAMPLES]), np.arange(NUM_EXAMPLES))
  np.testing.assert_array_equal(np.sort(positions[NUM_EXAMPLES:2 * NUM_EXAMPLES]),
                                np.arange(NUM_EXAMPLES))
  np.testing.assert_array_equal(positions[:NUM_EXAMPLES],
                                np.random.default_rng([2, 0]).permutation(NUM_EXAMPLES))
  assert not np.array_equal(positions[:NUM_EXAMPLES],
                            positions[NUM_EXAMPLES:2 * NUM_EXAMPLES])


def test_processes_read_disjoint_slices_of_the_global_batch(source):
  single = _train(source, seed=3, global_batch_size=8, num_local_devices=1)
  halves = [_train(source, seed=3, global_batch_size=8, num_local_devices=2,
                   process_index=p, process_count=2) for p in range(2)]
  for step in (0, 2, 5):
    parts = [h.indices(step) for h in halves]
    np.testing.assert_array_equal(np.concatenate(parts), single.indices(step))
    batches = [h.batch(step) for h in halves]
    assert batches[0]['inputs_2d'].shape == (2, 2, 17, 2)
    np.testing.assert_array_equal(batches[1]['index'].ravel(), parts[1])


def test_bad_batch_layouts_are_rejected(source):
  with pytest.raises(ValueError, match='num_local_devices'):
    _train(source, global_batch_size=6, num_local_devices=4)
  with pytest.raises(ValueError, match='process_count'):
    _train(source, global_batch_size=7, process_count=2, num_local_devices=1)
  with pytest.raises(KeyError, match='openpose'):
    _train(source, _config(input_source='openpose')).batch(0)


def test_no_augmentation_gives_ground_truth_input(source):
  batch = _flat(_train(source, _config('none')).batch(0))
  np.testing.assert_allclose(batch['inputs_2d'], batch['sparse_2d'], atol=1e-6)
  assert batch['visible'].all() and (batch['inputs_confidence'] == 1).all()
  # The model frame is the input's box: longer side spans [-1, 1], centred.
  lowest, highest = batch['inputs_2d'].min(1), batch['inputs_2d'].max(1)
  np.testing.assert_allclose((highest - lowest).max(-1), 2.0, rtol=1e-5)
  np.testing.assert_allclose(highest + lowest, 0.0, atol=1e-5)


def test_model_frame_round_trip_to_pixels_and_root_relative_3d(source):
  config = _config('none', input_source='cpn')
  batch = _flat(_train(source, config, global_batch_size=4, num_local_devices=1).batch(1))
  for row, index in enumerate(batch['index']):
    example = source[index]
    for level in ('sparse', 'dense', 'fine'):
      screen = geometry.denormalize_2d(batch[f'{level}_2d'][row], batch['norm_center'][row],
                                       batch['norm_scale'][row])
      pixels = geometry.screen_denormalize(screen, batch['image_size'][row])
      np.testing.assert_allclose(pixels, example[f'{level}_2d'], atol=1e-3)
      np.testing.assert_allclose(
          batch[f'{level}_3d'][row], example[f'{level}_3d'] - example['sparse_3d'][0],
          atol=1e-6)
    cpn = example['keypoints_2d']['cpn']
    np.testing.assert_allclose(batch['inputs_confidence'][row], cpn[:, 2])
    assert batch['action'][row] == example['action']


def test_augmentation_never_touches_ground_truth_levels(source):
  clean = _flat(_train(source, _config('none'), seed=4).batch(2))
  heavy = _flat(_train(source, _config(flip_prob=0.0, noise_std=0.1, occlusion_prob=1.0,
                                       joint_drop_prob=0.5), seed=4).batch(2))
  np.testing.assert_array_equal(clean['index'], heavy['index'])
  for level in ('sparse', 'dense', 'fine'):
    for batch in (clean, heavy):
      batch[f'{level}_screen'] = geometry.denormalize_2d(
          batch[f'{level}_2d'], batch['norm_center'], batch['norm_scale'])
    np.testing.assert_allclose(heavy[f'{level}_screen'], clean[f'{level}_screen'],
                               atol=1e-5)
    np.testing.assert_array_equal(heavy[f'{level}_3d'], clean[f'{level}_3d'])
  assert not np.allclose(heavy['inputs_2d'], clean['inputs_2d'])


def test_occlusion_zeroes_confidence_and_coordinates(source):
  config = _config(flip_prob=0.0, occlusion_prob=1.0, joint_drop_prob=0.9, min_visible=5)
  batch = _flat(_train(source, config, global_batch_size=16, num_local_devices=1).batch(0))
  hidden = ~batch['visible']
  assert hidden.any()
  np.testing.assert_array_equal(batch['inputs_confidence'][hidden], 0)
  np.testing.assert_array_equal(batch['inputs_2d'][hidden], 0)
  np.testing.assert_array_equal(batch['visible'].sum(-1), 5)
  # The frame comes from the visible joints only: their box spans [-1, 1].
  visible_points = np.where(batch['visible'][..., None], batch['inputs_2d'], np.nan)
  extent = np.nanmax(visible_points, 1) - np.nanmin(visible_points, 1)
  np.testing.assert_allclose(extent.max(-1), 2.0, rtol=1e-5)


def test_jittered_occluded_joints_stay_near_the_truth(source):
  config = _config('none', occlusion_prob=1.0, joint_drop_prob=0.5,
                   occluded_coordinates='jitter', jitter_std=0.05)
  batch = _flat(_train(source, config, global_batch_size=16, num_local_devices=1).batch(0))
  hidden = ~batch['visible']
  offset = (batch['inputs_2d'] - batch['sparse_2d'])[hidden]  # 'gt' input: truth = sparse.
  assert hidden.sum() > 20
  assert 0.02 < offset.std() < 0.1
  np.testing.assert_allclose(batch['inputs_2d'][~hidden], batch['sparse_2d'][~hidden],
                             atol=1e-6)


def test_flip_swaps_all_levels_consistently(source):
  clean = _flat(_train(source, _config('none'), seed=7).batch(0))
  flipped = _flat(_train(source, _config('none', flip_prob=1.0), seed=7).batch(0))
  for level, perm in zip(('sparse', 'dense', 'fine'), HIERARCHY.flip_permutations()):
    np.testing.assert_allclose(flipped[f'{level}_3d'][:, perm, 0], -clean[f'{level}_3d'][..., 0],
                               atol=1e-6)
    np.testing.assert_allclose(flipped[f'{level}_2d'][:, perm, 0], -clean[f'{level}_2d'][..., 0],
                               atol=1e-5)
    np.testing.assert_allclose(flipped[f'{level}_2d'][:, perm, 1], clean[f'{level}_2d'][..., 1],
                               atol=1e-5)
  np.testing.assert_allclose(flipped['inputs_2d'], flipped['sparse_2d'], atol=1e-6)


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_sees_every_example_once(source, process_count):
  seen, valid_counts, num_batches = [], [], []
  for process in range(process_count):
    batches = list(input_pipeline.eval_batches(
        source, HIERARCHY, _config(), global_batch_size=8, num_local_devices=2,
        process_index=process, process_count=process_count))
    num_batches.append(len(batches))
    for batch in batches:
      assert batch['inputs_2d'].shape == (2, 8 // process_count // 2, 17, 2)
      index, valid = batch['index'].ravel(), batch['valid'].ravel()
      seen.extend(index[valid])
      valid_counts.append(valid.sum())
      # Padding repeats a real example of this process's shard.
      assert set(index[~valid]) <= set(index[valid]) | set(seen)
  np.testing.assert_array_equal(np.sort(seen), np.arange(NUM_EXAMPLES))
  assert len(set(num_batches)) == 1  # Every process runs the same number of steps.
  assert min(valid_counts) < 8 // process_count  # The split does not divide evenly.


def test_eval_batches_are_unaugmented_and_in_order(source):
  batches = list(input_pipeline.eval_batches(source, HIERARCHY, _config(),
                                             global_batch_size=4, num_local_devices=1))
  first = _flat(batches[0])
  np.testing.assert_array_equal(first['index'], np.arange(4))
  np.testing.assert_allclose(first['inputs_2d'], first['sparse_2d'], atol=1e-6)
  assert first['visible'].all()


def test_eval_occlusion_is_fixed_per_example(source):
  def visible(process_count, global_batch_size, seed=0):
    out = {}
    for process in range(process_count):
      for batch in input_pipeline.eval_batches(
          source, HIERARCHY, _config(), global_batch_size=global_batch_size,
          num_local_devices=1, process_index=process, process_count=process_count,
          occlusion='two_limbs', seed=seed):
        batch = _flat(batch)
        for row in np.flatnonzero(batch['valid']):
          out[int(batch['index'][row])] = batch['visible'][row]
    return np.stack([out[i] for i in range(NUM_EXAMPLES)])

  reference = visible(1, 4)
  np.testing.assert_array_equal(reference.sum(-1), 17 - 6)
  np.testing.assert_array_equal(visible(2, 6), reference)
  assert not np.array_equal(visible(1, 4, seed=1), reference)
  with pytest.raises(ValueError, match='occlusion level'):
    input_pipeline.eval_batches(source, HIERARCHY, _config(), global_batch_size=4,
                                num_local_devices=1, occlusion='half')


def test_eval_shard_pads_empty_processes():
  shards = [input_pipeline.eval_shard(3, local_batch_size=2, process_index=p, process_count=4)
            for p in range(4)]
  for indices, valid in shards:
    assert indices.shape == valid.shape == (2,)
  np.testing.assert_array_equal([valid.sum() for _, valid in shards], [0, 1, 1, 1])
  np.testing.assert_array_equal(np.concatenate([i[v] for i, v in shards]), [0, 1, 2])
  np.testing.assert_array_equal(shards[0][0], [0, 0])  # Empty shard: copies of example 0.
  np.testing.assert_array_equal(shards[2][0], [1, 1])


@pytest.fixture(scope='session')
def synthetic_tiny_config(tmp_path_factory):
  """The data config of `synthetic_poses/tiny`, built once into a temporary data_dir."""
  pytest.importorskip('tfds_builders.synthetic_poses')
  config = input_pipeline.default_data_config()
  config.name = 'synthetic_poses/tiny'
  config.data_dir = str(tmp_path_factory.mktemp('tfds'))
  config.download = True  # Procedural: "download" just generates the examples.
  return config


def test_synthetic_poses_through_data_source(synthetic_tiny_config):
  config = synthetic_tiny_config
  train, hierarchy, info = input_pipeline.load_source(config)
  test, test_hierarchy, _ = input_pipeline.load_source(config, config.eval_split)
  assert test_hierarchy == hierarchy
  assert len(train) == info.splits[config.train_split].num_examples > 0
  batch = input_pipeline.TrainBatches(train, hierarchy, config, global_batch_size=8,
                                      num_local_devices=2, seed=0).batch(0)
  assert batch['dense_2d'].shape == (2, 4, hierarchy.num_dense, 2)
  assert batch['fine_3d'].shape == (2, 4, hierarchy.num_fine, 3)
  assert all(np.isfinite(v).all() for v in batch.values())
  config = config.copy_and_resolve_references()
  config.augment = augment.default_augment_config('none')
  seen = []
  for batch in input_pipeline.eval_batches(test, hierarchy, config, global_batch_size=16,
                                           num_local_devices=1):
    batch = _flat(batch)
    seen.extend(batch['index'][batch['valid']])
    first = int(batch['index'][0])
    screen = geometry.denormalize_2d(batch['fine_2d'][0], batch['norm_center'][0],
                                     batch['norm_scale'][0])
    np.testing.assert_allclose(geometry.screen_denormalize(screen, batch['image_size'][0]),
                               test[first]['fine_2d'], atol=1e-2)
  np.testing.assert_array_equal(np.sort(seen), np.arange(len(test)))
