"""3DPW in the project's pose schema, from the official sequence files (manual download).

One example per valid frame (`campose_valid`) per actor: the 17 Human3.6M joints (from
SMPL's `jointPositions` by the table in `smpl.py`, or regressed from SMPL meshes with
the Human3.6M joint regressor), dense and fine points along the 17-joint bones (the
`skeleton` source), everything in the frame's camera (3D meters) and image (pixels),
and two 2D inputs: `openpose` (the file's OpenPose COCO-18 detections converted to
Human3.6M-17, with their confidences) and `gt` (the joints' projections, confidence 1).

Splits `train`, `validation`, `test` follow the official folders; the `occ` config keeps
only the object-occluded sequences of 3DPW-OC (`OCCLUDED_SEQUENCES`) in one `test` split.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from hipart_jax import geometry
from hipart_jax import skeleton
from tfds_builders import pose_features
from tfds_builders import safe_pickle
from tfds_builders.human36m import bone_points
from tfds_builders.pw3d import smpl

SEQUENCE_DIR = 'sequenceFiles'
SPLIT_DIRS = ('train', 'validation', 'test')
INPUT_SOURCES = ('openpose', 'gt')
# 3DPW has no action labels: every example gets the one class.
ACTIONS = ('unlabeled',)
GT_CONFIDENCE = 1.0
# Sequences with object occlusions: the 3DPW-OC subset of Zhang et al., "Object-Occluded
# Human Shape and Pose Estimation from a Single Color Image", CVPR 2020, as used by later
# evaluations on 3DPW-OC (sequence names without the `_NN` take suffix; every take in
# every official split).
OCCLUDED_SEQUENCES = (
    'courtyard_backpack', 'courtyard_basketball', 'courtyard_bodyScannerMotions',
    'courtyard_box', 'courtyard_golf', 'courtyard_jacket', 'courtyard_laceShoe',
    'downtown_stairs', 'flat_guitar', 'flat_packBags', 'outdoors_climbing',
    'outdoors_crosscountry', 'outdoors_fencing', 'outdoors_freestyle', 'outdoors_golf',
    'outdoors_parcours', 'outdoors_slalom')
GENDERS = {'m': 'male', 'f': 'female'}

_DESCRIPTION = """
3DPW (von Marcard et al., ECCV 2018): 60 video sequences in the wild with SMPL poses
from IMUs and a moving phone camera. One example per valid frame and actor, with the
17-joint pose, dense and fine points (2D pixels, 3D camera meters) and OpenPose / ground
truth 2D inputs.
"""

_CITATION = """
@inproceedings{vonMarcard2018,
  title = {Recovering Accurate 3D Human Pose in The Wild Using IMUs and a Moving Camera},
  author = {von Marcard, Timo and Henschel, Roberto and Black, Michael and Rosenhahn, Bodo
            and Pons-Moll, Gerard},
  booktitle = {ECCV}, year = {2018}}
@inproceedings{zhang2020object,
  title = {Object-Occluded Human Shape and Pose Estimation from a Single Color Image},
  author = {Zhang, Tianshu and Huang, Buzhen and Wang, Yangang},
  booktitle = {CVPR}, year = {2020}}
