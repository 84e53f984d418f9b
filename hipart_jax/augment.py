"""Input-pose augmentations: occlusion, detector-like noise and horizontal flip.

Pure numpy, vectorized over a batch of N samples, every random draw taken from an
explicit `np.random.Generator` (so the input pipeline can make them a pure function of
(seed, step)). Config values arrive as arguments; `default_augment_config()` documents
them.

Coordinate frame. The input pipeline applies these functions to *screen-normalized* 2D
points (`geometry.screen_normalize`: x/w*2-1, y/w*2-h/w), where the image's vertical
centre line is x = 0. Noise and occlusion are translation- and scale-equivariant (their
sizes are relative to the pose's bounding box, passed in as `box_center`/`box_half_size`,
i.e. `geometry.normalization_frame` of the input), so they behave identically in pixels.
The flip negates x: in screen space this mirrors the image about its centre
(pixels: x -> w - x); in camera space it negates camera X. The two agree up to a 2D
translation (2*cx - w pixels when the principal point cx is off-centre), which the model
frame removes because it is re-centred on the flipped input.

Only the *input* pose is ever occluded or noised; ground-truth levels are only flipped.
"""

from __future__ import annotations

from typing import Sequence

import chex
import ml_collections
import numpy as np

from hipart_jax import geometry
from hipart_jax import skeleton

# Limbs as data: name -> Human3.6M-17 joint names. Occluding a limb hides all its joints.
LIMBS = {
    'left_arm': ('l_shoulder', 'l_elbow', 'l_wrist'),
    'right_arm': ('r_shoulder', 'r_elbow', 'r_wrist'),
    'left_leg': ('l_hip', 'l_knee', 'l_ankle'),
    'right_leg': ('r_hip', 'r_knee', 'r_ankle'),
    'head': ('neck_nose', 'head'),
    'torso': ('spine', 'thorax'),
}
# The limbs the evaluation occlusion levels choose from (the four extremities).
EVAL_LIMBS = ('left_arm', 'right_arm', 'left_leg', 'right_leg')
# Evaluation occlusion levels: (number of distinct EVAL_LIMBS hidden, fraction of all
# joints hidden at random).
OCCLUSION_LEVELS = {
    'none': (0, 0.0),
    'one_limb': (1, 0.0),
    'two_limbs': (2, 0.0),
    'random_30': (0, 0.3),
}
OCCLUDED_COORDINATE_MODES = ('zero', 'jitter')


def default_augment_config(preset: str = 'default') -> ml_collections.ConfigDict:
  """The `augment` config block.

  Keys:
    flip_prob: probability of a horizontal flip (with left/right swap of every level).
    noise_std: std of the Gaussian noise added to every input joint, as a fraction of the
      longer side of the input's bounding box (per sample); 0 disables.
    occlusion_prob: probability that a sample gets any occlusion at all; the three kinds
      below apply only to those samples.
    joint_drop_prob: per-joint probability of hiding a joint.
    limb_drop_prob: per-limb probability of hiding all joints of a limb.
    limbs: names of the `LIMBS` that may be hidden.
    rectangle_prob: probability of hiding every joint inside a random rectangle.
    rectangle_size: (min, max) rectangle side as a fraction of the bounding box's longer
      side (each side drawn independently); the rectangle's centre is uniform in the
      square box of side 2*half_size around the box centre.
    occluded_coordinates: 'zero' (occluded joints are 0 in the model frame) or 'jitter'
      (true position plus Gaussian noise of std `jitter_std` model-frame units, where the
      bounding box's half side is 1). Joints missing in the source are always zero.
    jitter_std: see `occluded_coordinates`.
    min_visible: occlusion never leaves fewer than this many available joints visible
      (occluded joints are restored at random until it holds); never all are hidden.
  Args:
    preset: 'default' (the training augmentation) or 'none' (everything off).
  """
  config = ml_collections.ConfigDict(dict(
      flip_prob=0.5,
      noise_std=0.01,
      occlusion_prob=0.5,
      joint_drop_prob=0.1,
      limb_drop_prob=0.1,
      limbs=('left_arm', 'right_arm', 'left_leg', 'right_leg', 'head'),
      rectangle_prob=0.2,
      rectangle_size=(0.2, 0.5),
      occluded_coordinates='zero',
      jitter_std=0.1,
      min_visible=4,
  ))
  if preset == 'none':
    config.flip_prob = 0.0
    config.noise_std = 0.0
    config.occlusion_prob = 0.0
  elif preset != 'default':
    raise ValueError(f"unknown augment preset {preset!r}: expected 'default' or 'none'")
  return config


