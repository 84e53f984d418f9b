"""Tests for HiARM decoding orderings and their attention masks."""

import itertools

import numpy as np
import pytest

from hipart_jax import orderings
from hipart_jax import skeleton

HIERARCHY = skeleton.default_hierarchy()
S, D = 17, 48
T = S + D


def _uneven_hierarchy():
  """Parts 0, 3 and 10 own 2, 5 and 1 dense points; every other part owns none."""
  dense_part = (3, 0, 3, 10, 3, 0, 3, 3)
  return skeleton.Hierarchy.from_maps(dense_part, tuple(range(len(dense_part))))


def _all_parts_dense_hierarchy():
  """The default hierarchy plus three dense points on the root: every part owns some."""
  dense_part = HIERARCHY.dense_part + (0, 0, 0)
  return skeleton.Hierarchy.from_maps(dense_part, tuple(range(len(dense_part))))


@pytest.mark.parametrize('name, num_groups, max_size', [
    ('hierarchical', 33, 3), ('center_to_periphery', 65, 1), ('sparse_to_dense', 33, 3),
    ('raster', 65, 1)])
def test_default_hierarchy_group_counts_cover_every_token_once(name, num_groups, max_size):
  # The root owns no dense point by default, so the two-step-per-part orderings take
  # 17 + 16 steps.
  order = orderings.make_ordering(HIERARCHY, name)
  assert order.num_groups == num_groups
  assert order.max_group_size == max_size
  flat = [t for group in order.group_tuples for t in group]
  assert sorted(flat) == list(range(T))
  assert order.groups.shape == (num_groups, max_size)
  assert (order.groups >= 0).sum() == T


def test_two_steps_per_part_when_every_part_owns_dense_points():
  h = _all_parts_dense_hierarchy()
  for name in ('hierarchical', 'sparse_to_dense'):
    assert orderings.make_ordering(h, name).num_groups == 2 * S


def test_hierarchical_group_contents():
  groups = orderings.decoding_groups(HIERARCHY, 'hierarchical')
  # Pelvis (no dense), then right hip and its dense points, left hip, spine, ...
  assert groups[:6] == ((0,), (1,), (17, 18, 19), (4,), (26, 27, 28), (7,))
  sparse_order = [g[0] for g in groups if len(g) == 1]
  assert tuple(sparse_order) == skeleton.center_to_periphery_order(HIERARCHY.parents)
  assert tuple(sparse_order)[-2:] == (13, 16)  # The wrists come last.
  for g, group in enumerate(groups):
    if group[0] >= S:  # A dense group follows its part's sparse token.
      parts = {HIERARCHY.dense_part[t - S] for t in group}
      assert parts == {groups[g - 1][0]}


def test_other_named_orders():
  s2d = orderings.decoding_groups(HIERARCHY, 'sparse_to_dense')
  assert s2d[:5] == ((0,), (1,), (17, 18, 19), (2,), (20, 21, 22))
  c2p = orderings.decoding_groups(HIERARCHY, 'center_to_periphery')
  assert c2p[:6] == ((0,), (1,), (17,), (18,), (19,), (4,))
  assert orderings.decoding_groups(HIERARCHY, 'raster') == tuple((t,) for t in range(T))


def test_user_hierarchy_with_uneven_groups():
  h = _uneven_hierarchy()
  order = orderings.make_ordering(h, 'hierarchical')
  assert order.num_tokens == S + 8
  assert order.num_groups == S + 3
  assert order.max_group_size == 5
  assert order.group_tuples[:2] == ((0,), (S + 1, S + 5))
  assert orderings.make_ordering(h, 'center_to_periphery').num_groups == S + 8
  assert orderings.make_ordering(h, 'sparse_to_dense').group_tuples[4:6] == (
      (3,), (S + 0, S + 2, S + 4, S + 6, S + 7))
  np.testing.assert_array_equal((order.groups >= 0).sum(axis=1)[:3], [1, 2, 1])