"""


@dataclasses.dataclass
class Pw3dConfig(tfds.core.BuilderConfig):
  """Builder options.

  Attributes:
    sequences: keep only sequences whose name without `_NN` is listed (None: all).
    single_test_split: put every kept sequence of every official split in `test`.
    joints_source: 'joint_positions' (SMPL joints by the table) or 'smpl_regressor'
      (SMPL meshes through `regressor_file`; needs the model files).
    smpl_model_files: gender ('m', 'f') → SMPL model `.npz` path relative to manual_dir.
    regressor_file: [17, V] Human3.6M joint regressor `.npy`, relative to manual_dir.
    joint_check_tolerance: meters; with `smpl_regressor`, warn when the model's posed
      joints differ from `jointPositions` by more than this on average.
    image_size: (width, height) of the images, pixels.
    dense_per_bone, fine_per_dense: the `skeleton.default_hierarchy` arguments.
  """
  sequences: tuple[str, ...] | None = None
  single_test_split: bool = False
  joints_source: str = 'joint_positions'
  smpl_model_files: tuple[tuple[str, str], ...] = (('m', 'smpl/SMPL_MALE.npz'),
                                                   ('f', 'smpl/SMPL_FEMALE.npz'))
  regressor_file: str = 'J_regressor_h36m.npy'
  joint_check_tolerance: float = 0.02
  image_size: tuple[int, int] = (1080, 1920)
  dense_per_bone: int = 3
  fine_per_dense: int = 2

  @property
  def hierarchy(self) -> skeleton.Hierarchy:
    return skeleton.default_hierarchy(self.dense_per_bone, self.fine_per_dense)


def sequence_base(name: str) -> str:
  """'courtyard_backpack_00' → 'courtyard_backpack'."""
  return re.sub(r'_\d+$', '', name)


def _field(data: Mapping[str, Any], key: str, where: str) -> Any:
  if key not in data:
    raise ValueError(f'{where}: missing field {key!r} (has {sorted(map(str, data))})')
  return data[key]


def _array(value: Any, shape: tuple[int | None, ...], where: str) -> np.ndarray:
  """`value` as a finite float64 array of `shape` (None: any size), or ValueError."""
  try:
    array = np.asarray(value)
  except (TypeError, ValueError, OverflowError) as error:  # Ragged lists, huge ints.
    raise ValueError(f'{where}: not an array of numbers ({error})') from None
  if array.dtype.kind not in 'biuf':
    raise ValueError(f'{where}: expected numbers, got {array.dtype} values')
  array = array.astype(np.float64)
  if array.ndim != len(shape) or any(s is not None and s != a
                                     for s, a in zip(shape, array.shape)):
    expected = tuple('N' if s is None else s for s in shape)
    raise ValueError(f'{where}: expected shape {expected}, got {array.shape}')
  if not np.isfinite(array).all():
    raise ValueError(f'{where}: non-finite values at {np.argwhere(~np.isfinite(array))[0]}')
  return array


def _per_actor(data: Mapping[str, Any], keys: tuple[str, ...], where: str) -> list:
  """The per-actor lists of `keys`, which must list the same number of actors."""
  values = [_field(data, key, where) for key in keys]
  for key, value in zip(keys, values):
    if not isinstance(value, (list, tuple, np.ndarray)) or np.ndim(value) == 0:
      raise ValueError(f'{where}: {key} must list one entry per actor, got '
                       f'{type(value).__name__}')
  counts = {key: len(value) for key, value in zip(keys, values)}
  if len(set(counts.values())) > 1:
    raise ValueError(f'{where}: the fields disagree on the number of actors: {counts}')
  return values


def camera_from_extrinsics(extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """3DPW `cam_poses` → the schema's camera.

  Args:
    extrinsics: [..., 4, 4] world → camera transforms, `x_cam = R x_world + t`.
  Returns:
    ([..., 4] camera orientation quaternion (w, x, y, z) = quaternion of R^T,
     [..., 3] camera position in the world = -R^T t).
  """
  rotation = extrinsics[..., :3, :3]
  translation = extrinsics[..., :3, 3]
  rotation_t = np.swapaxes(rotation, -1, -2)
  return (geometry.quaternion_from_matrix(rotation_t),
          -np.einsum('...ij,...j->...i', rotation_t, translation))


class SmplJoints:
  """Human3.6M joints regressed from SMPL meshes (the `smpl_regressor` source)."""

  def __init__(self, manual_dir: epath.Path, config: Pw3dConfig):
    self.models = {}
    for gender, relative in config.smpl_model_files:
      self.models[gender] = smpl.SmplModel.from_npz(manual_dir / relative)
    path = manual_dir / config.regressor_file
    self.regressor_name = path.name
    with path.open('rb') as f:
      self.regressor = np.load(f, allow_pickle=False)
    if self.regressor.shape[0] != skeleton.NUM_JOINTS:
      raise ValueError(f'{path.name}: expected a [17, V] regressor, got '
                       f'{self.regressor.shape}')
    self.tolerance = config.joint_check_tolerance

  def __call__(self, data: Mapping[str, Any], actor: int, table_joints: np.ndarray,
               where: str) -> np.ndarray:
    """[N, 17, 3] regressed world joints of one actor; checks them against the file."""
    gender = str(_field(data, 'genders', where)[actor])
    if gender not in self.models:
      raise ValueError(f'{where}: actor {actor} has gender {gender!r}, but no SMPL model '
                       f'is configured for it (smpl_model_files: {sorted(self.models)})')
    poses = _array(_field(data, 'poses', where)[actor], (None, 72), f'{where}: poses')
    trans = _array(_field(data, 'trans', where)[actor], (None, 3), f'{where}: trans')
    betas = np.asarray(_field(data, 'betas', where)[actor], np.float64)
    vertices, joints = smpl.smpl_forward(self.models[gender], betas, poses, trans)
    file_joints = _array(data['jointPositions'][actor], (None, 72), where).reshape(-1, 24, 3)
    error = float(np.mean(np.linalg.norm(joints - file_joints, axis=-1)))
    if error > self.tolerance:
      logging.warning('%s: actor %d: the %s SMPL model reproduces jointPositions only to '
                      '%.3f m on average; check the model files', where, actor,
                      GENDERS.get(gender, gender), error)
    regressed = smpl.regress_joints(self.regressor, vertices)
    # A regressor whose rows order a left/right pair the other way round puts each joint
    # of the pair nearer the table's opposite joint.
    distance = lambda a, b: np.linalg.norm(regressed[:, a] - table_joints[:, b], -1).mean()
    swapped = [(skeleton.H36M_JOINT_NAMES[a], skeleton.H36M_JOINT_NAMES[b])
               for a, b in skeleton.H36M_FLIP_PAIRS
               if distance(a, b) + distance(b, a) < distance(a, a) + distance(b, b)]
    if swapped:
      raise ValueError(f'{where}: the rows of {self.regressor_name} for {swapped} look '
                       'left/right swapped with respect to the Human3.6M-17 order of '
                       'hipart_jax.skeleton; reorder the rows (see the README)')
    return regressed


def sequence_examples(data: Mapping[str, Any], name: str, config: Pw3dConfig,
                      smpl_joints: SmplJoints | None = None
                      ) -> Iterator[tuple[str, dict]]:
  """Yields (key, schema example) for every valid frame of every actor of one sequence.

  Args:
    data: the unpickled sequence file.
    name: sequence name (file name without `.pkl`), used in keys and messages.
    config: builder options.
    smpl_joints: the regressed-joints source, if `config.joints_source` asks for it.
  """
  where = f'{SEQUENCE_DIR}/{name}.pkl'
  hierarchy = config.hierarchy
  chains = bone_points.two_joint_chains(skeleton.H36M_PARENTS)
  extrinsics = _array(_field(data, 'cam_poses', where), (None, 4, 4), f'{where}: cam_poses')
  intrinsics = _array(_field(data, 'cam_intrinsics', where), (3, 3),
                      f'{where}: cam_intrinsics')
  num_frames = len(extrinsics)
  frame_ids = _array(data.get('img_frame_ids', np.arange(num_frames)), (num_frames,),
                     f'{where}: img_frame_ids')
  if np.any((frame_ids < 0) | (frame_ids != np.round(frame_ids)) |
            (frame_ids > np.iinfo(np.int32).max)):
    raise ValueError(f'{where}: img_frame_ids must be whole numbers in [0, 2**31)')
  frame_ids = frame_ids.astype(np.int64)
  focal = intrinsics[[0, 1], [0, 1]]
  center = intrinsics[:2, 2]
  width, height = config.image_size
  if not (0 < center[0] < width and 0 < center[1] < height):
    raise ValueError(f'{where}: principal point {center.tolist()} lies outside the '
                     f'configured image size {config.image_size}')
  rotation, position = camera_from_extrinsics(extrinsics)
  joint_positions, poses_2d, valid = _per_actor(
      data, ('jointPositions', 'poses2d', 'campose_valid'), where)
  for actor in range(len(joint_positions)):
    field = f'{where}: actor {actor}'
    smpl_joints_world = _array(joint_positions[actor], (num_frames, 72),
                               f'{field}: jointPositions').reshape(num_frames, 24, 3)
    sparse = smpl.smpl_to_h36m(smpl_joints_world)
    if smpl_joints is not None:
      sparse = smpl_joints(data, actor, sparse, field)
    openpose = _array(poses_2d[actor], (num_frames, 3, 18), f'{field}: poses2d')
    openpose = np.swapaxes(openpose, 1, 2)  # [N, 18, 3]
    keypoints, confidence = skeleton.OPENPOSE_COCO18.convert(
        openpose[..., :2], np.clip(openpose[..., 2], 0.0, 1.0))
    is_valid = _array(valid[actor], (num_frames,), f'{field}: campose_valid') > 0
    dense, fine = bone_points.hierarchy_points(sparse, chains, hierarchy)
    world = np.concatenate([sparse, dense, fine], axis=1)
    points_cam = geometry.world_to_camera(world, rotation, position)
    pixels = geometry.project_to_pixels(
        points_cam, np.broadcast_to(focal, (num_frames, 2)),
        np.broadcast_to(center, (num_frames, 2)), np.zeros((num_frames, 3)),
        np.zeros((num_frames, 2)), clip=None)
    level_ends = [skeleton.NUM_JOINTS, skeleton.NUM_JOINTS + hierarchy.num_dense]
    camera_params = lambda i: dict(focal=focal, center=center, radial=np.zeros(3),
                                   tangential=np.zeros(2), rotation=rotation[i],
                                   translation=position[i])
    for i in np.flatnonzero(is_valid):
      cam = np.split(points_cam[i], level_ends)
      pix = np.split(pixels[i], level_ends)
      gt = np.concatenate([pix[0], np.full((skeleton.NUM_JOINTS, 1), GT_CONFIDENCE)], -1)
      try:
        example = pose_features.example_from_arrays(
            subject=f'{name}/actor{actor}', action=ACTIONS[0], camera=name,
            frame=int(frame_ids[i]), image_size=config.image_size,
            camera_params=camera_params(i),
            keypoints_2d={'openpose': np.concatenate([keypoints[i], confidence[i, :, None]],
                                                     -1), 'gt': gt},
            sparse_2d=pix[0], dense_2d=pix[1], fine_2d=pix[2],
            sparse_3d=cam[0], dense_3d=cam[1], fine_3d=cam[2],
            num_dense=hierarchy.num_dense, num_fine=hierarchy.num_fine,
            input_sources=INPUT_SOURCES, action_names=ACTIONS)
      except ValueError as error:  # Values the file holds but no example can.
        raise ValueError(f'{field}: frame {i}: {error}') from error
      yield f'{name}/{actor}/{int(frame_ids[i]):05d}', example
    skipped = int(np.sum(~is_valid))
    if skipped:
      logging.info('%s: skipped %d frames without a valid camera pose', field, skipped)


def read_sequence_file(path: epath.PathLike) -> dict[str, Any]:
  """One `sequenceFiles/<split>/<name>.pkl` (a Python 2 pickle) as its dict.

  Raises:
    ValueError: naming the file, if it is no readable pickle of a dict with string keys
      (`safe_pickle.UnsafePickleError`, a ValueError, if it names a disallowed global).
  """
  path = epath.Path(path)
  data = safe_pickle.load_pickle_file(path, encoding='latin1')
  if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
    raise ValueError(f'{path}: expected a dict with string keys, got '
                     f'{type(data).__name__}')
  return data


def sequence_files(manual_dir: epath.Path, split_dir: str, config: Pw3dConfig
                   ) -> list[epath.Path]:
  """The kept `.pkl` files of one official split folder, sorted."""
  files = sorted((manual_dir / SEQUENCE_DIR / split_dir).glob('*.pkl'))
  if config.sequences is not None:
    files = [f for f in files if sequence_base(f.stem) in config.sequences]
  return files


class Builder(pose_features.PoseDatasetBuilder):
  """3DPW, one example per valid frame per actor.

  Writes array_record (for `tfds.data_source`) and a tfrecord copy (for `tfds.load`).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Extract 3DPW's sequenceFiles.zip into manual_dir (manual_dir/sequenceFiles/{train,
  validation,test}/*.pkl); for the smpl_regressor config also the SMPL model .npz files
  and J_regressor_h36m.npy. See tfds_builders/pw3d/README.md.
  """
  BUILDER_CONFIGS = [
      Pw3dConfig(name='default', description='All sequences; joints from jointPositions.'),
      Pw3dConfig(name='occ', sequences=OCCLUDED_SEQUENCES, single_test_split=True,
                 description='3DPW-OC: the object-occluded sequences (Zhang et al. 2020), '
                 'all in one test split.'),
      Pw3dConfig(name='smpl_regressed', joints_source='smpl_regressor',
                 description='All sequences; joints regressed from SMPL meshes with the '
                 'Human3.6M joint regressor.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    if config.joints_source not in ('joint_positions', 'smpl_regressor'):
      raise ValueError(f'pw3d: joints_source must be joint_positions or smpl_regressor, '
                       f'got {config.joints_source!r}')
    hierarchy = config.hierarchy
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=pose_features.pose_features(ACTIONS, INPUT_SOURCES, hierarchy.num_dense,
                                             hierarchy.num_fine),
        metadata=pose_features.hierarchy_metadata(hierarchy, 'skeleton', INPUT_SOURCES),
        homepage='https://virtualhumans.mpi-inf.mpg.de/3DPW/',
        citation=_CITATION)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    manual_dir = epath.Path(dl_manager.manual_dir)
    files = {split: sequence_files(manual_dir, split, config) for split in SPLIT_DIRS}
    if not any(files.values()):
      raise FileNotFoundError(f'pw3d/{config.name}: no sequence files under '
                              f'{manual_dir / SEQUENCE_DIR}; see tfds_builders/pw3d/README.md')
    smpl_joints = (SmplJoints(manual_dir, config)
                   if config.joints_source == 'smpl_regressor' else None)
    if config.single_test_split:
      return {'test': self._generate_examples(sum(files.values(), []), smpl_joints)}
    return {split: self._generate_examples(paths, smpl_joints)
            for split, paths in files.items()}

  def _generate_examples(self, paths: list[epath.Path], smpl_joints: SmplJoints | None):
    for path in paths:
      yield from sequence_examples(read_sequence_file(path), path.stem, self.builder_config,
                                   smpl_joints)