def limb_mask(limb_names: Sequence[str],
              joint_names: Sequence[str] = skeleton.H36M_JOINT_NAMES) -> np.ndarray:
  """[L, J] bool: row l marks the joints of limb `limb_names[l]`."""
  unknown = [name for name in limb_names if name not in LIMBS]
  if unknown:
    raise ValueError(f'unknown limbs {unknown}; known: {sorted(LIMBS)}')
  mask = np.zeros((len(limb_names), len(joint_names)), bool)
  for row, name in enumerate(limb_names):
    mask[row, [joint_names.index(joint) for joint in LIMBS[name]]] = True
  return mask


# --------------------------------------------------------------------------------------
# Flip.


def flip_points(points: np.ndarray, permutation: np.ndarray, flip: np.ndarray) -> np.ndarray:
  """Mirrors the samples where `flip` is set: negates x and swaps left/right points.

  Args:
    points: [N, K, C] (C = 2 screen-normalized, or 3 camera coordinates).
    permutation: [K] left/right permutation of this level (`Hierarchy.flip_permutations`).
    flip: [N] bool.
  Returns:
    [N, K, C], unflipped samples unchanged.
  """
  chex.assert_rank(points, 3)
  chex.assert_shape(permutation, (points.shape[1],))
  chex.assert_shape(flip, (points.shape[0],))
  mirrored = np.take(points, permutation, axis=1)  # A copy.
  mirrored[..., 0] *= -1
  return np.where(flip[:, None, None], mirrored, points)


# --------------------------------------------------------------------------------------
# Noise.


def add_noise(rng: np.random.Generator, points: np.ndarray, box_half_size: np.ndarray,
              noise_std: float) -> np.ndarray:
  """Detector-like Gaussian noise: std = `noise_std` * bounding-box longer side.

  Args:
    rng: random generator.
    points: [N, J, 2].
    box_half_size: [N] half the longer side of each sample's bounding box.
    noise_std: fraction of the box's longer side.
  Returns:
    [N, J, 2] noised points.
  """
  chex.assert_rank(points, 3)
  chex.assert_shape(box_half_size, (points.shape[0],))
  std = noise_std * 2.0 * box_half_size
  noise = rng.standard_normal(points.shape).astype(points.dtype)
  return points + noise * std[:, None, None].astype(points.dtype)


# --------------------------------------------------------------------------------------
# Occlusion masks: [N, J] bool, True = hidden by augmentation.


def random_joint_occlusion(rng: np.random.Generator, shape: tuple[int, int],
                           drop_prob: float) -> np.ndarray:
  """[N, J] bool: each joint hidden independently with probability `drop_prob`."""
  return rng.random(shape) < drop_prob


def random_limb_occlusion(rng: np.random.Generator, num_samples: int, limbs: np.ndarray,
                          drop_prob: float) -> np.ndarray:
  """[N, J] bool: each limb (row of `limbs` [L, J]) hidden with probability `drop_prob`."""
  chex.assert_rank(limbs, 2)
  dropped = rng.random((num_samples, limbs.shape[0])) < drop_prob  # [N, L]
  return (dropped[:, :, None] & limbs[None]).any(axis=1)


def choose_k(rng: np.random.Generator, num_samples: int, num_items: int,
             k: int) -> np.ndarray:
  """[N, M] bool with exactly `k` distinct items chosen uniformly per row."""
  if not 0 <= k <= num_items:
    raise ValueError(f'cannot choose {k} of {num_items} items')
  order = np.argsort(rng.random((num_samples, num_items)), axis=-1)
  chosen = np.zeros((num_samples, num_items), bool)
  np.put_along_axis(chosen, order[:, :k], True, axis=-1)
  return chosen


