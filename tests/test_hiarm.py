"""Tests for the HiARM network: shapes, block-causality, locality, dropout, learning."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hipart_jax import losses
from hipart_jax import orderings
from hipart_jax import skeleton
from hipart_jax.models import hiarm as hiarm_lib

HIERARCHY = skeleton.default_hierarchy()
VS, VD = 11, 13
B = 2


def _inputs(hierarchy, seed=0, batch=B):
  rng = np.random.default_rng(seed)
  s, d = hierarchy.num_sparse, hierarchy.num_dense
  return (jnp.asarray(rng.normal(size=(batch, s, 2)), jnp.float32),
          jnp.asarray(rng.uniform(size=(batch, s)), jnp.float32),
          jnp.asarray(rng.integers(0, VS, (batch, s)), jnp.int32),
          jnp.asarray(rng.integers(0, VD, (batch, d)), jnp.int32))


@functools.lru_cache(maxsize=None)
def _build(hierarchy, ordering, num_lsab=1, num_gcsab=1, dropout=0.0):
  """A tiny HiARM: (model, variables, jitted apply with static `train`). Cached."""
  model = hiarm_lib.HiARM(hierarchy, VS, VD, ordering=ordering, width=16, num_heads=2,
                          mlp_ratio=2, num_lsab=num_lsab, num_gcsab=num_gcsab,
                          dropout=dropout)
  variables = jax.jit(model.init)(jax.random.key(0), *_inputs(hierarchy))
  return model, variables, jax.jit(model.apply, static_argnames='train')


@pytest.fixture(scope='module')
def built():
  # Other orderings share the mask code (checked rule by rule in test_orderings); uneven
  # user hierarchies are covered by test_decoding (cached == teacher-forced logits).
  return _build(HIERARCHY, 'hierarchical')


def test_shapes_and_finite(built):
  model, variables, apply = built
  sparse_logits, dense_logits = apply(variables, *_inputs(model.hierarchy))
  assert sparse_logits.shape == (B, model.hierarchy.num_sparse, VS)
  assert dense_logits.shape == (B, model.hierarchy.num_dense, VD)
  assert np.all(np.isfinite(sparse_logits)) and np.all(np.isfinite(dense_logits))


@pytest.mark.parametrize('ordering', ['hierarchical', 'raster'])
def test_teacher_forcing_by_mask_blocks_equals_the_full_masks(ordering):
  model, variables, apply = _build(HIERARCHY, ordering)
  inputs = _inputs(model.hierarchy, seed=3)
  blocked = apply(variables, *inputs)
  reference = model.clone(mask_blocks=False)
  full = jax.jit(reference.apply)(variables, *inputs)
  for got, want in zip(blocked, full):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for got, want in zip(jax.jit(model.clone(global_chunks=5).apply)(variables, *inputs),
                       full):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The train step differentiates through the blocks: the gradients agree too.
  loss = lambda module: jax.jit(jax.grad(
      lambda v: sum(jnp.sum(jnp.sin(out)) for out in module.apply(v, *inputs))))
  for got, want in zip(jax.tree.leaves(loss(model)(variables)),
                       jax.tree.leaves(loss(reference)(variables))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def _token_logits(sparse_logits, dense_logits):
  """The logits of each of the T tokens, a list of [B, V] arrays in token order."""
  return ([sparse_logits[:, i] for i in range(sparse_logits.shape[1])]
          + [dense_logits[:, k] for k in range(dense_logits.shape[1])])


def test_block_causality(built):
  """Changing group g's tokens changes no logits of groups <= g, and some later ones."""
  model, variables, apply = built
  order = model.decoding_order
  s = order.num_sparse
  cond, conf, sparse_ids, dense_ids = _inputs(model.hierarchy)
  base = _token_logits(*apply(variables, cond, conf, sparse_ids, dense_ids))
  for g in (0, order.num_groups // 2, order.num_groups - 2):
    tokens = np.concatenate([sparse_ids, dense_ids], axis=1)
    for t in order.group_tuples[g]:
      tokens[:, t] = (tokens[:, t] + 1) % (VS if t < s else VD)
    moved = _token_logits(*apply(variables, cond, conf, tokens[:, :s], tokens[:, s:]))
    later_change = 0.0
    for t in range(order.num_tokens):
      change = float(np.abs(moved[t] - base[t]).max())
      if order.token_group[t] <= g:
        assert change < 1e-6, (g, t, change)
      else:
        later_change = max(later_change, change)
    assert later_change > 1e-4, g


def test_condition_changes_logits(built):
  model, variables, apply = built
  cond, conf, sparse_ids, dense_ids = _inputs(model.hierarchy)
  a = apply(variables, cond, conf, sparse_ids, dense_ids)
  b = apply(variables, cond.at[:, 5].add(0.5), conf, sparse_ids, dense_ids)
  assert np.abs(a[0] - b[0]).max() > 1e-4 and np.abs(a[1] - b[1]).max() > 1e-4


@pytest.fixture(scope='module')
def local_only():
  """LSAB blocks only, with dropout."""
  return _build(HIERARCHY, 'hierarchical', num_lsab=2, num_gcsab=0, dropout=0.3)


def test_lsab_blocks_stay_within_a_body_part(local_only):
  model, variables, apply = local_only
  order = model.decoding_order
  cond, conf, sparse_ids, dense_ids = _inputs(HIERARCHY)
  base = _token_logits(*apply(variables, cond, conf, sparse_ids, dense_ids))
  part = 12  # Left elbow: sparse token 12 and dense tokens 17 + 3 * 11 + (0, 1, 2).
  moved = _token_logits(*apply(variables, cond.at[:, part].add(1.0), conf, sparse_ids,
                               dense_ids))
  changed = [float(np.abs(m - b).max()) > 1e-5 for m, b in zip(moved, base)]
  np.testing.assert_array_equal(changed, order.token_part == part)
  assert sum(changed) == 4


def test_dropout_only_in_training(local_only):
  model, variables, apply = local_only
  inputs = _inputs(HIERARCHY)
  run = lambda train, seed: apply(variables, *inputs, train=train,
                                  rngs={'dropout': jax.random.key(seed)})[0]
  np.testing.assert_array_equal(run(False, 0), run(False, 1))
  assert np.abs(run(True, 0) - run(True, 1)).max() > 1e-4


@pytest.fixture(scope='module')
def with_condition_mlp():
  """A tiny HiARM with the pose-level condition MLP: (model, variables)."""
  model = hiarm_lib.HiARM(HIERARCHY, VS, VD, width=16, num_heads=2, mlp_ratio=2, num_lsab=1,
                          num_gcsab=1, condition_mlp_width=8, condition_mlp_depth=1)
  return model, jax.jit(model.init)(jax.random.key(0), *_inputs(HIERARCHY))


def test_condition_mlp_starts_as_the_per_joint_model(with_condition_mlp):
  model, variables = with_condition_mlp
  shared = {name: value for name, value in variables['params'].items()
            if not name.startswith('condition_mlp')}
  assert len(shared) < len(variables['params'])
  plain = model.clone(condition_mlp_width=0)
  for with_mlp, without in zip(model.apply(variables, *_inputs(HIERARCHY)),
                               plain.apply({'params': shared}, *_inputs(HIERARCHY))):
    np.testing.assert_allclose(with_mlp, without, atol=1e-6, rtol=0)


def test_condition_mlp_gives_every_condition_slot_the_whole_pose(with_condition_mlp):
  """Moving one input joint moves every condition slot with the MLP, only its own without."""
  model, variables = with_condition_mlp
  params = dict(variables['params'])
  readout = params['condition_mlp_out']['kernel']
  params['condition_mlp_out'] = {**params['condition_mlp_out'],
                                 'kernel': jax.random.normal(jax.random.key(1), readout.shape)}
  cond, conf, _, _ = _inputs(HIERARCHY)
  joint = 5
  for module, expected in ((model, np.ones(17, bool)),
                           (model.clone(condition_mlp_width=0), np.arange(17) == joint)):
    embed = lambda c: module.apply({'params': params}, c, conf,
                                   method=hiarm_lib.HiARM.embed_condition)
    change = np.abs(embed(cond.at[:, joint].add(0.5)) - embed(cond)).max(axis=(0, 2))
    np.testing.assert_array_equal(change > 1e-5, expected)


def test_ordering_attribute_accepts_names_and_orderings():
  raster = orderings.make_ordering(HIERARCHY, 'raster')
  assert hiarm_lib.HiARM(HIERARCHY, VS, VD, ordering='raster').decoding_order == raster
  assert hiarm_lib.HiARM(HIERARCHY, VS, VD, ordering=raster).decoding_order is raster
  other = skeleton.default_hierarchy(dense_per_bone=2)
  with pytest.raises(ValueError, match='different hierarchy'):
    _ = hiarm_lib.HiARM(other, VS, VD, ordering=raster).decoding_order
  with pytest.raises(ValueError, match='valid names'):
    _ = hiarm_lib.HiARM(HIERARCHY, VS, VD, ordering='zigzag').decoding_order


def test_paper_scale_size():
  model = hiarm_lib.HiARM(HIERARCHY, 256, 512)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *_inputs(HIERARCHY, batch=1))
  num_params = sum(x.size for x in jax.tree.leaves(shapes))
  assert 0.5e6 < num_params < 2e6, num_params


