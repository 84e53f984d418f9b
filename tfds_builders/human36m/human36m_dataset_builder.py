"""Human3.6M in the project's pose schema (manual download).

Two source formats: the VideoPose3D preprocessing (`data_3d_h36m.npz` and 2D `.npz`
files) or the official release's per-subject `D3_Positions` CDF files (`official.py`),
which yield the same examples with the `gt` 2D source only.

One example per (frame, camera): the 17-joint 3D pose, its dense and fine points (the
`skeleton` source interpolates along the 32-joint skeleton's bones, the `external`
source reads user-supplied points, e.g. from SMPL meshes), all projected through the
published camera parameters (`cameras.py`), plus the 2D input of each 2D source (`gt`,
`cpn`) with confidence 1. Subjects S1, S5, S6, S7, S8 form `train`; S9, S11 `test`.

Irregularities of the real files are handled explicitly: a 2D sequence longer or shorter
than its 3D sequence is trimmed to the shorter one, and a (subject, action, camera) with
no 2D sequence (missing, None or empty) is skipped; both are counted and logged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from hipart_jax import skeleton
from tfds_builders import pose_features
from tfds_builders import safe_pickle
from tfds_builders.human36m import bone_points
from tfds_builders.human36m import cameras
from tfds_builders.human36m import official
from tfds_builders.human36m import skeleton32
from tfds_builders.human36m import videopose3d_files

FILE_3D = 'data_3d_h36m.npz'
FILES_2D = {'gt': 'data_2d_h36m_gt.npz', 'cpn': 'data_2d_h36m_cpn_ft_h36m_dbb.npz'}
EXTERNAL_FILE = 'dense_points_h36m.npz'
EXTERNAL_FIELDS = ('dense_3d', 'fine_3d')
# Where the 3D poses come from: VideoPose3D's npz files or the official CDF release.
SOURCE_FORMATS = ('videopose3d', 'official')
# The 2D sources the official release provides (projections of its 3D poses).
OFFICIAL_INPUT_SOURCES = ('gt',)
# The 15 Human3.6M actions (ClassLabel order). File action names carry a take suffix
# ('Walking 1'); two actions are spelled differently for some subjects.
ACTIONS = ('Directions', 'Discussion', 'Eating', 'Greeting', 'Phoning', 'Photo', 'Posing',
           'Purchases', 'Sitting', 'SittingDown', 'Smoking', 'Waiting', 'WalkDog', 'Walking',
           'WalkTogether')
ACTION_ALIASES = {'TakingPhoto': 'Photo', 'WalkingDog': 'WalkDog'}
SPLIT_SUBJECTS = {'train': ('S1', 'S5', 'S6', 'S7', 'S8'), 'test': ('S9', 'S11')}
# The confidence of every 2D input joint (ground truth and CPN detections alike).
INPUT_CONFIDENCE = 1.0

_DESCRIPTION = """
Human3.6M (Ionescu et al., TPAMI 2014): 3.6 million frames of 11 actors performing 15
actions, filmed by 4 calibrated cameras, in the VideoPose3D preprocessing. Each example
is one (frame, camera) with the 17-joint pose, the hierarchy's dense and fine points (2D
pixels and 3D camera coordinates, meters) and 2D inputs (ground truth, CPN detections).
"""

_CITATION = """
@article{h36m_pami,
  author = {Ionescu, Catalin and Papava, Dragos and Olaru, Vlad and Sminchisescu, Cristian},
  title = {Human3.6M: Large Scale Datasets and Predictive Methods for 3D Human Sensing in
           Natural Environments},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume = {36}, number = {7}, pages = {1325--1339}, year = {2014}}
@inproceedings{pavllo20193d,
  title = {3D human pose estimation in video with temporal convolutions and semi-supervised
           training},
  author = {Pavllo, Dario and Feichtenhofer, Christoph and Grangier, David and Auli, Michael},
  booktitle = {CVPR}, year = {2019}}
