"""MPI-INF-3DHP test set in the project's pose schema (manual download, split 'test').

One example per valid frame (`valid_frame == 1`) of the six test sequences TS1..TS6, each
filmed by one camera:

  sparse_2d, keypoints_2d['gt']   `annot2` (image pixels; confidence 1), in Human3.6M-17
                                  order (`mat_annotations.TO_H36M`);
  sparse_3d                       `univ_annot3` (the evaluation target: the universal,
                                  Human3.6M-sized skeleton) in camera coordinates,
                                  millimeters → meters;
  dense/fine 2D and 3D            the `skeleton` dense source: points interpolated along
                                  the 17-joint bones with the fractions of the Human3.6M
                                  builder (`tfds_builders.human36m.bone_points`), in 2D
                                  along `annot2` and in 3D along `univ_annot3`;
  action                          `activity_annotation` (`mat_annotations.ACTIVITIES`);
  subject                         the sequence id 'TS1'..'TS6' (its scene type is
                                  `hipart_jax.protocols.scene_of(subject)`);
  camera                          'ts1-4' (studio) or 'ts5-6' (outdoor), after the test
                                  set's calibration files; the 3D points are already in
                                  camera coordinates, so world = camera (identity rotation,
                                  zero translation);
  frame                           the frame's index in the sequence (image
                                  `imageSequence/img_{frame + 1:06d}.jpg`).

`univ_annot3` rescales the bones of `annot3` about the pelvis, so projecting `sparse_3d`
does not reproduce `annot2` exactly; the 2D levels therefore come from `annot2` itself.
Valid frames with non-finite annotations are skipped and logged.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from hipart_jax import skeleton
from tfds_builders import pose_features
from tfds_builders.human36m import bone_points
from tfds_builders.mpi_inf_3dhp import mat_annotations

SEQUENCES = ('TS1', 'TS2', 'TS3', 'TS4', 'TS5', 'TS6')
TEST_SET_DIR = 'mpi_inf_3dhp_test_set'
ANNOTATION_FILE = 'annot_data.mat'
INPUT_SOURCES = ('gt',)
DENSE_SOURCE = 'skeleton'
INPUT_CONFIDENCE = 1.0
MILLIMETERS_PER_METER = 1000.0

# The camera of each sequence: TS1-TS4 in the studio (TS1, TS2 with a green screen),
# TS5, TS6 outdoors. Names follow the test set's test_util/camera_calibration files.
SEQUENCE_CAMERA = {'TS1': 'ts1-4', 'TS2': 'ts1-4', 'TS3': 'ts1-4', 'TS4': 'ts1-4',
                   'TS5': 'ts5-6', 'TS6': 'ts5-6'}


@dataclasses.dataclass(frozen=True)
class SequenceCamera:
  """Image size and pinhole intrinsics of a test camera (README.md: sources).

  Attributes:
    image_size: (width, height) pixels.
    focal: (fx, fy) pixels.
    center: (cx, cy) pixels.
  """

  image_size: tuple[int, int]
  focal: tuple[float, float]
  center: tuple[float, float]

  def params(self) -> dict[str, np.ndarray]:
    """`camera_params` of the schema: zero distortion, world = camera frame."""
    return {
        'focal': np.asarray(self.focal, np.float32),
        'center': np.asarray(self.center, np.float32),
        'radial': np.zeros(3, np.float32),
        'tangential': np.zeros(2, np.float32),
        'rotation': np.asarray([1.0, 0.0, 0.0, 0.0], np.float32),
        'translation': np.zeros(3, np.float32),
    }


CAMERAS = {
    'ts1-4': SequenceCamera(image_size=(2048, 2048), focal=(1500.172288, 1500.172288),
                        center=(1017.38733568, 1043.03198208)),
    'ts5-6': SequenceCamera(image_size=(1920, 1080), focal=(1683.98345952, 1672.59370772),
                        center=(939.85754016, 560.140743168)),
}

_DESCRIPTION = """
MPI-INF-3DHP (Mehta et al., 3DV 2017) test set: six sequences (TS1-TS4 studio, TS1-TS2
with a green screen; TS5-TS6 outdoors) with 2D annotations and 3D annotations on the
universal (Human3.6M-sized) skeleton. One example per valid frame, joints mapped to the
Human3.6M-17 layout, dense and fine points interpolated along the bones.
"""

_CITATION = """
@inproceedings{mono-3dhp2017,
  author = {Mehta, Dushyant and Rhodin, Helge and Casas, Dan and Fua, Pascal and
            Sotnychenko, Oleksandr and Xu, Weipeng and Theobalt, Christian},
  title = {Monocular 3D Human Pose Estimation In The Wild Using Improved CNN Supervision},
  booktitle = {3D Vision (3DV), 2017 Fifth International Conference on},
  year = {2017}}
