"""Evaluation of a trained lifter over a split, and fixed-size batched inference.

  lift_batch          one input-pipeline batch → 3D poses in the model frame (jitted once
                      per shapes and sampling settings);
  evaluate            one ordered pass over a split (`input_pipeline.eval_batches`, padding
                      excluded through `valid`) → `metrics.summarize` (or, with a
                      protocol, `protocols.evaluate`), plus best-of-K and uncertainty
                      figures for K > 1 hypotheses;
  robustness_table    `evaluate` per occlusion level;
  predict_in_batches  pixel keypoints of any length through `execution.predict` in batches
                      of one fixed size (the tail padded by repeating its last row), so a
                      run compiles once;
  format_table, format_per_action   plain-text tables of the results.

Evaluation runs in one process on one device (the batches are small next to the model
compile); `seed` fixes both the occlusion of each example and the sampling keys.
"""

from __future__ import annotations

import collections
import collections.abc
import functools
from typing import Any, Iterator, Mapping, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from hipart_jax import augment
from hipart_jax import execution
from hipart_jax import geometry
from hipart_jax import input_pipeline
from hipart_jax import metrics
from hipart_jax import progress as progress_lib
from hipart_jax import protocols
from hipart_jax import skeleton
from hipart_jax.models import hipart

OCCLUSION_LEVELS = tuple(augment.OCCLUSION_LEVELS)  # 'none', 'one_limb', ...
# Columns of `format_table`: (metric key, header).
TABLE_COLUMNS = (('mpjpe_mm', 'MPJPE'), ('p_mpjpe_mm', 'P-MPJPE'), ('n_mpjpe_mm', 'N-MPJPE'),
                 ('pck150', 'PCK150'), ('auc', 'AUC'), ('occluded_mpjpe_mm', 'occl. MPJPE'),
                 ('oracle_mpjpe_mm', 'best-of-K'), ('mean_uncertainty_mm', 'spread'),
                 ('num_examples', 'N'))


@functools.partial(jax.jit, static_argnames=('model', 'temperature', 'top_k', 'num_samples'))
def _lift(model: hipart.HiPART, variables: Mapping[str, Any],
          inputs: Mapping[str, jax.Array], rng: jax.Array, *, temperature: float,
          top_k: int, num_samples: int) -> dict[str, jax.Array]:
  hierarchy_2d = generated_2d = None
  if model.lifter.mode == 'oracle':
    hierarchy_2d = {level: inputs[f'{level}_2d'] for level in skeleton.LEVELS}
  if f'generated_{skeleton.LEVELS[0]}_2d' in inputs:
    generated_2d = {level: inputs[f'generated_{level}_2d'] for level in skeleton.LEVELS}
  return hipart.lift(model, variables, inputs['inputs_2d'], inputs['inputs_confidence'],
                       rng, hierarchy_2d=hierarchy_2d, generated_2d=generated_2d,
                       temperature=temperature, top_k=top_k, num_samples=num_samples)


