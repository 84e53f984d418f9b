"""Stage 1: MSST, the multi-scale skeleton tokenizer (a two-level VQ-VAE over 2D poses).

  E_f: fine_2d [B,F,2], dense_2d [B,D,2] → dense features [B,D,W]  → z_d → C_d → dense ids
  E_d: dense features, sparse_2d [B,S,2]  → sparse features [B,S,W] → z_s → C_s → sparse ids

  sparse decoder: q_s                   → sparse pose [B,S,2]
  dense decoder:  q_d + q_s[dense_part] → dense pose [B,D,2] and features
  fine decoder:   dense decoder features[fine_parent] (+ per-point embedding) → fine pose [B,F,2]

The point hierarchy is data: groups of any size (including empty ones, e.g. the root owns
no dense point) are gathered with the padded index tables of `skeleton.Hierarchy` and
masked. A group's members are projected to `member_dim` features, zeroed where padded and
flattened into their parent's slot together with the parent's own coordinates, so the
encoder knows which member is which.

The codebooks live in the 'vq_stats' collection (see quantizer.py); `__call__` with
`train=True` and mutable=['vq_stats'] updates them.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hipart_jax import skeleton
from hipart_jax.models import mixer
from hipart_jax.models import quantizer

_EMBED_INIT = nn.initializers.normal(0.02)


def gather_groups(features: jnp.ndarray, members: np.ndarray, mask: np.ndarray
                  ) -> jnp.ndarray:
  """Gathers each group's member features, zeroing padded slots, and flattens them.

  Args:
    features: [B, M, C] member features.
    members: [G, P] member indices per group, padded with -1.
    mask: [G, P] bool, True for real members.
  Returns:
    [B, G, P * C].
  """
  gathered = jnp.take(features, np.maximum(members, 0), axis=1)  # [B, G, P, C]
  gathered = gathered * jnp.asarray(mask, features.dtype)[None, :, :, None]
  return gathered.reshape(gathered.shape[:2] + (-1,))


class _GroupEncoder(nn.Module):
  """One encoder level: members (child features) → parent tokens → mixer stack.

  Attributes:
    num_tokens: G, number of parent points.
    member_dim: per-member feature width before flattening.
    width, num_blocks, token_hidden, channel_hidden, dropout: the mixer stack.
  """

  num_tokens: int
  member_dim: int
  width: int
  num_blocks: int
  token_hidden: int
  channel_hidden: int
  dropout: float

  @nn.compact
  def __call__(self, children: jnp.ndarray, members: np.ndarray, mask: np.ndarray,
               parent_2d: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Encodes one level.

    Args:
      children: [B, M, Cin] features of the child points.
      members: [G, P] child indices per parent, padded with -1; mask: [G, P].
      parent_2d: [B, G, 2] parent point coordinates.
      train: enables dropout.
    Returns:
      [B, G, width] parent features.
    """
    member_features = nn.gelu(nn.Dense(self.member_dim, name='member_proj')(children))
    grouped = gather_groups(member_features, members, mask)  # [B, G, P * member_dim]
    x = jnp.concatenate([grouped, parent_2d], axis=-1)
    x = nn.Dense(self.width, name='token_proj')(x)
    x = x + self.param('token_identity', _EMBED_INIT, (self.num_tokens, self.width))
    return mixer.MixerStack(self.num_tokens, self.num_blocks, self.token_hidden,
                            self.channel_hidden, self.dropout, name='mixer')(x, train=train)


class _Decoder(nn.Module):
  """Tokens → features (mixer stack) → 2D points.

  Attributes:
    num_tokens: number of output points.
    width, num_blocks, token_hidden, channel_hidden, dropout: the mixer stack.
  """

  num_tokens: int
  width: int
  num_blocks: int
  token_hidden: int
  channel_hidden: int
  dropout: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    # x: [B, N, Cin] -> (points [B, N, 2], features [B, N, width])
    x = nn.Dense(self.width, name='input_proj')(x)
    x = x + self.param('token_identity', _EMBED_INIT, (self.num_tokens, self.width))
    features = mixer.MixerStack(self.num_tokens, self.num_blocks, self.token_hidden,
                                self.channel_hidden, self.dropout, name='mixer')(x, train=train)
    return nn.Dense(2, name='point_head')(features), features


