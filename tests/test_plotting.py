"""hipart_jax.plotting: the figure geometry, numerically, and rendered figures."""

import json
import sys

import numpy as np
import pytest

from hipart_jax import plotting
from hipart_jax import skeleton
from launch import infer

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _rotation(angle):
  return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_covariance_ellipses_recover_a_known_covariance():
  rng = np.random.default_rng(0)
  angle = np.deg2rad(30.0)
  rotation = _rotation(angle)
  covariance = rotation @ np.diag([16.0, 1.0]) @ rotation.T  # Std 4 and 1.
  mean = np.array([100.0, -20.0])
  samples = rng.multivariate_normal(mean, covariance, size=(20000, 2))  # [K, P=2, 2]
  samples[:, 1] = samples[:, 1] @ np.diag([1.0, 0.5]).T  # Second point: other shape.
  centers, half_axes, angles = plotting.covariance_ellipses(samples, num_sigmas=2.0)
  np.testing.assert_allclose(centers[0], mean, atol=0.1)
  np.testing.assert_allclose(half_axes[0], [8.0, 2.0], rtol=0.03)
  np.testing.assert_allclose(angles[0], angle, atol=0.02)
  expected = np.cov(samples[:, 1].T)
  variances = np.linalg.eigvalsh(expected)[::-1]
  np.testing.assert_allclose(half_axes[1], 2.0 * np.sqrt(variances), rtol=1e-6)
  assert np.all((-np.pi / 2 < angles) & (angles <= np.pi / 2))


def test_covariance_ellipse_of_one_sample_is_a_point_and_bad_shapes_fail():
  centers, half_axes, angles = plotting.covariance_ellipses(np.ones((1, 3, 2)))
  np.testing.assert_array_equal(centers, 1.0)
  np.testing.assert_array_equal(half_axes, 0.0)
  assert np.all(np.isfinite(angles))
  with pytest.raises(ValueError, match=r'samples: expected \[K >= 1, P, 2\]'):
    plotting.covariance_ellipses(np.ones((4, 3, 3)))


def test_ellipse_outlines_lie_on_the_mahalanobis_level_set():
  rng = np.random.default_rng(1)
  rotation = _rotation(-1.1)
  covariance = rotation @ np.diag([9.0, 0.25]) @ rotation.T
  samples = rng.multivariate_normal([3.0, 4.0], covariance, size=(50, 1))
  outlines = plotting.ellipse_outlines(*plotting.covariance_ellipses(samples, 2.0),
                                       num_points=32)
  assert outlines.shape == (1, 33, 2)
  np.testing.assert_allclose(outlines[0, 0], outlines[0, -1])
  sample_covariance = np.cov(samples[:, 0].T)
  deviation = outlines[0] - samples[:, 0].mean(axis=0)
  distance = np.einsum('ni,ij,nj->n', deviation, np.linalg.inv(sample_covariance), deviation)
  np.testing.assert_allclose(distance, 4.0, rtol=1e-6)  # (2 sigmas) ** 2


def test_equal_axis_limits_give_every_axis_the_same_range():
  rng = np.random.default_rng(2)
  points = rng.normal(size=(5, 17, 3)) * np.array([0.1, 1.0, 0.4]) + np.array([2, -1, 0])
  limits = plotting.equal_axis_limits(points, margin=0.05)
  ranges = limits[:, 1] - limits[:, 0]
  np.testing.assert_allclose(ranges, ranges[0])
  flat = points.reshape(-1, 3)
  np.testing.assert_allclose(ranges[0], (np.ptp(flat, axis=0).max()) * 1.1)
  np.testing.assert_allclose(limits.mean(axis=1), (flat.min(0) + flat.max(0)) / 2)
  assert np.all(limits[:, 0] <= flat.min(0)) and np.all(limits[:, 1] >= flat.max(0))
  single = plotting.equal_axis_limits(np.array([[1.0, 2.0, 3.0]]), min_half_range=0.5)
  np.testing.assert_allclose(single, [[0.5, 1.5], [1.5, 2.5], [2.5, 3.5]])
  with pytest.raises(ValueError, match='non-finite'):
    plotting.equal_axis_limits(np.array([[np.nan, 0.0, 0.0]]))