"""


def canonical_action(name: str) -> str:
  """'Walking 1' → 'Walking', 'TakingPhoto' → 'Photo'; raises on unknown actions."""
  base = name.split(' ')[0]
  base = ACTION_ALIASES.get(base, base)
  if base not in ACTIONS:
    raise ValueError(f'unknown Human3.6M action {name!r} (known: {ACTIONS})')
  return base


@dataclasses.dataclass
class Human36mConfig(tfds.core.BuilderConfig):
  """Builder options.

  Attributes:
    source_format: 'videopose3d' (FILE_3D and the FILES_2D of `input_sources`) or
      'official' (`<manual_dir>/<subject>/MyPoseFeatures/D3_Positions/*.cdf`; 2D inputs
      are the `gt` projections, see `official.py`).
    input_sources: 2D sources stored in `keypoints_2d`; each needs its file (FILES_2D),
      except `gt` in the official format.
    train_stride: keep every `train_stride`-th frame of the train split.
    test_stride: keep every `test_stride`-th frame of the test split.
    dense_source: 'skeleton' (along the 32-joint bones) or 'external' (EXTERNAL_FILE).
    external_file: file name in manual_dir of the external dense/fine points.
    dense_per_bone, fine_per_dense: the `skeleton.default_hierarchy` arguments.
  """
  source_format: str = 'videopose3d'
  input_sources: tuple[str, ...] = ('cpn', 'gt')
  train_stride: int = 1
  test_stride: int = 1
  dense_source: str = 'skeleton'
  external_file: str = EXTERNAL_FILE
  dense_per_bone: int = 3
  fine_per_dense: int = 2

  @property
  def hierarchy(self) -> skeleton.Hierarchy:
    return skeleton.default_hierarchy(self.dense_per_bone, self.fine_per_dense)


@dataclasses.dataclass
class SourceData:
  """The loaded manual files.

  Attributes:
    positions_3d: subject → action → [T, 32, 3] world meters.
    positions_2d: source → subject → action → 4 per-camera [T_c, 17, 2] pixel arrays (or
      None / empty for a missing camera), cameras in `cameras.CAMERA_IDS` order.
    external: field ('dense_3d', 'fine_3d') → subject → action → [T, D|F, 3] world
      meters, or None for the skeleton source.
    external_name: the external file's name (for error messages).
    positions_3d_name: where the 3D poses come from (for messages).
  """
  positions_3d: Mapping[str, Mapping[str, np.ndarray]]
  positions_2d: Mapping[str, Mapping[str, Mapping[str, Sequence[Any]]]]
  external: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]] | None = None
  external_name: str = EXTERNAL_FILE
  positions_3d_name: str = FILE_3D


def _dict_field(path: epath.Path, arrays: Mapping[str, np.ndarray], field: str) -> dict:
  return videopose3d_files.stored_dict(path.name, arrays, field)


def load_source_data(manual_dir: epath.PathLike, config: Human36mConfig) -> SourceData:
  """Reads the manual files a config needs (npz files through the restricted unpickler).

  The official format reads the CDF files of every subject in SPLIT_SUBJECTS and
  computes the `gt` 2D source from them (`official.py`).
  """
  validate_config(config)
  manual_dir = epath.Path(manual_dir)
  is_official = config.source_format == 'official'
  needed = [] if is_official else [FILE_3D] + [FILES_2D[s] for s in config.input_sources]
  if config.dense_source == 'external':
    needed.append(config.external_file)
  missing = [name for name in needed if not (manual_dir / name).exists()]
  if missing:
    raise FileNotFoundError(f'human36m/{config.name}: {missing} not found in {manual_dir}; '
                            'see tfds_builders/human36m/README.md')
  if is_official:
    subjects = [s for split in SPLIT_SUBJECTS.values() for s in split]
    positions_3d = official.load_positions_3d(manual_dir, subjects)
    positions_2d = {'gt': official.ground_truth_2d(positions_3d)}
    positions_3d_name = f'<manual_dir>/<subject>/{official.D3_POSITIONS_DIR}'
  else:
    path_3d = manual_dir / FILE_3D
    positions_3d = videopose3d_files.check_positions_3d(
        FILE_3D, _dict_field(path_3d, safe_pickle.load_npz(path_3d), 'positions_3d'),
        skeleton32.NUM_JOINTS_32)
    positions_2d = _load_2d_files(manual_dir, config.input_sources)
    positions_3d_name = FILE_3D
  external = None
  if config.dense_source == 'external':
    path = manual_dir / config.external_file
    arrays = safe_pickle.load_npz(path)
    external = {field: _dict_field(path, arrays, field) for field in EXTERNAL_FIELDS}
  return SourceData(positions_3d, positions_2d, external, config.external_file,
                    positions_3d_name)


def _load_2d_files(manual_dir: epath.Path, input_sources: Sequence[str]) -> dict:
  """source → the `positions_2d` dict of its FILES_2D file."""
  positions_2d = {}
  for source in input_sources:
    path = manual_dir / FILES_2D[source]
    arrays = safe_pickle.load_npz(path)
    metadata = arrays.get('metadata')
    if metadata is not None and metadata.dtype == object and metadata.shape == ():
      metadata = metadata.item()
    num_joints = metadata.get('num_joints', 17) if isinstance(metadata, dict) else 17
    if not isinstance(num_joints, (int, np.integer)) or num_joints != skeleton.NUM_JOINTS:
      raise ValueError(f'{path.name}: metadata num_joints is {num_joints!r}, expected 17 '
                       '(Human3.6M layout)')
    positions_2d[source] = videopose3d_files.check_positions_2d(
        path.name, _dict_field(path, arrays, 'positions_2d'), skeleton.NUM_JOINTS,
        len(cameras.CAMERA_IDS))
  return positions_2d


def _external_points(data: SourceData, subject: str, action: str, num_frames: int,
                     hierarchy: skeleton.Hierarchy) -> list[np.ndarray]:
  """[T, D, 3] and [T, F, 3] external world points, validated against the 3D sequence."""
  out = []
  for field, size in zip(EXTERNAL_FIELDS, (hierarchy.num_dense, hierarchy.num_fine)):
    where = f'{data.external_name}: {field}[{subject!r}][{action!r}]'
    try:
      value = data.external[field][subject][action]
    except (KeyError, TypeError) as error:
      raise ValueError(f'{where}: missing (every 3D sequence needs external points)'
                       ) from error
    value = np.asarray(value, np.float64)
    expected = (num_frames, size, 3)
    if value.shape != expected:
      raise ValueError(f'{where}: expected shape {expected} (frames of '
                       f'{data.positions_3d_name}, points of the hierarchy, xyz meters), '
                       f'got {value.shape}')
    if not np.all(np.isfinite(value)):
      raise ValueError(f'{where}: non-finite values')
    out.append(value)
  return out


def _sequence_2d(data: SourceData, source: str, subject: str, action: str,
                 camera_index: int) -> np.ndarray | None:
  """[T, 17, 2] pixels of one source, or None if that camera's sequence is missing."""
  per_camera = data.positions_2d[source].get(subject, {}).get(action)
  if per_camera is None:
    return None
  if len(per_camera) != len(cameras.CAMERA_IDS):
    raise ValueError(f'{FILES_2D[source]}: positions_2d[{subject!r}][{action!r}] has '
                     f'{len(per_camera)} cameras, expected {len(cameras.CAMERA_IDS)}')
  sequence = per_camera[camera_index]
  if sequence is None or len(sequence) == 0:
    return None
  sequence = np.asarray(sequence, np.float64)
  if sequence.ndim != 3 or sequence.shape[1:] != (skeleton.NUM_JOINTS, 2):
    raise ValueError(f'{FILES_2D[source]}: positions_2d[{subject!r}][{action!r}]'
                     f'[{camera_index}]: expected [frames, 17, 2], got {sequence.shape}')
  return sequence


