"""Figures of lifted poses: input joints and one generated hierarchy in 2D, hypotheses
and a reference skeleton in 3D.

The geometry (covariance ellipses of K samples, equal axis limits, the edges of the
sparse+dense hierarchy) is plain numpy. Drawing needs matplotlib (the `viz` extra);
without it `pyplot` returns None and callers write no figures.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from hipart_jax import skeleton

BONES = tuple((j, p) for j, p in enumerate(skeleton.H36M_PARENTS) if p >= 0)
# How many standard deviations the spread ellipses span (2: ~86 % of a 2D Gaussian).
ELLIPSE_SIGMAS = 2.0
ELLIPSE_POINTS = 48
# Inches per panel of `lifted_poses_figure`.
PANEL_SIZE = 4.0
# Fraction of the largest extent added around 3D skeletons.
AXIS_MARGIN = 0.05
# Smallest half range of a 3D axis (meters), so a single point still gets a box.
MIN_HALF_RANGE = 1e-3
SUMMARIES = ('mean', 'first')

VISIBLE_STYLE = dict(c='k', s=16, marker='o', zorder=4)
HIDDEN_STYLE = dict(facecolors='none', edgecolors='tab:red', s=60, marker='o',
                    linewidths=1.5, zorder=5)
GENERATED_COLOR = 'tab:blue'
SPREAD_STYLE = dict(color='tab:orange', alpha=0.3, linewidth=0, zorder=1)
HYPOTHESIS_STYLE = dict(color='tab:blue', alpha=0.3, linewidth=0.8)
REFERENCE_STYLE = dict(color='k', linewidth=2.0)


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


# --------------------------------------------------------------------------------------
# Geometry.


def covariance_ellipses(samples: np.ndarray, num_sigmas: float = ELLIPSE_SIGMAS
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-point covariance ellipses of K 2D samples.

  Args:
    samples: [K, P, 2] K samples of P points (K >= 1; K = 1 gives zero-size ellipses).
    num_sigmas: the ellipse's half axes are this many standard deviations.
  Returns:
    (centers [P, 2] sample means, half_axes [P, 2] (major, minor) lengths,
     angles [P] radians from +x to the major axis, in (-pi/2, pi/2]).
  """
  samples = np.asarray(samples, np.float64)
  if samples.ndim != 3 or samples.shape[-1] != 2 or samples.shape[0] < 1:
    raise ValueError(f'samples: expected [K >= 1, P, 2], got shape {samples.shape}')
  count = samples.shape[0]
  centers = samples.mean(axis=0)
  deviations = samples - centers
  covariance = np.einsum('kpi,kpj->pij', deviations, deviations) / max(count - 1, 1)
  variances, vectors = np.linalg.eigh(covariance)  # Ascending eigenvalues.
  half_axes = num_sigmas * np.sqrt(np.clip(variances[:, ::-1], 0.0, None))
  major = vectors[:, :, 1]
  angles = np.arctan2(major[:, 1], major[:, 0])
  angles = np.where(angles <= -np.pi / 2, angles + np.pi, angles)
  angles = np.where(angles > np.pi / 2, angles - np.pi, angles)
  return centers, half_axes, angles


def ellipse_outlines(centers: np.ndarray, half_axes: np.ndarray, angles: np.ndarray,
                     num_points: int = ELLIPSE_POINTS) -> np.ndarray:
  """Closed polylines of ellipses.

  Args:
    centers: [P, 2]; half_axes: [P, 2] (major, minor); angles: [P] radians of the major
      axis from +x (as `covariance_ellipses` returns).
    num_points: vertices per ellipse before closing.
  Returns:
    [P, num_points + 1, 2] outlines, the last vertex equal to the first.
  """
  theta = np.linspace(0.0, 2 * np.pi, num_points + 1)
  local = np.stack([np.cos(theta), np.sin(theta)], -1)  # [N, 2] unit circle.
  local = local[None] * np.asarray(half_axes)[:, None, :]
  cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
  x = cos * local[..., 0] - sin * local[..., 1]
  y = sin * local[..., 0] + cos * local[..., 1]
  return np.stack([x, y], -1) + np.asarray(centers)[:, None, :]


