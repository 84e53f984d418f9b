"""HiARM decoding orderings as groups of tokens, and the attention masks they imply.

HiARM predicts T = S + D target tokens: token t < S is sparse token t (body part t, the
sparse codebook C_s); token t >= S is dense token t - S (body part
`hierarchy.dense_part[t - S]`, the dense codebook C_d). An ordering is a sequence of
*groups* of token ids (docs/DESIGN.md §4): one decoding step predicts one group in parallel,
given the condition and every earlier group.

HiARM runs three streams of slots through its transformer (see `models/hiarm.py`):
  condition: one slot per input joint (S of them); never sees targets;
  context:   one slot per token t, carrying the token's value; sees the condition and
             the context slots of groups g(u) <= g(t);
  query:     one slot per token t, carrying only its position; sees the condition, the
             context slots of earlier groups g(u) < g(t) and the query slots of its own
             group. Its output predicts token t.
A query slot therefore never sees its own token nor a group mate's, so a whole group is
predicted in one pass. Local blocks (LSAB) further restrict every slot to the slots of
its own body part (the condition slot of part i is joint i).
`attention_mask` states these rules once, for numpy and jax arrays alike, so the
teacher-forced pass and the cached decoding step use the very same definition.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import numpy as np

from hipart_jax import skeleton

ORDERING_NAMES = ('hierarchical', 'center_to_periphery', 'sparse_to_dense', 'raster')

# Slot streams.
CONDITION = 0
CONTEXT = 1
QUERY = 2

# Token levels.
SPARSE = 0
DENSE = 1
NUM_LEVELS = 2


def _dense_tokens_of_part(hierarchy: skeleton.Hierarchy, part: int) -> tuple[int, ...]:
  """Token ids (S + dense index) of the dense points of one part, in index order."""
  return tuple(hierarchy.num_sparse + k for k, p in enumerate(hierarchy.dense_part)
               if p == part)


def decoding_groups(hierarchy: skeleton.Hierarchy, name: str) -> tuple[tuple[int, ...], ...]:
  """The token groups of a named ordering (docs/DESIGN.md §4).

  Args:
    hierarchy: gives S, D and the body part of every dense token.
    name: one of ORDERING_NAMES:
      'hierarchical': parts from the center to the periphery; per part [sparse_i], then
        [all dense tokens of part i] as one group (empty dense groups skipped);
      'center_to_periphery': same part order, one token per group;
      'sparse_to_dense': parts in index order, [sparse_i] then [dense tokens of part i];
      'raster': tokens 0..T-1 in index order, one per group.
  Returns:
    Groups of token ids; every token in [0, S + D) appears exactly once.
  """
  if name not in ORDERING_NAMES:
    raise ValueError(f'Unknown ordering {name!r}; valid names: {", ".join(ORDERING_NAMES)}')
  num_tokens = hierarchy.num_sparse + hierarchy.num_dense
  if name == 'raster':
    return tuple((t,) for t in range(num_tokens))
  if name == 'sparse_to_dense':
    parts = tuple(range(hierarchy.num_sparse))
  else:
    parts = skeleton.center_to_periphery_order(hierarchy.parents)
  groups = []
  for part in parts:
    dense = _dense_tokens_of_part(hierarchy, part)
    if name == 'center_to_periphery':
      groups.extend((t,) for t in (part,) + dense)
    else:
      groups.append((part,))
      if dense:
        groups.append(dense)
  return tuple(groups)


class Slots(NamedTuple):
  """Per-slot attributes that decide who may attend to whom; each field is [N].

  Attributes:
    stream: CONDITION, CONTEXT or QUERY.
    group: decoding group of the slot's token (-1 for condition slots).
    part: body part (the joint index for condition slots).
    valid: False for padding (never attended to).
  """

  stream: np.ndarray
  group: np.ndarray
  part: np.ndarray
  valid: np.ndarray

  def concat(self, *others: 'Slots') -> 'Slots':
    """The slots of self followed by those of others (numpy arrays only)."""
    return Slots(*(np.concatenate(fields) for fields in zip(self, *others)))


def attention_mask(queries: Slots, keys: Slots, *, local: bool):
  """Which key slots each query slot may attend to (True = may attend).

  Works on numpy and jax arrays alike (only comparisons and logical operators).

  Args:
    queries: [Nq] slot attributes of the attending slots.
    keys: [Nk] slot attributes of the attended slots.
    local: LSAB rule: additionally require the same body part.
  Returns:
    [Nq, Nk] bool.
  """
  q = Slots(*(field[:, None] for field in queries))
  k = Slots(*(field[None, :] for field in keys))
  key_is_condition = k.stream == CONDITION
  key_is_context = k.stream == CONTEXT
  condition_rows = (q.stream == CONDITION) & key_is_condition
  context_rows = (q.stream == CONTEXT) & (
      key_is_condition | (key_is_context & (k.group <= q.group)))
  query_rows = (q.stream == QUERY) & (
      key_is_condition | (key_is_context & (k.group < q.group))
      | ((k.stream == QUERY) & (k.group == q.group)))
  allowed = (condition_rows | context_rows | query_rows) & k.valid
  if local:
    allowed = allowed & (k.part == q.part)
  return allowed


class MaskBlocks(NamedTuple):
  """An attention mask as dense blocks: block b's rows attend only over block b's keys.

  Attention then computes nb * R * K logits per head instead of N * N. Build with
  `mask_blocks`; `models/hiarm.py` (`AttentionBlock.attend_blocks`) consumes it.

  Attributes:
    rows: [nb, R] int32 slot ids of each block's attending slots (-1 = padding).
    keys: [nb, K] int32 slot ids of the keys they may read (-1 = padding).
    mask: [nb, R, K] bool, the full mask at (rows, keys); False at padding.
  """

  rows: np.ndarray
  keys: np.ndarray
  mask: np.ndarray


def _padded(ids: list[np.ndarray]) -> np.ndarray:
  out = np.full((len(ids), max(len(i) for i in ids)), -1, np.int32)
  for b, i in enumerate(ids):
    out[b, :len(i)] = i
  return _frozen(out)


def mask_blocks(mask: np.ndarray, buckets: list[list[np.ndarray]]
                ) -> tuple[tuple[MaskBlocks, ...], np.ndarray]:
  """Rewrites a mask as dense blocks of rows over the keys those rows may read.

  Args:
    mask: [N, N] bool, every row with at least one True.
    buckets: a partition of the N rows into groups, the groups batched together as one
      `MaskBlocks` per bucket (padded to the bucket's largest group, so groups of like
      size share a bucket). A group's keys are every key any of its rows may read.
  Returns:
    (one MaskBlocks per bucket, inverse): inverse [N] int32 gives, for each row, its
    position among the buckets' rows flattened and concatenated in order.
  Raises:
    ValueError: the groups do not partition the rows.
  """
  num = mask.shape[0]
  flat = np.concatenate([np.asarray(g) for bucket in buckets for g in bucket])
  if sorted(flat.tolist()) != list(range(num)):
    raise ValueError(f'the row groups must hold every row of [0, {num}) exactly once')
  blocks, positions, offset = [], [], 0
  for bucket in buckets:
    rows = _padded([np.asarray(g, np.int32) for g in bucket])
    keys = _padded([np.flatnonzero(mask[g].any(0)).astype(np.int32) for g in bucket])
    safe = lambda ids: np.maximum(ids, 0)
    sub = mask[safe(rows)[:, :, None], safe(keys)[:, None, :]]
    sub = sub & (rows >= 0)[:, :, None] & (keys >= 0)[:, None, :]
    blocks.append(MaskBlocks(rows, keys, _frozen(sub)))
    positions.append(np.where(rows >= 0, offset + np.arange(rows.size).reshape(rows.shape),
                              -1))
    offset += rows.size
  inverse = np.empty(num, np.int32)
  for block, position in zip(blocks, positions):
    valid = block.rows >= 0
    inverse[block.rows[valid]] = position[valid]
  return tuple(blocks), _frozen(inverse)


# Blocks per stream of a global teacher-forcing mask (`Ordering.teacher_forcing_blocks`):
# more skip more of its causal triangle, at the cost of more, smaller products.
GLOBAL_CHUNKS = 2


def _frozen(array: np.ndarray) -> np.ndarray:
  array.flags.writeable = False
  return array


@dataclasses.dataclass(frozen=True)
class Ordering:
  """A decoding ordering of the T = S + D tokens of a hierarchy, as padded tables.

  Hashable (fields are tuples), so it can be a Flax module attribute or a static jit
  argument. Build named orderings with `make_ordering`; any other partition of the
  tokens into groups is accepted too.

  Attributes:
    hierarchy: the point hierarchy.
    name: a label ('hierarchical', ..., or a user name for custom groups).
    group_tuples: the groups of token ids, in decoding order.
  """

  hierarchy: skeleton.Hierarchy
  name: str
  group_tuples: tuple[tuple[int, ...], ...]

  def __post_init__(self):
    groups = tuple(tuple(int(t) for t in group) for group in self.group_tuples)
    object.__setattr__(self, 'group_tuples', groups)
    if any(not group for group in groups):
      raise ValueError(f'Ordering {self.name!r}: empty group in {groups}')
    flat = sorted(t for group in groups for t in group)
    if flat != list(range(self.num_tokens)):
      raise ValueError(f'Ordering {self.name!r}: groups must hold every token in '
                       f'[0, {self.num_tokens}) exactly once, got {groups}')

  @property
  def num_sparse(self) -> int:
    return self.hierarchy.num_sparse

  @property
  def num_dense(self) -> int:
    return self.hierarchy.num_dense

  @property
  def num_tokens(self) -> int:
    """T = S + D."""
    return self.hierarchy.num_sparse + self.hierarchy.num_dense

  @property
  def num_groups(self) -> int:
    """G, the number of decoding steps."""
    return len(self.group_tuples)

  @property
  def max_group_size(self) -> int:
    """Gmax, the padded group width."""
    return max(len(group) for group in self.group_tuples)

  @functools.cached_property
  def groups(self) -> np.ndarray:
    """[G, Gmax] int32 token ids per group, padded with -1."""
    out = np.full((self.num_groups, self.max_group_size), -1, np.int32)
    for g, group in enumerate(self.group_tuples):
      out[g, :len(group)] = group
    return _frozen(out)

  @functools.cached_property
  def step_width(self) -> int:
    """W, the slots of one cached decoding step: max over g of |group g - 1| + |group g|
    (2 for one-token groups; 4 for the hierarchical order's alternating 1- and 3-token
    groups, where padding each stream to Gmax would take 6)."""
    sizes = [len(group) for group in self.group_tuples]
    return max(a + b for a, b in zip([0] + sizes, sizes))

  @functools.cached_property
  def step_tokens(self) -> np.ndarray:
    """[G, W] int32 the slots of decoding step g, packed: the tokens of group g - 1 (its
    context slots: their values enter the cache), then those of group g (query slots:
    predicted), -1 padded. See `step_streams`."""
    out = np.full((self.num_groups, self.step_width), -1, np.int32)
    for g, group in enumerate(self.group_tuples):
      packed = (self.group_tuples[g - 1] if g else ()) + group
      out[g, :len(packed)] = packed
    return _frozen(out)

  @functools.cached_property
  def step_streams(self) -> np.ndarray:
    """[G, W] int32 CONTEXT or QUERY for each slot of `step_tokens` (padding: QUERY)."""
    out = np.full((self.num_groups, self.step_width), QUERY, np.int32)
    for g in range(1, self.num_groups):
      out[g, :len(self.group_tuples[g - 1])] = CONTEXT
    return _frozen(out)

  @functools.cached_property
  def token_step_slot(self) -> np.ndarray:
    """[T] int32 column of each token's query slot in `step_tokens[token_group]`."""
    out = np.zeros(self.num_tokens, np.int32)
    for g, group in enumerate(self.group_tuples):
      offset = len(self.group_tuples[g - 1]) if g else 0
      out[list(group)] = offset + np.arange(len(group))
    return _frozen(out)

  @functools.cached_property
  def token_group(self) -> np.ndarray:
    """[T] int32 decoding group of each token."""
    out = np.zeros(self.num_tokens, np.int32)
    for g, group in enumerate(self.group_tuples):
      out[list(group)] = g
    return _frozen(out)

  @functools.cached_property
  def token_level(self) -> np.ndarray:
    """[T] int32: SPARSE (0) for t < S, DENSE (1) otherwise."""
    return _frozen((np.arange(self.num_tokens) >= self.num_sparse).astype(np.int32))

  @functools.cached_property
  def token_part(self) -> np.ndarray:
    """[T] int32 body part: t for sparse tokens, dense_part[t - S] for dense ones."""
    return _frozen(np.concatenate([np.arange(self.num_sparse, dtype=np.int32),
                                   self.hierarchy.dense_part_array]))

  @functools.cached_property
  def token_index_in_part(self) -> np.ndarray:
    """[T] int32: 0 for sparse tokens, the dense point's index within its part's dense
    group otherwise. With `token_level` and `token_part` it names every token uniquely,
    whatever the ordering (HiARM's position embedding)."""
    return _frozen(np.concatenate([np.zeros(self.num_sparse, np.int32),
                                   self.hierarchy.dense_index_in_group()]))

  # Slot layouts and masks.

  def condition_slots(self) -> Slots:
    """[S] the condition stream (joint i is part i)."""
    s = self.num_sparse
    return Slots(np.full(s, CONDITION, np.int32), np.full(s, -1, np.int32),
                 np.arange(s, dtype=np.int32), np.ones(s, bool))

  def token_slots(self, stream: int) -> Slots:
    """[T] the CONTEXT or QUERY stream, one slot per token in token order."""
    t = self.num_tokens
    return Slots(np.full(t, stream, np.int32), self.token_group.copy(),
                 self.token_part.copy(), np.ones(t, bool))

  def teacher_forcing_slots(self) -> Slots:
    """[S + 2T] the full sequence: condition, context, query."""
    return self.condition_slots().concat(self.token_slots(CONTEXT), self.token_slots(QUERY))

  def cache_slots(self) -> Slots:
    """[S + T] the key/value cache layout: condition, then context slots by token id."""
    return self.condition_slots().concat(self.token_slots(CONTEXT))

  def step_slots(self, g: int) -> Slots:
    """[W] the packed slots of decoding step g (`step_tokens[g]`, `step_streams[g]`)."""
    tokens = self.step_tokens[g]
    safe = np.maximum(tokens, 0)
    return Slots(self.step_streams[g].copy(), self.token_group[safe],
                 self.token_part[safe], tokens >= 0)

  @functools.lru_cache(maxsize=None)
  def step_masks(self, *, local: bool) -> np.ndarray:
    """[G, W, S + T + W] bool: what the slots of cached decoding step g may attend to,
    the cache (`cache_slots`) then the step's own slots, as the decoder's cache holds
    them (W scratch entries after `cache_slots`). The step's context slots are read at
    their token's entry (they are written there first), so as scratch keys only its
    query slots are valid."""
    cache = self.cache_slots()
    out = []
    for g in range(self.num_groups):
      step = self.step_slots(g)
      keys = step._replace(valid=step.valid & (step.stream == QUERY))
      out.append(attention_mask(step, cache.concat(keys), local=local))
    return _frozen(np.stack(out))

  def teacher_forcing_mask(self, *, local: bool) -> np.ndarray:
    """[S + 2T, S + 2T] bool attention mask of the teacher-forced pass."""
    slots = self.teacher_forcing_slots()
    return attention_mask(slots, slots, local=local)

  @functools.lru_cache(maxsize=None)
  def teacher_forcing_blocks(self, *, local: bool, chunks: int = GLOBAL_CHUNKS
                             ) -> tuple[tuple[MaskBlocks, ...], np.ndarray]:
    """`teacher_forcing_mask` as dense blocks (`mask_blocks`), to skip what it forbids.

    Local: one block per body part, since a slot sees only its own part. Global: the
    condition slots, which read only themselves, then the context and the query slots,
    each cut in decoding order into `chunks` blocks: a slot reads the more keys the
    later its group, and no other slot reads a query slot.
    """
    slots = self.teacher_forcing_slots()
    if local:
      buckets = [[np.flatnonzero(slots.part == p) for p in range(self.num_sparse)]]
    else:
      buckets = [[np.flatnonzero(slots.stream == CONDITION)]]
      for stream in (CONTEXT, QUERY):
        rows = np.flatnonzero(slots.stream == stream)
        rows = rows[np.argsort(slots.group[rows], kind='stable')]
        buckets += [[chunk] for chunk in np.array_split(rows, chunks)]
    return mask_blocks(self.teacher_forcing_mask(local=local), buckets)


@functools.lru_cache(maxsize=None)
def make_ordering(hierarchy: skeleton.Hierarchy, name: str) -> Ordering:
  """The named ordering (one of ORDERING_NAMES) of a hierarchy's tokens."""
  return Ordering(hierarchy, name, decoding_groups(hierarchy, name))
