"""HiPART inference: pixels in, 3D out, as one jitted function.

    keypoints (pixels) → screen-normalized → model frame (input bounding box)
      → HiARM generation (ordering, temperature, top-k, K hypotheses)
      → MSST decoding (sparse / dense / fine 2D) → lifter → root-relative 3D (meters)

`HiPART` bundles the three modules and their variables; `load_pipeline` rebuilds it
from a lifter workdir (whose checkpoint embeds the frozen MSST and HiARM it was
trained with). `predict` is a pure function of (variables, inputs, rng); `lift` is the
same computation from inputs already in the model frame (evaluation batches), which
also serves the 'oracle' mode given the ground-truth hierarchy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from hipart_jax import checkpoints
from hipart_jax import geometry
from hipart_jax import metrics
from hipart_jax import skeleton
from hipart_jax import stages
from hipart_jax.models import hiarm as hiarm_lib
from hipart_jax.models import lifter as lifter_lib
from hipart_jax.models import msst as msst_lib


@dataclasses.dataclass(frozen=True)
class HiPART:
  """The three modules of HiPART (static; hashable so `predict` can be jitted on it).

  `msst` and `hiarm` are None for a lifter in 'sparse' mode. An 'oracle' lifter needs
  the ground-truth hierarchy, which inference does not have: `predict` rejects it.
  """

  lifter: lifter_lib.Lifter
  msst: msst_lib.MSST | None = None
  hiarm: hiarm_lib.HiARM | None = None

  @property
  def hierarchy(self) -> skeleton.Hierarchy:
    return self.lifter.hierarchy


def load_pipeline(lifter_workdir: str) -> tuple[HiPART, dict[str, Any], dict[str, Any]]:
  """(HiPART, variables, meta) from a trained lifter's workdir.

  Variables: {'params': lifter params, 'frozen_msst': ..., 'frozen_hiarm': ...}.
  Raises FileNotFoundError for a missing directory and ValueError for a checkpoint of
  another stage (checkpoints.restore_params).
  """
  variables, meta = checkpoints.restore_params(lifter_workdir, expected_stage='lifter')
  hierarchy = skeleton.Hierarchy.from_json(meta['hierarchy'])
  lifter = stages.build_lifter(meta['model'], hierarchy)
  msst = hiarm = None
  if lifter.mode == 'hierarchical':
    frozen = meta['frozen_models']
    msst = stages.build_msst(frozen['msst'], hierarchy)
    hiarm = stages.build_hiarm(frozen['hiarm'], hierarchy, msst)
  return HiPART(lifter, msst, hiarm), variables, meta


def to_model_frame(keypoints: jnp.ndarray, confidence: jnp.ndarray,
                   image_size: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Pixels → the model frame of DESIGN.md §4 (as the input pipeline does it).

  Args:
    keypoints: [B, 17, 2] pixels; confidence: [B, 17] (0 = missing); image_size: [B, 2].
  Returns:
    (inputs [B, 17, 2] with missing joints at 0, center [B, 2], scale [B]).
  """
  screen = geometry.screen_normalize(keypoints, image_size)
  center, scale = geometry.normalization_frame(screen, confidence)
  inputs = geometry.normalize_2d(screen, center, scale)
  return jnp.where(confidence[..., None] > 0, inputs, 0.0), center, scale


