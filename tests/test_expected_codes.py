"""HiARM's `code_temperature`: the hierarchy decoded from each token's expected code."""

import copy

import jax
import numpy as np
import pytest

from hipart_jax import checkpoints
from hipart_jax.models import decoding
from hipart_jax.models import hipart
import pipeline_fixture

HIERARCHY = pipeline_fixture.HIERARCHY


@pytest.fixture(scope='module')
def generator(tiny_pipeline):
  """(msst, hiarm, collections, inputs_2d, inputs_confidence) of the tiny trained HiARM."""
  variables, meta = checkpoints.restore_params(tiny_pipeline['hiarm'],
                                               expected_stage='hiarm')
  msst = hipart.build_msst(meta['frozen_models']['msst'], HIERARCHY)
  hiarm = hipart.build_hiarm(meta['model'], HIERARCHY, msst)
  assert hiarm.code_temperature == 0.0  # The default: the paper's decoding.
  collections = {'frozen_msst': variables['frozen_msst'], 'frozen_hiarm': variables}
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(6, 17, 2)).astype(np.float32) * 0.5
  confidence = np.ones((6, 17), np.float32)
  confidence[:3, 14:17] = 0.0  # A hidden arm: where HiARM is least sure.
  inputs[confidence == 0] = 0.0
  return msst, hiarm, collections, inputs, confidence


def _generate(generator, code_temperature):
  msst, hiarm, collections, inputs, confidence = generator
  return hipart.generate_hierarchy(msst, hiarm.clone(code_temperature=code_temperature),
                                   collections, inputs, confidence, jax.random.key(0))


def test_expected_codes_decode_the_probability_weighted_codebook_vectors(generator):
  msst, hiarm, collections, inputs, confidence = generator
  generated = decoding.generate(hiarm, collections['frozen_hiarm'], inputs, confidence,
                                jax.random.key(0), return_logits=True)
  books = msst.apply(collections['frozen_msst'], method=lambda m: (
      m.sparse_quantizer.codebook.value, m.dense_quantizer.codebook.value))
  vectors = []
  for level, book in zip(('sparse', 'dense'), books):
    logits = np.asarray(generated[f'{level}_logits'][:, 0], np.float64) / 0.7
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    vectors.append((probs @ np.asarray(book, np.float64)).astype(np.float32))
  reference = msst.apply(collections['frozen_msst'], *vectors, False,
                         method=lambda m, s, d, train: m._decode_tokens(s, d, train))  # pylint: disable=protected-access
  expected = _generate(generator, 0.7)
  for level in ('sparse', 'dense', 'fine'):
    np.testing.assert_allclose(expected[level][:, 0], reference[level], rtol=1e-4,
                               atol=1e-5)


def test_a_cold_code_temperature_is_the_generated_codes(generator):
  """As the temperature falls the expectation becomes the argmax: the greedy codes."""
  greedy, cold, warm = (_generate(generator, t) for t in (0.0, 1e-4, 0.7))
  for level in ('sparse', 'dense', 'fine'):
    np.testing.assert_allclose(cold[level], greedy[level], rtol=1e-4, atol=1e-5)
  assert not np.allclose(warm['fine'], greedy['fine'], atol=1e-3)


def test_bad_code_temperatures_are_refused(generator):
  msst, hiarm, collections, inputs, confidence = generator
  with pytest.raises(ValueError, match='code_temperature must be >= 0'):
    _generate(generator, -0.5)
  ids_only = decoding.generate(hiarm, collections['frozen_hiarm'], inputs, confidence,
                               jax.random.key(0))
  with pytest.raises(ValueError, match='return_logits=True'):
    hipart.decode_generated(msst, collections['frozen_msst'],
                            hiarm.clone(code_temperature=0.7), ids_only)


def test_a_lifter_checkpoint_carries_its_hiarms_code_temperature(tiny_pipeline, generator):
  """Inference decodes as the lifter was trained: the setting rides in the frozen HiARM's
  config of the lifter's meta, so `predict` uses it with no argument."""
  model, variables, meta = checkpoints.load_hipart(str(tiny_pipeline['lifter_hierarchical']))
  assert model.hiarm.code_temperature == 0.0
  meta = copy.deepcopy(meta)
  meta['frozen_models']['hiarm']['code_temperature'] = 0.7
  warm = hipart.from_meta(meta)
  assert warm.hiarm.code_temperature == 0.7
  _, _, _, inputs, confidence = generator
  lifted = {name: hipart.lift(m, variables, inputs, confidence, jax.random.key(0))
            for name, m in (('greedy', model), ('warm', warm))}
  np.testing.assert_allclose(lifted['warm']['fine_2d'], _generate(generator, 0.7)['fine'],
                             rtol=1e-4, atol=1e-5)
  assert not np.allclose(lifted['warm']['pose_3d'], lifted['greedy']['pose_3d'], atol=1e-5)