def _synthetic_batch(rng, batch, levels):
  """Tokens as a deterministic function of the condition: quantized coordinates.

  Sparse token i = bin of x_i; dense token k = bin of y of its part's joint.
  """
  cond = rng.uniform(-1, 1, size=(batch, 17, 2)).astype(np.float32)
  bins = np.minimum(((cond + 1) / 2 * levels).astype(np.int32), levels - 1)
  return cond, bins[:, :, 0], bins[:, HIERARCHY.dense_part_array, 1]


def test_training_learns_tokens_from_the_condition():
  model, variables, apply = _build(HIERARCHY, 'hierarchical')
  levels, batch, steps = 6, 16, 200
  rng = np.random.default_rng(0)
  conf = jnp.ones((batch, 17), jnp.float32)
  optimizer = optax.adam(5e-3)

  def loss_fn(params, cond, sparse_ids, dense_ids):
    logits = model.apply({'params': params}, cond, conf, sparse_ids, dense_ids)
    return sum(losses.token_cross_entropy(lg, ids)[0]
               for lg, ids in zip(logits, (sparse_ids, dense_ids)))

  @jax.jit
  def train_step(params, opt_state, cond, sparse_ids, dense_ids):
    grads = jax.grad(loss_fn)(params, cond, sparse_ids, dense_ids)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def accuracy(params):
    cond, sparse_ids, dense_ids = _synthetic_batch(np.random.default_rng(1), batch, levels)
    sparse_logits, dense_logits = apply({'params': params}, cond, conf, sparse_ids, dense_ids)
    sparse_accuracy = losses.token_cross_entropy(sparse_logits, sparse_ids)[1]
    dense_accuracy = losses.token_cross_entropy(dense_logits, dense_ids)[1]
    s, d = HIERARCHY.num_sparse, HIERARCHY.num_dense
    return float(sparse_accuracy * s + dense_accuracy * d) / (s + d)

  params = variables['params']
  opt_state = optimizer.init(params)
  accuracy_before = accuracy(params)
  for _ in range(steps):
    params, opt_state = train_step(params, opt_state, *_synthetic_batch(rng, batch, levels))
  accuracy_after = accuracy(params)
  assert accuracy_before < 0.35  # Tokens are uniform over `levels` bins.
  assert accuracy_after > 0.8, accuracy_after