def lift_batch(model: hipart.HiPART, variables: Mapping[str, Any],
               batch: Mapping[str, np.ndarray], rng: jax.Array, *, temperature: float = 0.0,
               top_k: int = 0, num_samples: int = 1) -> dict[str, jax.Array]:
  """Lifts one evaluation batch in the model frame.

  The lifter's mode picks the 2D it reads: 'sparse' the input joints; 'hierarchical' the
  input joints and the hierarchy generated from them by the frozen MSST + HiARM;
  'oracle' the input joints and the batch's ground-truth hierarchy.

  Args:
    model: the modules (static).
    variables: {'params', 'frozen_msst', 'frozen_hiarm'} (`checkpoints.load_hipart`).
    batch: a flat input-pipeline batch: `inputs_2d` [B, 17, 2], `inputs_confidence`
      [B, 17], and for 'oracle' `sparse_2d` [B, S, 2], `dense_2d` [B, D, 2], `fine_2d`
      [B, F, 2], all in the model frame; for 'hierarchical', optionally
      `generated_<level>_2d` [B, K, N, 2]: hierarchies generated before from these
      inputs (`hipart.lift`'s `generated_2d`); other keys are ignored.
    rng: sampling key (unused when temperature == 0).
    temperature, top_k, num_samples: HiARM sampling; K = num_samples.
  Returns:
    pose_3d [B, 17, 3] (mean of the hypotheses), hypotheses_3d [B, K, 17, 3] root-relative
    meters, uncertainty_mm [B, 17], and for 'hierarchical' the generated `<level>_2d`
    [B, K, N, 2] in the model frame.
  """
  keys = ['inputs_2d', 'inputs_confidence']
  if model.lifter.mode == 'oracle':
    keys += [f'{level}_2d' for level in skeleton.LEVELS]
  keys += [f'generated_{level}_2d' for level in skeleton.LEVELS
           if f'generated_{level}_2d' in batch]
  return _lift(model, variables, {key: batch[key] for key in keys}, rng,
               temperature=float(temperature), top_k=int(top_k), num_samples=int(num_samples))


class _RecordingSource(collections.abc.Sequence):
  """A source that remembers the subject and frame of every example read through it."""

  def __init__(self, source: Sequence[input_pipeline.Example]):
    self._source = source
    self.seen: dict[int, tuple[Any, int]] = {}

  def __len__(self) -> int:
    return len(self._source)

  def _record(self, index: int, example: input_pipeline.Example) -> None:
    self.seen[int(index)] = (example.get('subject', b''), int(example.get('frame', 0)))

  def __getitem__(self, index):
    example = self._source[index]
    self._record(index, example)
    return example

  def __getitems__(self, indices: Sequence[int]) -> list[input_pipeline.Example]:
    examples = input_pipeline.read_examples(self._source, indices)
    for index, example in zip(indices, examples):
      self._record(index, example)
    return examples


def _protocol_view(protocol: protocols.Protocol | None, poses: np.ndarray) -> np.ndarray:
  """Poses [..., 17, 3] as the protocol scores them: relative to its root, its joints."""
  if protocol is None:
    return poses
  poses = geometry.to_root_relative(poses, root_index=protocol.root_index)
  return poses[..., list(protocol.joint_indices), :]


def _average(values: np.ndarray, actions: np.ndarray | None, mask: np.ndarray,
             average: str) -> float | None:
  """Per-example `values` [N] averaged like the headline metrics; None without examples."""
  if not mask.any():
    return None
  if actions is not None and average == 'actions':
    return metrics.mean_over_actions(values, actions, mask)
  return float(np.mean(values[mask], dtype=np.float64))