class MSST(nn.Module):
  """Multi-scale skeleton tokenizer.

  Attributes:
    hierarchy: the sparse→dense→fine point hierarchy.
    width: token feature width of every encoder and decoder.
    num_blocks: mixer blocks per encoder and per decoder.
    token_hidden: hidden width of the token-mixing MLPs.
    channel_hidden: hidden width of the channel-mixing MLPs.
    member_dim: per-member feature width when a group is flattened into its parent.
    sparse_codebook_size: |C_s|.
    dense_codebook_size: |C_d|.
    code_dim: code vector dimension of both codebooks.
    ema_decay: EMA decay of both codebooks.
    vq_epsilon: Laplace smoothing of the codebook cluster sizes.
    codebook_init_stddev: standard deviation of the initial code vectors.
    dead_after_steps: restart codes unused for this many updates (0: never).
    statistics_axis_name: axis to psum codebook statistics over ('batch' under pmap).
    dropout: dropout rate in the mixer blocks.
    num_actions: classes of the global-alignment head (0 disables the head).
    action_token_dim: per-token projection width of the global-alignment head.
  """

  hierarchy: skeleton.Hierarchy
  width: int = 128
  num_blocks: int = 2
  token_hidden: int = 64
  channel_hidden: int = 256
  member_dim: int = 32
  sparse_codebook_size: int = 512
  dense_codebook_size: int = 512
  code_dim: int = 64
  ema_decay: float = 0.99
  vq_epsilon: float = 1e-5
  codebook_init_stddev: float = 1.0
  dead_after_steps: int = 100
  statistics_axis_name: str | None = None
  dropout: float = 0.0
  num_actions: int = 0
  action_token_dim: int = 8

  def setup(self):
    h = self.hierarchy
    mixer_args = dict(width=self.width, num_blocks=self.num_blocks,
                      token_hidden=self.token_hidden, channel_hidden=self.channel_hidden,
                      dropout=self.dropout)
    self.fine_point_embedding = self.param('fine_point_embedding', _EMBED_INIT,
                                           (h.num_fine, self.member_dim))
    self.fine_encoder = _GroupEncoder(h.num_dense, self.member_dim, **mixer_args)  # E_f
    self.dense_encoder = _GroupEncoder(h.num_sparse, self.member_dim, **mixer_args)  # E_d
    self.dense_code_proj = nn.Dense(self.code_dim)
    self.sparse_code_proj = nn.Dense(self.code_dim)
    vq_args = dict(dim=self.code_dim, decay=self.ema_decay, epsilon=self.vq_epsilon,
                   dead_after_steps=self.dead_after_steps,
                   statistics_axis_name=self.statistics_axis_name,
                   init_stddev=self.codebook_init_stddev)
    self.dense_quantizer = quantizer.VectorQuantizer(self.dense_codebook_size, **vq_args)
    self.sparse_quantizer = quantizer.VectorQuantizer(self.sparse_codebook_size, **vq_args)
    self.sparse_decoder = _Decoder(h.num_sparse, **mixer_args)
    self.dense_decoder = _Decoder(h.num_dense, **mixer_args)
    self.fine_decoder = _Decoder(h.num_fine, **mixer_args)
    if self.num_actions > 0:
      self.action_token_proj = nn.Dense(self.action_token_dim)
      self.action_head = nn.Dense(self.num_actions)

  def _check_inputs(self, sparse_2d, dense_2d, fine_2d):
    h = self.hierarchy
    batch = sparse_2d.shape[0]
    chex.assert_shape(sparse_2d, (batch, h.num_sparse, 2))
    chex.assert_shape(dense_2d, (batch, h.num_dense, 2))
    chex.assert_shape(fine_2d, (batch, h.num_fine, 2))

  def _encode_features(self, sparse_2d, dense_2d, fine_2d, train):
    """Encoders E_f and E_d: ([B, D, code_dim] z_d, [B, S, code_dim] z_s)."""
    h = self.hierarchy
    # Each fine point: its coordinates and a learned embedding of which point it is.
    identity = jnp.broadcast_to(self.fine_point_embedding, fine_2d.shape[:1]
                                + self.fine_point_embedding.shape)
    fine = jnp.concatenate([fine_2d, identity], axis=-1)  # [B, F, 2 + member_dim]
    fine_members, fine_mask = h.fine_groups
    dense_features = self.fine_encoder(fine, fine_members, fine_mask, dense_2d,
                                       train=train)  # [B, D, W]
    dense_members, dense_mask = h.dense_groups
    sparse_features = self.dense_encoder(dense_features, dense_members, dense_mask,
                                         sparse_2d, train=train)  # [B, S, W]
    return self.dense_code_proj(dense_features), self.sparse_code_proj(sparse_features)

  def _decode_tokens(self, sparse_q: jnp.ndarray, dense_q: jnp.ndarray, train: bool
                     ) -> dict[str, jnp.ndarray]:
    """Decoders: quantized tokens [B, S, code_dim], [B, D, code_dim] → poses."""
    h = self.hierarchy
    sparse, _ = self.sparse_decoder(sparse_q, train=train)  # [B, S, 2]
    part_tokens = jnp.take(sparse_q, h.dense_part_array, axis=1)  # [B, D, code_dim]
    dense, dense_features = self.dense_decoder(
        jnp.concatenate([dense_q, part_tokens], axis=-1), train=train)  # [B, D, 2], [B, D, W]
    # Each fine point starts from its dense parent's features; the fine decoder's
    # per-point token embedding tells the points of one parent apart.
    parent_features = jnp.take(dense_features, h.fine_parent_array, axis=1)  # [B, F, W]
    fine, _ = self.fine_decoder(parent_features, train=train)
    return dict(sparse=sparse, dense=dense, fine=fine)

  def _action_logits(self, sparse_q: jnp.ndarray, dense_q: jnp.ndarray) -> jnp.ndarray:
    """Global-alignment head: all quantized tokens → [B, num_actions] logits."""
    tokens = jnp.concatenate([sparse_q, dense_q], axis=1)  # [B, S + D, code_dim]
    tokens = self.action_token_proj(tokens)  # [B, S + D, action_token_dim]
    return self.action_head(tokens.reshape(tokens.shape[0], -1))

  def __call__(self, sparse_2d: jnp.ndarray, dense_2d: jnp.ndarray, fine_2d: jnp.ndarray, *,
               train: bool, valid: jnp.ndarray | None = None
               ) -> tuple[dict[str, jnp.ndarray], dict[str, jnp.ndarray]]:
    """Tokenizes and reconstructs a batch of hierarchical 2D poses.

    Args:
      sparse_2d: [B, S, 2], dense_2d: [B, D, 2], fine_2d: [B, F, 2] in the model frame.
      train: enables dropout and (with 'vq_stats' mutable) the codebook EMA update.
      valid: optional [B] bool; invalid (padding) samples do not update the codebooks
        nor count in the commitment losses and codebook statistics.
    Returns:
      recon: {'sparse': [B, S, 2], 'dense': [B, D, 2], 'fine': [B, F, 2]}.
      out: sparse_ids [B, S] / dense_ids [B, D] int32; sparse_embedding [B, S, code_dim]
        and dense_embedding [B, D, code_dim] (encoder outputs, pre-quantization);
        sparse_quantized / dense_quantized (same shapes, straight-through);
        {sparse,dense}_{commitment_loss,perplexity,usage} scalars; action_logits
        [B, num_actions] when num_actions > 0.
    """
    self._check_inputs(sparse_2d, dense_2d, fine_2d)
    h = self.hierarchy
    dense_z, sparse_z = self._encode_features(sparse_2d, dense_2d, fine_2d, train)
    sparse_mask = dense_mask = None
    if valid is not None:
      chex.assert_shape(valid, (sparse_2d.shape[0],))
      sparse_mask = jnp.broadcast_to(valid[:, None], sparse_z.shape[:2])
      dense_mask = jnp.broadcast_to(valid[:, None], dense_z.shape[:2])
    sparse_q, sparse_vq = self.sparse_quantizer(sparse_z, sparse_mask, train=train)
    dense_q, dense_vq = self.dense_quantizer(dense_z, dense_mask, train=train)
    recon = self._decode_tokens(sparse_q, dense_q, train)
    out = dict(sparse_ids=sparse_vq['ids'], dense_ids=dense_vq['ids'],
               sparse_embedding=sparse_z, dense_embedding=dense_z,
               sparse_quantized=sparse_q, dense_quantized=dense_q)
    for level, stats in (('sparse', sparse_vq), ('dense', dense_vq)):
      for key in ('commitment_loss', 'perplexity', 'usage'):
        out[f'{level}_{key}'] = stats[key]
    if self.num_actions > 0:
      out['action_logits'] = self._action_logits(sparse_q, dense_q)
    chex.assert_shape(out['dense_ids'], (sparse_2d.shape[0], h.num_dense))
    return recon, out

  def encode(self, sparse_2d: jnp.ndarray, dense_2d: jnp.ndarray, fine_2d: jnp.ndarray
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Token ids of a batch, without dropout or codebook updates.

    Args:
      sparse_2d: [B, S, 2], dense_2d: [B, D, 2], fine_2d: [B, F, 2].
    Returns:
      (sparse_ids [B, S], dense_ids [B, D]) int32.
    """
    self._check_inputs(sparse_2d, dense_2d, fine_2d)
    dense_z, sparse_z = self._encode_features(sparse_2d, dense_2d, fine_2d, False)
    _, sparse_vq = self.sparse_quantizer(sparse_z, train=False)
    _, dense_vq = self.dense_quantizer(dense_z, train=False)
    return sparse_vq['ids'], dense_vq['ids']

  def decode(self, sparse_ids: jnp.ndarray, dense_ids: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Poses from token ids (eval mode).

    Args:
      sparse_ids: [B, S] int, dense_ids: [B, D] int.
    Returns:
      {'sparse': [B, S, 2], 'dense': [B, D, 2], 'fine': [B, F, 2]}.
    """
    h = self.hierarchy
    chex.assert_shape(sparse_ids, (None, h.num_sparse))
    chex.assert_shape(dense_ids, (sparse_ids.shape[0], h.num_dense))
    return self._decode_tokens(self.sparse_quantizer.lookup(sparse_ids),
                               self.dense_quantizer.lookup(dense_ids), False)

  def decode_expected(self, sparse_probs: jnp.ndarray, dense_probs: jnp.ndarray
                      ) -> dict[str, jnp.ndarray]:
    """Poses from distributions over the codes: each token is its expected code vector
    (eval mode; one-hot distributions give `decode`).

    Args:
      sparse_probs: [B, S, Ks], dense_probs: [B, D, Kd], each summing to 1 over codes.
    Returns:
      {'sparse': [B, S, 2], 'dense': [B, D, 2], 'fine': [B, F, 2]}.
    """
    h = self.hierarchy
    chex.assert_shape(sparse_probs, (None, h.num_sparse, self.sparse_codebook_size))
    chex.assert_shape(dense_probs, (sparse_probs.shape[0], h.num_dense,
                                    self.dense_codebook_size))
    return self._decode_tokens(self.sparse_quantizer.expected_code(sparse_probs),
                               self.dense_quantizer.expected_code(dense_probs), False)