def rectangle_occlusion(rng: np.random.Generator, points: np.ndarray, box_center: np.ndarray,
                        box_half_size: np.ndarray, size_range: Sequence[float]) -> np.ndarray:
  """[N, J] bool: the joints inside one random axis-aligned rectangle per sample.

  Args:
    rng: random generator.
    points: [N, J, 2].
    box_center: [N, 2] bounding-box centre.
    box_half_size: [N] half the box's longer side.
    size_range: (min, max) rectangle side as a fraction of the box's longer side.
  """
  chex.assert_rank(points, 3)
  num_samples = points.shape[0]
  chex.assert_shape(box_center, (num_samples, 2))
  chex.assert_shape(box_half_size, (num_samples,))
  low, high = size_range
  half = box_half_size[:, None]
  center = box_center + rng.uniform(-1.0, 1.0, (num_samples, 2)) * half
  half_sides = rng.uniform(low, high, (num_samples, 2)) * half  # side = frac * 2 * half
  return np.all(np.abs(points - center[:, None, :]) <= half_sides[:, None, :], axis=-1)


def keep_min_visible(rng: np.random.Generator, occluded: np.ndarray, available: np.ndarray,
                     min_visible: int) -> np.ndarray:
  """Restores random occluded joints so each sample keeps `min_visible` visible ones.

  A joint is visible when available (confidence > 0 in the source) and not occluded.
  Samples with fewer than `min_visible` available joints keep all of them.

  Args:
    rng: random generator.
    occluded: [N, J] bool occlusion mask.
    available: [N, J] bool.
    min_visible: required number of visible joints.
  Returns:
    [N, J] bool occlusion mask with occluded & available joints restored as needed.
  """
  chex.assert_equal_shape([occluded, available])
  visible = available & ~occluded
  target = np.minimum(np.maximum(visible.sum(-1), min_visible), available.sum(-1))
  # Visible joints rank first, then occluded available ones in random order, then the
  # unavailable ones; the first `target` of each row are visible afterwards.
  priority = np.where(visible, 0.0,
                      np.where(available, 1.0 + rng.random(occluded.shape), 3.0))
  rank = np.argsort(np.argsort(priority, axis=-1, kind='stable'), axis=-1)
  return occluded & ~(rank < target[:, None])


def training_occlusion(rng: np.random.Generator, points: np.ndarray, available: np.ndarray,
                       box_center: np.ndarray, box_half_size: np.ndarray, *,
                       occlusion_prob: float, joint_drop_prob: float, limb_drop_prob: float,
                       limbs: Sequence[str], rectangle_prob: float,
                       rectangle_size: Sequence[float], min_visible: int) -> np.ndarray:
  """The training occlusion mask: random joints, limbs and a rectangle (see config).

  Args:
    rng: random generator.
    points: [N, J, 2] input joints (same frame as the box).
    available: [N, J] bool, joints present in the source.
    box_center, box_half_size: [N, 2], [N] the input's bounding box.
    occlusion_prob ... min_visible: see `default_augment_config`.
  Returns:
    [N, J] bool, True where an available joint is hidden (never an unavailable one).
  """
  num_samples, num_joints = available.shape
  chex.assert_shape(points, (num_samples, num_joints, 2))
  applies = rng.random(num_samples) < occlusion_prob
  occluded = random_joint_occlusion(rng, (num_samples, num_joints), joint_drop_prob)
  if limbs:
    occluded |= random_limb_occlusion(rng, num_samples, limb_mask(limbs), limb_drop_prob)
  with_rectangle = rng.random(num_samples) < rectangle_prob
  occluded |= with_rectangle[:, None] & rectangle_occlusion(
      rng, points, box_center, box_half_size, rectangle_size)
  occluded &= applies[:, None] & available
  return keep_min_visible(rng, occluded, available, min_visible)


def level_occlusion(rng: np.random.Generator, level: str, available: np.ndarray,
                    min_visible: int = 1) -> np.ndarray:
  """An evaluation occlusion level (`OCCLUSION_LEVELS`) as an [N, J] bool mask.

  'one_limb'/'two_limbs' hide one/two distinct limbs of `EVAL_LIMBS`; 'random_30' hides
  round(30% of J) distinct joints. Unavailable joints are never marked, and
  `min_visible` (default 1, so the model frame exists) guards inputs that already miss
  joints in the source.

  Args:
    rng: random generator.
    level: a key of `OCCLUSION_LEVELS`.
    available: [N, J] bool.
    min_visible: see `keep_min_visible`.
  """
  if level not in OCCLUSION_LEVELS:
    raise ValueError(f'unknown occlusion level {level!r}; known: {list(OCCLUSION_LEVELS)}')
  num_limbs, fraction = OCCLUSION_LEVELS[level]
  num_samples, num_joints = available.shape
  limbs = limb_mask(EVAL_LIMBS)
  chosen_limbs = choose_k(rng, num_samples, len(EVAL_LIMBS), num_limbs)  # [N, L]
  occluded = (chosen_limbs[:, :, None] & limbs[None]).any(axis=1)
  occluded |= choose_k(rng, num_samples, num_joints, int(round(fraction * num_joints)))
  return keep_min_visible(rng, occluded & available, available, min_visible)


