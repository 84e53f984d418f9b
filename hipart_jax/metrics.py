"""3D pose metrics: MPJPE (protocol 1), P-MPJPE (protocol 2), N-MPJPE, PCK/AUC.

Units: poses come in METERS (the project's 3D unit), every error is reported in
MILLIMETERS. Callers pass root-relative poses for protocol 1 (the metrics never subtract
a root themselves).

The per-sample functions (`per_joint_error`, `mpjpe`, `p_mpjpe`, `n_mpjpe`, `pck`,
`auc`, `occluded_mpjpe`) work on numpy arrays (numpy in, numpy out) and on JAX arrays
under `jax.jit` / `jax.vmap`, through the array-module dispatch of `geometry`. They are
evaluation metrics: `sqrt` at exactly zero error has no gradient, so training losses
live in the training code. Aggregation (`aggregate_by_key`, `mean_over_actions`,
`summarize`) is host-side numpy and takes a `valid` mask so evaluation padding never
counts; `summarize` returns plain Python values ready for `json.dump`.
"""

from __future__ import annotations

from typing import Any, Hashable

import chex
import numpy as np

from hipart_jax import geometry

Array = Any  # np.ndarray or jax.Array

METERS_TO_MILLIMETERS = 1000.0
# MPI-INF-3DHP protocol (mpii_compute_3d_pck.m): PCK at 150 mm, AUC over 0, 5, ..., 150 mm,
# a joint counts as correct when its error is strictly below the threshold.
PCK_THRESHOLD_MM = 150.0
AUC_MAX_MM = 150.0
AUC_NUM_THRESHOLDS = 31


def per_joint_error(pred: Array, target: Array) -> Array:
  """Euclidean error per joint.

  Args:
    pred: [..., J, 3] predicted poses, meters.
    target: [..., J, 3] ground truth, meters.
  Returns:
    [..., J] errors in millimeters.
  """
  xp = geometry.array_module(pred, target)
  pred, target = xp.asarray(pred), xp.asarray(target)
  chex.assert_equal_shape([pred, target])
  chex.assert_shape(pred, (..., 3))
  return xp.sqrt(xp.sum((pred - target) ** 2, axis=-1)) * METERS_TO_MILLIMETERS


def mpjpe(pred: Array, target: Array) -> Array:
  """Mean per-joint position error (protocol 1): [..., J, 3] meters -> [...] mm."""
  xp = geometry.array_module(pred, target)
  return xp.mean(per_joint_error(pred, target), axis=-1)


def p_mpjpe(pred: Array, target: Array) -> Array:
  """MPJPE after per-sample Procrustes alignment (protocol 2): [..., J, 3] m -> [...] mm."""
  return mpjpe(geometry.procrustes_align(pred, target), target)


def n_mpjpe(pred: Array, target: Array) -> Array:
  """MPJPE after per-sample least-squares scaling (N-MPJPE): [..., J, 3] m -> [...] mm."""
  return mpjpe(geometry.scale_align(pred, target), target)


def pck(pred: Array, target: Array, threshold_mm: float = PCK_THRESHOLD_MM) -> Array:
  """Fraction of joints with error strictly below `threshold_mm`.

  Args:
    pred, target: [..., J, 3] meters.
    threshold_mm: correctness threshold in millimeters.
  Returns:
    [...] fraction in [0, 1].
  """
  xp = geometry.array_module(pred, target)
  return xp.mean(per_joint_error(pred, target) < threshold_mm, axis=-1)


def auc(pred: Array, target: Array, max_mm: float = AUC_MAX_MM,
        num_thresholds: int = AUC_NUM_THRESHOLDS) -> Array:
  """Area under the PCK curve: mean PCK over evenly spaced thresholds 0..`max_mm`.

  The defaults reproduce MPI-INF-3DHP's evaluation script (thresholds 0, 5, ..., 150 mm).

  Args:
    pred, target: [..., J, 3] meters.
    max_mm: the largest threshold, millimeters.
    num_thresholds: number of thresholds, including 0 and `max_mm`.
  Returns:
    [...] AUC in [0, 1].
  """
  xp = geometry.array_module(pred, target)
  errors = per_joint_error(pred, target)
  thresholds = xp.linspace(0.0, max_mm, num_thresholds, dtype=errors.dtype)
  correct = errors[..., None, :] < thresholds[:, None]
  return xp.mean(correct, axis=(-2, -1))


def occluded_mpjpe(pred: Array, target: Array, visible: Array,
                   valid: Array | None = None) -> tuple[Array, Array]:
  """Error summed over occluded joints only (those with `visible == False`).

  Returns a sum and a count rather than a mean so batches (and samples without any
  occluded joint) aggregate exactly: the occluded MPJPE is `total sum / total count`.

  Args:
    pred, target: [..., J, 3] meters.
    visible: [..., J] bool, False where the joint was occluded in the input.
    valid: optional [...] bool, False for padding samples (they never count).
  Returns:
    (sum_mm, count): scalars, the summed error in millimeters over occluded joints of
    valid samples and the number of such joints.
  """
  xp = geometry.array_module(pred, target, visible, valid)
  errors = per_joint_error(pred, target)
  occluded = ~xp.asarray(visible, dtype=bool)
  chex.assert_equal_shape([errors, occluded])
  if valid is not None:
    valid = xp.asarray(valid, dtype=bool)
    chex.assert_shape(valid, errors.shape[:-1])
    occluded = occluded & valid[..., None]
  return xp.sum(xp.where(occluded, errors, 0)), xp.sum(occluded)


# --------------------------------------------------------------------------------------
# Host-side aggregation.


def _python_key(key: Any) -> Hashable:
  """numpy scalars -> Python scalars, bytes (tfds Text) -> str."""
  if isinstance(key, np.generic):
    key = key.item()
  if isinstance(key, bytes):
    key = key.decode('utf-8')
  return key