@pytest.mark.parametrize('hierarchy', [HIERARCHY, _uneven_hierarchy()], ids=['default', 'uneven'])
@pytest.mark.parametrize('name', orderings.ORDERING_NAMES)
def test_token_tables_agree_with_groups(hierarchy, name):
  order = orderings.make_ordering(hierarchy, name)
  t = np.arange(order.num_tokens)
  assert all(token in order.groups[g] for token, g in zip(t, order.token_group))
  np.testing.assert_array_equal(order.token_level, (t >= S).astype(int))
  np.testing.assert_array_equal(order.token_part[:S], np.arange(S))
  np.testing.assert_array_equal(order.token_part[S:], hierarchy.dense_part)
  # Packed decoding steps: step g holds group g - 1 as context, then group g as queries.
  for g, group in enumerate(order.group_tuples):
    tokens, streams = order.step_tokens[g], order.step_streams[g]
    context = tokens[(streams == orderings.CONTEXT) & (tokens >= 0)]
    assert list(context) == (list(order.group_tuples[g - 1]) if g else [])
    assert list(tokens[(streams == orderings.QUERY) & (tokens >= 0)]) == list(group)
  np.testing.assert_array_equal(order.step_tokens[order.token_group, order.token_step_slot], t)
  if hierarchy == HIERARCHY:  # Alternating groups of 1 and 3 pack into 4 slots, not 6.
    assert order.step_width == {'hierarchical': 4, 'sparse_to_dense': 4}.get(name, 2)
  # (level, part, index in part) names each token once.
  names = set(zip(order.token_level, order.token_part, order.token_index_in_part))
  assert len(names) == order.num_tokens
  with pytest.raises(ValueError):
    order.groups[0, 0] = 5  # Tables are read-only.


def test_invalid_names_and_groups_raise():
  with pytest.raises(ValueError, match='hierarchical, center_to_periphery'):
    orderings.make_ordering(HIERARCHY, 'zigzag')
  groups = orderings.decoding_groups(HIERARCHY, 'raster')
  with pytest.raises(ValueError, match='exactly once'):
    orderings.Ordering(HIERARCHY, 'custom', groups[:-1])
  with pytest.raises(ValueError, match='exactly once'):
    orderings.Ordering(HIERARCHY, 'custom', groups[:-1] + ((0,),))
  with pytest.raises(ValueError, match='empty group'):
    orderings.Ordering(HIERARCHY, 'custom', groups + ((),))


def test_orderings_are_hashable_values():
  a = orderings.make_ordering(HIERARCHY, 'hierarchical')
  b = orderings.Ordering(HIERARCHY, 'hierarchical',
                         orderings.decoding_groups(HIERARCHY, 'hierarchical'))
  assert a == b and hash(a) == hash(b)
  assert len({a, b, orderings.make_ordering(HIERARCHY, 'raster')}) == 2
  assert a != orderings.make_ordering(_uneven_hierarchy(), 'hierarchical')


def _reference_mask(order, local):
  """The mask rules written out slot by slot (the spec in plain Python)."""
  s, t = order.num_sparse, order.num_tokens
  slots = [('cond', j) for j in range(s)] + [('context', u) for u in range(t)] + [
      ('query', u) for u in range(t)]
  group = lambda i: order.token_group[i]
  part = lambda kind, i: i if kind == 'cond' else order.token_part[i]
  mask = np.zeros((len(slots), len(slots)), bool)
  for (a, (qk, qi)), (b, (kk, ki)) in itertools.product(enumerate(slots), repeat=2):
    if qk == 'cond':
      allowed = kk == 'cond'
    elif qk == 'context':
      allowed = kk == 'cond' or (kk == 'context' and group(ki) <= group(qi))
    else:
      allowed = (kk == 'cond' or (kk == 'context' and group(ki) < group(qi))
                 or (kk == 'query' and group(ki) == group(qi)))
    if local:
      allowed = allowed and part(qk, qi) == part(kk, ki)
    mask[a, b] = allowed
  return mask