def test_hierarchy_edges_run_each_bone_through_its_dense_points_in_order():
  hierarchy = skeleton.default_hierarchy()
  edges = plotting.hierarchy_edges(hierarchy)
  num_nodes = hierarchy.num_sparse + hierarchy.num_dense
  assert len(edges) == num_nodes - 1  # A tree over the sparse and dense points.
  degree = np.bincount(edges.ravel(), minlength=num_nodes)
  np.testing.assert_array_equal(degree[hierarchy.num_sparse:], 2)
  # l_elbow (12) owns dense points 33, 34, 35 on the bone l_shoulder (11) -> l_elbow.
  dense = [hierarchy.num_sparse + k for k in np.flatnonzero(hierarchy.dense_part_array == 12)]
  chain = [11] + dense + [12]
  for pair in zip(chain[:-1], chain[1:]):
    assert pair in {tuple(e) for e in edges.tolist()}
  # Connected: every point reaches the root.
  reached, frontier = {0}, [0]
  while frontier:
    node = frontier.pop()
    for a, b in edges.tolist():
      for here, there in ((a, b), (b, a)):
        if here == node and there not in reached:
          reached.add(there)
          frontier.append(there)
  assert len(reached) == num_nodes


def test_lifted_pose_names_the_bad_field():
  with pytest.raises(ValueError, match=r'LiftedPose.pose_3d: expected shape \(17, 3\)'):
    plotting.LiftedPose(np.zeros((17, 2)), np.ones(17, bool), np.zeros((16, 3)), 'truth')
  with pytest.raises(ValueError, match=r"LiftedPose.generated\['coarse'\]"):
    plotting.LiftedPose(np.zeros((17, 2)), np.ones(17, bool), np.zeros((17, 3)), 'truth',
                        generated={'coarse': np.zeros((2, 17, 2))})


def test_pyplot_is_none_without_matplotlib(monkeypatch):
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # Makes the import fail.
  assert plotting.pyplot() is None


def _tiny_poses(hierarchy, count=2, num_samples=3):
  rng = np.random.default_rng(3)
  poses = []
  for i in range(count):
    sparse = rng.uniform(50, 150, (skeleton.NUM_JOINTS, 2))
    visible = np.ones(skeleton.NUM_JOINTS, bool)
    visible[11:14] = False
    generated = {
        'sparse': sparse + rng.normal(0, 3, (num_samples, skeleton.NUM_JOINTS, 2)),
        'dense': rng.uniform(50, 150, (num_samples, hierarchy.num_dense, 2)),
        'fine': rng.uniform(50, 150, (num_samples, hierarchy.num_fine, 2))}
    truth = rng.normal(0, 0.3, (skeleton.NUM_JOINTS, 3))
    poses.append(plotting.LiftedPose(
        keypoints=sparse, visible=visible, pose_3d=truth, pose_3d_label='ground truth',
        generated=generated, hidden_truth_known=True, title=f'pose {i}',
        hypotheses_3d=truth + rng.normal(0, 0.05, (num_samples, skeleton.NUM_JOINTS, 3))))
  return poses


