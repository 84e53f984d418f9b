"""hipart_jax/execution.py: the backend choices, the step mapping, microbatches, and the
layering (inference imports no training code)."""

import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import execution
from hipart_jax import skeleton
from hipart_jax.models import hipart
from hipart_jax.models import lifter as lifter_lib
from hipart_jax.models import simple_baseline
from launch.configs import base
from launch.configs import synthetic_hiarm
from launch.configs import synthetic_lifter
from launch.configs import synthetic_msst

REPO = pathlib.Path(__file__).resolve().parents[1]


def _python(script):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  return subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                        text=True, check=True, timeout=120, cwd=REPO).stdout.split()


def test_inference_imports_no_training_code():
  """Inference (models/hipart.py) pulls in neither optax nor orbax, and no module under
  models/ imports the training package."""
  out = _python('import sys\n'
                'import hipart_jax.models.hipart\n'
                'print(sorted({m.split(".")[0] for m in sys.modules} & '
                '{"optax", "orbax", "hipart_jax.training"}) or "clean")\n'
                'print(any(m.startswith("hipart_jax.training") for m in sys.modules))')
  assert out == ['clean', 'False']
  for path in (REPO / 'hipart_jax' / 'models').glob('*.py'):
    imports = [line for line in path.read_text().splitlines()
               if line.startswith(('import ', 'from '))]
    assert not [line for line in imports if 'training' in line or 'checkpoints' in line
                or 'optax' in line or 'orbax' in line], path


def test_plans_per_backend():
  config = base.get_config().execution
  assert execution.Execution.for_backend(config, 'gpu') == execution.Execution()
  assert execution.Execution.for_backend(config, 'tpu') == execution.Execution()
  cpu = execution.Execution.for_backend(config, 'cpu')
  assert cpu.devices == 1 and cpu.microbatch_size == 0
  assert cpu.compiler_options == {
      'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}
  hiarm = execution.Execution.for_backend(synthetic_hiarm.get_config().execution, 'cpu')
  assert (hiarm.devices, hiarm.microbatch_size) == (0, 16)
  # GPU/TPU never run a CPU trick, whatever the CPU entry asks.
  assert execution.Execution.for_backend(synthetic_hiarm.get_config().execution,
                                         'gpu') == execution.Execution()
  assert execution.Execution.for_backend(
      synthetic_msst.get_config().execution, 'cpu').microbatch_size == 0
  sparse = synthetic_lifter.get_config('sparse').execution
  assert execution.Execution.for_backend(sparse, 'cpu').devices == 1
  with pytest.raises(ValueError, match='unknown'):
    execution.Execution.for_backend({'cpu': {'chunky': 1}}, 'cpu')
  with pytest.raises(ValueError, match='>= 0'):
    execution.Execution.for_backend({'cpu': {'microbatch_size': -1}}, 'cpu')


def test_resolve_cpu_devices():
  assert execution.resolve_cpu_devices(3) == 3
  assert execution.resolve_cpu_devices(0) == len(os.sched_getaffinity(0))  # One per core.
  with pytest.raises(ValueError, match='>= 0'):
    execution.resolve_cpu_devices(-1)


def test_cpu_client_threads_leave_every_device_a_thread():
  """Two client threads per device over XLA's base (the cores, or NPROC); a PJRT_NPROC
  of the user's is kept when large enough and refused, naming it, when not."""
  assert execution.cpu_client_threads(2, {}) == max(len(os.sched_getaffinity(0)), 4)
  assert execution.cpu_client_threads(3, {'NPROC': '2'}) == 6
  assert execution.cpu_client_threads(2, {'NPROC': '16'}) == 16
  assert execution.cpu_client_threads(2, {'PJRT_NPROC': '5', 'NPROC': '1'}) == 5
  for given in ('3', 'many', ''):
    with pytest.raises(ValueError, match=f"PJRT_NPROC='{given}'.*at least 4 threads"):
      execution.cpu_client_threads(2, {'PJRT_NPROC': given})


def test_configure_creates_the_devices():
  """In a fresh process (the count is fixed once JAX starts): 3 devices on 6 client
  threads (over a 2-core base) with the collective timeouts, and a second count
  afterwards is refused."""
  out = _python('import os\n'
                'for name in ("XLA_FLAGS", "PJRT_NPROC"):\n'
                '  os.environ.pop(name, None)\n'
                'os.environ["NPROC"] = "2"\n'
                'import jax\n'
                'from hipart_jax import execution\n'
                'count = execution.configure_cpu_devices(3)\n'
                'print(count, jax.local_device_count(), jax.default_backend(),\n'
                '      os.environ["PJRT_NPROC"], os.environ["XLA_FLAGS"].replace(" ", ","))\n'
                'try:\n'
                '  execution.configure_cpu_devices(2)\n'
                'except RuntimeError:\n'
                '  print("refused")\n')
  assert out == ['3', '3', 'cpu', '6',
                 '--xla_cpu_collective_call_terminate_timeout_seconds=300,'
                 '--xla_cpu_collective_call_warn_stuck_timeout_seconds=60', 'refused']


def _step(state, batch):
  return jax.lax.pmean(jnp.sum(batch['x'] * state), execution.AXIS)


def test_compiler_options_reach_xla():
  """Options reach XLA (an unknown one fails loudly) and leave the numbers unchanged."""
  state, batch = jnp.ones(3), {'x': jnp.arange(6.0).reshape(1, 2, 3)}
  plain = execution.map_step(_step)(state, batch)
  with pytest.raises(Exception, match='xla_no_such_option_hipart'):
    execution.map_step(_step, compiler_options={'xla_no_such_option_hipart': True})(
        state, batch)
  options = execution.Execution.for_backend(base.get_config().execution).compiler_options
  if options:
    np.testing.assert_allclose(
        execution.map_step(_step, compiler_options=options)(state, batch), plain)


def _toy_loss(params, batch, rng):
  """A valid-masked mean of per-example terms (the `Stage` contract), and a metric."""
  errors = jnp.sum((batch['x'] @ params['w'] - batch['y']) ** 2, -1) * (
      1.0 + 0.0 * jax.random.uniform(rng))
  valid = batch['valid'].astype(jnp.float32)
  mean = lambda v: jnp.sum(v * valid) / jnp.maximum(jnp.sum(valid), 1.0)
  return mean(errors), {'abs_error': mean(jnp.sqrt(errors))}


@pytest.mark.parametrize('microbatch_size', [1, 4, 5, 10])
def test_microbatches_give_the_whole_batch_values(microbatch_size):
  """Split in equal or unequal (padded) microbatches, with invalid examples anywhere:
  the loss, the metrics and the gradients are the whole batch's."""
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
  batch = {'x': jnp.asarray(rng.normal(size=(10, 3)), jnp.float32),
           'y': jnp.asarray(rng.normal(size=(10, 2)), jnp.float32),
           'valid': jnp.asarray([True] * 6 + [False, True, True, False])}
  collections = {'kept': jnp.ones((3, 2))}

  def loss_fn(params, batch, rng):  # Returns the collections it was given.
    loss, metrics = _toy_loss(params, batch, rng)
    return loss, (metrics, collections)

  key = jax.random.key(0)
  (want_loss, (want_metrics, _)), want_grads = jax.value_and_grad(
      loss_fn, has_aux=True)(params, batch, key)
  (loss, (metrics, got_collections)), grads = jax.jit(
      lambda p, b: execution.microbatched_value_and_grad(loss_fn, p, b, key,
                                                         microbatch_size, collections))(
                                                             params, batch)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics['abs_error'], want_metrics['abs_error'], rtol=1e-6)
  np.testing.assert_allclose(grads['w'], want_grads['w'], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got_collections['kept'], collections['kept'])