@pytest.mark.parametrize('local', [False, True])
def test_teacher_forcing_mask_matches_the_rules(local):
  order = orderings.make_ordering(_uneven_hierarchy(), 'hierarchical')
  mask = order.teacher_forcing_mask(local=local)
  np.testing.assert_array_equal(mask, _reference_mask(order, local))


def _mask_from_blocks(blocks, num):
  """The [N, N] mask that `mask_blocks` output stands for, and each row's block."""
  buckets, inverse = blocks
  mask, seen, offset = np.zeros((num, num), bool), [], 0
  for block in buckets:
    for rows, keys, sub in zip(block.rows, block.keys, block.mask):
      assert not sub[rows < 0].any() and not sub[:, keys < 0].any()
      mask[np.ix_(rows[rows >= 0], keys[keys >= 0])] = sub[rows >= 0][:, keys >= 0]
      seen.extend(rows[rows >= 0])
    positions = offset + np.arange(block.rows.size).reshape(block.rows.shape)
    np.testing.assert_array_equal(inverse[block.rows[block.rows >= 0]],
                                  positions[block.rows >= 0])
    offset += block.rows.size
  assert sorted(seen) == list(range(num))
  return mask


@pytest.mark.parametrize('hierarchy', [HIERARCHY, _uneven_hierarchy()])
@pytest.mark.parametrize('name', ['hierarchical', 'raster'])
@pytest.mark.parametrize('local, chunks', [(True, 1), (False, 1), (False, 2), (False, 4)])
def test_teacher_forcing_blocks_hold_the_whole_mask(hierarchy, name, local, chunks):
  order = orderings.make_ordering(hierarchy, name)
  mask = order.teacher_forcing_mask(local=local)
  blocks = order.teacher_forcing_blocks(local=local, chunks=chunks)
  np.testing.assert_array_equal(_mask_from_blocks(blocks, len(mask)), mask)
  if hierarchy == HIERARCHY:  # Parts of like size: the blocks skip most of the mask.
    logits = sum(block.mask.size for block in blocks[0]) / mask.size
    assert logits < {(True, 1): 0.07, (False, 1): 0.71, (False, 2): 0.51,
                     (False, 4): 0.41}[local, chunks]


def test_mask_blocks_rejects_rows_that_are_not_a_partition():
  mask = np.eye(4, dtype=bool)
  with pytest.raises(ValueError, match='exactly once'):
    orderings.mask_blocks(mask, [[np.array([0, 1])], [np.array([1, 2, 3])]])
  with pytest.raises(ValueError, match='exactly once'):
    orderings.mask_blocks(mask, [[np.array([0, 1, 2])]])


def test_query_slots_never_see_their_own_group_context():
  order = orderings.make_ordering(HIERARCHY, 'hierarchical')
  mask = order.teacher_forcing_mask(local=False)
  context, query = slice(S, S + T), slice(S + T, S + 2 * T)
  sees_context = mask[query, context]  # [T, T]
  same_or_later = order.token_group[None, :] >= order.token_group[:, None]
  assert not np.any(sees_context & same_or_later)
  assert np.all(sees_context | same_or_later)
  assert np.all(mask.sum(axis=1) > 0)
  # Dense group mates are predicted together and see one another's query slots.
  a, b = 17, 18
  assert mask[S + T + a, S + T + b] and not mask[S + T + a, S + b]


def test_attention_mask_respects_padding():
  order = orderings.make_ordering(HIERARCHY, 'raster')
  slots = order.cache_slots()
  padded = slots._replace(valid=np.arange(S + T) % 2 == 0)
  mask = orderings.attention_mask(slots, padded, local=False)
  assert not np.any(mask[:, 1::2])
  np.testing.assert_array_equal(mask[:, ::2],
                                orderings.attention_mask(slots, slots, local=False)[:, ::2])