def test_figure_renders_to_png_with_its_legend(tmp_path):
  plt = plotting.pyplot()
  if plt is None:
    pytest.skip('matplotlib (the viz extra) is not installed')
  hierarchy = skeleton.default_hierarchy()
  figure = plotting.lifted_poses_figure(plt, _tiny_poses(hierarchy), hierarchy)
  axes_2d, axes_3d = figure.axes[:2]  # Added per pose: 2D, then 3D.
  labels_2d = [t.get_text() for t in axes_2d.get_legend().get_texts()]
  assert labels_2d == ['generated hierarchy (mean of 3 hypotheses)',
                       '2-sigma spread of 3 hypotheses', 'visible input joint',
                       'hidden input joint (true position)']
  labels_3d = [t.get_text() for t in axes_3d.get_legend().get_texts()]
  assert labels_3d == ['3 hypotheses', 'ground truth', 'hidden joints']
  assert 'mean of 3 hypotheses' in axes_2d.get_title()
  limits = np.array([axes_3d.get_xlim(), axes_3d.get_ylim(), axes_3d.get_zlim()])
  ranges = limits[:, 1] - limits[:, 0]
  np.testing.assert_allclose(ranges, ranges[0])
  np.testing.assert_allclose(axes_3d.get_box_aspect() / axes_3d.get_box_aspect()[0], 1.0)
  path = tmp_path / 'figure.png'
  figure.savefig(path, dpi=40)
  plt.close(figure)
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE and data[12:16] == b'IHDR'
  width, height = int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
  assert (width, height) == (2 * 4 * 40, 2 * 4 * 40)


def test_first_hypothesis_without_dense_level_or_truth_side_by_side():
  plt = plotting.pyplot()
  if plt is None:
    pytest.skip('matplotlib (the viz extra) is not installed')
  pose = _tiny_poses(skeleton.default_hierarchy(), count=1, num_samples=1)[0]
  pose = plotting.LiftedPose(
      keypoints=pose.keypoints, visible=pose.visible, pose_3d=pose.pose_3d,
      pose_3d_label='prediction', generated={'sparse': pose.generated['sparse']},
      image_size=(200, 200))
  figure = plotting.lifted_poses_figure(plt, [pose], None, summary='first',
                                        side_by_side=True)
  axes_2d = figure.axes[0]
  labels = [t.get_text() for t in axes_2d.get_legend().get_texts()]
  # One hypothesis: no spread; hidden joints marked where the hierarchy puts them.
  assert labels == ['generated hierarchy (first hypothesis)', 'visible input joint',
                    'hidden input joint (at its generated position)']
  hidden = axes_2d.collections[-1].get_offsets()
  np.testing.assert_allclose(hidden, pose.generated['sparse'][0, 11:14])
  assert axes_2d.get_xlim() == (0, 200) and axes_2d.get_ylim() == (200, 0)
  plt.close(figure)
  with pytest.raises(ValueError, match='the hierarchy has None'):
    dense_pose = _tiny_poses(skeleton.default_hierarchy(), count=1)[0]
    plotting.lifted_poses_figure(plt, [dense_pose], None)


@pytest.mark.parametrize('hierarchical', [True, False])
def test_infer_plot_rows_writes_one_png_per_row(tmp_path, hierarchical):
  """launch/infer.py's --plot figures from its .npz arrays (hierarchical and sparse)."""
  if plotting.pyplot() is None:
    pytest.skip('matplotlib (the viz extra) is not installed')
  hierarchy = skeleton.default_hierarchy()
  pose = _tiny_poses(hierarchy, count=1)[0]
  count = 3
  arrays = dict(frame=np.arange(count), track=np.zeros(count, int),
                keypoints_2d=np.stack([pose.keypoints] * count),
                confidence=np.stack([pose.visible.astype(np.float32)] * count),
                image_size=np.tile([200, 200], (count, 1)),
                pose_3d=np.stack([pose.pose_3d] * count))
  if hierarchical:
    arrays.update({f'{level}_2d': np.stack([points[0]] * count)
                   for level, points in pose.generated.items()},
                  hypotheses_3d=np.stack([pose.hypotheses_3d] * count),
                  hierarchy=np.asarray(json.dumps(hierarchy.to_json())))
  paths = infer.plot_rows(arrays, tmp_path / 'out.npz', num_rows=2)
  assert [p.name for p in paths] == ['out_000000.png', 'out_000002.png']
  for path in paths:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
