"""HiPART inference: tokens → poses, generation, lifting and prediction from pixels.

    keypoints (pixels) → screen-normalized → model frame (input bounding box)
      → HiARM generation (ordering, temperature, top-k, K hypotheses)
      → MSST decoding of the codes or their expected vectors (sparse / dense / fine 2D)
      → lifter → root-relative 3D (meters)

`HiPART` bundles the three modules; `from_meta` rebuilds it from a lifter checkpoint's
meta (`checkpoints.load_hipart` loads both). `predict` is a pure function of
(variables, pixels, rng); `lift` is the same computation from inputs already in the
model frame (evaluation batches), which also serves the 'oracle' mode given the
ground-truth hierarchy. Coordinate frames: docs/DESIGN.md §3.

This module imports no training code: inference needs neither optax nor orbax.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import ml_collections

from hipart_jax import geometry
from hipart_jax import metrics
from hipart_jax import skeleton
from hipart_jax.models import decoding
from hipart_jax.models import hiarm as hiarm_lib
from hipart_jax.models import lifter as lifter_lib
from hipart_jax.models import msst as msst_lib
from hipart_jax.models import simple_baseline

ModelConfig = Mapping[str, Any] | ml_collections.ConfigDict


def _kwargs(model_config: ModelConfig) -> dict[str, Any]:
  if isinstance(model_config, ml_collections.ConfigDict):
    return model_config.to_dict()
  return dict(model_config)


def build_msst(model_config: ModelConfig, hierarchy: skeleton.Hierarchy, *,
               statistics_axis_name: str | None = None) -> msst_lib.MSST:
  """The tokenizer of a model config (a stage config's `model` block)."""
  return msst_lib.MSST(hierarchy=hierarchy, statistics_axis_name=statistics_axis_name,
                       **_kwargs(model_config))


def build_hiarm(model_config: ModelConfig, hierarchy: skeleton.Hierarchy,
                msst: msst_lib.MSST) -> hiarm_lib.HiARM:
  """HiARM whose vocabularies are the tokenizer's codebooks."""
  return hiarm_lib.HiARM(hierarchy=hierarchy, sparse_vocab_size=msst.sparse_codebook_size,
                         dense_vocab_size=msst.dense_codebook_size, **_kwargs(model_config))


# The lifter networks by `model.architecture`; both take the same inputs and modes.
LIFTER_ARCHITECTURES = {'transformer': lifter_lib.Lifter,
                        'simple_baseline': simple_baseline.SimpleBaseline}
Lifter = lifter_lib.Lifter | simple_baseline.SimpleBaseline


def build_lifter(model_config: ModelConfig, hierarchy: skeleton.Hierarchy) -> Lifter:
  """The lifter of `model_config` ('architecture' defaults to the transformer)."""
  kwargs = _kwargs(model_config)
  architecture = kwargs.pop('architecture', 'transformer')
  if architecture not in LIFTER_ARCHITECTURES:
    raise ValueError(f'lifter model.architecture={architecture!r}; expected one of '
                     f'{sorted(LIFTER_ARCHITECTURES)}')
  return LIFTER_ARCHITECTURES[architecture](hierarchy=hierarchy, **kwargs)


@dataclasses.dataclass(frozen=True)
class HiPART:
  """The three modules of HiPART (static; hashable so `predict` can be jitted on it).

  `msst` and `hiarm` are None for a lifter in 'sparse' mode. An 'oracle' lifter needs
  the ground-truth hierarchy, which inference does not have: `predict` rejects it.
  """

  lifter: Lifter
  msst: msst_lib.MSST | None = None
  hiarm: hiarm_lib.HiARM | None = None

  @property
  def hierarchy(self) -> skeleton.Hierarchy:
    return self.lifter.hierarchy


def from_meta(meta: Mapping[str, Any]) -> HiPART:
  """The modules of a lifter checkpoint, from its meta (`training.loop.make_meta`)."""
  hierarchy = skeleton.Hierarchy.from_json(meta['hierarchy'])
  lifter = build_lifter(meta['model'], hierarchy)
  if lifter.mode != 'hierarchical':
    return HiPART(lifter)
  frozen = meta['frozen_models']
  msst = build_msst(frozen['msst'], hierarchy)
  return HiPART(lifter, msst, build_hiarm(frozen['hiarm'], hierarchy, msst))


def decode_tokens(msst: msst_lib.MSST, msst_variables: Any, sparse_ids: jax.Array,
                  dense_ids: jax.Array) -> dict[str, jax.Array]:
  """Token ids → poses in the model frame, for any leading batch axes.

  Args:
    sparse_ids: [..., S] int; dense_ids: [..., D] int.
  Returns:
    {'sparse': [..., S, 2], 'dense': [..., D, 2], 'fine': [..., F, 2]}.
  """
  return _over_leading_axes(msst, msst_variables, msst_lib.MSST.decode,
                            sparse_ids.shape[:-1], sparse_ids, dense_ids)


def _over_leading_axes(msst: msst_lib.MSST, msst_variables: Any, method, lead: tuple,
                       *per_token: jax.Array) -> dict[str, jax.Array]:
  """An MSST decoding method over arrays [*lead, N, ...]: flattened to one batch axis
  and the poses reshaped back to [*lead, P, 2]."""
  flat = [x.reshape((-1,) + x.shape[len(lead):]) for x in per_token]
  recon = msst.apply(msst_variables, *flat, method=method)
  return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), recon)