# --------------------------------------------------------------------------------------
# Coordinates of hidden joints.


def hide_coordinates(points: np.ndarray, occluded: np.ndarray, missing: np.ndarray,
                     mode: str, jitter_std: float, jitter_normal: np.ndarray) -> np.ndarray:
  """Replaces the coordinates of hidden joints, in the model frame.

  Args:
    points: [N, J, 2] model-frame input.
    occluded: [N, J] bool, hidden by augmentation.
    missing: [N, J] bool, absent in the source (always zeroed).
    mode: 'zero' or 'jitter' (true position + `jitter_std` * `jitter_normal`).
    jitter_std: model-frame units (bounding-box half side = 1).
    jitter_normal: [N, J, 2] standard-normal draws (used by 'jitter').
  Returns:
    [N, J, 2].
  """
  chex.assert_equal_shape([points, jitter_normal])
  chex.assert_equal_shape([occluded, missing, points[..., 0]])
  if mode == 'zero':
    hidden = points * 0
  elif mode == 'jitter':
    hidden = points + jitter_std * jitter_normal.astype(points.dtype)
  else:
    raise ValueError(f'occluded_coordinates must be one of {OCCLUDED_COORDINATE_MODES}, '
                     f'got {mode!r}')
  out = np.where(occluded[..., None], hidden, points)
  return np.where(missing[..., None], 0, out).astype(points.dtype)


# --------------------------------------------------------------------------------------
# A whole training batch.


def augment_batch(rng: np.random.Generator, arrays: dict[str, np.ndarray],
                  flip_permutations: Sequence[np.ndarray] | None,
                  config: ml_collections.ConfigDict) -> tuple[dict[str, np.ndarray],
                                                              np.ndarray]:
  """Training augmentation of a screen-space batch: flip, input noise, input occlusion.

  The flip mirrors every level (input, 2D and 3D ground truth, left/right swapped); noise
  and occlusion touch only the input. Noise and rectangle sizes use the input's box
  before noise.

  Args:
    rng: random generator (the only source of randomness).
    arrays: leading dim N: `inputs_2d` [N, S, 2] screen-normalized, `inputs_confidence`
      [N, S], `<level>_2d` [N, K, 2] screen-normalized and `<level>_3d` [N, K, 3]
      root-relative camera coordinates for each of `skeleton.LEVELS`; other keys pass through.
    flip_permutations: (sparse [S], dense [D], fine [F]) or None when flips are off.
    config: the augment config (`default_augment_config`).
  Returns:
    (augmented arrays, with occluded joints' confidence 0; occluded [N, S] bool, never
    set on joints whose source confidence is 0).
  """
  out = dict(arrays)
  flip = rng.random(out['inputs_2d'].shape[0]) < config.flip_prob
  if flip_permutations is not None and flip.any():
    sparse_perm = flip_permutations[0]
    out['inputs_2d'] = flip_points(out['inputs_2d'], sparse_perm, flip)
    out['inputs_confidence'] = np.where(flip[:, None], out['inputs_confidence'][:, sparse_perm],
                                        out['inputs_confidence'])
    for level, perm in zip(skeleton.LEVELS, flip_permutations):
      for dim in (2, 3):
        out[f'{level}_{dim}d'] = flip_points(out[f'{level}_{dim}d'], perm, flip)
  confidence = out['inputs_confidence']
  box_center, box_half_size = geometry.normalization_frame(out['inputs_2d'], confidence)
  if config.noise_std > 0:
    out['inputs_2d'] = add_noise(rng, out['inputs_2d'], box_half_size, config.noise_std)
  occluded = training_occlusion(
      rng, out['inputs_2d'], confidence > 0, box_center, box_half_size,
      occlusion_prob=config.occlusion_prob, joint_drop_prob=config.joint_drop_prob,
      limb_drop_prob=config.limb_drop_prob, limbs=tuple(config.limbs),
      rectangle_prob=config.rectangle_prob, rectangle_size=tuple(config.rectangle_size),
      min_visible=config.min_visible)
  out['inputs_confidence'] = np.where(occluded, 0, confidence).astype(np.float32)
  return out, occluded
