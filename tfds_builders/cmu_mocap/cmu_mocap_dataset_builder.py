"""cmu_mocap: CMU Graphics Lab motion capture clips as hierarchical 2D/3D pose examples.

Each clip (Acclaim ASF/AMC, or a BVH conversion) goes through forward kinematics
(`asf_amc`, `bvh`), is read off as Human3.6M-17 joints plus per-bone frames
(`h36m_map`), turned from CMU's y-up axes to the project's z-up world, dressed with the
virtual surface markers of the default 48/96 hierarchy (`tfds_builders.markers`, the
`markers` dense source) and seen by virtual Human3.6M-like cameras that stay fixed for
the clip (`tfds_builders.virtual_cameras`). Every `frame_stride`-th frame of every camera
is one example of the shared schema (`tfds_builders.pose_features`); the 2D input
source 'gt' is the projected sparse pose with confidence 1.

Clips are named by their CMU id, '<subject>_<trial>' for ASF/AMC files
(`<manual_dir>/asf_amc/<subject>/<subject>.asf` and `.../<subject>_<trial>.amc`) and
'bvh:<name>' for `<manual_dir>/bvh/<name>.bvh` (any of the three public BVH dialects,
`bvh_dialects`). See README.md for the joint mapping, action labels and splits.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from hipart_jax import skeleton
from tfds_builders import markers
from tfds_builders import pose_features
from tfds_builders import virtual_cameras

from . import asf_amc
from . import bvh
from . import bvh_dialects
from . import h36m_map
from . import multi_subject

INPUT_SOURCES = ('gt',)
DENSE_SOURCE = 'markers'
BVH_PREFIX = 'bvh:'
CMU_SUBJECTS_URL = 'http://mocap.cs.cmu.edu/subjects'
# CMU lengths are in 1/0.45 inches (the ASF `:units length 0.45`; BVH conversions keep
# the unit): meters = value * 0.0254 / 0.45.
CMU_METERS_PER_UNIT = asf_amc.INCH_IN_METERS / 0.45

# Motion classes. A clip's label is its main activity in CMU's description (README.md).
ACTIONS = ('walk', 'run', 'jump', 'climb', 'hang', 'sit', 'dance', 'other')
CLIP_ACTIONS = {
    '01_01': 'jump',   # forward jumps, turn around
    '01_02': 'climb',  # climb
    '01_03': 'hang',   # climb, hang, swing
    '01_04': 'climb',  # climb
    '01_05': 'climb',  # climb, go under
    '01_06': 'sit',    # climb, sit, dangle legs, descend
    '01_07': 'sit',    # climb, sit, dangle legs, jump down
    '01_08': 'sit',    # climb, sit, dangle legs, rock back, lower self to ground
    '01_09': 'hang',   # climb, hang, hold self up with arms straight, swing, drop, sit, ...
    '01_10': 'hang',   # climb, swing, lean back, drop
    '01_11': 'hang',   # climb, hang, lean over, jump down
    '01_12': 'sit',    # climb, pull up, dangle, sit, lower self to ground
    'bvh:131_01': 'walk',  # start walk stop (Michael-Jackson-styled motions)
}


@dataclasses.dataclass(eq=False)
class CmuMocapConfig(tfds.core.BuilderConfig):
  """Which clips go where, and how they are sampled and filmed.

  Attributes:
    train_clips, validation_clips, test_clips: clip ids ('01_01', or 'bvh:131_01' for a
      BVH file); a 'validation' split exists only when `validation_clips` is non-empty.
    actions: the action vocabulary (the `action` ClassLabel names).
    clip_actions: (clip, action) pairs overriding `CLIP_ACTIONS`; every clip needs an
      action from `actions`.
    frame_stride: keep every `frame_stride`-th frame (CMU clips run at 120 fps).
    num_cameras: virtual cameras per clip.
    seed: the root of the camera randomness (cameras of a clip depend on seed + clip).
    asf_meters_per_unit: ASF/AMC length scale; None: from the ASF `:units length`.
    bvh_meters_per_unit: BVH length scale for every BVH clip; None: inferred per file
      from the rest leg length (`h36m_map.infer_meters_per_unit`).
    clip_meters_per_unit: (clip, meters per file unit) pairs overriding both of the above.
    bvh_restore_back: regrow the back bone that the CMU-unit BVH conversions drop, so
      their neck, head and arms sit where the ASF skeleton has them
      (`bvh_dialects`); `shared_clips` keeps its skeletons as filed.
    reference_leg_length: thigh + shin length (m) of the body the marker radii of
      `markers.h36m_bone_radii` describe (Human3.6M mean); radii scale with the
      subject's leg length relative to it.
    extra_points: append the real CMU points beyond Human3.6M-17 (toes, hands, finger
      and thumb tips, mid-neck: `h36m_map.EXTRA_POINTS`) as dense points of their parts
      (owning no fine points) to the default hierarchy.
    download: fetch ASF/AMC clips from the CMU site instead of reading `manual_dir`
      (BVH clips always come from `manual_dir`). Untested: no network in our tests.
  """

  train_clips: tuple[str, ...] = ()
  test_clips: tuple[str, ...] = ()
  validation_clips: tuple[str, ...] = ()
  actions: tuple[str, ...] = ACTIONS
  clip_actions: tuple[tuple[str, str], ...] = ()
  frame_stride: int = 8
  num_cameras: int = 4
  seed: int = 0
  asf_meters_per_unit: float | None = None
  bvh_meters_per_unit: float | None = None
  clip_meters_per_unit: tuple[tuple[str, float], ...] = ()
  bvh_restore_back: bool = True
  reference_leg_length: float = 0.904
  extra_points: bool = False
  download: bool = False

  def splits(self) -> dict[str, tuple[str, ...]]:
    splits = {'train': tuple(self.train_clips), 'test': tuple(self.test_clips)}
    if self.validation_clips:
      splits['validation'] = tuple(self.validation_clips)
    return splits

  def action(self, clip: str) -> str:
    action = dict(self.clip_actions).get(clip, CLIP_ACTIONS.get(clip))
    if action not in self.actions:
      raise ValueError(f'clip {clip}: no action label (got {action!r}); give one in '
                       f'clip_actions, one of {self.actions}')
    return action

  def meters_per_unit(self, clip: str) -> float | None:
    """The clip's length scale; None: the format's default (ASF units, BVH inferred)."""
    overrides = dict(self.clip_meters_per_unit)
    if clip in overrides:
      return overrides[clip]
    file_format, _, _ = parse_clip(clip)
    return self.bvh_meters_per_unit if file_format == 'bvh' else self.asf_meters_per_unit


SHARED_CLIPS = CmuMocapConfig(
    name='shared_clips',
    description='Subject 01 playground clips 01_01..01_10 for train; 01_11, 01_12 and '
    'the BVH clip 131_01 (another subject, another file format) for test. Every 8th '
    'frame (15 fps), 4 virtual cameras per clip.',
    train_clips=tuple(f'01_{trial:02d}' for trial in range(1, 11)),
    test_clips=('01_11', '01_12', 'bvh:131_01'),
    bvh_restore_back=False,
)
SHARED_CLIPS_EXTRA = dataclasses.replace(
    SHARED_CLIPS, name='shared_clips_extra', extra_points=True,
    description=SHARED_CLIPS.description + ' The hierarchy adds the real CMU toe, hand, '
    'finger-tip, thumb-tip and mid-neck points as dense points (48 + 11 dense, 96 fine).')
MULTI_SUBJECT = CmuMocapConfig(
    name='multi_subject',
    description='13 CMU subjects in all three BVH dialects and ASF/AMC, subject-disjoint: '
    'train 01 (ASF/AMC), 02, 03, 05, 07, 10, 11, 12, 131; validation 08, 14; test 06 '
    '(basketball), 09 (run), 13 (everyday). Coarse action labels. Every 4th frame '
    '(30 fps), 4 virtual cameras per clip.',
    train_clips=multi_subject.TRAIN_CLIPS,
    validation_clips=multi_subject.VALIDATION_CLIPS,
    test_clips=multi_subject.TEST_CLIPS,
    actions=multi_subject.ACTIONS,
    clip_actions=tuple(multi_subject.CLIP_ACTIONS.items()),
    frame_stride=4,
)


def hierarchy(config: CmuMocapConfig) -> skeleton.Hierarchy:
  """The default 48/96 hierarchy, plus the extra CMU points if the config asks."""
  levels = skeleton.default_hierarchy()
  return h36m_map.with_extra_points(levels) if config.extra_points else levels


def parse_clip(clip: str) -> tuple[str, str, str]:
  """'01_02' → ('asf_amc', '01', '01_02'); 'bvh:131_01' → ('bvh', '131', '131_01')."""
  file_format = 'asf_amc'
  name = clip
  if clip.startswith(BVH_PREFIX):
    file_format, name = 'bvh', clip[len(BVH_PREFIX):]
  subject, sep, trial = name.partition('_')
  if not (sep and subject and trial):
    raise ValueError(f'clip {clip!r}: expected <subject>_<trial> (or bvh:<subject>_<trial>)')
  return file_format, subject, name


def clip_files(clip: str, root: pathlib.Path) -> dict[str, pathlib.Path]:
  """The files of a clip under the manual_dir layout: {'asf', 'amc'} or {'bvh'}."""
  file_format, subject, name = parse_clip(clip)
  if file_format == 'bvh':
    return {'bvh': root / 'bvh' / f'{name}.bvh'}
  return {'asf': root / 'asf_amc' / subject / f'{subject}.asf',
          'amc': root / 'asf_amc' / subject / f'{name}.amc'}


@dataclasses.dataclass(frozen=True)
class ClipPoses:
  """A clip's sampled frames in the z-up world, meters.

  Attributes:
    frames: [T] frame indices in the clip (0-based, at the file's frame rate).
    joints: [T, 17, 3] Human3.6M joints.
    bone_frames: [T, 17, 3, 3] bone frames (markers.py convention).
    extra_points: [T, E, 3] the `h36m_map.EXTRA_POINTS`.
    leg_length: the subject's mean thigh + shin length in the rest pose.
  """

  frames: np.ndarray
  joints: np.ndarray
  bone_frames: np.ndarray
  extra_points: np.ndarray
  leg_length: float


def _leg_length(rest_joints: np.ndarray) -> float:
  """Mean thigh + shin length of a rest pose [17, 3]."""
  names = skeleton.H36M_JOINT_NAMES
  total = 0.0
  for side in 'lr':
    hip, knee, ankle = (rest_joints[names.index(f'{side}_{n}')] for n in ('hip', 'knee', 'ankle'))
    total += np.linalg.norm(knee - hip) + np.linalg.norm(ankle - knee)
  return total / 2


def load_bvh(path: pathlib.Path, meters_per_unit: float | None = None,
             restore: bool = False) -> tuple[bvh.BvhSkeleton, bvh.BvhMotion, str, float]:
  """Reads a BVH file, detects its dialect and its unit, adds the dialect's sites and,
  if `restore`, regrows its dropped back bone (`h36m_map.restore_back`).

  Returns:
    (hierarchy with virtual sites, motion without the dialect's lead-in rest frames,
    dialect, meters per file unit); the unit is `meters_per_unit` when given, else
    inferred from the rest leg length.
  """
  hierarchy_, motion = bvh.read_bvh(path)
  dialect = h36m_map.detect_bvh_dialect(hierarchy_.names, str(path))
  lead_in = bvh_dialects.DIALECTS[dialect]['lead_in_frames']
  if motion.num_frames <= lead_in:
    raise ValueError(f'{path}: MOTION: {motion.num_frames} frames, expected more than the '
                     f'{lead_in} lead-in rest frame(s) of the {dialect!r} dialect')
  motion = bvh.BvhMotion(motion.frame_time, motion.values[lead_in:])
  leg_length = h36m_map.bvh_leg_length(hierarchy_, dialect)
  if meters_per_unit is None:
    meters_per_unit = h36m_map.infer_meters_per_unit(leg_length, str(path))
  hierarchy_ = h36m_map.with_sites(hierarchy_, dialect, leg_length)
  if restore:
    hierarchy_ = h36m_map.restore_back(hierarchy_, dialect)
  return hierarchy_, motion, dialect, meters_per_unit


def load_clip(files: Mapping[str, pathlib.Path], frame_stride: int,
              asf_meters_per_unit: float | None = None,
              bvh_meters_per_unit: float | None = None,
              bvh_restore_back: bool = True) -> ClipPoses:
  """Reads a clip ({'asf', 'amc'} or {'bvh'} paths) and samples every `frame_stride`-th
  frame into Human3.6M joints and bone frames in the z-up world (BVH: any dialect of
  `bvh_dialects`; `bvh_meters_per_unit` None infers the unit; `bvh_restore_back`
  regrows the back bone the CMU-unit conversions drop)."""
  if frame_stride < 1:
    raise ValueError(f'frame_stride must be >= 1, got {frame_stride}')
  if 'bvh' in files:
    hierarchy_, motion, dialect, scale = load_bvh(files['bvh'], bvh_meters_per_unit,
                                                  bvh_restore_back)
    frames = np.arange(0, motion.num_frames, frame_stride)
    motion = bvh.BvhMotion(motion.frame_time, motion.values[frames])
    segments = h36m_map.bvh_segments(bvh.forward_kinematics(hierarchy_, motion, scale))
    rest = h36m_map.bvh_rest_segments(hierarchy_, scale)
    joint_map = h36m_map.bvh_joint_map(dialect, bvh_restore_back)
    extra_points = h36m_map.dialect_extra_points(dialect)
  else:
    asf = asf_amc.read_asf(files['asf'])
    motion = asf_amc.read_amc(files['amc'], asf)
    frames = np.arange(0, motion.num_frames, frame_stride)
    motion = asf_amc.AmcMotion(motion.frame_numbers[frames],
                               {k: v[frames] for k, v in motion.values.items()},
                               motion.degrees)
    segments = h36m_map.asf_segments(
        asf_amc.forward_kinematics(asf, motion, asf_meters_per_unit))
    rest = h36m_map.asf_rest_segments(asf, asf_meters_per_unit)
    joint_map = h36m_map.ASF_TO_H36M
    extra_points = tuple(point.asf for point in h36m_map.EXTRA_POINTS)
  joints = h36m_map.h36m_joints(segments, joint_map)
  bone_frames = h36m_map.h36m_bone_frames(segments, rest, joint_map)
  to_world = h36m_map.Y_UP_TO_Z_UP
  extra_points = h36m_map.points_on_segments(segments, extra_points)
  return ClipPoses(frames=frames, joints=joints @ to_world.T,
                   bone_frames=to_world @ bone_frames,
                   extra_points=extra_points @ to_world.T,
                   leg_length=_leg_length(h36m_map.h36m_joints(rest, joint_map)[0]))


def _clip_seed(clip: str) -> list[int]:
  """Integers naming a clip for `np.random.default_rng` (stable across runs)."""
  return [ord(c) for c in clip]


def generate_clip_examples(config: CmuMocapConfig, clip: str,
                           files: Mapping[str, pathlib.Path]) -> Iterator[tuple[str, dict]]:
  """Yields (key, schema example) for every sampled frame and camera of one clip."""
  levels = hierarchy(config)
  action = config.action(clip)
  _, subject, name = parse_clip(clip)
  scale = config.meters_per_unit(clip)
  poses = load_clip(files, config.frame_stride, asf_meters_per_unit=scale,
                    bvh_meters_per_unit=scale, bvh_restore_back=config.bvh_restore_back)
  layout = markers.make_marker_layout(
      skeleton.default_hierarchy(),
      markers.h36m_bone_radii(poses.leg_length / config.reference_leg_length))
  dense, fine = markers.place_markers(poses.joints, poses.bone_frames, layout)
  if config.extra_points:
    dense = np.concatenate([dense, poses.extra_points], axis=1)
  world = {'sparse': poses.joints, 'dense': dense, 'fine': fine}
  points = np.concatenate(list(world.values()), axis=1)  # [T, 17 + D + F, 3]
  split_at = np.cumsum([v.shape[1] for v in world.values()])[:-1]
  rng = np.random.default_rng([config.seed, *_clip_seed(clip)])
  cameras = virtual_cameras.ring_cameras(
      rng, points, layout=virtual_cameras.RingLayout(num_cameras=config.num_cameras))
  for camera in cameras:
    points_cam = camera.world_to_camera(points)
    pixels = camera.project(points_cam)
    cam = dict(zip(world, np.split(points_cam, split_at, axis=1)))
    pix = dict(zip(world, np.split(pixels, split_at, axis=1)))
    for t, frame in enumerate(poses.frames):
      keypoints = np.concatenate([pix['sparse'][t], np.ones((skeleton.NUM_JOINTS, 1))], -1)
      yield f'{name}_{camera.name}_{int(frame)}', pose_features.example_from_arrays(
          subject=subject, action=action, camera=camera.name, frame=int(frame),
          image_size=camera.image_size, camera_params=camera.params(),
          keypoints_2d={'gt': keypoints},
          sparse_2d=pix['sparse'][t], dense_2d=pix['dense'][t], fine_2d=pix['fine'][t],
          sparse_3d=cam['sparse'][t], dense_3d=cam['dense'][t], fine_3d=cam['fine'][t],
          num_dense=levels.num_dense, num_fine=levels.num_fine,
          input_sources=INPUT_SOURCES, action_names=config.actions)


class Builder(tfds.core.GeneratorBasedBuilder):
  """CMU motion capture clips → hierarchical pose examples with virtual cameras."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [SHARED_CLIPS, SHARED_CLIPS_EXTRA, MULTI_SUBJECT]
  DEFAULT_BUILDER_CONFIG_NAME = 'shared_clips'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put CMU Graphics Lab motion capture files (mocap.cs.cmu.edu) in manual_dir:
    <manual_dir>/asf_amc/<subject>/<subject>.asf
    <manual_dir>/asf_amc/<subject>/<subject>_<trial>.amc
    <manual_dir>/bvh/<subject>_<trial>.bvh      (only for 'bvh:' clips)
  e.g. --manual_dir=../shared/data/cmu_mocap for the shared clips.
  """

  def __init__(self, *, file_format=None, **kwargs):
    """Like every builder, but writes array_record unless told otherwise (a dataset
    already prepared on disk keeps the format it was written in)."""
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not self.is_prepared():
      self.info.set_file_format('array_record', override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    levels = hierarchy(config)
    return self.dataset_info_from_configs(
        features=pose_features.pose_features(config.actions, INPUT_SOURCES,
                                             levels.num_dense, levels.num_fine),
        metadata=pose_features.hierarchy_metadata(levels, DENSE_SOURCE, INPUT_SOURCES),
        homepage='http://mocap.cs.cmu.edu',
        citation='The data used in this project was obtained from mocap.cs.cmu.edu. The '
        'database was created with funding from NSF EIA-0196217.',
    )

  def _clip_paths(self, dl_manager: tfds.download.DownloadManager
                  ) -> dict[str, dict[str, pathlib.Path]]:
    """clip → its files, from the CMU site (config.download) or manual_dir."""
    config = self.builder_config
    clips = [clip for split in config.splits().values() for clip in split]
    paths = {}
    remote = {}
    if config.download:
      for clip in clips:
        file_format, subject, name = parse_clip(clip)
        if file_format == 'asf_amc':
          remote[clip] = {
              'asf': f'{CMU_SUBJECTS_URL}/{subject}/{subject}.asf',
              'amc': f'{CMU_SUBJECTS_URL}/{subject}/{name}.amc'}
      downloaded = dl_manager.download(remote)
      paths.update({clip: {k: pathlib.Path(v) for k, v in files.items()}
                    for clip, files in downloaded.items()})
    local = [clip for clip in clips if clip not in paths]
    if local:
      root = pathlib.Path(dl_manager.manual_dir)
      for clip in local:
        paths[clip] = clip_files(clip, root)
      missing = [str(p) for files in paths.values() for p in files.values()
                 if not p.exists()]
      if missing:
        raise FileNotFoundError(f'cmu_mocap: missing clip files {missing[:5]} ('
                                f'{len(missing)} in all); see MANUAL_DOWNLOAD_INSTRUCTIONS')
    return paths

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    paths = self._clip_paths(dl_manager)
    return {split: self._generate_examples(clips, paths)
            for split, clips in self.builder_config.splits().items()}

  def _generate_examples(self, clips, paths):
    for clip in clips:
      yield from generate_clip_examples(self.builder_config, clip, paths[clip])
