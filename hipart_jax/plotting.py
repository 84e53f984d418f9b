"""Figures of HiPART's inputs and outputs: a 2D hierarchy over its input joints, and
3D skeletons on equal axes. Needs matplotlib (the `viz` extra); without it `pyplot`
returns None and callers write no figures."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from hipart_jax import skeleton

# Marker sizes of the generated levels, coarse to fine.
LEVEL_MARKER_SIZE = {'sparse': 18.0, 'dense': 8.0, 'fine': 3.0}
BONES = tuple((j, p) for j, p in enumerate(skeleton.H36M_PARENTS) if p >= 0)


def pyplot() -> Any | None:
  """matplotlib's pyplot on the file-only Agg backend, or None (logged) without it."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning('matplotlib is not installed (the viz extra): no figures.')
    return None
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def draw_hierarchy_2d(axes: Any, keypoints: np.ndarray, confidence: np.ndarray,
                      levels: Mapping[str, np.ndarray],
                      image_size: Sequence[float] | None = None) -> None:
  """The input joints (visible ones, with their bones) and generated points, in pixels.

  Args:
    axes: a 2D matplotlib axes.
    keypoints: [17, 2] input joints; confidence: [17] (0: not drawn).
    levels: {'sparse': [S, 2], 'dense': [D, 2], 'fine': [F, 2]}, any subset.
    image_size: (width, height): the axes span the image; None: the points.
  """
  for level in skeleton.LEVELS:
    if level in levels:
      points = levels[level]
      axes.scatter(points[:, 0], points[:, 1], s=LEVEL_MARKER_SIZE[level],
                   label=f'generated {level}', alpha=0.6)
  visible = np.asarray(confidence) > 0
  for j, p in BONES:
    if visible[j] and visible[p]:
      axes.plot(keypoints[[j, p], 0], keypoints[[j, p], 1], 'k-', linewidth=1)
  axes.scatter(keypoints[visible, 0], keypoints[visible, 1], c='k', s=10, label='input')
  if image_size is not None:
    axes.set_xlim(0, image_size[0])
    axes.set_ylim(image_size[1], 0)
  else:
    axes.invert_yaxis()  # Image rows grow downwards.
  axes.set_aspect('equal')


def draw_skeletons_3d(axes: Any, poses: Sequence[tuple[np.ndarray, str, float]]) -> None:
  """Root-relative 3D skeletons on equal axes around the root.

  Camera axes (x right, y down, z forward) are drawn with y up: plot (x, z, -y).

  Args:
    axes: a matplotlib axes with projection='3d'.
    poses: (pose [17, 3] meters, color, line width) per skeleton.
  """
  for pose, color, width in poses:
    for j, p in BONES:
      axes.plot(pose[[j, p], 0], pose[[j, p], 2], -pose[[j, p], 1], color=color,
                linewidth=width)
  extent = max(max(float(np.abs(pose).max()) for pose, _, _ in poses), 1e-3)
  for set_limits in (axes.set_xlim, axes.set_ylim, axes.set_zlim):
    set_limits(-extent, extent)
  axes.set_box_aspect((1, 1, 1))
  axes.set_xlabel('x (m)')
  axes.set_ylabel('z (m)')
  axes.set_zlabel('-y (m)')