def _valid_mask(valid: Array | None, size: int) -> np.ndarray:
  if valid is None:
    return np.ones(size, dtype=bool)
  valid = np.asarray(valid, dtype=bool).reshape(-1)
  if valid.shape != (size,):
    raise ValueError(f'valid has {valid.size} entries for {size} values')
  return valid


def _group_sums(values: Array, keys: Array,
                valid: Array | None) -> dict[Hashable, tuple[float, int]]:
  """{key: (sum of valid values, number of valid entries)}, keys sorted."""
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  keys = np.asarray(keys).reshape(-1)
  if keys.shape != values.shape:
    raise ValueError(f'{keys.size} keys for {values.size} values')
  valid = _valid_mask(valid, values.size)
  unique, inverse = np.unique(keys[valid], return_inverse=True)
  sums = np.bincount(inverse, weights=values[valid], minlength=unique.size)
  counts = np.bincount(inverse, minlength=unique.size)
  return {_python_key(key): (float(total), int(count))
          for key, total, count in zip(unique, sums, counts)}


def aggregate_by_key(values: Array, keys: Array,
                     valid: Array | None = None) -> dict[Hashable, float]:
  """Mean of `values` per key over valid entries.

  Args:
    values: [N] numbers (e.g. per-example MPJPE).
    keys: [N] group keys (action names, bytes, or ids).
    valid: optional [N] bool; False entries (evaluation padding) are ignored.
  Returns:
    {key: mean} over keys that have at least one valid entry, keys as Python scalars
    (bytes decoded to str), in sorted order.
  """
  return {key: total / count for key, (total, count) in _group_sums(values, keys, valid).items()}


def mean_over_actions(per_example: Array, actions: Array,
                      valid: Array | None = None) -> float:
  """Human3.6M convention: the mean over actions of each action's mean.

  Args:
    per_example: [N] per-example values.
    actions: [N] action keys.
    valid: optional [N] bool mask of real (non-padding) examples.
  Returns:
    The unweighted mean of per-action means; nan when nothing is valid.
  """
  per_action = aggregate_by_key(per_example, actions, valid)
  return float(np.mean(list(per_action.values()))) if per_action else float('nan')


def _masked_mean(values: np.ndarray, valid: np.ndarray) -> float:
  return float(values[valid].astype(np.float64).mean()) if valid.any() else float('nan')


def summarize(pred: Array, target: Array, actions: Array | None,
              visible: Array | None = None, valid: Array | None = None,
              average: str = 'actions') -> dict[str, Any]:
  """All evaluation metrics of a split, as JSON-serializable Python values.

  Args:
    pred: [N, J, 3] root-relative predictions, meters.
    target: [N, J, 3] root-relative ground truth, meters.
    actions: [N] action keys, or None (no per-action breakdown; averages are then
      over examples).
    visible: optional [N, J] bool input visibility; enables the occluded-joint MPJPE.
    valid: optional [N] bool, False for evaluation padding.
    average: 'actions' (Human3.6M: mean of per-action means) or 'examples' (3DPW,
      MPI-INF-3DHP: mean over examples) for the headline numbers.
  Returns:
    {'mpjpe_mm', 'p_mpjpe_mm', 'n_mpjpe_mm', 'pck150', 'auc': float,
     'per_action': {action: {same five metrics, 'num_examples'}},
     'per_joint': [J] mean error per joint in mm over valid examples,
     'occluded_mpjpe_mm': float, or None without `visible` or without occluded joints,
     'num_occluded_joints': int, 'num_examples': int (valid examples)}.
  """
  if average not in ('actions', 'examples'):
    raise ValueError(f"average must be 'actions' or 'examples', got {average!r}")
  pred = np.asarray(pred)
  target = np.asarray(target)
  chex.assert_equal_shape([pred, target])
  chex.assert_rank(pred, 3)
  num = pred.shape[0]
  valid = _valid_mask(valid, num)
  per_example = {
      'mpjpe_mm': mpjpe(pred, target),
      'p_mpjpe_mm': p_mpjpe(pred, target),
      'n_mpjpe_mm': n_mpjpe(pred, target),
      'pck150': pck(pred, target, PCK_THRESHOLD_MM),
      'auc': auc(pred, target),
  }
  if actions is not None:
    actions = np.asarray(actions).reshape(-1)
    if actions.shape != (num,):
      raise ValueError(f'{actions.size} actions for {num} examples')
  summary = {}
  for name, values in per_example.items():
    if actions is not None and average == 'actions':
      summary[name] = mean_over_actions(values, actions, valid)
    else:
      summary[name] = _masked_mean(values, valid)
  per_action = {}
  if actions is not None:
    by_metric = {name: _group_sums(values, actions, valid)
                 for name, values in per_example.items()}
    for action, (_, count) in by_metric['mpjpe_mm'].items():
      entry = {name: groups[action][0] / count for name, groups in by_metric.items()}
      per_action[str(action)] = {**entry, 'num_examples': count}
  per_joint = per_joint_error(pred, target)[valid]
  summary['per_action'] = per_action
  summary['per_joint'] = ([float(e) for e in per_joint.mean(axis=0)] if per_joint.size
                          else [float('nan')] * pred.shape[1])
  occluded_mm, occluded_count = None, 0
  if visible is not None:
    total, count = occluded_mpjpe(pred, target, np.asarray(visible), valid)
    occluded_count = int(count)
    occluded_mm = float(total / count) if count else None
  summary['occluded_mpjpe_mm'] = occluded_mm
  summary['num_occluded_joints'] = occluded_count
  summary['num_examples'] = int(valid.sum())
  return summary