def _gather(model, variables, batches: Iterator[input_pipeline.Batch], rng, *, total: int,
            temperature: float, top_k: int, num_samples: int, progress: bool,
            generated: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
  """Runs `lift_batch` over the batches; concatenated predictions and batch fields
  (and for 'hierarchical' the hierarchies read, `generated_<level>_2d`)."""
  pieces = collections.defaultdict(list)
  meter = progress_lib.Progress('evaluated examples', total, unit='example',
                                enabled=progress)
  hierarchical = model.lifter.mode == 'hierarchical'
  for number, batch in enumerate(batches):
    batch = {key: value[0] for key, value in batch.items()}  # One device: [1, B, ...].
    if generated is not None:
      batch.update({f'generated_{level}_2d': generated[level][batch['index']]
                    for level in skeleton.LEVELS})
    out = lift_batch(model, variables, batch, jax.random.fold_in(rng, number),
                     temperature=temperature, top_k=top_k, num_samples=num_samples)
    for key in ('pose_3d', 'hypotheses_3d', 'uncertainty_mm'):
      pieces[key].append(np.asarray(out[key]))
    if hierarchical:
      for level in skeleton.LEVELS:
        pieces[f'generated_{level}_2d'].append(np.asarray(out[f'{level}_2d']))
    for key in ('sparse_3d', 'visible', 'action', 'valid', 'index'):
      pieces[key].append(batch[key])
    meter.update(int(batch['valid'].sum()))
  meter.close()
  return {key: np.concatenate(value) for key, value in pieces.items()}


def evaluate(model: hipart.HiPART, variables: Mapping[str, Any],
             source: Sequence[input_pipeline.Example], hierarchy: skeleton.Hierarchy,
             data_config: ml_collections.ConfigDict, *, batch_size: int,
             occlusion: str = 'none', num_samples: int = 1, temperature: float = 0.0,
             top_k: int = 0, seed: int = 0, average: str = 'actions',
             action_names: Sequence[str] | None = None,
             protocol: protocols.Protocol | None = None, progress: bool = True,
             return_predictions: bool = False,
             generated: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
  """Evaluates a lifter on every example of a split, once.

  Args:
    model, variables: from `checkpoints.load_hipart`.
    source: random-access schema examples (a TFDS data source or a list of dicts).
    hierarchy: the source's hierarchy; must be the model's.
    data_config: the data config (`input_source`, `augment.occluded_coordinates`,
      `augment.jitter_std`, `prefetch_batches`).
    batch_size: examples per lifter call (the last batch is padded, padding excluded).
    occlusion: an occlusion level of OCCLUSION_LEVELS applied to the input joints.
    num_samples, temperature, top_k: HiARM sampling; K = num_samples hypotheses whose
      mean is the prediction.
    seed: occlusion and sampling seed.
    average: 'actions' or 'examples' (see `metrics.summarize`); a protocol's wins.
    action_names: names of the action ids (`info.features['action'].names`); None keeps
      the ids as keys of `per_action`.
    protocol: if given, score under it (`protocols.evaluate`: its root, joints, stride,
      subjects and groups).
    progress: report examples/s (`progress.Progress`: a bar on a terminal).
    return_predictions: also return the per-example arrays under 'predictions'.
    generated: only for a 'hierarchical' lifter, optional: the hierarchies to read
      instead of generating them, {level: [N, K, P, 2]} with row i for example i of the
      source: the 'generated' predictions of an earlier `evaluate` of a lifter with the
      same frozen MSST + HiARM, at the same occlusion, seed and sampling (e.g. another
      seed of the lifter). Nothing checks that they came from these settings.
  Returns:
    `metrics.summarize` keys (mpjpe_mm, p_mpjpe_mm, n_mpjpe_mm, pck150, auc, per_action,
    per_joint, occluded_mpjpe_mm, num_occluded_joints, num_examples; plus protocol,
    headline, per_group, missing_subjects with a protocol), and for K > 1
    'oracle_mpjpe_mm' (mean over examples of the best hypothesis's MPJPE, averaged like
    mpjpe_mm) and 'mean_uncertainty_mm' (mean per-joint spread of the hypotheses). With
    return_predictions, 'predictions': {index [N], pose_3d [N, 17, 3], hypotheses_3d
    [N, K, 17, 3], target_3d [N, 17, 3], visible [N, 17], action [N]} of the N valid
    examples in split order (numpy, not JSON-serializable), and for a 'hierarchical'
    lifter 'generated': {level: [len(source), K, P, 2]}, the hierarchies it read, row i
    for example i (what `generated` takes).
  Raises:
    ValueError: a hierarchy other than the model's, an unknown occlusion level,
      `generated` for another mode than 'hierarchical' or of the wrong shape, or (with
      a protocol) subjects outside it.
  """
  if hierarchy != model.hierarchy:
    raise ValueError('the dataset\'s hierarchy differs from the one the lifter was trained '
                     'on; evaluate it on data built with the same hierarchy')
  if occlusion not in OCCLUSION_LEVELS:
    raise ValueError(f'unknown occlusion level {occlusion!r}; known: {OCCLUSION_LEVELS}')
  if generated is not None:
    if model.lifter.mode != 'hierarchical':
      raise ValueError(f'generated hierarchies are read by a \'hierarchical\' lifter '
                       f'only, not {model.lifter.mode!r}')
    h = hierarchy
    for level, size in zip(skeleton.LEVELS, (h.num_sparse, h.num_dense, h.num_fine)):
      expected = (len(source), num_samples, size, 2)
      if level not in generated or generated[level].shape != expected:
        got = generated[level].shape if level in generated else 'missing'
        raise ValueError(f'generated[{level!r}]: {got}, expected {expected} (every '
                         'example of the source, num_samples hierarchies each)')
  recorder = _RecordingSource(source)
  batches = input_pipeline.eval_batches(recorder, hierarchy, data_config,
                                        global_batch_size=batch_size, num_local_devices=1,
                                        occlusion=occlusion, seed=seed)
  arrays = _gather(model, variables, batches, jax.random.key(seed), total=len(source),
                   temperature=temperature, top_k=top_k, num_samples=num_samples,
                   progress=progress, generated=generated)
  valid = arrays['valid']
  actions = arrays['action']
  if action_names is not None:
    actions = np.asarray(list(action_names))[actions]
  target, pred = arrays['sparse_3d'], arrays['pose_3d']
  mask = valid
  if protocol is None:
    summary = metrics.summarize(pred, target, actions, visible=arrays['visible'],
                                valid=valid, average=average)
  else:
    subjects = [recorder.seen[i][0] for i in arrays['index'].tolist()]
    frames = np.asarray([recorder.seen[i][1] for i in arrays['index'].tolist()])
    summary = protocols.evaluate(protocol, pred, target, subjects=subjects, frames=frames,
                                 actions=actions, visible=arrays['visible'], valid=valid)
    mask = valid & (frames % protocol.stride == 0)
    average = protocol.average
  if num_samples > 1:
    hypotheses = _protocol_view(protocol, arrays['hypotheses_3d'])
    targets = np.broadcast_to(_protocol_view(protocol, target)[:, None], hypotheses.shape)
    best = metrics.mpjpe(hypotheses, targets).min(-1)  # [N] the best hypothesis's error
    summary['oracle_mpjpe_mm'] = _average(best, actions, mask, average)
    uncertainty = arrays['uncertainty_mm']
    if protocol is not None:
      uncertainty = uncertainty[:, list(protocol.joint_indices)]
    summary['mean_uncertainty_mm'] = (float(uncertainty[mask].mean(dtype=np.float64))
                                      if mask.any() else None)
  if return_predictions:
    summary['predictions'] = dict(
        index=arrays['index'][valid], pose_3d=pred[valid],
        hypotheses_3d=arrays['hypotheses_3d'][valid], target_3d=target[valid],
        visible=arrays['visible'][valid], action=actions[valid])
    if model.lifter.mode == 'hierarchical':
      rows = arrays['index'][valid]
      summary['predictions']['generated'] = {}
      for level in skeleton.LEVELS:
        values = arrays[f'generated_{level}_2d'][valid]
        split_order = np.zeros((len(source),) + values.shape[1:], values.dtype)
        split_order[rows] = values
        summary['predictions']['generated'][level] = split_order
  return summary


def robustness_table(model: hipart.HiPART, variables: Mapping[str, Any],
                     source: Sequence[input_pipeline.Example], hierarchy: skeleton.Hierarchy,
                     data_config: ml_collections.ConfigDict, *,
                     levels: Sequence[str] = OCCLUSION_LEVELS,
                     **kwargs) -> dict[str, dict[str, Any]]:
  """{occlusion level: `evaluate(..., occlusion=level, **kwargs)`} in the order given."""
  results = {}
  for level in levels:
    logging.info('Evaluating with occlusion %r.', level)
    results[level] = evaluate(model, variables, source, hierarchy, data_config,
                              occlusion=level, **kwargs)
  return results


def predict_in_batches(model: hipart.HiPART, variables: Mapping[str, Any],
                       keypoints: np.ndarray, confidence: np.ndarray,
                       image_size: np.ndarray, rng: jax.Array, *, batch_size: int,
                       temperature: float = 0.0, top_k: int = 0, num_samples: int = 1,
                       chunk_size: int = 0, devices: Sequence[jax.Device] | None = None,
                       progress: bool = True) -> dict[str, np.ndarray]:
  """`execution.predict` over N poses in batches of min(batch_size, N) rows.

  Every call has the same shapes: the last batch is padded by repeating its last row and
  the padding is dropped from the outputs, so a run compiles `predict` once.

  Args:
    model, variables: from `checkpoints.load_hipart`.
    keypoints: [N, 17, 2] pixels; confidence: [N, 17]; image_size: [N, 2] (width, height).
    rng: sampling key; batch b samples with `fold_in(rng, b)`.
    batch_size: rows per call.
    temperature, top_k, num_samples: HiARM sampling.
    chunk_size: poses per chunk (`execution.predict`; 0: each batch at once).
    devices: more than one: each batch is split over them (`execution.predict`; the
      batch rounded up to a multiple of their number).
    progress: report poses/s (`progress.Progress`: a bar on a terminal).
  Returns:
    `hipart.predict`'s outputs as numpy arrays with leading dimension N.
  """
  num = len(keypoints)
  if num == 0:
    raise ValueError('no poses to lift')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  size = min(batch_size, num)
  devices = tuple(devices or ())
  if len(devices) > 1:
    size = -(-size // len(devices)) * len(devices)
  keypoints = np.asarray(keypoints, np.float32)
  confidence = np.asarray(confidence, np.float32)
  image_size = np.asarray(image_size, np.int32)
  pieces = collections.defaultdict(list)
  meter = progress_lib.Progress('lifted poses', num, unit='pose', enabled=progress)
  for number, start in enumerate(range(0, num, size)):
    rows = np.minimum(np.arange(start, start + size), num - 1)  # Pad with the last row.
    out = execution.predict(model, variables, keypoints[rows], confidence[rows],
                            image_size[rows], jax.random.fold_in(rng, number),
                            chunk_size=int(chunk_size), devices=devices,
                            temperature=float(temperature), top_k=int(top_k),
                            num_samples=int(num_samples))
    count = min(size, num - start)
    for key, value in out.items():
      pieces[key].append(np.asarray(value)[:count])
    meter.update(count)
  meter.close()
  return {key: np.concatenate(value) for key, value in pieces.items()}


def _cell(value: Any) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return '-'
  if isinstance(value, int):
    return str(value)
  return f'{value:.3f}' if abs(value) < 2 else f'{value:.1f}'


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
  line = lambda row: '  '.join(cell.rjust(width) for cell, width in zip(row, widths))
  return '\n'.join([line(header), line(['-' * w for w in widths])] + [line(r) for r in rows])


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
  """A text table, one row per entry of {name (e.g. occlusion level): metrics}.

  Errors in mm, PCK150 and AUC as fractions; '-' where a metric is absent or undefined.
  Columns absent from every entry (e.g. best-of-K for K = 1) are left out.
  """
  columns = [(key, title) for key, title in TABLE_COLUMNS
             if any(key in entry for entry in results.values())]
  rows = [[str(name)] + [_cell(entry.get(key)) for key, _ in columns]
          for name, entry in results.items()]
  return _text_table(['occlusion'] + [title for _, title in columns], rows)


def format_per_action(summary: Mapping[str, Any]) -> str:
  """A text table of `summary['per_action']`: one row per action."""
  per_action = summary.get('per_action') or {}
  columns = [key for key, _ in TABLE_COLUMNS[:5]]
  rows = [[str(action)] + [_cell(entry[key]) for key in columns] + [str(entry['num_examples'])]
          for action, entry in per_action.items()]
  return _text_table(['action'] + [dict(TABLE_COLUMNS)[key] for key in columns] + ['N'], rows)
