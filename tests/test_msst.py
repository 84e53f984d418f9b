"""Tests for the MSST tokenizer (stage 1) and its mixer blocks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import skeleton
from hipart_jax.models import mixer
from hipart_jax.models import msst as msst_lib
from hipart_jax.models import quantizer

VQ = quantizer.VQ_COLLECTION
B = 3
TINY = dict(width=16, num_blocks=1, token_hidden=8, channel_hidden=16, member_dim=4,
            sparse_codebook_size=16, dense_codebook_size=32, code_dim=8, num_actions=5,
            action_token_dim=2, dead_after_steps=0)


def uneven_hierarchy() -> skeleton.Hierarchy:
  """Parts own 0, 1, 2 or 4 dense points; dense points own 0 to 3 fine points."""
  dense_part = (1, 1, 1, 1, 2, 4, 4, 7, 8, 8, 11, 14, 16)  # parts 0, 3, 5, ... own none
  fine_parent = (0, 0, 0, 1, 2, 2, 4, 5, 6, 6, 8, 9, 9, 9, 10, 12)  # 3, 7, 11 own none
  return skeleton.Hierarchy.from_maps(dense_part, fine_parent)


HIERARCHIES = {'default': skeleton.default_hierarchy(), 'uneven': uneven_hierarchy()}


def _poses(hierarchy, seed=0, batch=B):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(batch, n, 2)), jnp.float32)
               for n in (hierarchy.num_sparse, hierarchy.num_dense, hierarchy.num_fine))


def _variables_like(shapes, seed=0):
  """Random variables with the structure of `model.init`'s, drawn with numpy.

  Compiling the real initializers costs seconds of XLA time per model on CPU; the real
  `init` is traced in test_forward_shapes and the codebook init is tested in
  test_quantizer. Kernels ~ N(0, 1/fan_in), LayerNorm scales 1, biases 0, codebooks
  N(0, 1) with fresh statistics (cluster_size 1, cluster_sum = codebook).
  """
  rng = np.random.default_rng(seed)

  def param(path, leaf):
    name = path[-1].key
    if name == 'scale':
      return jnp.ones(leaf.shape, leaf.dtype)
    if name == 'bias':
      return jnp.zeros(leaf.shape, leaf.dtype)
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0]), leaf.dtype)

  params = jax.tree.map_with_path(param, shapes['params'])
  stats = {}
  for name, leaves in shapes[VQ].items():
    codebook = jnp.asarray(rng.normal(size=leaves['codebook'].shape), jnp.float32)
    stats[name] = dict(codebook=codebook, cluster_sum=codebook,
                       cluster_size=jnp.ones(leaves['cluster_size'].shape, jnp.float32),
                       steps_since_used=jnp.zeros(leaves['steps_since_used'].shape, jnp.int32),
                       num_updates=jnp.zeros((), jnp.int32))
  return {'params': params, VQ: stats}


@functools.lru_cache(maxsize=None)
def _model_and_variables(name):
  model = msst_lib.MSST(HIERARCHIES[name], **TINY)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          *_poses(HIERARCHIES[name]))
  return model, _variables_like(shapes)


@functools.lru_cache(maxsize=None)
def _jitted_apply(name, train):
  model, _ = _model_and_variables(name)
  return jax.jit(lambda v, s, d, f, valid: model.apply(
      v, s, d, f, train=train, valid=valid, mutable=[VQ] if train else False))


def _apply(name, train, variables, sparse, dense, fine, valid=None):
  """Jitted MSST call (one compilation per hierarchy and mode)."""
  if valid is None:
    valid = jnp.ones(sparse.shape[:1], bool)
  return _jitted_apply(name, train)(variables, sparse, dense, fine, valid)


def _reference_mixer_stack(params, x):
  """MixerStack written out on [B, N, C] arrays (the textbook layout), no dropout."""

  def norm(p, v):
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean)**2).mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + 1e-6) * p['scale'] + p['bias']

  def mlp(p, v):
    h = jax.nn.gelu(v @ p['hidden']['kernel'] + p['hidden']['bias'])
    return h @ p['output']['kernel'] + p['output']['bias']

  blocks = sorted(k for k in params if k.startswith('block_'))
  for name in blocks:
    p = params[name]
    tokens = mlp(p['token_mlp'], np.swapaxes(norm(p['token_norm'], x), 1, 2))
    x = x + np.swapaxes(tokens, 1, 2)
    x = x + mlp(p['channel_mlp'], norm(p['channel_norm'], x))
  return norm(params['final_norm'], x)


def test_mixer_stack_mixes_across_points_as_the_reference():
  stack = mixer.MixerStack(num_tokens=5, num_blocks=2, token_hidden=4, channel_hidden=6)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)), jnp.float32)
  variables = jax.jit(functools.partial(stack.init, train=False))(jax.random.key(1), x)
  apply = jax.jit(functools.partial(stack.apply, train=False))
  y = apply(variables, x)
  assert y.shape == x.shape
  np.testing.assert_allclose(y, _reference_mixer_stack(variables['params'], x),
                             rtol=1e-4, atol=1e-4)
  moved = apply(variables, x.at[0, 0].add(jnp.arange(3.0)))
  assert float(jnp.abs(moved[0, 1:] - y[0, 1:]).max()) > 1e-4  # point 0 reaches others
  assert float(jnp.abs(moved[1:] - y[1:]).max()) == 0.0  # examples stay apart
  with pytest.raises(AssertionError):
    apply(variables, x[:, :4])


def test_mixer_block_rejects_another_point_count():
  block = mixer.MixerBlock(num_tokens=5, token_hidden=4, channel_hidden=6)
  with pytest.raises(AssertionError):
    jax.eval_shape(functools.partial(block.init, train=False), jax.random.key(0),
                   jnp.zeros((2, 4, 3)))


@pytest.mark.parametrize('name', sorted(HIERARCHIES))
def test_forward_shapes(name):
  h = HIERARCHIES[name]
  model = msst_lib.MSST(h, **TINY)
  poses = _poses(h)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             *poses)
  assert set(variables) == {'params', VQ}
  assert variables[VQ]['sparse_quantizer']['codebook'].shape == (16, 8)
  assert variables[VQ]['dense_quantizer']['codebook'].shape == (32, 8)
  (recon, out), new = jax.eval_shape(
      functools.partial(model.apply, train=True, mutable=[VQ]), variables, *poses)
  assert jax.tree.map(lambda x: x.shape, new) == jax.tree.map(
      lambda x: x.shape, {VQ: variables[VQ]})
  assert {k: v.shape for k, v in recon.items()} == {
      'sparse': (B, h.num_sparse, 2), 'dense': (B, h.num_dense, 2), 'fine': (B, h.num_fine, 2)}
  assert out['sparse_ids'].shape == (B, h.num_sparse)
  assert out['dense_ids'].shape == (B, h.num_dense)
  assert out['sparse_embedding'].shape == out['sparse_quantized'].shape == (B, h.num_sparse, 8)
  assert out['dense_embedding'].shape == out['dense_quantized'].shape == (B, h.num_dense, 8)
  assert out['action_logits'].shape == (B, 5)
  for key in ('commitment_loss', 'perplexity', 'usage'):
    for level in ('sparse', 'dense'):
      assert out[f'{level}_{key}'].shape == ()


def test_forward_values_are_finite_and_depend_on_all_levels():
  h = HIERARCHIES['uneven']
  _, variables = _model_and_variables('uneven')
  sparse, dense, fine = _poses(h)
  (recon, out), _ = _apply('uneven', True, variables, sparse, dense, fine)
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves((recon, out)))
  for level, moved in (('fine', (sparse, dense, fine.at[:, 0].add(1.0))),
                       ('dense', (sparse, dense.at[:, 0].add(1.0), fine))):
    (_, moved_out), _ = _apply('uneven', True, variables, *moved)
    change = jnp.abs(moved_out['dense_embedding'] - out['dense_embedding']).max()
    assert float(change) > 1e-4, level


def test_part_without_dense_points_is_encoded_from_its_own_coordinate():
  h = HIERARCHIES['uneven']
  assert h.dense_group_sizes[0] == 0 and h.dense_group_sizes[3] == 0
  _, variables = _model_and_variables('uneven')
  sparse, dense, fine = _poses(h)
  _, out = _apply('uneven', False, variables, sparse, dense, fine)
  _, moved = _apply('uneven', False, variables, sparse.at[:, 3].add(1.0), dense, fine)
  assert float(jnp.abs(moved['sparse_embedding'][:, 3] - out['sparse_embedding'][:, 3]).max()
               ) > 1e-4
  # Dense embeddings do not see sparse coordinates.
  np.testing.assert_array_equal(moved['dense_embedding'], out['dense_embedding'])


@pytest.mark.parametrize('name', ['uneven'])
def test_encode_decode_matches_eval_call(name):
  model, variables = _model_and_variables(name)
  poses = _poses(HIERARCHIES[name], seed=1)
  recon, out = _apply(name, False, variables, *poses)
  sparse_ids, dense_ids = jax.jit(functools.partial(model.apply, method=model.encode))(
      variables, *poses)
  np.testing.assert_array_equal(sparse_ids, out['sparse_ids'])
  np.testing.assert_array_equal(dense_ids, out['dense_ids'])
  decoded = jax.jit(functools.partial(model.apply, method=model.decode))(
      variables, sparse_ids, dense_ids)
  for level in ('sparse', 'dense', 'fine'):
    np.testing.assert_allclose(decoded[level], recon[level], rtol=1e-4, atol=1e-5)


def test_gradient_reaches_both_encoders_through_the_quantizers():
  model, variables = _model_and_variables('uneven')
  poses = _poses(HIERARCHIES['uneven'], seed=2)

  def decoder_loss(params):
    recon, _ = model.apply({'params': params, VQ: variables[VQ]}, *poses, train=False)
    # Decoders only see quantized tokens: encoder gradients exist only via straight-through.
    return sum(jnp.mean(recon[level]**2) for level in ('sparse', 'dense', 'fine'))

  grads = jax.jit(jax.grad(decoder_loss))(variables['params'])
  for encoder in ('fine_encoder', 'dense_encoder', 'dense_code_proj', 'sparse_code_proj',
                  'fine_point_embedding'):
    norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[encoder]))
    assert norm > 0, encoder


def test_training_call_updates_codebooks_and_ignores_invalid_samples():
  h = HIERARCHIES['uneven']
  _, variables = _model_and_variables('uneven')
  sparse, dense, fine = _poses(h, seed=3)
  _, new = _apply('uneven', True, variables, sparse, dense, fine)
  for level in ('sparse', 'dense'):
    old_codes = variables[VQ][f'{level}_quantizer']['codebook']
    assert float(jnp.abs(new[VQ][f'{level}_quantizer']['codebook'] - old_codes).max()) > 1e-4
  # Padding: the content of samples marked invalid does not touch the statistics.
  valid = jnp.array([True, False, False])
  _, masked = _apply('uneven', True, variables, sparse, dense, fine, valid)
  _, garbage = _apply('uneven', True, variables, sparse.at[1:].set(5.0), dense.at[1:].set(-3.0),
                      fine.at[1:].set(2.0), valid)
  for a, b in zip(jax.tree.leaves(masked[VQ]), jax.tree.leaves(garbage[VQ])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # ... while they do when valid.
  _, counted = _apply('uneven', True, variables, sparse.at[1:].set(5.0), dense.at[1:].set(-3.0),
                      fine.at[1:].set(2.0))
  assert float(jnp.abs(counted[VQ]['dense_quantizer']['cluster_sum']
                       - masked[VQ]['dense_quantizer']['cluster_sum']).max()) > 1e-4


def test_default_size_is_about_a_million_parameters():
  model = msst_lib.MSST(skeleton.default_hierarchy(), width=128, num_blocks=2, num_actions=15)
  poses = _poses(skeleton.default_hierarchy(), batch=1)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), *poses)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))
  print(f'MSST parameters (width 128, 2 blocks): {count}')
  assert 300_000 < count < 1_200_000


def test_decode_expected_is_decode_at_one_hot_and_linear_in_the_codes():
  """One-hot distributions decode as their ids; a 50/50 mixture of two codes decodes the
  midpoint of their vectors (the decoders see the expected code vector)."""
  model, variables = _model_and_variables('default')
  h = HIERARCHIES['default']
  rng = np.random.default_rng(0)
  sparse_ids = rng.integers(0, model.sparse_codebook_size, (B, h.num_sparse))
  dense_ids = rng.integers(0, model.dense_codebook_size, (B, h.num_dense))
  one_hot = lambda ids, k: jax.nn.one_hot(ids, k)
  decode = jax.jit(functools.partial(model.apply, method=model.decode))
  decode_expected = jax.jit(functools.partial(model.apply, method=model.decode_expected))
  expected = decode_expected(variables, one_hot(sparse_ids, model.sparse_codebook_size),
                             one_hot(dense_ids, model.dense_codebook_size))
  decoded = decode(variables, sparse_ids, dense_ids)
  for level in ('sparse', 'dense', 'fine'):
    np.testing.assert_allclose(expected[level], decoded[level], rtol=1e-5, atol=1e-6)
  other = (sparse_ids + 1) % model.sparse_codebook_size
  half = 0.5 * (one_hot(sparse_ids, model.sparse_codebook_size)
                + one_hot(other, model.sparse_codebook_size))
  mixed = decode_expected(variables, half, one_hot(dense_ids, model.dense_codebook_size))
  codebook = variables[VQ]['sparse_quantizer']['codebook']
  midpoint = 0.5 * (codebook[sparse_ids] + codebook[other])
  reference = model.apply(variables, midpoint, jnp.take(
      variables[VQ]['dense_quantizer']['codebook'], dense_ids, axis=0), False,
                          method=model._decode_tokens)  # pylint: disable=protected-access
  for level in ('sparse', 'dense', 'fine'):
    np.testing.assert_allclose(mixed[level], reference[level], rtol=1e-5, atol=1e-6)
  assert not np.allclose(mixed['sparse'], decoded['sparse'], atol=1e-4)