def equal_axis_limits(points: np.ndarray, margin: float = AXIS_MARGIN,
                      min_half_range: float = MIN_HALF_RANGE) -> np.ndarray:
  """Axis limits with the same range on every axis, centered on the points' extent.

  Args:
    points: [..., C] points (any leading shape, at least one point).
    margin: fraction of the largest extent added on each side.
    min_half_range: smallest half range (for a single point or a flat set).
  Returns:
    [C, 2] (low, high) per axis; every high - low is the same.
  """
  points = np.asarray(points, np.float64)
  flat = points.reshape(-1, points.shape[-1])
  if not flat.size or not np.all(np.isfinite(flat)):
    raise ValueError(f'points: expected at least one finite point, got shape '
                     f'{points.shape} with {int(np.sum(~np.isfinite(flat)))} non-finite')
  low, high = flat.min(axis=0), flat.max(axis=0)
  half = max(float((high - low).max()) / 2 * (1 + 2 * margin), min_half_range)
  middle = (low + high) / 2
  return np.stack([middle - half, middle + half], -1)


def hierarchy_edges(hierarchy: skeleton.Hierarchy) -> np.ndarray:
  """Edges of the sparse+dense skeleton, indexing `concatenate([sparse, dense])`.

  The dense points of part j sit along its bone parent(j) -> j in group order
  (docs/DESIGN.md §2), so each bone is drawn as the polyline parent, its dense points,
  j; a root part's dense points hang off the root joint.

  Returns:
    [E, 2] int pairs; indices < S are sparse joints, S + k is dense point k.
  """
  members, mask = hierarchy.dense_groups
  edges = []
  for part, parent in enumerate(hierarchy.parents):
    dense = (members[part][mask[part]] + hierarchy.num_sparse).tolist()
    chain = [part] + dense if parent < 0 else [parent] + dense + [part]
    edges += list(zip(chain[:-1], chain[1:]))
  return np.asarray(edges, np.int32).reshape(-1, 2)


# --------------------------------------------------------------------------------------
# Drawing.


@dataclasses.dataclass(frozen=True)
class LiftedPose:
  """One lifted pose's arrays, as `lifted_poses_figure` draws them.

  Attributes:
    keypoints: [17, 2] input joints, pixels.
    visible: [17] bool, the joints the model was given.
    pose_3d: [17, 3] meters, root-relative camera axes: the bold 3D skeleton.
    pose_3d_label: what `pose_3d` is ('ground truth', 'mean prediction').
    generated: {level: [K, P, 2] pixels} the K generated hierarchies, any subset of
      skeleton.LEVELS; empty for a lifter without one.
    hypotheses_3d: [K, 17, 3] meters, or None.
    hidden_truth_known: True: `keypoints` holds the hidden joints' true positions and
      they are marked there; False: they are marked at the drawn hierarchy's joints.
    image_size: (width, height): the 2D axes span the image; None: the points.
    title: panel title prefix, e.g. 'pose 0'.
  """

  keypoints: np.ndarray
  visible: np.ndarray
  pose_3d: np.ndarray
  pose_3d_label: str
  generated: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  hypotheses_3d: np.ndarray | None = None
  hidden_truth_known: bool = False
  image_size: Sequence[float] | None = None
  title: str = ''

  def __post_init__(self):
    expected = dict(keypoints=(skeleton.NUM_JOINTS, 2), visible=(skeleton.NUM_JOINTS,),
                    pose_3d=(skeleton.NUM_JOINTS, 3))
    for name, shape in expected.items():
      if np.shape(getattr(self, name)) != shape:
        raise ValueError(f'LiftedPose.{name}: expected shape {shape}, got '
                         f'{np.shape(getattr(self, name))}')
    for level, points in self.generated.items():
      if level not in skeleton.LEVELS or np.ndim(points) != 3 or np.shape(points)[-1] != 2:
        raise ValueError(f'LiftedPose.generated[{level!r}]: expected a level of '
                         f'{skeleton.LEVELS} with [K, P, 2] points, got {np.shape(points)}')
    if self.hypotheses_3d is not None and np.shape(self.hypotheses_3d)[1:] != (
        skeleton.NUM_JOINTS, 3):
      raise ValueError(f'LiftedPose.hypotheses_3d: expected [K, {skeleton.NUM_JOINTS}, 3], '
                       f'got {np.shape(self.hypotheses_3d)}')