def generate_examples(data: SourceData, subjects: Sequence[str], stride: int,
                      config: Human36mConfig, split: str) -> Iterator[tuple[str, dict]]:
  """Yields (key, schema example) for every kept frame and camera of `subjects`.

  Logs (absl) the subjects absent from the 3D file, the (subject, action, camera)
  sequences skipped for lack of 2D keypoints and the sequences trimmed to the shorter
  of their 2D and 3D lengths.
  """
  hierarchy = config.hierarchy
  num_dense, num_fine = hierarchy.num_dense, hierarchy.num_fine
  chains = skeleton32.bone_chains()
  skipped, trimmed = [], []
  for subject in subjects:
    if subject not in data.positions_3d:
      logging.warning('human36m %s: subject %s is not in %s; skipping it', split, subject,
                      data.positions_3d_name)
      continue
    for action in sorted(data.positions_3d[subject]):
      try:
        label = canonical_action(action)
      except ValueError as error:
        raise ValueError(f'{data.positions_3d_name}: positions_3d[{subject!r}]: {error}'
                         ) from None
      joints = np.asarray(data.positions_3d[subject][action], np.float64)
      if joints.ndim != 3 or joints.shape[1:] != (skeleton32.NUM_JOINTS_32, 3):
        raise ValueError(f'{data.positions_3d_name}: positions_3d[{subject!r}][{action!r}]: '
                         f'expected [frames, 32, 3], got {joints.shape}')
      if data.external is not None:
        dense, fine = _external_points(data, subject, action, len(joints), hierarchy)
      else:
        dense, fine = bone_points.hierarchy_points(joints, chains, hierarchy)
      sparse = joints[:, skeleton32.KEPT_JOINTS]
      world = np.concatenate([sparse, dense, fine], axis=1)
      for camera_index, camera_id in enumerate(cameras.CAMERA_IDS):
        inputs = {s: _sequence_2d(data, s, subject, action, camera_index)
                  for s in config.input_sources}
        absent = [s for s, sequence in inputs.items() if sequence is None]
        if absent:
          skipped.append((subject, action, camera_id, tuple(absent)))
          continue
        lengths = [len(joints)] + [len(sequence) for sequence in inputs.values()]
        num_frames = min(lengths)
        if len(set(lengths)) > 1:
          trimmed.append((subject, action, camera_id, tuple(lengths)))
        params = cameras.camera_params(subject, camera_id)
        points_cam, pixels = cameras.project_world(world[:num_frames], params)
        confidence = np.full((skeleton.NUM_JOINTS, 1), INPUT_CONFIDENCE)
        level_ends = [skeleton.NUM_JOINTS, skeleton.NUM_JOINTS + num_dense]
        for frame in range(0, num_frames, stride):
          cam = np.split(points_cam[frame], level_ends)
          pix = np.split(pixels[frame], level_ends)
          try:
            example = pose_features.example_from_arrays(
                subject=subject, action=label, camera=camera_id, frame=frame,
                image_size=cameras.image_size(camera_id), camera_params=params,
                keypoints_2d={s: np.concatenate([sequence[frame], confidence], axis=-1)
                              for s, sequence in inputs.items()},
                sparse_2d=pix[0], dense_2d=pix[1], fine_2d=pix[2],
                sparse_3d=cam[0], dense_3d=cam[1], fine_3d=cam[2],
                num_dense=num_dense, num_fine=num_fine, input_sources=config.input_sources,
                action_names=ACTIONS)
          except ValueError as error:  # Values the files hold but no example can.
            files = [data.positions_3d_name] + [FILES_2D.get(s, s) for s in inputs]
            raise ValueError(f'{" + ".join(files)}: [{subject!r}][{action!r}] camera '
                             f'{camera_id} frame {frame}: {error}') from error
          yield f'{subject}/{action}/{camera_id}/{frame:06d}', example
  if skipped:
    logging.warning('human36m %s: skipped %d (subject, action, camera) sequences without 2D '
                    'keypoints (subject, action, camera, sources): %s', split, len(skipped),
                    skipped)
  if trimmed:
    logging.warning('human36m %s: trimmed %d sequences to the shorter of their 3D and 2D '
                    'lengths (subject, action, camera, (3D, *2D lengths)): %s', split,
                    len(trimmed), trimmed)


