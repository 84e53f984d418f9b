"""Evaluation protocols as data: the single source of truth for evaluation.

`PROTOCOLS` maps a protocol name to a frozen `Protocol`: which dataset, builder config,
split and subjects are evaluated, which frames, joints and root, the units, the 2D input
source, the alignment, how examples are averaged, which metrics are reported and how
examples are grouped. `launch/evaluate.py` reads it (`--protocol=<name>`) and
`docs/PROTOCOLS.md` mirrors it: its table is `markdown_table()` verbatim, and a test keeps
the two identical.

`evaluate(protocol, ...)` applies a protocol to predictions (root, joint subset, frame
selection, grouping) on top of `hipart_jax.metrics`; `grouped_metrics` computes PCK@150
mm, AUC and MPJPE per group (e.g. per MPI-INF-3DHP scene, `scene_of`).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping, Sequence

import chex
import numpy as np

from hipart_jax import geometry
from hipart_jax import metrics
from hipart_jax import skeleton

Array = Any  # np.ndarray or jax.Array

# Which alignment each metric key of `metrics.summarize` implies.
METRIC_ALIGNMENT = {
    'mpjpe_mm': 'none',
    'pck150': 'none',
    'auc': 'none',
    'occluded_mpjpe_mm': 'none',
    'p_mpjpe_mm': 'procrustes',
    'n_mpjpe_mm': 'scale',
}
ALIGNMENTS = ('none', 'procrustes', 'scale')
AVERAGES = ('actions', 'examples')
UNITS = ('meters', 'millimeters')
ALL_JOINTS = skeleton.H36M_JOINT_NAMES

# MPI-INF-3DHP test sequences → scene type.
SCENES = {
    'TS1': 'studio_green_screen',
    'TS2': 'studio_green_screen',
    'TS3': 'studio_no_green_screen',
    'TS4': 'studio_no_green_screen',
    'TS5': 'outdoor',
    'TS6': 'outdoor',
}
# The 14 joints of the official MPI-INF-3DHP script's PCK/AUC joint groups (head top,
# neck, shoulders, elbows, wrists, hips, knees, ankles), in this project's names: it
# leaves out pelvis, spine and head centre. The `mpi_inf_3dhp` protocol uses all 17
# joints like the lifting literature; `grouped_metrics(..., joints=MPI_INF_3DHP_OFFICIAL_JOINTS)`
# gives the official 14-joint variant.
MPI_INF_3DHP_OFFICIAL_JOINTS = ('head', 'thorax', 'r_shoulder', 'l_shoulder', 'r_elbow',
                                'l_elbow', 'r_wrist', 'l_wrist', 'r_hip', 'l_hip',
                                'r_knee', 'l_knee', 'r_ankle', 'l_ankle')
GROUPED_METRICS = ('pck150', 'auc', 'mpjpe_mm')


def _text(key: Any) -> str:
  return key.decode('utf-8') if isinstance(key, bytes) else str(key)


def scene_of(sequence: str | bytes) -> str:
  """MPI-INF-3DHP scene of a test sequence: 'TS1' → 'studio_green_screen', ..."""
  sequence = _text(sequence)
  if sequence not in SCENES:
    raise ValueError(f'unknown MPI-INF-3DHP test sequence {sequence!r} (known: '
                     f'{sorted(SCENES)})')
  return SCENES[sequence]


@dataclasses.dataclass(frozen=True)
class Protocol:
  """One evaluation protocol.

  Attributes:
    name: registry key, the `--protocol` flag value.
    dataset: TFDS builder name.
    builder_config: TFDS builder config name.
    split: the evaluated split.
    subjects: the subjects (sequences) the split must hold; examples of other subjects
      are an error in `evaluate`. () accepts whatever the split holds.
    frame_selection: which frames the split holds, in words (applied by the builder).
    stride: evaluate examples whose `frame` is a multiple of `stride`.
    joints: evaluated joints (names of `skeleton.H36M_JOINT_NAMES`), in that order.
    root: the root joint, subtracted from prediction and target before any metric (it
      stays in the mean with zero error when listed in `joints`).
    units_in: unit of the 3D poses fed to the metrics.
    units_out: unit of the reported errors (PCK and AUC are fractions).
    input_source: the `keypoints_2d` source the lifter reads.
    alignment: the alignments the reported metrics use ('none' = root-relative only,
      'procrustes' = per-sample similarity transform, 'scale' = least-squares scale).
    average: 'actions' (mean of per-action means, Human3.6M) or 'examples'.
    metrics: reported metric keys of `metrics.summarize`.
    groups: (subject, group) pairs: extra per-group metrics (`grouped_metrics`).
    description: one line on where the protocol comes from.
  """

  name: str
  dataset: str
  builder_config: str
  split: str
  subjects: tuple[str, ...]
  frame_selection: str
  stride: int
  joints: tuple[str, ...]
  root: str
  units_in: str
  units_out: str
  input_source: str
  alignment: tuple[str, ...]
  average: str
  metrics: tuple[str, ...]
  groups: tuple[tuple[str, str], ...] = ()
  description: str = ''

  def __post_init__(self):
    where = f'protocol {self.name!r}'
    unknown_joints = [j for j in self.joints + (self.root,) if j not in ALL_JOINTS]
    if unknown_joints or not self.joints or len(set(self.joints)) != len(self.joints):
      raise ValueError(f'{where}: joints {self.joints} and root {self.root!r} must be '
                       f'distinct names of {ALL_JOINTS}')
    if self.stride < 1:
      raise ValueError(f'{where}: stride must be >= 1, got {self.stride}')
    if self.units_in not in UNITS or self.units_out not in UNITS:
      raise ValueError(f'{where}: units must be among {UNITS}')
    if self.average not in AVERAGES:
      raise ValueError(f'{where}: average must be one of {AVERAGES}, got {self.average!r}')
    unknown = [m for m in self.metrics if m not in METRIC_ALIGNMENT]
    if unknown or not self.metrics:
      raise ValueError(f'{where}: metrics {self.metrics} must be keys of {METRIC_ALIGNMENT}')
    implied = {METRIC_ALIGNMENT[m] for m in self.metrics}
    if set(self.alignment) != implied or len(set(self.alignment)) != len(self.alignment):
      raise ValueError(f'{where}: alignment {self.alignment} does not match the metrics '
                       f'{self.metrics} (they use {sorted(implied)})')
    grouped = [s for s, _ in self.groups]
    if len(set(grouped)) != len(grouped) or (self.subjects and set(grouped) - set(
        self.subjects)):
      raise ValueError(f'{where}: groups must map distinct subjects of {self.subjects}')

  @property
  def joint_indices(self) -> tuple[int, ...]:
    """Indices of `joints` into the Human3.6M-17 layout."""
    return tuple(ALL_JOINTS.index(j) for j in self.joints)

  @property
  def root_index(self) -> int:
    return ALL_JOINTS.index(self.root)

  @property
  def tfds_name(self) -> str:
    """'dataset/config', the name `tfds.data_source` takes."""
    return f'{self.dataset}/{self.builder_config}'

  def group_of(self, subject: str | bytes) -> str:
    """The group of a subject; ValueError if the protocol has no group for it."""
    subject = _text(subject)
    mapping = dict(self.groups)
    if subject not in mapping:
      raise ValueError(f'protocol {self.name!r}: no group for subject {subject!r}')
    return mapping[subject]

  def command(self, checkpoint: str = '<lifter workdir>', workdir: str = '<out dir>') -> str:
    """The evaluation command line."""
    return (f'python -m launch.evaluate --checkpoint={checkpoint} --protocol={self.name} '
            f'--workdir={workdir}')


def grouped_metrics(pred: Array, target: Array, groups: Array, valid: Array | None = None,
                    joints: Sequence[int | str] | None = None
                    ) -> dict[str, dict[str, float]]:
  """PCK@150 mm, AUC (0-150 mm, 31 thresholds) and MPJPE per group.

  Args:
    pred: [N, J, 3] root-relative predictions, meters.
    target: [N, J, 3] root-relative ground truth, meters.
    groups: [N] group key per example (str or bytes; e.g. `scene_of(subject)`).
    valid: optional [N] bool, False for evaluation padding.
    joints: optional joints to evaluate, indices or Human3.6M-17 names (e.g.
      MPI_INF_3DHP_OFFICIAL_JOINTS); None: all J.
  Returns:
    {group: {'pck150', 'auc': fractions, 'mpjpe_mm': mm, 'num_examples': int}}, groups
    with at least one valid example, in sorted order; each value is the mean over the
    group's valid examples.
  """
  pred, target = np.asarray(pred), np.asarray(target)
  chex.assert_equal_shape([pred, target])
  chex.assert_rank(pred, 3)
  if joints is not None:
    indices = [ALL_JOINTS.index(j) if isinstance(j, str) else int(j) for j in joints]
    pred, target = pred[:, indices], target[:, indices]
  keys = np.asarray([_text(g) for g in np.asarray(groups).reshape(-1)])
  if keys.shape != (pred.shape[0],):
    raise ValueError(f'{keys.size} groups for {pred.shape[0]} examples')
  per_example = {'pck150': metrics.pck(pred, target, metrics.PCK_THRESHOLD_MM),
                 'auc': metrics.auc(pred, target),
                 'mpjpe_mm': metrics.mpjpe(pred, target)}
  valid = np.ones(keys.shape, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
  if valid.shape != keys.shape:
    raise ValueError(f'valid has {valid.size} entries for {keys.size} examples')
  means = {name: metrics.aggregate_by_key(values, keys, valid)
           for name, values in per_example.items()}
  names, counts = np.unique(keys[valid], return_counts=True)
  result = {}
  for group, count in zip(names.tolist(), counts.tolist()):
    entry = {name: float(means[name][group]) for name in GROUPED_METRICS}
    entry['num_examples'] = int(count)
    result[group] = entry
  return result


def evaluate(protocol: Protocol, pred: Array, target: Array, *, subjects: Array,
             frames: Array, actions: Array | None = None, visible: Array | None = None,
             valid: Array | None = None) -> dict[str, Any]:
  """All metrics of a split under `protocol`, JSON-serializable.

  Args:
    protocol: the protocol.
    pred: [N, 17, 3] predictions (camera coordinates or root-relative), meters.
    target: [N, 17, 3] ground truth, camera coordinates, meters.
    subjects: [N] subject per example (str or bytes).
    frames: [N] frame index per example (for `protocol.stride`).
    actions: optional [N] action keys (per-action breakdown and 'actions' averaging).
    visible: optional [N, 17] bool input visibility (occluded-joint MPJPE).
    valid: optional [N] bool, False for evaluation padding.
  Returns:
    `metrics.summarize` on the protocol's joints and examples, plus 'protocol' (name),
    'headline' ({metric: value} for `protocol.metrics`), 'per_group' (`grouped_metrics`
    by `protocol.groups`, or {}) and 'missing_subjects' (listed subjects without any
    evaluated example).
  Raises:
    ValueError: if a valid example's subject is not one of `protocol.subjects`.
  """
  pred, target = np.asarray(pred), np.asarray(target)
  chex.assert_equal_shape([pred, target])
  chex.assert_shape(pred, (None, skeleton.NUM_JOINTS, 3))
  num = pred.shape[0]
  subject_keys = [_text(s) for s in np.asarray(subjects).reshape(-1)]
  frames = np.asarray(frames).reshape(-1)
  if len(subject_keys) != num or frames.shape != (num,):
    raise ValueError(f'subjects ({len(subject_keys)}) and frames ({frames.size}) must have '
                     f'one entry per example ({num})')
  mask = np.ones(num, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
  mask = mask & (frames % protocol.stride == 0)
  present = {s for s, m in zip(subject_keys, mask) if m}
  if protocol.subjects:
    unexpected = sorted(present - set(protocol.subjects))
    if unexpected:
      raise ValueError(f'protocol {protocol.name!r}: subjects {unexpected} are not among '
                       f'{protocol.subjects}; wrong dataset or split?')
  joints = list(protocol.joint_indices)
  pred = geometry.to_root_relative(pred, root_index=protocol.root_index)[:, joints]
  target = geometry.to_root_relative(target, root_index=protocol.root_index)[:, joints]
  if visible is not None:
    visible = np.asarray(visible, bool)[:, joints]
  summary = metrics.summarize(pred, target, actions, visible=visible, valid=mask,
                              average=protocol.average)
  summary['protocol'] = protocol.name
  summary['headline'] = {name: summary[name] for name in protocol.metrics}
  summary['per_group'] = {}
  if protocol.groups:
    group_keys = [protocol.group_of(s) if m else '' for s, m in zip(subject_keys, mask)]
    summary['per_group'] = grouped_metrics(pred, target, group_keys, mask)
  summary['missing_subjects'] = [s for s in protocol.subjects if s not in present]
  return summary


_H36M_P1 = Protocol(
    name='human36m_p1', dataset='human36m', builder_config='cpn', split='test',
    subjects=('S9', 'S11'),
    frame_selection='every frame of all 4 cameras (sequences without CPN 2D skipped)',
    stride=1, joints=ALL_JOINTS, root='pelvis', units_in='meters', units_out='millimeters',
    input_source='cpn', alignment=('none',), average='actions', metrics=('mpjpe_mm',),
    description='Human3.6M protocol 1: MPJPE after root alignment, mean over 15 actions.')

PROTOCOLS: Mapping[str, Protocol] = types.MappingProxyType({p.name: p for p in (
    _H36M_P1,
    dataclasses.replace(
        _H36M_P1, name='human36m_p2', alignment=('procrustes',), metrics=('p_mpjpe_mm',),
        description='Human3.6M protocol 2: MPJPE after Procrustes alignment (P-MPJPE).'),
    Protocol(
        name='pw3d', dataset='pw3d', builder_config='default', split='test', subjects=(),
        frame_selection='every frame of the 24 test sequences where the person is '
        'tracked (campose_valid)', stride=1, joints=ALL_JOINTS, root='pelvis',
        units_in='meters', units_out='millimeters', input_source='gt',
        alignment=('none', 'procrustes'), average='examples',
        metrics=('mpjpe_mm', 'p_mpjpe_mm'),
        description='3DPW test split, cross-dataset (trained on Human3.6M).'),
    Protocol(
        name='pw3d_occ', dataset='pw3d', builder_config='occ', split='test', subjects=(),
        frame_selection='every tracked frame of the 3DPW-Occ sequences (object '
        'occlusion subset)', stride=1, joints=ALL_JOINTS, root='pelvis',
        units_in='meters', units_out='millimeters', input_source='gt',
        alignment=('none', 'procrustes'), average='examples',
        metrics=('mpjpe_mm', 'p_mpjpe_mm'),
        description='3DPW-Occ: the occluded-sequence subset of 3DPW.'),
    Protocol(
        name='mpi_inf_3dhp', dataset='mpi_inf_3dhp', builder_config='gt', split='test',
        subjects=tuple(SCENES), frame_selection='valid frames (valid_frame == 1)',
        stride=1, joints=ALL_JOINTS, root='pelvis', units_in='meters',
        units_out='millimeters', input_source='gt', alignment=('none',),
        average='examples', metrics=('pck150', 'auc', 'mpjpe_mm'),
        groups=tuple(SCENES.items()),
        description='MPI-INF-3DHP test set, cross-dataset: PCK@150 mm, AUC 0-150 mm '
        '(31 thresholds), MPJPE, overall and per scene.'),
    Protocol(
        name='cmu_mocap', dataset='cmu_mocap', builder_config='shared_clips',
        split='test', subjects=('01', '131'),
        frame_selection='clips 01_11, 01_12, bvh:131_01; every 8th mocap frame, 4 '
        'virtual cameras', stride=1, joints=ALL_JOINTS, root='pelvis',
        units_in='meters', units_out='millimeters', input_source='gt',
        alignment=('none', 'procrustes'), average='examples',
        metrics=('mpjpe_mm', 'p_mpjpe_mm'),
        description='CMU mocap held-out clips (a new subject and file format).'),
    Protocol(
        name='cmu_multi_subject', dataset='cmu_mocap', builder_config='multi_subject',
        split='test', subjects=('06', '09', '13'),
        frame_selection='all 18 clips of subjects 06 (basketball), 09 (run), 13 '
        '(everyday); every 4th mocap frame, 4 virtual cameras', stride=1,
        joints=ALL_JOINTS, root='pelvis', units_in='meters', units_out='millimeters',
        input_source='gt', alignment=('none', 'procrustes'), average='examples',
        metrics=('mpjpe_mm', 'p_mpjpe_mm'),
        description='CMU mocap, 13 subjects: held-out subjects (subject-disjoint).'),
    Protocol(
        name='synthetic', dataset='synthetic_poses', builder_config='small',
        split='test', subjects=('S6', 'S7'),
        frame_selection='25 frames per sequence (every 10th at 50 fps), 2 sequences per '
        'action, 4 virtual cameras', stride=1, joints=ALL_JOINTS, root='pelvis',
        units_in='meters', units_out='millimeters', input_source='gt',
        alignment=('none', 'procrustes'), average='examples',
        metrics=('mpjpe_mm', 'p_mpjpe_mm'),
        description='Procedural poses: the end-to-end check of a fresh checkout.'),
)})


def _joints_cell(protocol: Protocol) -> str:
  if protocol.joints == ALL_JOINTS:
    return 'H36M-17, all, H36M order'
  return ', '.join(protocol.joints)


def markdown_table(protocols: Mapping[str, Protocol] = PROTOCOLS) -> str:
  """The protocol table of docs/PROTOCOLS.md (one row per protocol)."""
  header = ('| protocol | data (tfds) / split | subjects / sequences | frames | stride | '
            'joints | root | units in → out | 2D input | alignment | average | metrics | '
            'groups | command |')
  rows = [header, '|' + '---|' * header.count(' | ') + '---|']
  for p in protocols.values():
    subjects = ', '.join(p.subjects) if p.subjects else 'all of the split'
    groups = ', '.join(f'{s}: {g}' for s, g in p.groups) if p.groups else '-'
    cells = [f'`{p.name}`', f'`{p.tfds_name}` / {p.split}', subjects, p.frame_selection,
             str(p.stride), _joints_cell(p), f'{p.root} (subtracted)',
             f'{p.units_in} → {p.units_out}', f'`{p.input_source}`',
             ', '.join(p.alignment), p.average, ', '.join(f'`{m}`' for m in p.metrics),
             groups, f'`{p.command()}`']
    rows.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows) + '\n'
