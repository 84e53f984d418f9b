"""The `skeleton` dense source: dense and fine points along the bones (docs/DESIGN.md §2).

Every dense point of part j lies on the bone parent(j) → j, followed along that bone's
*chain* of joints of the dataset's richest skeleton (a polyline: for Human3.6M the
32-joint path, e.g. pelvis → Spine → Spine1 for the spine bone; for a 17-joint skeleton
just the two end joints). Positions are fractions of the chain's arc length, measured
from the parent end:

  * the n dense points of a part split its chain into n equal intervals and sit at the
    interval centres: fraction (i + 0.5) / n for the i-th dense point of the part;
  * the m fine points of a dense point split that dense point's interval into m equal
    sub-intervals and sit at their centres: (i + (k + 0.5) / m) / n for its k-th one.

With `skeleton.default_hierarchy()` (3 dense points per bone, 2 fine points each) the
dense points sit at 1/6, 1/2, 5/6 of each bone and the fine points at 1/12, 3/12, ...,
11/12, so the fine level refines the dense one and no two points coincide.

Arc-length fractions are turned into (segment, fraction in segment) with the sequence's
median segment lengths (motion-capture bones are rigid, so this is exact for them and
robust to noisy ones), then placed with `geometry.interpolate_bones`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hipart_jax import geometry
from hipart_jax import skeleton


def chain_fractions(hierarchy: skeleton.Hierarchy) -> tuple[np.ndarray, np.ndarray]:
  """Arc-length fractions of the dense and fine points along their part's chain.

  Args:
    hierarchy: any hierarchy whose dense points all belong to non-root parts.
  Returns:
    ([D] dense fractions, [F] fine fractions), each in (0, 1).
  """
  root_parts = [p for p in set(hierarchy.dense_part) if hierarchy.parents[p] < 0]
  if root_parts:
    raise ValueError(f'skeleton dense source: parts {root_parts} are roots (no bone), but '
                     'the hierarchy gives them dense points')
  dense_size = hierarchy.dense_group_sizes[hierarchy.dense_part_array]
  dense_start = hierarchy.dense_index_in_group() / dense_size
  dense_fraction = dense_start + 0.5 / dense_size
  parent = hierarchy.fine_parent_array
  fine_size = hierarchy.fine_group_sizes[parent]
  fine_fraction = dense_start[parent] + (
      (hierarchy.fine_index_in_group() + 0.5) / fine_size) / dense_size[parent]
  return dense_fraction.astype(np.float32), fine_fraction.astype(np.float32)


def _segments_at(chain: Sequence[int], lengths: np.ndarray, fraction: float
                 ) -> tuple[int, int, float]:
  """(start joint, end joint, fraction within the segment) at arc fraction `fraction`."""
  total = float(lengths.sum())
  if total <= 0:
    return chain[0], chain[-1], float(fraction)
  target = fraction * total
  cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
  # The last segment whose start is below the target, skipping zero-length segments.
  index = int(np.searchsorted(cumulative, target, side='left')) - 1
  index = min(max(index, 0), len(lengths) - 1)
  while lengths[index] <= 0 and index + 1 < len(lengths):
    index += 1
  local = (target - cumulative[index]) / lengths[index] if lengths[index] > 0 else 0.0
  return chain[index], chain[index + 1], float(np.clip(local, 0.0, 1.0))


def points_on_chains(joints: np.ndarray, chains: Sequence[Sequence[int]],
                     parts: np.ndarray, fractions: np.ndarray) -> np.ndarray:
  """Points at arc-length fractions along the chains of their parts.

  Args:
    joints: [T, J, 3] (or [T, J, 2]) one sequence of the richest skeleton.
    chains: for each sparse part, the joint indices (into J) of its bone's polyline,
      parent end first (at least 2 for every part in `parts`).
    parts: [P] int the part of each point.
    fractions: [P] arc-length fraction of each point along its part's chain.
  Returns:
    [T, P, C] the points.
  """
  joints = np.asarray(joints)
  if joints.ndim != 3:
    raise ValueError(f'joints: expected [T, J, C], got shape {joints.shape}')
  parts = np.asarray(parts)
  starts, ends, locals_ = [], [], []
  median_lengths = {}
  for part, fraction in zip(parts.tolist(), np.asarray(fractions).tolist()):
    chain = tuple(chains[part])
    if len(chain) < 2:
      raise ValueError(f'part {part} needs a chain of at least two joints, got {chain}')
    if part not in median_lengths:
      segments = joints[:, chain[1:]] - joints[:, chain[:-1]]
      median_lengths[part] = np.median(np.linalg.norm(segments, axis=-1), axis=0)
    start, end, local = _segments_at(chain, median_lengths[part], fraction)
    starts.append(start)
    ends.append(end)
    locals_.append(local)
  return geometry.interpolate_bones(joints, starts, ends, np.asarray(locals_, joints.dtype))


def hierarchy_points(joints: np.ndarray, chains: Sequence[Sequence[int]],
                     hierarchy: skeleton.Hierarchy) -> tuple[np.ndarray, np.ndarray]:
  """Dense and fine points of `hierarchy` for one sequence.

  Args:
    joints: [T, J, C] the richest skeleton of the sequence.
    chains: per sparse part, its bone's chain of joint indices (see `points_on_chains`).
    hierarchy: the sparse→dense→fine hierarchy.
  Returns:
    ([T, D, C] dense points, [T, F, C] fine points).
  """
  if len(chains) != hierarchy.num_sparse:
    raise ValueError(f'expected {hierarchy.num_sparse} chains (one per sparse part), got '
                     f'{len(chains)}')
  dense_fraction, fine_fraction = chain_fractions(hierarchy)
  dense = points_on_chains(joints, chains, hierarchy.dense_part_array, dense_fraction)
  fine = points_on_chains(joints, chains, hierarchy.fine_part, fine_fraction)
  return dense, fine


def two_joint_chains(parents: Sequence[int]) -> tuple[tuple[int, ...], ...]:
  """Chains of a skeleton without intermediate joints: (parent(j), j), root empty."""
  return tuple(() if p < 0 else (int(p), j) for j, p in enumerate(parents))