def test_microbatches_refuse_a_loss_that_updates_collections():
  params = {'w': jnp.ones((3, 2))}
  batch = {'x': jnp.ones((4, 3)), 'y': jnp.ones((4, 2)), 'valid': jnp.ones(4, bool)}

  def updating(params, batch, rng):
    loss, metrics = _toy_loss(params, batch, rng)
    return loss, (metrics, {'count': jnp.ones(())})

  with pytest.raises(ValueError, match='collections'):
    execution.microbatched_value_and_grad(updating, params, batch, jax.random.key(0), 2,
                                          {'count': jnp.zeros(())})
  with pytest.raises(ValueError, match='>= 0'):
    execution.microbatched_value_and_grad(updating, params, batch, jax.random.key(0), -1,
                                          {})


@pytest.mark.parametrize('masked', [False, True])
def test_per_example_attention_equals_flax(masked):
  keys = jax.random.split(jax.random.key(0), 4)
  query, key, value = (jax.random.normal(k, (3, 7, 2, 5)) for k in keys[:3])
  mask = jax.random.bernoulli(keys[3], 0.7, (3, 1, 7, 7)) if masked else None
  np.testing.assert_allclose(
      execution.per_example_attention(query, key, value, mask=mask),
      nn.dot_product_attention(query, key, value, mask=mask), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='no dropout'):
    execution.per_example_attention(query, key, value, dropout_rate=0.1,
                                    deterministic=False)


def test_lifter_attention_swap_keeps_params_and_results():
  hierarchy = skeleton.default_hierarchy()
  lifter = lifter_lib.Lifter(hierarchy, mode='hierarchical', width=16, depth=2,
                             num_heads=2)
  inputs = jax.random.normal(jax.random.key(1), (4, skeleton.NUM_JOINTS, 2))
  confidence = jnp.ones((4, skeleton.NUM_JOINTS))
  levels = {name: jax.random.normal(jax.random.key(i), (4, size, 2)) for i, (name, size)
            in enumerate((('sparse', hierarchy.num_sparse), ('dense', hierarchy.num_dense),
                          ('fine', hierarchy.num_fine)))}
  variables = lifter.init(jax.random.key(2), inputs, confidence, levels)
  # A non-zero head, so the comparison sees the attention.
  variables = jax.tree.map(lambda x: x + 0.01, variables)
  model = execution.with_lifter_attention(hipart.HiPART(lifter), 'per_example')
  assert model.lifter.attention_fn is execution.per_example_attention
  assert execution.with_lifter_attention(model, 'per_example') == model  # jit cache hits
  np.testing.assert_allclose(model.lifter.apply(variables, inputs, confidence, levels),
                             lifter.apply(variables, inputs, confidence, levels),
                             rtol=1e-4, atol=1e-6)
  baseline = hipart.HiPART(simple_baseline.SimpleBaseline(hierarchy, mode='sparse'))
  assert execution.with_lifter_attention(baseline, 'per_example') is baseline
  with pytest.raises(ValueError, match='lifter_attention'):
    execution.Execution.for_backend({'cpu': {'lifter_attention': 'fast'}}, 'cpu')
