"""synthetic_poses: procedurally generated hierarchical poses; needs no files.

Subjects are kinematic Human3.6M-17 bodies (Human3.6M mean bone lengths scaled per
subject) performing procedural actions (`motions.ACTIONS`); dense and fine points are
virtual surface markers (`tfds_builders.markers`) of the default 48/96 hierarchy; every
frame is seen by virtual Human3.6M-like cameras and stored in the shared schema
(`tfds_builders.pose_features`). The 2D input source 'gt' is the projected sparse pose
with confidence 1: occlusion and noise are added by the input pipeline, not here.

World coordinates are z-up meters; stored 3D points are camera coordinates. Generation is
a pure function of the config (`generate_examples`): each subject and each sequence draws
from its own `np.random.SeedSequence` keyed by (seed, subject, action, sequence), so the
data do not depend on generation order.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from hipart_jax import skeleton
from tfds_builders import markers
from tfds_builders import pose_features
from tfds_builders import virtual_cameras

from . import body as body_lib
from . import motions

INPUT_SOURCES = ('gt',)
DENSE_SOURCE = 'markers'
# Random streams, so that body and motion draws never share a seed.
_BODY_STREAM, _MOTION_STREAM = 0, 1


@dataclasses.dataclass(eq=False)
class SyntheticPosesConfig(tfds.core.BuilderConfig):
  """Size and randomness of the generated dataset.

  Attributes:
    num_train_subjects, num_test_subjects: subjects per split (named S1, S2, ...; the
      test subjects come after the train subjects).
    sequences_per_action: sequences of each action per subject.
    frames_per_sequence: frames kept per sequence.
    frame_stride: frames kept every `frame_stride` frames of the `fps` clock.
    fps: the sequences' frame rate (frame indices count at this rate).
    num_cameras: virtual cameras per sequence.
    seed: the root of all randomness.
    scale_range: (low, high) subject size relative to the Human3.6M mean.
    bone_jitter: per-bone-pair length variation around the subject's scale.
    ankle_height: height of the lower ankle above the ground at scale 1, meters.
  """

  num_train_subjects: int = 3
  num_test_subjects: int = 1
  sequences_per_action: int = 1
  frames_per_sequence: int = 2
  frame_stride: int = 25
  fps: float = 50.0
  num_cameras: int = 2
  seed: int = 0
  scale_range: tuple[float, float] = (0.9, 1.1)
  bone_jitter: float = 0.03
  ankle_height: float = 0.08

  def examples_per_subject(self) -> int:
    return (len(motions.ACTIONS) * self.sequences_per_action * self.frames_per_sequence
            * self.num_cameras)


def subject_name(index: int) -> str:
  return f'S{index + 1}'


def split_subjects(config: SyntheticPosesConfig) -> dict[str, tuple[int, ...]]:
  """{'train': subject indices, 'test': subject indices} (disjoint)."""
  num_train = config.num_train_subjects
  return {'train': tuple(range(num_train)),
          'test': tuple(range(num_train, num_train + config.num_test_subjects))}


def hierarchy() -> skeleton.Hierarchy:
  return skeleton.default_hierarchy()


def subject_body(config: SyntheticPosesConfig, subject: int) -> body_lib.Body:
  """The (deterministic) body of subject index `subject`."""
  rng = np.random.default_rng([config.seed, _BODY_STREAM, subject])
  return body_lib.random_body(rng, config.scale_range, config.bone_jitter)


def sequence_world(config: SyntheticPosesConfig, body: body_lib.Body,
                   layout: markers.MarkerLayout, rng: np.random.Generator, action: str
                   ) -> dict[str, np.ndarray]:
  """One sequence in world coordinates.

  Returns:
    {'frame': [T] int, 'sparse': [T, 17, 3], 'dense': [T, D, 3], 'fine': [T, F, 3],
     'bone_frames': [T, 17, 3, 3]} world meters, z up, the lower ankle at
    `ankle_height * body.scale` above the ground.
  """
  frames = np.arange(config.frames_per_sequence) * config.frame_stride
  motion = motions.sample_motion(rng, action, frames / config.fps)
  joints, bone_frames = body_lib.forward_kinematics(
      body, motion.root_position, motion.root_orientation, motion.angles)
  ankles = [skeleton.H36M_JOINT_NAMES.index(n) for n in ('r_ankle', 'l_ankle')]
  lift = config.ankle_height * body.scale - joints[:, ankles, 2].min(axis=1)
  joints[..., 2] += lift[:, None]
  dense, fine = markers.place_markers(joints, bone_frames, layout)
  return dict(frame=frames, sparse=joints, dense=dense, fine=fine, bone_frames=bone_frames)


def generate_examples(config: SyntheticPosesConfig, subjects: Sequence[int]
                      ) -> Iterator[tuple[str, dict]]:
  """Yields (key, schema example) for every subject, action, sequence, camera and frame."""
  levels = hierarchy()
  sizes = {'sparse': levels.num_sparse, 'dense': levels.num_dense, 'fine': levels.num_fine}
  ring = virtual_cameras.RingLayout(num_cameras=config.num_cameras)
  for subject in subjects:
    body = subject_body(config, subject)
    layout = markers.make_marker_layout(levels, markers.h36m_bone_radii(body.scale))
    for action_index, action in enumerate(motions.ACTIONS):
      for sequence in range(config.sequences_per_action):
        rng = np.random.default_rng(
            [config.seed, _MOTION_STREAM, subject, action_index, sequence])
        world = sequence_world(config, body, layout, rng, action)
        points = np.concatenate([world[level] for level in sizes], axis=1)  # [T, N, 3]
        cameras = virtual_cameras.ring_cameras(rng, points, layout=ring)
        for camera in cameras:
          points_cam = camera.world_to_camera(points)
          pixels = camera.project(points_cam)
          split_at = np.cumsum(list(sizes.values()))[:-1]
          cam_levels = dict(zip(sizes, np.split(points_cam, split_at, axis=1)))
          pix_levels = dict(zip(sizes, np.split(pixels, split_at, axis=1)))
          for t, frame in enumerate(world['frame']):
            sparse_2d = pix_levels['sparse'][t]
            keypoints = np.concatenate([sparse_2d, np.ones((len(sparse_2d), 1))], axis=-1)
            key = f'{subject_name(subject)}_{action}_{sequence}_{camera.name}_{frame}'
            yield key, pose_features.example_from_arrays(
                subject=subject_name(subject), action=action, camera=camera.name,
                frame=int(frame), image_size=camera.image_size,
                camera_params=camera.params(), keypoints_2d={'gt': keypoints},
                sparse_2d=sparse_2d, dense_2d=pix_levels['dense'][t],
                fine_2d=pix_levels['fine'][t], sparse_3d=cam_levels['sparse'][t],
                dense_3d=cam_levels['dense'][t], fine_3d=cam_levels['fine'][t],
                num_dense=levels.num_dense, num_fine=levels.num_fine,
                input_sources=INPUT_SOURCES, action_names=motions.ACTIONS)


class SyntheticPoses(pose_features.PoseDatasetBuilder):
  """Procedural hierarchical 3D poses with virtual cameras (no downloads).

  Writes array_record (for `tfds.data_source`) and a tfrecord copy (for `tfds.load`).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticPosesConfig(
          name='tiny', description='4 subjects (3 train, 1 test), 2 frames per '
          'sequence, 2 cameras: for tests.'),
      SyntheticPosesConfig(
          name='small', description='7 subjects (5 train, 2 test), 2 sequences per '
          'action, 25 frames, 4 cameras: the default demo.',
          num_train_subjects=5, num_test_subjects=2, sequences_per_action=2,
          frames_per_sequence=25, frame_stride=10, num_cameras=4),
      SyntheticPosesConfig(
          name='large', description='9 subjects (7 train, 2 test), 10 sequences per '
          'action, 60 frames, 4 cameras: for benchmarks.',
          num_train_subjects=7, num_test_subjects=2, sequences_per_action=10,
          frames_per_sequence=60, frame_stride=5, num_cameras=4),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'small'

  def _info(self) -> tfds.core.DatasetInfo:
    levels = hierarchy()
    return self.dataset_info_from_configs(
        features=pose_features.pose_features(motions.ACTIONS, INPUT_SOURCES,
                                             levels.num_dense, levels.num_fine),
        metadata=pose_features.hierarchy_metadata(levels, DENSE_SOURCE, INPUT_SOURCES),
        homepage='https://arxiv.org/abs/2503.23331',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(subjects)
            for split, subjects in split_subjects(self.builder_config).items()}

  def _generate_examples(self, subjects: Sequence[int]):
    yield from generate_examples(self.builder_config, subjects)