def lift(model: HiPART, variables: dict[str, Any], inputs_2d: jnp.ndarray,
         inputs_confidence: jnp.ndarray, rng: jax.Array, *,
         hierarchy_2d: dict[str, jnp.ndarray] | None = None, temperature: float = 0.0,
         top_k: int = 0, num_samples: int = 1) -> dict[str, jnp.ndarray]:
  """Lifts a batch given in the model frame (the entry point of `predict` and evaluation).

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
    temperature, top_k, num_samples: HiARM sampling; K = num_samples hypotheses.
  Returns:
    pose_3d: [B, 17, 3] root-relative meters (the mean of the K hypotheses);
    hypotheses_3d: [B, K, 17, 3] (K identical copies in the 'sparse' and 'oracle' modes);
    uncertainty_mm: [B, 17] per-joint spread (RMS distance of the hypotheses from their
      mean, mm; 0 when K = 1);
    and for the hierarchical mode the generated hierarchy in the model frame:
    sparse_2d [B, K, S, 2], dense_2d [B, K, D, 2], fine_2d [B, K, F, 2].
  Raises:
    ValueError: an 'oracle' lifter without `hierarchy_2d`, or an unknown mode.
  """
  batch = inputs_2d.shape[0]
  chex.assert_shape(inputs_2d, (batch, skeleton.NUM_JOINTS, 2))
  chex.assert_shape(inputs_confidence, (batch, skeleton.NUM_JOINTS))
  lifter_variables = {'params': variables['params']}
  per_hypothesis = lambda x: jnp.broadcast_to(x[:, None], (batch, num_samples) + x.shape[1:])
  mode = model.lifter.mode
  if mode == 'oracle' and hierarchy_2d is None:
    raise ValueError('a lifter in \'oracle\' mode needs the ground-truth hierarchy; '
                     'inference supports the sparse and hierarchical modes')
  out = {}
  if mode in ('sparse', 'oracle'):
    pose = model.lifter.apply(lifter_variables, inputs_2d, inputs_confidence,
                              hierarchy_2d if mode == 'oracle' else None)
    hypotheses = per_hypothesis(pose)
  elif mode == 'hierarchical':
    generated = stages.generate_hierarchy(
        model.msst, model.hiarm, variables, inputs_2d, inputs_confidence, rng,
        temperature=temperature, top_k=top_k, num_samples=num_samples)  # [B, K, N, 2]
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
  # Per-joint spread: root-mean-square distance of the hypotheses from their mean.
  spread = jnp.sqrt(jnp.mean(jnp.sum((hypotheses - out['pose_3d'][:, None]) ** 2, -1), 1))
  out['uncertainty_mm'] = spread * metrics.METERS_TO_MILLIMETERS
  return out


@functools.partial(jax.jit, static_argnames=('model', 'temperature', 'top_k',
                                             'num_samples', 'chunk_size'))
def predict(model: HiPART, variables: dict[str, Any], keypoints: jnp.ndarray,
            confidence: jnp.ndarray, image_size: jnp.ndarray, rng: jax.Array, *,
            temperature: float = 0.0, top_k: int = 0, num_samples: int = 1,
            chunk_size: int = 0) -> dict[str, jnp.ndarray]:
  """Lifts a batch of 2D poses.

  `chunk_size` > 0 evaluates the batch that many poses at a time (`lax.map`; the last
  chunk padded with copies of the first poses, dropped from the outputs): the same
  results, with each chunk's temporaries in the CPU caches (1.14-1.24x at batch 1024 in
  chunks of 16 on 2 cores, BENCHMARKS.md, change 13). Chunk i samples with
  `fold_in(rng, i)`, so sampled hypotheses (temperature > 0) depend on the chunk size.

  Args:
    model: the modules (static).
    variables: {'params': lifter params, 'frozen_msst', 'frozen_hiarm'}.
    keypoints: [B, 17, 2] Human3.6M-17 pixels; confidence: [B, 17]; image_size: [B, 2]
      (width, height).
    rng: sampling key (unused when temperature == 0).
    temperature, top_k, num_samples: HiARM sampling; K = num_samples hypotheses.
  Returns:
    pose_3d: [B, 17, 3] root-relative meters (the mean of the K hypotheses);
    hypotheses_3d: [B, K, 17, 3];
    uncertainty_mm: [B, 17] per-joint spread (RMS distance of the hypotheses from their
      mean, mm; 0 when K = 1);
    and for the hierarchical mode the generated hierarchy in pixels:
    sparse_2d [B, K, S, 2], dense_2d [B, K, D, 2], fine_2d [B, K, F, 2].
  """
  batch = keypoints.shape[0]
  chex.assert_shape(keypoints, (batch, skeleton.NUM_JOINTS, 2))
  chex.assert_shape(confidence, (batch, skeleton.NUM_JOINTS))
  chex.assert_shape(image_size, (batch, 2))
  if chunk_size < 0:
    raise ValueError(f'chunk_size must be >= 0, got {chunk_size}')
  settings = dict(temperature=temperature, top_k=top_k, num_samples=num_samples)
  if not chunk_size or batch <= chunk_size:
    return _predict(model, variables, keypoints, confidence, image_size, rng, **settings)
  count = -(-batch // chunk_size)
  arrays = (keypoints, confidence, image_size)
  if count * chunk_size != batch:  # Pad with copies of the first poses.
    index = np.arange(count * chunk_size) % batch
    arrays = tuple(x[index] for x in arrays)
  chunks = jax.tree.map(lambda x: x.reshape((count, chunk_size) + x.shape[1:]), arrays)
  out = lax.map(lambda args: _predict(model, variables, *args[0],
                                      jax.random.fold_in(rng, args[1]), **settings),
                (chunks, jnp.arange(count)))
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:batch], out)


