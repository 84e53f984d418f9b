"""Tests for the stage-3 lifter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import skeleton
from hipart_jax.models import lifter as lifter_lib
from hipart_jax.models import simple_baseline

HIERARCHY = skeleton.default_hierarchy()
B = 3


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  h = HIERARCHY
  hierarchy_2d = {'sparse': rng.normal(size=(B, h.num_sparse, 2)),
                  'dense': rng.normal(size=(B, h.num_dense, 2)),
                  'fine': rng.normal(size=(B, h.num_fine, 2))}
  hierarchy_2d = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hierarchy_2d)
  return (jnp.asarray(rng.normal(size=(B, 17, 2)), jnp.float32),
          jnp.ones((B, 17), jnp.float32), hierarchy_2d)


@pytest.mark.parametrize('mode', lifter_lib.LIFTER_MODES)
def test_modes_build_and_output_root_relative_pose(mode):
  model = lifter_lib.Lifter(HIERARCHY, mode=mode, width=16, depth=1, num_heads=2)
  inputs, conf, hierarchy_2d = _inputs()
  variables = model.init(jax.random.key(0), inputs, conf, hierarchy_2d)
  pose = jax.jit(model.apply)(variables, inputs, conf, hierarchy_2d)
  assert pose.shape == (B, 17, 3)
  assert np.all(np.isfinite(pose))
  np.testing.assert_array_equal(pose[:, 0], 0.0)
  n = variables['params']['point_identity'].shape[0]
  assert n == (17 if mode == 'sparse' else 17 + 17 + 48 + 96)


def with_random_head(variables):
  """The head starts at zero (every pose at the root); tests that need an output that
  depends on the inputs draw it at random."""
  params = dict(variables['params'])
  head = dict(params['head'])
  head['kernel'] = jax.random.normal(jax.random.key(1), head['kernel'].shape) * 0.1
  params['head'] = head
  return {**variables, 'params': params}


def test_the_head_starts_every_pose_at_the_root():
  model = lifter_lib.Lifter(HIERARCHY, mode='sparse', width=16, depth=1, num_heads=2)
  inputs, conf, _ = _inputs()
  pose = model.apply(model.init(jax.random.key(0), inputs, conf), inputs, conf)
  np.testing.assert_array_equal(pose, 0.0)


def test_hierarchical_mode_uses_the_hierarchy():
  model = lifter_lib.Lifter(HIERARCHY, mode='hierarchical', width=16, depth=1, num_heads=2)
  inputs, conf, hierarchy_2d = _inputs()
  variables = with_random_head(model.init(jax.random.key(0), inputs, conf, hierarchy_2d))
  moved = dict(hierarchy_2d, fine=hierarchy_2d['fine'] + 0.5)
  a = model.apply(variables, inputs, conf, hierarchy_2d)
  b = model.apply(variables, inputs, conf, moved)
  assert np.abs(np.asarray(a - b)).max() > 1e-6


def test_missing_hierarchy_and_bad_mode_raise():
  inputs, conf, _ = _inputs()
  with pytest.raises(ValueError, match='needs hierarchy_2d'):
    lifter_lib.Lifter(HIERARCHY, mode='oracle', width=8, depth=1, num_heads=1).init(
        jax.random.key(0), inputs, conf, None)
  with pytest.raises(ValueError, match='expected one of'):
    lifter_lib.Lifter(HIERARCHY, mode='dense', width=8, depth=1, num_heads=1).init(
        jax.random.key(0), inputs, conf, None)


def test_simple_baseline_starts_as_the_sparse_network_and_learns_the_hierarchy():
  """The hierarchical SimpleBaseline is the sparse one plus a zero-initialized hierarchy
  embedding: at init it ignores the hierarchy and matches the sparse network with the
  same shared weights; once that embedding is non-zero the hierarchy moves the pose."""
  inputs, conf, hierarchy_2d = _inputs()
  sparse = simple_baseline.SimpleBaseline(HIERARCHY, mode='sparse', width=32, dropout=0.0)
  hierarchical = sparse.clone(mode='hierarchical')
  variables = with_random_head(hierarchical.init(jax.random.key(0), inputs, conf,
                                                 hierarchy_2d))
  params = variables['params']
  np.testing.assert_array_equal(params['hierarchy_embedding']['kernel'], 0.0)
  assert params['hierarchy_embedding']['kernel'].shape == (
      2 * (HIERARCHY.num_sparse + HIERARCHY.num_dense + HIERARCHY.num_fine), 32)
  shared = {'params': {k: v for k, v in params.items() if k != 'hierarchy_embedding'}}
  np.testing.assert_allclose(hierarchical.apply(variables, inputs, conf, hierarchy_2d),
                             sparse.apply(shared, inputs, conf), atol=1e-6)
  embedding = dict(params['hierarchy_embedding'])
  embedding['kernel'] = jax.random.normal(jax.random.key(2), embedding['kernel'].shape)
  variables = {'params': dict(params, hierarchy_embedding=embedding)}
  moved = dict(hierarchy_2d, fine=hierarchy_2d['fine'] + 0.5)
  a = hierarchical.apply(variables, inputs, conf, hierarchy_2d)
  assert np.abs(np.asarray(a - hierarchical.apply(variables, inputs, conf, moved))).max() > 1e-4
  np.testing.assert_array_equal(a[:, 0], 0.0)
  with pytest.raises(ValueError, match='needs hierarchy_2d'):
    hierarchical.apply(variables, inputs, conf, None)