def validate_config(config: Human36mConfig) -> None:
  """Raises a ValueError naming the bad option of a config."""
  if config.dense_source not in ('skeleton', 'external'):
    raise ValueError(f'human36m: dense_source must be skeleton or external, got '
                     f'{config.dense_source!r}')
  if config.source_format not in SOURCE_FORMATS:
    raise ValueError(f'human36m: source_format must be one of {SOURCE_FORMATS}, got '
                     f'{config.source_format!r}')
  known = OFFICIAL_INPUT_SOURCES if config.source_format == 'official' else tuple(FILES_2D)
  unknown = [s for s in config.input_sources if s not in known]
  if unknown:
    raise ValueError(f'human36m/{config.name}: input sources {unknown} are not available in '
                     f'the {config.source_format} format (known: {list(known)}); the official '
                     'release has no 2D detections, only the gt projections')


class Builder(pose_features.PoseDatasetBuilder):
  """Human3.6M (VideoPose3D or official format), one example per (frame, camera).

  Writes array_record (for `tfds.data_source`) and a tfrecord copy (for `tfds.load`).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Place the VideoPose3D-format files in manual_dir: {FILE_3D}, {FILES_2D['gt']} and (for
  CPN inputs) {FILES_2D['cpn']}; for the external dense source also {EXTERNAL_FILE}.
  The official_* configs read the official release instead:
  <manual_dir>/<subject>/{official.D3_POSITIONS_DIR}/<Action>.cdf (needs `cdflib`).
  See tfds_builders/human36m/README.md.
  """
  BUILDER_CONFIGS = [
      Human36mConfig(name='cpn', description='2D inputs: CPN detections and ground truth; '
                     'dense/fine points along the 32-joint skeleton.'),
      Human36mConfig(name='gt', input_sources=('gt',),
                     description='2D input: ground truth only (no CPN file needed).'),
      Human36mConfig(name='cpn_external', dense_source='external',
                     description=f'As `cpn`, dense/fine points from {EXTERNAL_FILE}.'),
      Human36mConfig(name='official_gt', source_format='official', input_sources=('gt',),
                     description='As `gt`, read from the official D3_Positions CDF files; '
                     'the gt 2D input is their projection through the cameras.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'cpn'

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    validate_config(config)
    hierarchy = config.hierarchy
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=pose_features.pose_features(ACTIONS, config.input_sources,
                                             hierarchy.num_dense, hierarchy.num_fine),
        metadata=pose_features.hierarchy_metadata(hierarchy, config.dense_source,
                                                  config.input_sources),
        homepage='http://vision.imar.ro/human3.6m/',
        citation=_CITATION)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    data = load_source_data(dl_manager.manual_dir, config)
    strides = {'train': config.train_stride, 'test': config.test_stride}
    return {split: self._generate_examples(data, subjects, strides[split], split)
            for split, subjects in SPLIT_SUBJECTS.items()}

  def _generate_examples(self, data: SourceData, subjects: Sequence[str], stride: int,
                         split: str):
    yield from generate_examples(data, subjects, stride, self.builder_config, split)
