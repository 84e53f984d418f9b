"""The 32-joint Human3.6M motion-capture skeleton and its 17-joint subset.

VideoPose3D-format `data_3d_h36m.npz` files keep all 32 joints of the Human3.6M
skeleton (`positions_3d[subject][action]`: [frames, 32, 3] world meters). The 17-joint
layout of `hipart_jax.skeleton` (and of every 2D file) is what VideoPose3D obtains by
removing 15 joints (toes, finger/thumb ends, end sites, the lower spine joint and the
shoulder anchors) and rewiring the shoulders:

  * removing a joint re-parents its children to the nearest kept ancestor, so the
    induced tree of the kept joints hangs the shoulders (32-joint 17, 25) from Spine1
    (32-joint 12, sparse 7) through the removed shoulder anchors 16 and 24;
  * VideoPose3D then sets the shoulders' parent to the thorax (sparse 8), where the
    shoulder anchors sit. `SHOULDER_REWIRING` records this; with it the induced tree
    equals `skeleton.H36M_PARENTS` (tested).

The `skeleton` dense source follows each sparse bone parent(j) → j along its chain in
the 32-joint tree (`bone_chains`), which passes through the removed intermediate joints
(Spine for the spine bone, the shoulder anchors for the clavicles).
"""

from __future__ import annotations

from typing import Sequence

# Joint names of the Human3.6M 32-joint skeleton ('site' = end effector).
JOINT_NAMES_32 = (
    'hips', 'right_up_leg', 'right_leg', 'right_foot', 'right_toe_base', 'right_toe_site',
    'left_up_leg', 'left_leg', 'left_foot', 'left_toe_base', 'left_toe_site', 'spine',
    'spine1', 'neck', 'head', 'head_site', 'left_shoulder', 'left_arm', 'left_fore_arm',
    'left_hand', 'left_hand_thumb', 'left_thumb_site', 'left_wrist_end',
    'left_wrist_end_site', 'right_shoulder', 'right_arm', 'right_fore_arm', 'right_hand',
    'right_hand_thumb', 'right_thumb_site', 'right_wrist_end', 'right_wrist_end_site')
PARENTS_32 = (-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19, 20,
              19, 22, 12, 24, 25, 26, 27, 28, 27, 30)
NUM_JOINTS_32 = len(PARENTS_32)
# Joints VideoPose3D removes to get the 17-joint layout.
REMOVED_JOINTS = (4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31)
# sparse joint → sparse parent that replaces the induced one (VideoPose3D's rewiring).
SHOULDER_REWIRING = {11: 8, 14: 8}


def kept_joints(num_joints: int = NUM_JOINTS_32,
                removed: Sequence[int] = REMOVED_JOINTS) -> tuple[int, ...]:
  """Indices (into the 32) of the kept joints, in order: sparse joint i = kept[i]."""
  removed = set(removed)
  return tuple(j for j in range(num_joints) if j not in removed)


KEPT_JOINTS = kept_joints()


def nearest_kept_ancestor(joint: int, parents: Sequence[int], kept: Sequence[int]) -> int:
  """The first strict ancestor of `joint` that is kept, or -1 at the root."""
  kept = set(kept)
  node = parents[joint]
  while node != -1 and node not in kept:
    node = parents[node]
  return node


def induced_parents(parents: Sequence[int], kept: Sequence[int]) -> tuple[int, ...]:
  """The tree on `kept` joints obtained by removing the others.

  Args:
    parents: [J] parent per joint of the full tree (-1 for the root).
    kept: the kept joints, in their new order.
  Returns:
    [len(kept)] parent of each kept joint as an index into `kept` (-1 for the root).
  """
  position = {joint: i for i, joint in enumerate(kept)}
  return tuple(-1 if (a := nearest_kept_ancestor(j, parents, kept)) == -1 else position[a]
               for j in kept)


def sparse_parents() -> tuple[int, ...]:
  """The 17-joint tree derived from the 32-joint one (equals skeleton.H36M_PARENTS)."""
  parents = list(induced_parents(PARENTS_32, KEPT_JOINTS))
  for joint, parent in SHOULDER_REWIRING.items():
    parents[joint] = parent
  return tuple(parents)


def _path_down(ancestor: int, joint: int, parents: Sequence[int]) -> list[int]:
  """Joints from `ancestor` (exclusive) down to `joint` (inclusive) in the tree."""
  path = [joint]
  while path[-1] != ancestor:
    parent = parents[path[-1]]
    if parent == -1:
      raise ValueError(f'joint {ancestor} is not an ancestor of {joint}')
    path.append(parent)
  return path[-2::-1]


def bone_chains() -> tuple[tuple[int, ...], ...]:
  """For each sparse joint j, the 32-joint chain of the sparse bone parent(j) → j.

  The chain starts at the 32-joint index of the sparse parent and follows the 32-joint
  tree from j's nearest kept ancestor down to j (for the rewired shoulders the chain
  starts at the thorax and continues through the shoulder anchor). The root's chain is
  empty.

  Returns:
    17 tuples of 32-joint indices; e.g. the spine bone (sparse 7) is (0, 11, 12).
  """
  parents17 = sparse_parents()
  chains = []
  for j, joint in enumerate(KEPT_JOINTS):
    if parents17[j] < 0:
      chains.append(())
      continue
    ancestor = nearest_kept_ancestor(joint, PARENTS_32, KEPT_JOINTS)
    chains.append((KEPT_JOINTS[parents17[j]], *_path_down(ancestor, joint, PARENTS_32)))
  return tuple(chains)
