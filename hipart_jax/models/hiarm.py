"""Stage 2: HiARM, the hierarchical autoregressive model over MSST tokens.

Given the input sparse 2D pose, HiARM predicts the S sparse + D dense token ids of the
tokenizer, one *group* of tokens per step (the ordering, `hipart_jax/orderings.py`).

Two-stream formulation. The transformer runs over three streams of slots:
  condition [S]: linear embedding of (x, y, confidence) + a learned joint embedding,
                 plus, with `condition_mlp_width`, a pose-level residual MLP over all
                 S joints at once (a SimpleBaseline trunk), so that every condition slot
                 carries the whole pose's evidence for a hidden joint from the first
                 layer rather than only what a few narrow attention layers gather;
  context [T]:   token embedding (separate tables for C_s and C_d) + position embedding;
  query [T]:     position embedding + a learned query vector (no token information).
The position embedding of token t is level + body part + index within the part's
dense group (unique per token, independent of the ordering). Under the masks of
`orderings.attention_mask`, query slot t sees only the condition and the context of
earlier groups, so one teacher-forced pass predicts every group from its predecessors,
and a whole group can be sampled in parallel at generation time.

Blocks: `num_lsab` LSABs (local self-attention: each slot sees only its own body part,
across scales) then `num_gcsab` GCSABs (global, block-causal, all condition slots
visible). Attention is written out with explicit key/value inputs so the cached
decoding step (`decode_step`, driven by `models/decoding.py`) reuses each layer's
projections on a key/value cache. The teacher-forced pass computes only the logits of
the dense blocks of slots its masks let meet (`Ordering.teacher_forcing_blocks`): one
block per body part in an LSAB; in a GCSAB the condition slots, then the context and the
query slots in chunks of decoding order (no other slot reads a query slot, and earlier
groups read fewer keys).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hipart_jax import orderings
from hipart_jax import skeleton
from hipart_jax.models import simple_baseline

Array = jnp.ndarray
KVCache = tuple[Array, ...]  # One head-major [B, H, S + T + W, Dh] array per layer.


def _mask_bias(mask: Array) -> Array:
  """[Nq, Nk] bool → float32 additive logit bias: 0 where allowed, -1e30 elsewhere."""
  return jnp.where(mask, 0.0, -1e30).astype(jnp.float32)


class AttentionBlock(nn.Module):
  """Pre-LayerNorm transformer block (masked multi-head attention + MLP).

  `project` and `attend` split the block so callers can supply keys/values from a cache;
  `__call__` is the plain self-attention composition of the two.

  Attributes:
    width: model width C.
    num_heads: H; C must be divisible by H (head size Dh = C / H).
    mlp_ratio: MLP hidden width / C.
    dropout: dropout rate on attention weights and residual branches.
  """

  width: int
  num_heads: int
  mlp_ratio: int
  dropout: float

  def setup(self):
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}')
    head_dim = self.width // self.num_heads
    self.attention_norm = nn.LayerNorm()
    self.qkv = nn.DenseGeneral((3, self.num_heads, head_dim))
    self.attention_out = nn.DenseGeneral(self.width, axis=(-2, -1))
    self.mlp_norm = nn.LayerNorm()
    self.mlp_hidden = nn.Dense(self.width * self.mlp_ratio)
    self.mlp_out = nn.Dense(self.width)
    self.drop = nn.Dropout(self.dropout)

  def project(self, x: Array) -> tuple[Array, Array, Array]:
    """x: [B, N, C] → (queries, keys, values), each [B, N, H, Dh]."""
    qkv = self.qkv(self.attention_norm(x))
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

  def attend(self, x: Array, queries: Array, keys: Array, values: Array, mask: Array, *,
             train: bool) -> Array:
    """Attention of x's slots over given keys/values, then the MLP.

    Args:
      x: [B, Nq, C] residual stream of the attending slots.
      queries: [B, Nq, H, Dh] their queries (from `project(x)`).
      keys, values: [B, Nk, H, Dh].
      mask: [Nq, Nk] bool, True = may attend; every row needs one True.
      train: enables dropout.
    Returns:
      [B, Nq, C].
    """
    head_major = lambda a: jnp.swapaxes(a, 1, 2)  # [B, N, H, Dh] → [B, H, N, Dh]
    return self.attend_head_major(x, queries, head_major(keys), head_major(values), mask,
                                  train=train)

  def attend_head_major(self, x: Array, queries: Array, keys: Array, values: Array,
                        mask: Array, *, train: bool) -> Array:
    """`attend` over head-major keys/values, e.g. the decoder's key/value cache.

    The cached decoding step first writes its slots' own keys/values into the cache, so
    one product per side reads everything in place: no concatenation with new keys and
    no transposition, either of which would copy the cache at every step.

    Args:
      x: [B, Nq, C]; queries: [B, Nq, H, Dh].
      keys, values: [B, H, Nk, Dh].
      mask: [Nq, Nk] bool, True = may attend; every row needs one True.
      train: enables dropout.
    Returns:
      [B, Nq, C].
    """
    chex.assert_shape(mask, (queries.shape[1], keys.shape[2]))
    chex.assert_equal_shape((keys, values))
    # Head-major products with the mask as an additive bias: the layout XLA fuses best.
    queries = jnp.swapaxes(queries * queries.shape[-1] ** -0.5, 1, 2)  # [B, H, Nq, Dh]
    logits = jnp.einsum('bhqd,bhkd->bhqk', queries, keys) + _mask_bias(mask)
    weights = self.drop(jax.nn.softmax(logits, axis=-1), deterministic=not train)
    y = jnp.einsum('bhqk,bhkd->bhqd', weights, values)
    return self._output(x, jnp.swapaxes(y, 1, 2), train=train)

  def attend_blocks(self, x: Array, queries: Array, keys: Array, values: Array,
                    blocks: tuple[tuple[orderings.MaskBlocks, ...], np.ndarray], *,
                    train: bool) -> Array:
    """`attend` under a mask given as dense blocks (`orderings.mask_blocks`).

    The same attention, computing only the logits the blocks hold: the keys a mask
    forbids get weight exactly 0 either way (exp(-1e30) underflows). With dropout > 0
    the weights are dropped with other random draws than `attend`'s.

    Args:
      x: [B, N, C]; queries, keys, values: [B, N, H, Dh], all N slots.
      blocks: (MaskBlocks per bucket, inverse [N]), as `mask_blocks` returns.
      train: enables dropout.
    Returns:
      [B, N, C].
    """
    buckets, inverse = blocks
    chex.assert_equal_shape((queries, keys, values))
    chex.assert_axis_dimension(queries, 1, inverse.shape[0])
    batch, _, heads, head_dim = queries.shape
    queries = queries * head_dim ** -0.5
    attended = []
    for block in buckets:
      rows, cols = np.maximum(block.rows, 0), np.maximum(block.keys, 0)  # [nb, R], [nb, K]
      logits = jnp.einsum('bnrhd,bnkhd->bhnrk', queries[:, rows], keys[:, cols])
      weights = self.drop(jax.nn.softmax(logits + _mask_bias(block.mask), axis=-1),
                          deterministic=not train)
      y = jnp.einsum('bhnrk,bnkhd->bnrhd', weights, values[:, cols])
      attended.append(y.reshape(batch, -1, heads, head_dim))
    return self._output(x, jnp.concatenate(attended, axis=1)[:, inverse], train=train)

  def _output(self, x: Array, y: Array, *, train: bool) -> Array:
    """Output projection of the attended values y [B, Nq, H, Dh], residual, MLP."""
    x = x + self.drop(self.attention_out(y), deterministic=not train)
    y = self.mlp_out(nn.gelu(self.mlp_hidden(self.mlp_norm(x))))
    return x + self.drop(y, deterministic=not train)

  def __call__(self, x: Array, mask: Array, *, train: bool) -> Array:
    """Masked self-attention block. x: [B, N, C], mask: [N, N] → [B, N, C]."""
    queries, keys, values = self.project(x)
    return self.attend(x, queries, keys, values, mask, train=train)


class HiARM(nn.Module):
  """Hierarchical autoregressive model: input 2D pose → MSST token logits.

  Attributes:
    hierarchy: the point hierarchy (S parts = S condition joints, D dense tokens).
    sparse_vocab_size: Vs, size of the sparse codebook C_s.
    dense_vocab_size: Vd, size of the dense codebook C_d.
    ordering: an `orderings.ORDERING_NAMES` name or an `orderings.Ordering`.
    width: model width C.
    num_lsab: number of local (per body part) blocks, applied first.
    num_gcsab: number of global causal blocks, applied after the LSABs.
    num_heads, mlp_ratio, dropout: transformer block settings.
    embedding_stddev: init scale of the learned embeddings.
    condition_mlp_width: 0 for the per-joint condition embedding alone; otherwise the
      width of the pose-level condition MLP (embedding, `condition_mlp_depth` residual
      blocks, a zero-initialized [S, C] readout, so training starts from the per-joint
      model).
    condition_mlp_depth: residual blocks of that MLP.
    code_temperature: how generation turns HiARM's output into a hierarchy, not used by
      the network: 0 decodes the generated codes; > 0 decodes each token's expected
      code vector under softmax(logits / code_temperature) (`hipart.decode_generated`).
      The generated tokens still drive the autoregression either way.
    mask_blocks: True computes the teacher-forced attention as dense blocks of the
      slots a mask lets meet (`Ordering.teacher_forcing_blocks`; `bench/hiarm_attention.py`
      times both); False computes every logit of the full masks (the reference, for
      tests and benchmarks). The outputs are the same.
    global_chunks: with mask_blocks, the blocks per stream of a GCSAB's mask
      (`Ordering.teacher_forcing_blocks`); a speed setting, the outputs do not depend
      on it.
  """

  hierarchy: skeleton.Hierarchy
  sparse_vocab_size: int
  dense_vocab_size: int
  ordering: str | orderings.Ordering = 'hierarchical'
  width: int = 128
  num_lsab: int = 2
  num_gcsab: int = 3
  num_heads: int = 4
  mlp_ratio: int = 4
  dropout: float = 0.0
  embedding_stddev: float = 0.02
  condition_mlp_width: int = 0
  condition_mlp_depth: int = 2
  code_temperature: float = 0.0
  mask_blocks: bool = True
  global_chunks: int = orderings.GLOBAL_CHUNKS

  @property
  def decoding_order(self) -> orderings.Ordering:
    """The resolved `orderings.Ordering`."""
    if isinstance(self.ordering, orderings.Ordering):
      if self.ordering.hierarchy != self.hierarchy:
        raise ValueError('HiARM.ordering was built for a different hierarchy')
      return self.ordering
    return orderings.make_ordering(self.hierarchy, self.ordering)

  @property
  def num_layers(self) -> int:
    return self.num_lsab + self.num_gcsab

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  def setup(self):
    order = self.decoding_order
    init = nn.initializers.normal(self.embedding_stddev)
    num_in_part = max(int(self.hierarchy.dense_group_sizes.max()), 1)
    self.condition_embedding = nn.Dense(self.width)
    if self.condition_mlp_width:
      self.condition_mlp_in = nn.Dense(self.condition_mlp_width)
      self.condition_mlp_norm = nn.LayerNorm()
      self.condition_mlp_blocks = [simple_baseline.ResidualBlock(self.dropout)
                                   for _ in range(self.condition_mlp_depth)]
      self.condition_mlp_out = nn.Dense(order.num_sparse * self.width,
                                        kernel_init=nn.initializers.zeros)
    self.joint_embedding = self.param('joint_embedding', init, (order.num_sparse, self.width))
    self.sparse_token_embedding = nn.Embed(self.sparse_vocab_size, self.width,
                                           embedding_init=init)
    self.dense_token_embedding = nn.Embed(self.dense_vocab_size, self.width,
                                          embedding_init=init)
    self.level_embedding = self.param('level_embedding', init,
                                      (orderings.NUM_LEVELS, self.width))
    self.part_embedding = self.param('part_embedding', init, (order.num_sparse, self.width))
    self.index_embedding = self.param('index_embedding', init, (num_in_part, self.width))
    self.query_embedding = self.param('query_embedding', init, (self.width,))
    block = lambda: AttentionBlock(self.width, self.num_heads, self.mlp_ratio, self.dropout)
    self.lsab = [block() for _ in range(self.num_lsab)]
    self.gcsab = [block() for _ in range(self.num_gcsab)]
    self.final_norm = nn.LayerNorm()
    self.sparse_head = nn.Dense(self.sparse_vocab_size)
    self.dense_head = nn.Dense(self.dense_vocab_size)

  def _blocks(self) -> list[tuple[AttentionBlock, bool]]:
    """(block, local) in application order."""
    return [(b, True) for b in self.lsab] + [(b, False) for b in self.gcsab]

  # Embeddings.

  def embed_condition(self, cond_2d: Array, cond_confidence: Array, *,
                      train: bool = False) -> Array:
    """cond_2d: [B, S, 2] model frame, cond_confidence: [B, S] → [B, S, C]."""
    batch, num_joints = cond_2d.shape[0], self.hierarchy.num_sparse
    chex.assert_shape(cond_2d, (batch, num_joints, 2))
    chex.assert_shape(cond_confidence, (batch, num_joints))
    features = jnp.concatenate([cond_2d, cond_confidence[..., None]], axis=-1)
    embedded = self.condition_embedding(features) + self.joint_embedding
    if not self.condition_mlp_width:
      return embedded
    pose = nn.relu(self.condition_mlp_norm(self.condition_mlp_in(
        features.reshape(batch, -1))))  # [B, condition_mlp_width] from [B, S * 3]
    for block in self.condition_mlp_blocks:
      pose = block(pose, train=train)
    return embedded + self.condition_mlp_out(pose).reshape(batch, num_joints, self.width)

  def _token_table(self, table: np.ndarray, tokens: Array) -> Array:
    """Looks up a per-token numpy table at token ids (padding -1 reads token 0)."""
    return jnp.asarray(table)[jnp.maximum(tokens, 0)]

  def embed_position(self, tokens: Array) -> Array:
    """tokens: [N] token ids (-1 = padding) → [N, C] level + part + in-part index."""
    order = self.decoding_order
    return (self.level_embedding[self._token_table(order.token_level, tokens)]
            + self.part_embedding[self._token_table(order.token_part, tokens)]
            + self.index_embedding[self._token_table(order.token_index_in_part, tokens)])

  def embed_context(self, tokens: Array, token_ids: Array) -> Array:
    """Context slots. tokens: [N] token ids, token_ids: [B, N] their values → [B, N, C]."""
    chex.assert_shape(token_ids, (None, tokens.shape[0]))
    is_sparse = self._token_table(self.decoding_order.token_level, tokens) == orderings.SPARSE
    sparse = self.sparse_token_embedding(jnp.clip(token_ids, 0, self.sparse_vocab_size - 1))
    dense = self.dense_token_embedding(jnp.clip(token_ids, 0, self.dense_vocab_size - 1))
    return jnp.where(is_sparse[:, None], sparse, dense) + self.embed_position(tokens)

  def embed_query(self, tokens: Array) -> Array:
    """Query slots. tokens: [N] token ids → [N, C]."""
    return self.embed_position(tokens) + self.query_embedding

  # Teacher forcing.

  def __call__(self, cond_2d: Array, cond_confidence: Array, sparse_ids: Array,
               dense_ids: Array, *, train: bool = False) -> tuple[Array, Array]:
    """Teacher-forced logits: every group predicted from the earlier groups, in one pass.

    Args:
      cond_2d: [B, S, 2] input joints in the model frame.
      cond_confidence: [B, S] confidence (0 = occluded/missing).
      sparse_ids: [B, S] sparse token ids.
      dense_ids: [B, D] dense token ids.
      train: enables dropout (needs a 'dropout' rng when dropout > 0).
    Returns:
      (sparse_logits [B, S, Vs], dense_logits [B, D, Vd]).
    """
    order = self.decoding_order
    batch, s, t = cond_2d.shape[0], order.num_sparse, order.num_tokens
    chex.assert_shape(sparse_ids, (batch, s))
    chex.assert_shape(dense_ids, (batch, order.num_dense))
    tokens = jnp.arange(t)
    x = jnp.concatenate([
        self.embed_condition(cond_2d, cond_confidence, train=train),
        self.embed_context(tokens, jnp.concatenate([sparse_ids, dense_ids], axis=1)),
        jnp.broadcast_to(self.embed_query(tokens), (batch, t, self.width)),
    ], axis=1)  # [B, S + 2T, C]
    for block, local in self._blocks():
      if self.mask_blocks:
        queries, keys, values = block.project(x)
        blocks = order.teacher_forcing_blocks(local=local, chunks=self.global_chunks)
        x = block.attend_blocks(x, queries, keys, values, blocks, train=train)
      else:
        x = block(x, order.teacher_forcing_mask(local=local), train=train)
    queries = self.final_norm(x[:, s + t:])  # [B, T, C], token order.
    return self.sparse_head(queries[:, :s]), self.dense_head(queries[:, s:])

  # Cached generation.

  def condition_cache(self, cond_2d: Array, cond_confidence: Array
                      ) -> tuple[KVCache, KVCache]:
    """Keys and values of the condition slots at every layer.

    The condition stream attends only to itself, so it is computed once per input.

    Args:
      cond_2d: [B, S, 2]; cond_confidence: [B, S].
    Returns:
      (keys, values): per layer, head-major [B, H, S, Dh].
    """
    x = self.embed_condition(cond_2d, cond_confidence)
    slots = self.decoding_order.condition_slots()
    all_keys, all_values = [], []
    for block, local in self._blocks():
      queries, keys, values = block.project(x)
      all_keys.append(jnp.swapaxes(keys, 1, 2))
      all_values.append(jnp.swapaxes(values, 1, 2))
      mask = orderings.attention_mask(slots, slots, local=local)
      x = block.attend(x, queries, keys, values, mask, train=False)
    return tuple(all_keys), tuple(all_values)

  def decode_step(self, cache_keys: KVCache, cache_values: KVCache, step: Array,
                  slot_ids: Array) -> tuple[Array, Array, KVCache, KVCache]:
    """Decoding step `step`: add one group's context, predict the next group.

    Runs only the W packed slots of the step through the layers (`Ordering.step_tokens`):
    the context slots of the group sampled last (written into the cache at their token
    positions, layer by layer) and the query slots of the group to predict, attending to
    the cache and to each other. Slot layout and masks are tables indexed by `step`.

    Args:
      cache_keys, cache_values: per layer head-major [B, H, S + T + W, Dh]: the
        `Ordering.cache_slots()` layout (condition, then context slots by token id),
        then W scratch entries that hold the current step's slots. Entries of groups
        not yet generated may hold anything: the masks never read them.
      step: int32 scalar g in [0, G).
      slot_ids: [B, W] the sampled values of the step's context slots (other entries
        unused).
    Returns:
      (sparse_logits [B, W, Vs], dense_logits [B, W, Vd], cache_keys, cache_values);
      both heads are evaluated for every slot (only query slots are meaningful; pick
      per level).
    """
    order = self.decoding_order
    s, t = order.num_sparse, order.num_tokens
    chex.assert_shape(slot_ids, (None, order.step_width))
    slot_tokens = jnp.asarray(order.step_tokens)[step]  # [W], -1 padded.
    is_context = jnp.asarray(order.step_streams)[step] == orderings.CONTEXT  # [W]
    x = jnp.where(is_context[:, None], self.embed_context(slot_tokens, slot_ids),
                  self.embed_query(slot_tokens))  # [B, W, C]
    # Context slots go to their token's entry, query slots to the step's scratch entries
    # after the tokens, padding out of bounds (dropped).
    width = order.step_width
    write_at = jnp.where(slot_tokens < 0, s + t + width,
                         jnp.where(is_context, s + slot_tokens, s + t + jnp.arange(width)))
    head_major = lambda a: jnp.swapaxes(a, 1, 2)  # [B, W, H, Dh] → [B, H, W, Dh]
    new_keys, new_values = [], []
    for layer, (block, local) in enumerate(self._blocks()):
      queries, keys, values = block.project(x)
      layer_keys = cache_keys[layer].at[:, :, write_at].set(head_major(keys), mode='drop')
      layer_values = cache_values[layer].at[:, :, write_at].set(head_major(values),
                                                                mode='drop')
      new_keys.append(layer_keys)
      new_values.append(layer_values)
      mask = jnp.asarray(order.step_masks(local=local))[step]  # [W, S + T + W]
      x = block.attend_head_major(x, queries, layer_keys, layer_values, mask,
                                  train=False)
    queries = self.final_norm(x)
    return (self.sparse_head(queries), self.dense_head(queries), tuple(new_keys),
            tuple(new_values))
