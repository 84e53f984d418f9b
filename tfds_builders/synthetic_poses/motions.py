"""Procedural motions: smooth anatomical joint angles and root trajectories per action.

Each action is a small periodic program of the time t (seconds) with random amplitudes,
frequencies, phases and active side, plus smooth noise (sums of slow sinusoids) on every
degree of freedom, clipped to `body.JOINT_LIMITS`. The root moves on the ground plane
(z up); its height is set later by putting the lower ankle at a fixed height above
the ground.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import body as body_lib

ACTIONS = ('walk', 'wave', 'squat', 'reach', 'kick', 'turn')
FLEXION, ABDUCTION, TWIST = body_lib.FLEXION, body_lib.ABDUCTION, body_lib.TWIST
# Body parts moved by each limb's joint, by limb name.
_LIMB_PART = {'thigh': 'knee', 'shin': 'ankle', 'clavicle': 'shoulder',
              'upper_arm': 'elbow', 'forearm': 'wrist'}


@dataclasses.dataclass(frozen=True)
class MotionParams:
  """Variation shared by all actions.

  Attributes:
    noise_amplitude: std-like amplitude of the smooth noise per degree of freedom, rad.
    noise_frequency: (low, high) frequencies of the noise sinusoids, Hz.
    noise_terms: sinusoids per degree of freedom.
    amplitude: (low, high) scale of each action's main movement.
    speed: (low, high) scale of each action's main frequency.
    area_radius: stationary actions stand within this distance of the origin, meters.
    tilt: max pelvis pitch/roll, radians.
  """

  noise_amplitude: float = 0.06
  noise_frequency: tuple[float, float] = (0.1, 0.7)
  noise_terms: int = 3
  amplitude: tuple[float, float] = (0.7, 1.2)
  speed: tuple[float, float] = (0.8, 1.25)
  area_radius: float = 1.0
  tilt: float = 0.08


@dataclasses.dataclass(frozen=True)
class Motion:
  """One sequence's motion at the sampled times.

  Attributes:
    root_position: [T, 3] pelvis position on the ground plane (z = 0), meters.
    root_orientation: [T, 3, 3] body frame (right, forward, up) in world.
    angles: [T, 17, 3] anatomical angles, clipped to the joint limits.
  """

  root_position: np.ndarray
  root_orientation: np.ndarray
  angles: np.ndarray


class _Pose:
  """Angle tracks [T, 17, 3] addressed by part names, e.g. pose.add('l', 'thigh', ...)."""

  def __init__(self, num_frames: int):
    self.angles = np.zeros((num_frames, len(body_lib.NAMES), 3))

  def add(self, side: str | None, limb: str, dof: int, value) -> None:
    name = limb if side is None else f'{side}_{_LIMB_PART[limb]}'
    self.angles[:, body_lib.NAMES.index(name), dof] += value


def _other(side: str) -> str:
  return 'r' if side == 'l' else 'l'


def _neutral(pose: _Pose) -> None:
  """Relaxed standing: arms slightly out, elbows and knees slightly bent."""
  for side in 'lr':
    pose.add(side, 'upper_arm', ABDUCTION, 0.15)
    pose.add(side, 'forearm', FLEXION, 0.25)
    pose.add(side, 'shin', FLEXION, -0.05)


def _walk(pose, t, rng, amp, speed):
  """Walking on a circle; returns (root xy [T, 2], yaw [T])."""
  phase = 2 * np.pi * rng.uniform(0.8, 1.0) * speed * t + rng.uniform(0, 2 * np.pi)
  for side, shift in (('r', 0.0), ('l', np.pi)):
    swing = np.sin(phase + shift)
    pose.add(side, 'thigh', FLEXION, 0.1 + 0.4 * amp * swing)
    pose.add(side, 'shin', FLEXION, -0.1 - 0.6 * amp * (0.5 + 0.5 * np.sin(phase + shift + 1.2)))
    pose.add(side, 'upper_arm', FLEXION, -0.3 * amp * swing)
    pose.add(side, 'forearm', FLEXION, 0.2 + 0.15 * amp * (1 - swing))
  pose.add(None, 'thorax', TWIST, 0.12 * amp * np.sin(phase))
  radius = rng.uniform(1.0, 1.6)
  direction = rng.choice([-1.0, 1.0])
  angle = rng.uniform(0, 2 * np.pi) + direction * rng.uniform(0.8, 1.3) * speed * t / radius
  xy = radius * np.stack([np.cos(angle), np.sin(angle)], -1)
  # Facing the direction of travel: forward (0, 1) rotated by yaw is (-sin, cos).
  yaw = angle + (0.0 if direction > 0 else np.pi)
  return xy, yaw


def _wave(pose, t, rng, amp, speed):
  side = rng.choice(['l', 'r'])
  phase = 2 * np.pi * rng.uniform(1.2, 1.8) * speed * t + rng.uniform(0, 2 * np.pi)
  pose.add(side, 'upper_arm', ABDUCTION, rng.uniform(1.6, 2.4))
  pose.add(side, 'upper_arm', FLEXION, rng.uniform(0.0, 0.6))
  pose.add(side, 'upper_arm', TWIST, 0.4 * amp * np.sin(phase))
  pose.add(side, 'forearm', FLEXION, 0.8 + 0.5 * amp * np.sin(phase))
  pose.add(side, 'forearm', TWIST, 0.6 * amp * np.cos(phase))
  pose.add(None, 'spine', ABDUCTION, 0.05 * np.sin(phase / 3))
  pose.add(None, 'neck_nose', TWIST, rng.uniform(-0.4, 0.4))
  return None


def _squat(pose, t, rng, amp, speed):
  phase = 2 * np.pi * rng.uniform(0.25, 0.45) * speed * t + rng.uniform(0, 2 * np.pi)
  depth = np.clip(amp, 0, 1) * (0.5 - 0.5 * np.cos(phase))
  for side in 'lr':
    pose.add(side, 'thigh', FLEXION, 1.6 * depth)
    pose.add(side, 'thigh', ABDUCTION, 0.2 * depth)
    pose.add(side, 'shin', FLEXION, -2.1 * depth)
    pose.add(side, 'upper_arm', FLEXION, 1.3 * depth)
    pose.add(side, 'forearm', FLEXION, 0.4 * depth)
  pose.add(None, 'spine', FLEXION, 0.5 * depth)
  pose.add(None, 'neck_nose', FLEXION, -0.3 * depth)
  return None


def _reach(pose, t, rng, amp, speed):
  side = rng.choice(['l', 'r'])
  phase = 2 * np.pi * rng.uniform(0.3, 0.6) * speed * t + rng.uniform(0, 2 * np.pi)
  out = 0.5 - 0.5 * np.cos(phase)
  pose.add(side, 'upper_arm', FLEXION, rng.uniform(0.8, 2.2) * amp * out)
  pose.add(side, 'upper_arm', ABDUCTION, rng.uniform(0.0, 0.8) * out)
  pose.add(side, 'upper_arm', TWIST, rng.uniform(-0.8, 0.8) * out)
  pose.add(side, 'forearm', FLEXION, 1.3 * (1 - out))
  pose.add(side, 'forearm', TWIST, rng.uniform(-1.2, 1.2) * out)
  pose.add(side, 'clavicle', FLEXION, 0.2 * out)
  pose.add(None, 'spine', FLEXION, rng.uniform(0.0, 0.5) * out)
  pose.add(None, 'thorax', TWIST, (0.3 if side == 'r' else -0.3) * out)
  return None


def _kick(pose, t, rng, amp, speed):
  side = rng.choice(['l', 'r'])
  phase = 2 * np.pi * rng.uniform(0.5, 0.8) * speed * t + rng.uniform(0, 2 * np.pi)
  lift = np.maximum(0.0, np.sin(phase)) ** 2
  pose.add(side, 'thigh', FLEXION, 1.3 * amp * lift)
  pose.add(side, 'shin', FLEXION, -4.4 * lift * (1 - lift))  # Bends to -1.1, then extends.
  pose.add(_other(side), 'shin', FLEXION, -0.15 * lift)
  for arm in 'lr':
    pose.add(arm, 'upper_arm', ABDUCTION, 0.4 + 0.2 * lift)
  pose.add(_other(side), 'upper_arm', FLEXION, 0.5 * lift)
  pose.add(None, 'spine', FLEXION, -0.2 * lift)
  return None


def _turn(pose, t, rng, amp, speed):
  """Turning on the spot; returns (root xy [T, 2], yaw [T])."""
  rate = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0) * speed
  step = 2 * np.pi * rng.uniform(0.8, 1.1) * speed * t
  for side, shift in (('r', 0.0), ('l', np.pi)):
    pose.add(side, 'thigh', FLEXION, 0.3 * amp * np.maximum(0.0, np.sin(step + shift)))
    pose.add(side, 'shin', FLEXION, -0.5 * amp * np.maximum(0.0, np.sin(step + shift)))
    pose.add(side, 'upper_arm', ABDUCTION, rng.uniform(0.4, 1.3))
  pose.add(None, 'thorax', TWIST, -0.15 * np.sign(rate) * (1 + np.sin(step / 2)))
  return None, rng.uniform(0, 2 * np.pi) + rate * t


_PROGRAMS = {'walk': _walk, 'wave': _wave, 'squat': _squat, 'reach': _reach,
             'kick': _kick, 'turn': _turn}


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, shape: tuple[int, ...],
                  params: MotionParams) -> np.ndarray:
  """[T, *shape] sums of random slow sinusoids with amplitude ~`noise_amplitude`."""
  terms = (params.noise_terms,) + shape
  freq = rng.uniform(*params.noise_frequency, size=terms)
  phase = rng.uniform(0, 2 * np.pi, size=terms)
  weight = rng.normal(size=terms) * params.noise_amplitude / np.sqrt(params.noise_terms)
  waves = np.sin(2 * np.pi * freq * t.reshape((-1, 1) + (1,) * len(shape)) + phase)
  return np.sum(weight * waves, axis=1)


def sample_motion(rng: np.random.Generator, action: str, times: np.ndarray,
                  params: MotionParams = MotionParams()) -> Motion:
  """One random sequence of `action` evaluated at `times` [T] seconds."""
  if action not in _PROGRAMS:
    raise ValueError(f'unknown action {action!r}; expected one of {ACTIONS}')
  t = np.asarray(times, np.float64)
  pose = _Pose(len(t))
  _neutral(pose)
  amp = rng.uniform(*params.amplitude)
  speed = rng.uniform(*params.speed)
  result = _PROGRAMS[action](pose, t, rng, amp, speed)
  xy, yaw = result if result is not None else (None, None)
  if xy is None:
    radius = params.area_radius * np.sqrt(rng.uniform())
    angle = rng.uniform(0, 2 * np.pi)
    xy = np.broadcast_to(radius * np.array([np.cos(angle), np.sin(angle)]), (len(t), 2))
  if yaw is None:
    yaw = rng.uniform(0, 2 * np.pi) + _smooth_noise(rng, t, (), params) * 3
  angles = body_lib.clip_to_limits(pose.angles + _smooth_noise(rng, t, pose.angles.shape[1:],
                                                               params))
  tilt = np.clip(_smooth_noise(rng, t, (2,), params), -params.tilt, params.tilt)
  orientation = (body_lib.axis_rotation(2, yaw) @ body_lib.axis_rotation(0, tilt[:, 0])
                 @ body_lib.axis_rotation(1, tilt[:, 1]))
  position = np.concatenate([xy, np.zeros((len(t), 1))], axis=-1)
  return Motion(position, orientation, angles)