def summarize_hypotheses(points: np.ndarray, summary: str) -> np.ndarray:
  """[K, P, C] hypotheses -> [P, C]: their mean, or the first one."""
  if summary not in SUMMARIES:
    raise ValueError(f'summary={summary!r}; expected one of {SUMMARIES}')
  points = np.asarray(points)
  return points.mean(axis=0) if summary == 'mean' else points[0]


def summary_words(summary: str, count: int) -> str:
  """Title words for `summarize_hypotheses(summary)` of `count` hypotheses."""
  if count == 1:
    return 'one hypothesis' if summary == 'mean' else 'first hypothesis'
  return f'{summary} of {count} hypotheses'


def draw_inputs_and_hierarchy_2d(axes: Any, pose: LiftedPose,
                                 hierarchy: skeleton.Hierarchy | None,
                                 summary: str = 'mean') -> str:
  """Input joints, one generated hierarchy as a skeleton and the sparse joints' spread.

  Visible inputs are filled black dots, hidden ones hollow red circles; the hierarchy
  (`summary` of the K hypotheses) is a blue skeleton through its sparse and dense points
  with its fine points as dots; orange ellipses span ELLIPSE_SIGMAS standard deviations
  of the K generated sparse joints.

  Args:
    axes: a 2D matplotlib axes.
    pose: the arrays; pose.generated's sparse and dense levels must share K.
    hierarchy: the hierarchy whose dense points pose.generated['dense'] holds (None
      where the pose has no dense level).
    summary: 'mean' or 'first' (`summarize_hypotheses`).
  Returns:
    The summary's title words, e.g. 'mean of 8 hypotheses' ('' without a hierarchy).
  """
  visible = np.asarray(pose.visible, bool)
  keypoints = np.asarray(pose.keypoints, np.float64)
  drawn = [keypoints[visible]]
  hidden_at = keypoints[~visible] if pose.hidden_truth_known else None
  words = ''
  if 'sparse' in pose.generated:
    sparse = np.asarray(pose.generated['sparse'])
    words = summary_words(summary, len(sparse))
    joints = summarize_hypotheses(sparse, summary)
    points = joints
    edges = np.asarray(BONES)
    if 'dense' in pose.generated:
      dense = summarize_hypotheses(pose.generated['dense'], summary)
      if hierarchy is None or len(dense) != hierarchy.num_dense:
        raise ValueError(f'pose.generated["dense"] has {len(dense)} points; the hierarchy '
                         f'has {hierarchy and hierarchy.num_dense}')
      points, edges = np.concatenate([joints, dense]), hierarchy_edges(hierarchy)
    label = f'generated hierarchy ({words})'
    for a, b in edges:
      axes.plot(points[[a, b], 0], points[[a, b], 1], color=GENERATED_COLOR,
                linewidth=1.2, label=label, zorder=2)
      label = None
    axes.scatter(points[:, 0], points[:, 1], color=GENERATED_COLOR, s=6, zorder=3)
    if 'fine' in pose.generated:
      fine = summarize_hypotheses(pose.generated['fine'], summary)
      axes.scatter(fine[:, 0], fine[:, 1], color=GENERATED_COLOR, s=2, alpha=0.6, zorder=3)
    drawn.append(points)
    if len(sparse) > 1:
      outlines = ellipse_outlines(*covariance_ellipses(sparse))
      label = f'{ELLIPSE_SIGMAS:g}-sigma spread of {len(sparse)} hypotheses'
      for outline in outlines:
        axes.fill(outline[:, 0], outline[:, 1], label=label, **SPREAD_STYLE)
        label = None
      drawn.append(outlines.reshape(-1, 2))
    if hidden_at is None:
      hidden_at = joints[~visible]
  else:
    for j, p in BONES:  # Without a hierarchy the input's own bones give the pose.
      if visible[j] and visible[p]:
        axes.plot(keypoints[[j, p], 0], keypoints[[j, p], 1], 'k-', linewidth=1)
  axes.scatter(keypoints[visible, 0], keypoints[visible, 1], label='visible input joint',
               **VISIBLE_STYLE)
  if hidden_at is not None and len(hidden_at):
    where = 'true position' if pose.hidden_truth_known else 'at its generated position'
    axes.scatter(hidden_at[:, 0], hidden_at[:, 1], label=f'hidden input joint ({where})',
                 **HIDDEN_STYLE)
    drawn.append(hidden_at)
  if pose.image_size is not None:
    axes.set_xlim(0, pose.image_size[0])
    axes.set_ylim(pose.image_size[1], 0)
  else:
    limits = equal_axis_limits(np.concatenate(drawn))
    axes.set_xlim(*limits[0])
    axes.set_ylim(limits[1][1], limits[1][0])  # Image rows grow downwards.
  axes.set_aspect('equal')
  return words


