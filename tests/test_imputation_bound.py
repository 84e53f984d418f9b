"""The hidden-joint regressor (`bench/imputation_bound.py`): its loss, its learning, its
report, and training-time evaluation under occlusion.

The whole path on a benchmark workdir runs in
tests/test_configs.py::test_cmu_accuracy_smoke (HIPART_SLOW_TESTS=1).
"""

import jax
import ml_collections
import numpy as np
import optax

from bench import imputation_bound
from hipart_jax import skeleton
from hipart_jax.training import loop
from launch.configs import synthetic_lifter
from tests import fake_examples

MODEL = dict(width=32, num_blocks=1, dropout=0.0)


def _batch(rng, size=64):
  """Random poses whose joint 6 (left ankle) is hidden and lies 0.3 below joint 5."""
  sparse = rng.normal(size=(size, skeleton.NUM_JOINTS, 2)).astype(np.float32) * 0.3
  sparse[:, 6] = sparse[:, 5] + np.float32([0.0, 0.3])
  visible = np.ones((size, skeleton.NUM_JOINTS), bool)
  visible[:, 6] = False
  inputs = np.where(visible[..., None], sparse, 0.0).astype(np.float32)
  return dict(inputs_2d=inputs, inputs_confidence=visible.astype(np.float32),
              sparse_2d=sparse, visible=visible, valid=np.ones(size, bool),
              norm_scale=np.full(size, 2.0, np.float32),
              image_size=np.full((size, 2), 1000.0, np.float32))


def test_regressor_starts_at_the_input_and_is_scored_on_hidden_joints_only():
  stage = imputation_bound.HiddenJointRegressorStage(MODEL)
  batch = _batch(np.random.default_rng(0))
  variables = stage.init_variables(jax.random.key(0), batch)
  pred = stage.model.apply(variables, batch['inputs_2d'], batch['inputs_confidence'])
  np.testing.assert_array_equal(pred, batch['inputs_2d'])
  m = stage.eval_metrics(variables, batch)
  # The hidden joint is predicted at the input's 0: its truth's distance, in px.
  expected = np.linalg.norm(batch['sparse_2d'][:, 6], axis=-1) * 2.0 * 1000.0 / 2
  np.testing.assert_allclose(m['hidden_px_per_example'], expected.mean(), rtol=1e-5)
  assert float(m['hidden_joints_per_example']) == 1.0
  moved = dict(batch, sparse_2d=batch['sparse_2d'].copy())
  moved['sparse_2d'][:, 3] += 1.0  # A visible joint's truth: not scored.
  np.testing.assert_allclose(stage.eval_metrics(variables, moved)['loss'], m['loss'])
  moved['sparse_2d'][:, 6] += 1.0
  assert float(stage.eval_metrics(variables, moved)['loss']) > float(m['loss']) + 0.5


def test_regressor_learns_a_hidden_joint_from_the_visible_ones():
  stage = imputation_bound.HiddenJointRegressorStage(MODEL)
  rng = np.random.default_rng(1)
  params = stage.init_variables(jax.random.key(0), _batch(rng))['params']
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    grads, _ = jax.grad(stage.loss_fn, has_aux=True)(params, {}, batch,
                                                     jax.random.key(0), True)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  test = _batch(rng, 256)
  before = float(stage.eval_metrics({'params': params}, test)['hidden_px_per_example'])
  for _ in range(300):
    params, opt_state = step(params, opt_state, _batch(rng))
  after = float(stage.eval_metrics({'params': params}, test)['hidden_px_per_example'])
  assert after < 0.25 * before, (before, after)


def test_training_evaluations_hide_joints_when_asked():
  config = synthetic_lifter.get_config('sparse,tiny')
  hierarchy = skeleton.default_hierarchy()
  examples = fake_examples.fake_examples(8, hierarchy, seed=0)
  for occlusion, hides in (('', False), ('one_limb', True)):
    config.dataset.eval_occlusion = occlusion
    _, make_eval_batches, _ = loop._make_data(  # pylint: disable=protected-access
        config, examples, examples, hierarchy)
    visible = np.concatenate([b['visible'].reshape(-1, skeleton.NUM_JOINTS)
                              for b in make_eval_batches()])
    assert (~visible).any() == hides


def test_report_lists_the_regressor_per_split_beside_the_benchmark():
  settings = ml_collections.ConfigDict(dict(
      seeds=(0, 1), occlusion_levels=('none', 'one_limb'), eval_stride=4,
      validation_split='validation', test_split='test')).to_dict()
  px = {imputation_bound.run_name(s): {'validation': {'one_limb': 10.0 + s},
                                       'test': {'one_limb': 12.0 + s}} for s in (0, 1)}
  benchmark = {'one_limb': {'hiarm_generated': 18.3, 'mlp_lifter': 17.2}}
  report = dict(settings=settings, px=px, hiarm_validation={'one_limb': 25.0},
                benchmark_hidden_joint_imputation=benchmark)
  text = imputation_bound.report_markdown(report)
  assert '| hidden-joint regressor | validation | 10.5 (10.0–11.0) |' in text
  assert '| hidden-joint regressor | test | 12.5 (12.0–13.0) |' in text
  assert '| hiarm generated | validation | 25.0 |' in text
  assert '| hiarm generated | test | 18.3 |' in text
  assert '| SimpleBaseline MLP (baseline) | test | 17.2 |' in text
  assert 'none' not in text.splitlines()[2]  # Clean input hides no joint.