"""


@dataclasses.dataclass
class MpiInf3dhpConfig(tfds.core.BuilderConfig):
  """Builder options.

  Attributes:
    sequences: test sequences to read (subset of SEQUENCES).
    stride: keep valid frames whose index is a multiple of `stride`.
    dense_per_bone, fine_per_dense: the `skeleton.default_hierarchy` arguments.
  """
  sequences: tuple[str, ...] = SEQUENCES
  stride: int = 1
  dense_per_bone: int = 3
  fine_per_dense: int = 2

  @property
  def hierarchy(self) -> skeleton.Hierarchy:
    return skeleton.default_hierarchy(self.dense_per_bone, self.fine_per_dense)


def annotation_path(manual_dir: epath.PathLike, sequence: str) -> epath.Path:
  """`<manual_dir>/mpi_inf_3dhp_test_set/<seq>/annot_data.mat`, or `<manual_dir>/<seq>/...`."""
  manual_dir = epath.Path(manual_dir)
  candidates = [manual_dir / TEST_SET_DIR / sequence / ANNOTATION_FILE,
                manual_dir / sequence / ANNOTATION_FILE]
  for path in candidates:
    if path.exists():
      return path
  raise FileNotFoundError(f'mpi_inf_3dhp: {sequence}/{ANNOTATION_FILE} not found (tried '
                          f'{[str(p) for p in candidates]}); see '
                          'tfds_builders/mpi_inf_3dhp/README.md')


def sequence_examples(sequence: str, annotations: mat_annotations.SequenceAnnotations,
                      config: MpiInf3dhpConfig) -> Iterator[tuple[str, dict]]:
  """Yields (key, schema example) for the kept valid frames of one sequence.

  Args:
    sequence: 'TS1'..'TS6'.
    annotations: the sequence's annotations (`mat_annotations.read_sequence`).
    config: the builder config (stride, hierarchy).
  """
  hierarchy = config.hierarchy
  camera_id = SEQUENCE_CAMERA[sequence]
  camera = CAMERAS[camera_id]
  frames = np.flatnonzero(annotations.valid)
  frames = frames[frames % config.stride == 0]
  points_2d = mat_annotations.to_h36m(annotations.annot2[frames])  # [T, 17, 2] px
  points_3d = mat_annotations.to_h36m(annotations.univ_annot3[frames]) / MILLIMETERS_PER_METER
  finite = np.all(np.isfinite(points_2d), axis=(1, 2)) & np.all(
      np.isfinite(points_3d), axis=(1, 2))
  if not np.all(finite):
    logging.warning('mpi_inf_3dhp %s: skipping %d valid frames with non-finite '
                    'annotations: %s', sequence, int(np.sum(~finite)),
                    frames[~finite].tolist())
    frames, points_2d, points_3d = frames[finite], points_2d[finite], points_3d[finite]
  if not frames.size:
    return
  chains = bone_points.two_joint_chains(skeleton.H36M_PARENTS)
  dense_2d, fine_2d = bone_points.hierarchy_points(points_2d, chains, hierarchy)
  dense_3d, fine_3d = bone_points.hierarchy_points(points_3d, chains, hierarchy)
  params = camera.params()
  confidence = np.full((skeleton.NUM_JOINTS, 1), INPUT_CONFIDENCE)
  for t, frame in enumerate(frames.tolist()):
    example = pose_features.example_from_arrays(
        subject=sequence, action=int(annotations.activity[frame]), camera=camera_id,
        frame=frame, image_size=camera.image_size, camera_params=params,
        keypoints_2d={'gt': np.concatenate([points_2d[t], confidence], axis=-1)},
        sparse_2d=points_2d[t], dense_2d=dense_2d[t], fine_2d=fine_2d[t],
        sparse_3d=points_3d[t], dense_3d=dense_3d[t], fine_3d=fine_3d[t],
        num_dense=hierarchy.num_dense, num_fine=hierarchy.num_fine,
        input_sources=INPUT_SOURCES, action_names=mat_annotations.ACTIVITIES)
    yield f'{sequence}/{frame:06d}', example


def generate_examples(manual_dir: epath.PathLike, config: MpiInf3dhpConfig
                      ) -> Iterator[tuple[str, dict]]:
  """Yields (key, schema example) for every kept frame of `config.sequences`."""
  for sequence in config.sequences:
    path = annotation_path(manual_dir, sequence)
    yield from sequence_examples(sequence, mat_annotations.read_sequence(path), config)


def _check_config(config: MpiInf3dhpConfig) -> None:
  unknown = [s for s in config.sequences if s not in SEQUENCES]
  if unknown or not config.sequences:
    raise ValueError(f'mpi_inf_3dhp/{config.name}: sequences must be a non-empty subset of '
                     f'{SEQUENCES}, got {config.sequences}')
  if config.stride < 1:
    raise ValueError(f'mpi_inf_3dhp/{config.name}: stride must be >= 1, got {config.stride}')


class Builder(pose_features.PoseDatasetBuilder):
  """MPI-INF-3DHP test set, one example per valid frame.

  Writes array_record (for `tfds.data_source`) and a tfrecord copy (for `tfds.load`).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download the test set (mpi_inf_3dhp_test_set.zip, from the MPI-INF-3DHP site's
  get_testset script) and put the folder {TEST_SET_DIR}/ with TS1..TS6/{ANNOTATION_FILE}
  in manual_dir. See tfds_builders/mpi_inf_3dhp/README.md.
  """
  BUILDER_CONFIGS = [
      MpiInf3dhpConfig(name='gt', description='All valid frames of TS1-TS6; 2D input: the '
                       'ground-truth annot2; dense/fine points along the bones.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'gt'

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    _check_config(config)
    hierarchy = config.hierarchy
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=pose_features.pose_features(mat_annotations.ACTIVITIES, INPUT_SOURCES,
                                             hierarchy.num_dense, hierarchy.num_fine),
        metadata=pose_features.hierarchy_metadata(hierarchy, DENSE_SOURCE, INPUT_SOURCES),
        homepage='https://vcai.mpi-inf.mpg.de/3dhp-dataset/',
        citation=_CITATION)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # Fail early, before any writing, if a sequence file is missing.
    for sequence in self.builder_config.sequences:
      annotation_path(dl_manager.manual_dir, sequence)
    return {'test': self._generate_examples(dl_manager.manual_dir)}

  def _generate_examples(self, manual_dir: epath.Path):
    yield from generate_examples(manual_dir, self.builder_config)

