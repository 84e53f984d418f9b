"""MLP-Mixer blocks over a set of skeleton points (the MSST's encoder/decoder layers).

A mixer block alternates two MLPs with pre-LayerNorm and residuals: one mixes
information *across points* (the token axis, -2), one mixes *across channels* (-1). The
token MLP has weights per point position, so the point order of a layout is part of the
model, as in the MSST's encoders and decoders.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp


class MlpBlock(nn.Module):
  """Dense → GELU → dropout → Dense over the last axis.

  Attributes:
    hidden: hidden width.
    out: output width.
    dropout: dropout rate after the activation.
  """

  hidden: int
  out: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    # x: [..., C] -> [..., out]
    x = nn.Dense(self.hidden, name='hidden')(x)
    x = nn.gelu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.out, name='output')(x)


class MixerBlock(nn.Module):
  """One MLP-Mixer block: token mixing across points, then channel mixing.

  Attributes:
    num_tokens: N, the number of points (the token MLP's input and output width).
    token_hidden: hidden width of the token-mixing MLP.
    channel_hidden: hidden width of the channel-mixing MLP.
    dropout: dropout rate inside both MLPs and on their outputs.
  """

  num_tokens: int
  token_hidden: int
  channel_hidden: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Mixes the point features of a batch.

    Args:
      x: [B, N, C] point features, N == num_tokens.
      train: enables dropout.
    Returns:
      [B, N, C].
    """
    chex.assert_rank(x, 3)
    chex.assert_axis_dimension(x, 1, self.num_tokens)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    # Token mixing: the MLP runs along the point axis, shared over channels.
    y = jnp.swapaxes(nn.LayerNorm(name='token_norm')(x), 1, 2)  # [B, C, N]
    y = MlpBlock(self.token_hidden, self.num_tokens, self.dropout, name='token_mlp')(
        y, train=train)
    x = x + drop(jnp.swapaxes(y, 1, 2))
    # Channel mixing: the MLP runs along the channel axis, shared over points.
    y = MlpBlock(self.channel_hidden, x.shape[-1], self.dropout, name='channel_mlp')(
        nn.LayerNorm(name='channel_norm')(x), train=train)
    return x + drop(y)


class MixerStack(nn.Module):
  """`num_blocks` mixer blocks followed by a final LayerNorm.

  Attributes:
    num_tokens, token_hidden, channel_hidden, dropout: as in MixerBlock.
    num_blocks: number of blocks.
  """

  num_tokens: int
  num_blocks: int
  token_hidden: int
  channel_hidden: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Mixes one set of point features.

    Args:
      x: [B, N, C] point features, N == num_tokens.
      train: enables dropout.
    Returns:
      [B, N, C].
    """
    for i in range(self.num_blocks):
      x = MixerBlock(self.num_tokens, self.token_hidden, self.channel_hidden,
                     self.dropout, name=f'block_{i}')(x, train=train)
    return nn.LayerNorm(name='final_norm')(x)
