"""Stage 3: the lifter, a vanilla spatial transformer from 2D points to a 3D pose.

Every 2D point is a token: a linear embedding of (x, y, confidence) plus a learned
embedding of which point it is. Input modes:
  sparse:       the 17 input joints only (the baseline);
  hierarchical: the 17 input joints + a generated hierarchy (17 sparse, D dense, F fine
                points decoded from HiARM's tokens): HiPART;
  oracle:       the 17 input joints + the ground-truth hierarchy (the upper bound).
The head reads the tokens of the 17 input joints and outputs root-relative 3D in meters.
"""

from __future__ import annotations

from typing import Callable, Mapping

import chex
import flax.linen as nn
import jax.numpy as jnp

from hipart_jax import skeleton

LIFTER_MODES = ('sparse', 'hierarchical', 'oracle')


class EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer encoder block (self-attention + MLP, residuals)."""

  num_heads: int
  mlp_ratio: int
  dropout: float
  attention_fn: Callable[..., jnp.ndarray] = nn.dot_product_attention

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    # x: [B, N, C]
    width = x.shape[-1]
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                        dropout_rate=self.dropout,
                                        deterministic=not train,
                                        attention_fn=self.attention_fn)(y, y)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm()(x)
    y = nn.Dense(width * self.mlp_ratio)(y)
    y = nn.gelu(y)
    y = nn.Dense(width)(y)
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class Lifter(nn.Module):
  """2D points → root-relative 3D pose (meters).

  Attributes:
    hierarchy: the point hierarchy (sizes of the dense and fine levels).
    mode: one of LIFTER_MODES.
    width, depth, num_heads, mlp_ratio, dropout: transformer size.
    attention_fn: the softmax attention (`nn.dot_product_attention`'s signature); the
      execution module may swap in a kernel with the same results that runs faster on
      one backend (`execution.with_lifter_attention`).
  """

  hierarchy: skeleton.Hierarchy
  mode: str = 'hierarchical'
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: int = 2
  dropout: float = 0.0
  attention_fn: Callable[..., jnp.ndarray] = nn.dot_product_attention

  def num_points(self) -> int:
    h = self.hierarchy
    extra = 0 if self.mode == 'sparse' else h.num_sparse + h.num_dense + h.num_fine
    return skeleton.NUM_JOINTS + extra

  @nn.compact
  def __call__(self, inputs_2d: jnp.ndarray, inputs_confidence: jnp.ndarray,
               hierarchy_2d: Mapping[str, jnp.ndarray] | None = None, *,
               train: bool = False) -> jnp.ndarray:
    """Lifts one batch.

    Args:
      inputs_2d: [B, 17, 2] input joints in the model frame.
      inputs_confidence: [B, 17] confidence (0 = missing).
      hierarchy_2d: for 'hierarchical'/'oracle': {'sparse': [B, S, 2], 'dense': [B, D, 2],
        'fine': [B, F, 2]} in the same frame; ignored (may be None) for 'sparse'.
      train: enables dropout.
    Returns:
      [B, 17, 3] root-relative 3D joints, meters (joint 0 is exactly zero).
    """
    if self.mode not in LIFTER_MODES:
      raise ValueError(f'Lifter.mode={self.mode!r}; expected one of {LIFTER_MODES}')
    batch = inputs_2d.shape[0]
    chex.assert_shape(inputs_2d, (batch, skeleton.NUM_JOINTS, 2))
    chex.assert_shape(inputs_confidence, (batch, skeleton.NUM_JOINTS))
    points = [jnp.concatenate([inputs_2d, inputs_confidence[..., None]], axis=-1)]
    if self.mode != 'sparse':
      if hierarchy_2d is None:
        raise ValueError(f'Lifter(mode={self.mode!r}) needs hierarchy_2d')
      h = self.hierarchy
      for level, size in (('sparse', h.num_sparse), ('dense', h.num_dense),
                          ('fine', h.num_fine)):
        level_points = hierarchy_2d[level]
        chex.assert_shape(level_points, (batch, size, 2))
        ones = jnp.ones(level_points.shape[:-1] + (1,), level_points.dtype)
        points.append(jnp.concatenate([level_points, ones], axis=-1))
    points = jnp.concatenate(points, axis=1)  # [B, N, 3]
    x = nn.Dense(self.width, name='point_embedding')(points)
    x = x + self.param('point_identity', nn.initializers.normal(0.02),
                       (self.num_points(), self.width))
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_ratio, self.dropout, self.attention_fn,
                       name=f'block_{i}')(x, train=train)
    x = nn.LayerNorm(name='head_norm')(x[:, :skeleton.NUM_JOINTS])
    # A zero head starts every pose at the root (see simple_baseline.py).
    pose = nn.Dense(3, kernel_init=nn.initializers.zeros, name='head')(x)  # [B, 17, 3]
    return pose - pose[:, skeleton.ROOT:skeleton.ROOT + 1]
