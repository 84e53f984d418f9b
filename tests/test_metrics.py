"""Tests for hipart_jax.metrics on constructed poses with hand-computed values."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import geometry
from hipart_jax import metrics


@pytest.fixture(scope='module')
def rng():
  return np.random.default_rng(0)


def _random_similarity(rng, poses):
  """Applies a random rotation, scale in [0.5, 2] and translation per sample."""
  q = rng.normal(size=(poses.shape[0], 4))
  rotation = geometry.matrix_from_quaternion(q / np.linalg.norm(q, axis=-1, keepdims=True))
  scale = rng.uniform(0.5, 2.0, size=(poses.shape[0], 1, 1))
  shift = rng.normal(size=(poses.shape[0], 1, 3))
  return scale * np.einsum('bij,bnj->bni', rotation, poses) + shift


def _poses_with_joint_errors(errors_mm):
  """Targets at 0 and predictions displaced along x by the given per-joint errors (mm)."""
  errors_m = np.asarray(errors_mm, dtype=np.float64) / 1000
  target = np.zeros((*errors_m.shape, 3))
  pred = target.copy()
  pred[..., 0] = errors_m
  return pred, target


def test_mpjpe_of_a_constant_offset_in_millimeters(rng):
  target = rng.normal(size=(4, 17, 3))
  pred = target + np.array([0.003, 0.004, 0.0])  # 3-4-5 triangle: 5 mm everywhere.
  np.testing.assert_allclose(metrics.per_joint_error(pred, target), np.full((4, 17), 5.0))
  np.testing.assert_allclose(metrics.mpjpe(pred, target), np.full(4, 5.0))
  pred[0, 0] += [0.017, 0.0, 0.0]  # One joint of sample 0 now 20 mm away (3+17, 4).
  expected = (16 * 5.0 + np.hypot(20.0, 4.0)) / 17
  np.testing.assert_allclose(metrics.mpjpe(pred, target), [expected, 5.0, 5.0, 5.0])


def test_p_mpjpe_is_zero_for_a_similarity_copy(rng):
  target = rng.normal(size=(5, 17, 3)) * 0.3
  pred = _random_similarity(rng, target)
  assert metrics.mpjpe(pred, target).min() > 10.0
  np.testing.assert_allclose(metrics.p_mpjpe(pred, target), 0.0, atol=1e-6)


def test_p_mpjpe_is_invariant_to_similarity_of_pred(rng):
  target = rng.normal(size=(5, 17, 3)) * 0.3
  pred = target + rng.normal(size=target.shape) * 0.05
  before = metrics.p_mpjpe(pred, target)
  assert before.min() > 1.0
  np.testing.assert_allclose(metrics.p_mpjpe(_random_similarity(rng, pred), target), before,
                             rtol=1e-9)


def test_p_mpjpe_does_not_undo_a_mirror(rng):
  target = rng.normal(size=(3, 17, 3)) * 0.3
  mirrored = target * np.array([-1.0, 1.0, 1.0])
  assert metrics.p_mpjpe(mirrored, target).min() > 10.0


def test_n_mpjpe_is_zero_for_a_scaled_copy(rng):
  target = rng.normal(size=(4, 17, 3)) * 0.3
  np.testing.assert_allclose(metrics.n_mpjpe(1.7 * target, target), 0.0, atol=1e-9)
  pred = target + rng.normal(size=target.shape) * 0.05
  # Scaling optimally never increases the squared error, and rarely leaves it unchanged.
  assert not np.allclose(metrics.n_mpjpe(pred, target), metrics.mpjpe(pred, target))


def test_pck_and_auc_hand_values():
  pred, target = _poses_with_joint_errors([[0.0, 100.0, 200.0]])
  np.testing.assert_allclose(metrics.pck(pred, target), [2 / 3])
  # Thresholds 0, 5, ..., 150 (31): error 0 is below 30 of them (not 0), error 100 below
  # 10 (105..150), error 200 below none.
  np.testing.assert_allclose(metrics.auc(pred, target), [(30 + 10 + 0) / (3 * 31)])
  # Strictly below: an error exactly at the threshold does not count.
  pred, target = _poses_with_joint_errors([[150.0, 149.0]])
  np.testing.assert_allclose(metrics.pck(pred, target, threshold_mm=150.0), [0.5])
  np.testing.assert_allclose(metrics.pck(pred, target, threshold_mm=100.0), [0.0])


def test_occluded_mpjpe_counts_only_occluded_joints_of_valid_samples():
  pred, target = _poses_with_joint_errors([[10.0, 20.0, 30.0],
                                           [40.0, 50.0, 60.0],
                                           [70.0, 80.0, 90.0]])
  visible = np.array([[True, False, False],   # occluded: 20, 30
                      [True, True, True],     # none occluded
                      [False, True, True]])   # occluded: 70, but sample is padding
  total, count = metrics.occluded_mpjpe(pred, target, visible)
  np.testing.assert_allclose(total, 120.0)
  assert int(count) == 3
  total, count = metrics.occluded_mpjpe(pred, target, visible,
                                        valid=np.array([True, True, False]))
  np.testing.assert_allclose(total, 50.0)
  assert int(count) == 2


def test_mean_over_actions_differs_from_global_mean():
  values = np.array([10.0, 20.0, 30.0, 100.0])
  actions = np.array(['Walk', 'Walk', 'Walk', 'Sit'])
  assert metrics.aggregate_by_key(values, actions) == {'Sit': 100.0, 'Walk': 20.0}
  assert metrics.mean_over_actions(values, actions) == pytest.approx(60.0)
  assert values.mean() == pytest.approx(40.0)


def test_valid_mask_excludes_padding_and_bytes_keys_decode():
  values = np.array([10.0, 30.0, 1e6, 1e6])
  actions = np.array([b'Walk', b'Walk', b'Walk', b'Pad'])
  valid = np.array([True, True, False, False])
  assert metrics.aggregate_by_key(values, actions, valid) == {'Walk': 20.0}
  assert metrics.mean_over_actions(values, actions, valid) == pytest.approx(20.0)
  assert np.isnan(metrics.mean_over_actions(values, actions, np.zeros(4, bool)))
  with pytest.raises(ValueError, match='valid'):
    metrics.aggregate_by_key(values, actions, valid[:3])


def test_summarize_hand_values_and_json():
  # Two Walk samples (errors 10 and 30 mm on every joint), one Sit (100 mm), one padding.
  per_sample = np.array([10.0, 30.0, 100.0, 5000.0])
  offsets, _ = _poses_with_joint_errors(np.repeat(per_sample[:, None], 17, axis=1))
  target = np.random.default_rng(3).normal(size=offsets.shape) * 0.2
  pred = target + offsets
  actions = np.array(['Walk', 'Walk', 'Sit', 'Walk'])
  valid = np.array([True, True, True, False])
  visible = np.ones((4, 17), bool)
  visible[0, :2] = False  # Two occluded joints at 10 mm.
  visible[3, :] = False  # Padding: never counts.
  summary = metrics.summarize(pred, target, actions, visible=visible, valid=valid)
  json.dumps(summary, allow_nan=False)
  assert summary['mpjpe_mm'] == pytest.approx((20.0 + 100.0) / 2)
  assert summary['per_action']['Walk']['mpjpe_mm'] == pytest.approx(20.0)
  assert summary['per_action']['Walk']['num_examples'] == 2
  assert summary['per_action']['Sit']['pck150'] == pytest.approx(1.0)
  assert summary['pck150'] == pytest.approx(1.0)
  assert summary['per_joint'] == pytest.approx([140.0 / 3] * 17)
  assert summary['occluded_mpjpe_mm'] == pytest.approx(10.0)
  assert summary['num_occluded_joints'] == 2
  assert summary['num_examples'] == 3
  assert summary['p_mpjpe_mm'] == pytest.approx(0.0, abs=1e-6)  # A pure translation.
  by_examples = metrics.summarize(pred, target, actions, valid=valid, average='examples')
  assert by_examples['mpjpe_mm'] == pytest.approx(140.0 / 3)
  assert by_examples['occluded_mpjpe_mm'] is None
  assert metrics.summarize(pred, target, None, valid=valid)['per_action'] == {}


@pytest.mark.parametrize('name', ['per_joint_error', 'mpjpe', 'p_mpjpe', 'n_mpjpe', 'pck',
                                  'auc'])
def test_numpy_and_jit_agree(rng, name):
  function = getattr(metrics, name)
  target = (rng.normal(size=(4, 17, 3)) * 0.3).astype(np.float32)
  pred = (target + rng.normal(size=target.shape) * 0.08).astype(np.float32)
  numpy_out = function(pred, target)
  jax_out = jax.jit(function)(jnp.asarray(pred), jnp.asarray(target))
  assert isinstance(numpy_out, np.ndarray) and isinstance(jax_out, jax.Array)
  np.testing.assert_allclose(numpy_out, np.asarray(jax_out), rtol=1e-4, atol=1e-3)


def test_occluded_mpjpe_under_jit():
  pred, target = _poses_with_joint_errors([[10.0, 20.0], [30.0, 40.0]])
  visible = np.array([[False, True], [False, False]])
  valid = np.array([True, False])
  total, count = jax.jit(metrics.occluded_mpjpe)(
      jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), jnp.asarray(visible),
      jnp.asarray(valid))
  np.testing.assert_allclose(float(total), 10.0, rtol=1e-6)
  assert int(count) == 1