@functools.partial(jax.jit, static_argnames=('model', 'devices', 'temperature', 'top_k',
                                             'num_samples', 'chunk_size'))
def predict_on_devices(model: HiPART, variables: dict[str, Any], keypoints: jnp.ndarray,
                       confidence: jnp.ndarray, image_size: jnp.ndarray, rng: jax.Array,
                       *, devices: tuple[jax.Device, ...], temperature: float = 0.0,
                       top_k: int = 0, num_samples: int = 1,
                       chunk_size: int = 0) -> dict[str, jnp.ndarray]:
  """`predict` with the batch split evenly over `devices` (`shard_map`, one block each).

  On a CPU host with one XLA device per core (launch/cpu_devices.py) this runs the
  cores on separate poses: in chunks of 16, 2.1-2.3x the throughput of `predict` on one
  device and the whole batch at batch 1024 on 2 cores (BENCHMARKS.md, change 13).
  Device i samples with `fold_in(rng, i)`.

  Args:
    devices: a tuple of devices (static); the batch B must be a multiple of its length.
    variables: on all of `devices` (`replicate`), or not yet on any device.
    the rest: as in `predict`.
  Returns:
    `predict`'s outputs for the whole batch.
  """
  if keypoints.shape[0] % len(devices):
    raise ValueError(f'batch of {keypoints.shape[0]} poses does not split evenly over '
                     f'{len(devices)} devices')
  spec = jax.sharding.PartitionSpec
  mesh = _mesh(devices)

  def per_device(variables, keypoints, confidence, image_size, rng):
    rng = jax.random.fold_in(rng, lax.axis_index('batch'))
    return predict(model, variables, keypoints, confidence, image_size, rng,
                   temperature=temperature, top_k=top_k, num_samples=num_samples,
                   chunk_size=chunk_size)

  return jax.shard_map(per_device, mesh=mesh,
                       in_specs=(spec(),) + (spec('batch'),) * 3 + (spec(),),
                       out_specs=spec('batch'))(variables, keypoints, confidence,
                                                image_size, rng)


def _mesh(devices: tuple[jax.Device, ...]) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.asarray(devices), ('batch',))


def replicate(variables: Any, devices: tuple[jax.Device, ...]) -> Any:
  """A copy of `variables` on every one of `devices`, for `predict_on_devices`."""
  sharding = jax.sharding.NamedSharding(_mesh(tuple(devices)), jax.sharding.PartitionSpec())
  return jax.device_put(variables, sharding)


def _predict(model: HiPART, variables: dict[str, Any], keypoints: jnp.ndarray,
             confidence: jnp.ndarray, image_size: jnp.ndarray, rng: jax.Array, *,
             temperature: float, top_k: int, num_samples: int) -> dict[str, jnp.ndarray]:
  """`predict` of one batch at once (not jitted)."""
  batch = keypoints.shape[0]
  inputs, center, scale = to_model_frame(keypoints, confidence, image_size)
  out = lift(model, variables, inputs, confidence, rng, temperature=temperature,
             top_k=top_k, num_samples=num_samples)
  per_hypothesis = lambda x: jnp.broadcast_to(x[:, None], (batch, num_samples) + x.shape[1:])
  to_pixels = lambda points: geometry.screen_denormalize(
      geometry.denormalize_2d(points, per_hypothesis(center), per_hypothesis(scale)),
      per_hypothesis(image_size))
  for level in stages.LEVELS:
    if f'{level}_2d' in out:
      out[f'{level}_2d'] = to_pixels(out[f'{level}_2d'])
  return out