def tokenized_hierarchy(msst: msst_lib.MSST, msst_variables: Any,
                        hierarchy_2d: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """A hierarchy through the tokenizer and back: what a perfect HiARM would generate.

  Args:
    hierarchy_2d: {'sparse': [B, S, 2], 'dense': [B, D, 2], 'fine': [B, F, 2]}, model frame.
  Returns:
    the decoded tokens, the same keys and shapes.
  """
  ids = msst.apply(msst_variables, *(hierarchy_2d[level] for level in skeleton.LEVELS),
                   method=msst_lib.MSST.encode)
  return msst.apply(msst_variables, *ids, method=msst_lib.MSST.decode)


def decode_generated(msst: msst_lib.MSST, msst_variables: Any, hiarm: hiarm_lib.HiARM,
                     generated: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """`decoding.generate`'s output → poses in the model frame, as `hiarm.code_temperature`
  says: the generated codes (0), or each token's expected code vector.

  Why expected codes: where HiARM is unsure (a hidden limb), the mean of its candidate
  codes lands nearer the truth on average than the single most likely one.

  Args:
    generated: 'sparse_ids' [..., S] and 'dense_ids' [..., D]; with code_temperature > 0
      also 'sparse_logits' [..., S, Vs] and 'dense_logits' [..., D, Vd].
  Returns:
    {'sparse': [..., S, 2], 'dense': [..., D, 2], 'fine': [..., F, 2]}.
  """
  temperature = hiarm.code_temperature
  if temperature < 0:
    raise ValueError(f'HiARM code_temperature must be >= 0, got {temperature}')
  if temperature == 0:
    return decode_tokens(msst, msst_variables, generated['sparse_ids'],
                         generated['dense_ids'])
  if 'sparse_logits' not in generated:
    raise ValueError(f'code_temperature={temperature} decodes expected codes: generate '
                     'with return_logits=True')
  probs = [jax.nn.softmax(generated[f'{level}_logits'].astype(jnp.float32) / temperature,
                          axis=-1) for level in ('sparse', 'dense')]
  return _over_leading_axes(msst, msst_variables, msst_lib.MSST.decode_expected,
                            generated['sparse_ids'].shape[:-1], *probs)


def generate_hierarchy(msst: msst_lib.MSST, hiarm: hiarm_lib.HiARM,
                       variables: Mapping[str, Any], inputs_2d: jax.Array,
                       inputs_confidence: jax.Array, rng: jax.Array, *,
                       temperature: float = 0.0, top_k: int = 0,
                       num_samples: int = 1) -> dict[str, jax.Array]:
  """Frozen MSST + HiARM: input joints → K generated hierarchies in the model frame.

  Args:
    msst, hiarm: the frozen modules (`hiarm.code_temperature`: see `decode_generated`).
    variables: {'frozen_msst': variables, 'frozen_hiarm': variables, ...}.
    inputs_2d: [B, 17, 2] model frame; inputs_confidence: [B, 17].
    rng: sampling key (unused when temperature == 0).
    temperature, top_k: HiARM's sampling of the tokens (`decoding.sample_tokens`).
  Returns:
    {'sparse': [B, K, S, 2], 'dense': [B, K, D, 2], 'fine': [B, K, F, 2]}, without
    gradients (the generator is frozen).
  """
  generated = decoding.generate(hiarm, variables['frozen_hiarm'], inputs_2d,
                                inputs_confidence, rng, temperature=temperature,
                                top_k=top_k, num_samples=num_samples,
                                return_logits=hiarm.code_temperature > 0)
  return jax.lax.stop_gradient(decode_generated(msst, variables['frozen_msst'], hiarm,
                                                generated))


def lift(model: HiPART, variables: Mapping[str, Any], inputs_2d: jax.Array,
         inputs_confidence: jax.Array, rng: jax.Array, *,
         hierarchy_2d: Mapping[str, jax.Array] | None = None,
         generated_2d: Mapping[str, jax.Array] | None = None, temperature: float = 0.0,
         top_k: int = 0, num_samples: int = 1) -> dict[str, jax.Array]:
  """Lifts a batch given in the model frame (the core of `predict` and of evaluation).

  Not jitted itself: call it inside `jax.jit` with `model` and the sampling settings
  static (as `predict` and `evaluation.lift_batch` do).

  Args:
    model: the modules.
    variables: {'params': lifter params, 'frozen_msst', 'frozen_hiarm'}.
    inputs_2d: [B, 17, 2] input joints in the model frame (missing joints at 0);
      inputs_confidence: [B, 17].
    rng: sampling key (unused when temperature == 0).
    hierarchy_2d: the ground-truth hierarchy {'sparse': [B, S, 2], 'dense': [B, D, 2],
      'fine': [B, F, 2]} in the model frame; required by (and only used in) 'oracle' mode.
    generated_2d: only in 'hierarchical' mode, optional: the K hierarchies an earlier
      call generated from these very inputs with the same frozen MSST + HiARM, key and
      sampling ({'sparse': [B, K, S, 2], ...}, its `<level>_2d` outputs), read instead
      of generating them again (e.g. to evaluate lifters that share their generator).
    temperature, top_k, num_samples: HiARM sampling; K = num_samples hypotheses.
  Returns:
    pose_3d: [B, 17, 3] root-relative meters (the mean of the K hypotheses);
    hypotheses_3d: [B, K, 17, 3] (K identical copies in the 'sparse' and 'oracle' modes);
    uncertainty_mm: [B, 17] per-joint spread (RMS distance of the hypotheses from their
      mean, mm; 0 when K = 1);
    and for the hierarchical mode the generated hierarchy in the model frame:
    sparse_2d [B, K, S, 2], dense_2d [B, K, D, 2], fine_2d [B, K, F, 2].
  Raises:
    ValueError: an 'oracle' lifter without `hierarchy_2d`, `generated_2d` for another
      mode than 'hierarchical', or an unknown mode.
  """
  batch = inputs_2d.shape[0]
  chex.assert_shape(inputs_2d, (batch, skeleton.NUM_JOINTS, 2))
  chex.assert_shape(inputs_confidence, (batch, skeleton.NUM_JOINTS))
  lifter_variables = {'params': variables['params']}
  mode = model.lifter.mode
  if generated_2d is not None and mode != 'hierarchical':
    raise ValueError(f'generated_2d is read in \'hierarchical\' mode only, not {mode!r}')
  if mode == 'oracle' and hierarchy_2d is None:
    raise ValueError('a lifter in \'oracle\' mode needs the ground-truth hierarchy; '
                     'inference supports the sparse and hierarchical modes')
  out = {}
  if mode in ('sparse', 'oracle'):
    pose = model.lifter.apply(lifter_variables, inputs_2d, inputs_confidence,
                              hierarchy_2d if mode == 'oracle' else None)
    hypotheses = jnp.broadcast_to(pose[:, None], (batch, num_samples) + pose.shape[1:])
  elif mode == 'hierarchical':
    if generated_2d is None:
      generated = generate_hierarchy(
          model.msst, model.hiarm, variables, inputs_2d, inputs_confidence, rng,
          temperature=temperature, top_k=top_k, num_samples=num_samples)  # [B, K, N, 2]
    else:
      generated = dict(generated_2d)
      h = model.hierarchy
      for level, size in zip(skeleton.LEVELS, (h.num_sparse, h.num_dense, h.num_fine)):
        chex.assert_shape(generated[level], (batch, num_samples, size, 2))
    flat = lambda x: x.reshape((batch * num_samples,) + x.shape[2:])
    repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
    hypotheses = model.lifter.apply(lifter_variables, repeat(inputs_2d),
                                    repeat(inputs_confidence), jax.tree.map(flat, generated))
    hypotheses = hypotheses.reshape((batch, num_samples) + hypotheses.shape[1:])
    out.update({f'{level}_2d': points for level, points in generated.items()})
  else:
    raise ValueError(f'unknown lifter mode {mode!r}')
  out['hypotheses_3d'] = hypotheses
  out['pose_3d'] = hypotheses.mean(axis=1)
  spread = jnp.sqrt(jnp.mean(jnp.sum((hypotheses - out['pose_3d'][:, None]) ** 2, -1), 1))
  out['uncertainty_mm'] = spread * metrics.METERS_TO_MILLIMETERS
  return out


def pixels_to_model_frame(keypoints: jax.Array, confidence: jax.Array,
                          image_size: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Pixels → the model frame, as the input pipeline computes it.

  Args:
    keypoints: [B, 17, 2] pixels; confidence: [B, 17] (0 = missing); image_size: [B, 2].
  Returns:
    (inputs [B, 17, 2] with missing joints at 0, center [B, 2], scale [B]).
  """
  screen = geometry.screen_normalize(keypoints, image_size)
  inputs, center, scale = geometry.to_model_frame(screen, confidence)
  return jnp.where(confidence[..., None] > 0, inputs, 0.0), center, scale


@functools.partial(jax.jit, static_argnames=('model', 'temperature', 'top_k',
                                             'num_samples'))
def predict(model: HiPART, variables: Mapping[str, Any], keypoints: jax.Array,
            confidence: jax.Array, image_size: jax.Array, rng: jax.Array, *,
            temperature: float = 0.0, top_k: int = 0,
            num_samples: int = 1) -> dict[str, jax.Array]:
  """Lifts a batch of 2D poses given in pixels.

  Args:
    model: the modules (static).
    variables: {'params': lifter params, 'frozen_msst', 'frozen_hiarm'}.
    keypoints: [B, 17, 2] Human3.6M-17 pixels; confidence: [B, 17]; image_size: [B, 2]
      (width, height).
    rng: sampling key (unused when temperature == 0).
    temperature, top_k, num_samples: HiARM sampling; K = num_samples hypotheses.
  Returns:
    `lift`'s outputs, with the generated hierarchy (hierarchical mode) in pixels:
    sparse_2d [B, K, S, 2], dense_2d [B, K, D, 2], fine_2d [B, K, F, 2].
  """
  batch = keypoints.shape[0]
  chex.assert_shape(keypoints, (batch, skeleton.NUM_JOINTS, 2))
  chex.assert_shape(confidence, (batch, skeleton.NUM_JOINTS))
  chex.assert_shape(image_size, (batch, 2))
  inputs, center, scale = pixels_to_model_frame(keypoints, confidence, image_size)
  out = lift(model, variables, inputs, confidence, rng, temperature=temperature,
             top_k=top_k, num_samples=num_samples)
  per_hypothesis = lambda x: jnp.broadcast_to(x[:, None], (batch, num_samples) + x.shape[1:])
  for level in skeleton.LEVELS:
    if f'{level}_2d' in out:
      out[f'{level}_2d'] = geometry.screen_denormalize(
          geometry.denormalize_2d(out[f'{level}_2d'], per_hypothesis(center),
                                  per_hypothesis(scale)), per_hypothesis(image_size))
  return out