def _camera_to_plot(points: np.ndarray) -> np.ndarray:
  """Camera axes (x right, y down, z forward) -> plotted (x, z, -y), so y is up."""
  points = np.asarray(points)
  return np.stack([points[..., 0], points[..., 2], -points[..., 1]], -1)


def draw_poses_3d(axes: Any, pose: LiftedPose) -> None:
  """The K hypotheses (faint), pose.pose_3d (bold) and its hidden joints, equal axes.

  Args:
    axes: a matplotlib axes with projection='3d'.
    pose: the arrays (pose_3d, hypotheses_3d, visible).
  """
  reference = _camera_to_plot(pose.pose_3d)
  drawn = [reference]
  if pose.hypotheses_3d is not None:
    hypotheses = _camera_to_plot(pose.hypotheses_3d)
    label = f'{len(hypotheses)} hypotheses'
    for hypothesis in hypotheses:
      for j, p in BONES:
        axes.plot(*hypothesis[[j, p]].T, label=label, **HYPOTHESIS_STYLE)
        label = None
    drawn.append(hypotheses.reshape(-1, 3))
  label = pose.pose_3d_label
  for j, p in BONES:
    axes.plot(*reference[[j, p]].T, label=label, **REFERENCE_STYLE)
    label = None
  hidden = reference[~np.asarray(pose.visible, bool)]
  if len(hidden):
    axes.scatter(*hidden.T, label='hidden joints', depthshade=False, **HIDDEN_STYLE)
  limits = equal_axis_limits(np.concatenate(drawn))
  for set_limits, (low, high) in zip((axes.set_xlim, axes.set_ylim, axes.set_zlim), limits):
    set_limits(low, high)
  axes.set_box_aspect((1, 1, 1))
  axes.set_xlabel('x (m)')
  axes.set_ylabel('z (m)')
  axes.set_zlabel('-y (m)')


def lifted_poses_figure(plt: Any, poses: Sequence[LiftedPose],
                        hierarchy: skeleton.Hierarchy | None, *, summary: str = 'mean',
                        side_by_side: bool = False, legend_everywhere: bool = False) -> Any:
  """A figure of N lifted poses, a 2D and a 3D panel each.

  Args:
    plt: `pyplot()`.
    poses: N poses.
    hierarchy: the hierarchy of the poses' generated levels (None: they have no dense
      level).
    summary: which hypothesis the 2D hierarchy is ('mean', 'first').
    side_by_side: each pose's panels in a row (N rows); else stacked (N columns).
    legend_everywhere: a legend in every panel; else in the first pose's panels.
  Returns:
    The matplotlib figure (the caller saves and closes it).
  """
  if not poses:
    raise ValueError('lifted_poses_figure: no poses to draw')
  count = len(poses)
  grid = (count, 2) if side_by_side else (2, count)
  figure = plt.figure(figsize=(PANEL_SIZE * grid[1], PANEL_SIZE * grid[0]))
  for i, pose in enumerate(poses):
    first, second = (2 * i + 1, 2 * i + 2) if side_by_side else (i + 1, count + i + 1)
    flat = figure.add_subplot(*grid, first)
    words = draw_inputs_and_hierarchy_2d(flat, pose, hierarchy, summary)
    prefix = f'{pose.title}: ' if pose.title else ''
    flat.set_title(f'{prefix}input + generated hierarchy\n({words})' if words
                   else f'{prefix}input joints', fontsize=9)
    space = figure.add_subplot(*grid, second, projection='3d')
    draw_poses_3d(space, pose)
    space.set_title(f'{prefix}3D, {pose.pose_3d_label} (bold)', fontsize=9)
    if legend_everywhere or i == 0:
      flat.legend(loc='upper right', fontsize=6)
      space.legend(loc='upper right', fontsize=6)
  figure.tight_layout()
  return figure
