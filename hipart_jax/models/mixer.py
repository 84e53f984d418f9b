"""MLP-Mixer blocks over a set of skeleton points (the MSST's encoder/decoder layers).

A mixer block alternates two MLPs with pre-LayerNorm and residuals: one mixes
information *across points* (the token axis, -2), one mixes *across channels* (-1). The
token MLP has weights per point position, so the point order of a layout is part of the
model, as in the MSST's encoders and decoders.

Inside a stack the point features are kept as rows, [B * N, C] (row b * N + n is point n
of example b), and only the token MLP sees them as [B * C, N]. Every LayerNorm and bias
then works on a 2-D array, so its parameter gradient is a sum over one axis. XLA:CPU
splits a sum over the two axes of [B, N, C] into 32 x 32 windows that run about 4x
slower (1.7 vs 0.4 ms for a [128, 96, 128] gradient on one core). Same parameters, same
outputs; side by side the MSST train step runs 1.05-1.09x faster and MSST decoding at
batch 1024 1.29x (BENCHMARKS.md, change 9).
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
  def __call__(self, rows: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Mixes the point features of a batch, flattened to rows.

    Args:
      rows: [B * N, C] point features, N == num_tokens (row b * N + n: point n of b).
      train: enables dropout.
    Returns:
      [B * N, C].
    """
    chex.assert_rank(rows, 2)
    num_rows, channels = rows.shape
    if num_rows % self.num_tokens:
      raise ValueError(f'MixerBlock: {num_rows} rows are not a whole number of examples '
                       f'of num_tokens={self.num_tokens} points')
    batch = num_rows // self.num_tokens
    # Token mixing: the MLP runs along the point axis, shared over channels.
    y = nn.LayerNorm(name='token_norm')(rows)
    y = jnp.swapaxes(y.reshape(batch, self.num_tokens, channels), 1, 2)  # [B, C, N]
    y = MlpBlock(self.token_hidden, self.num_tokens, self.dropout, name='token_mlp')(
        y.reshape(batch * channels, self.num_tokens), train=train)
    y = jnp.swapaxes(y.reshape(batch, channels, self.num_tokens), 1, 2)  # [B, N, C]
    rows = rows + nn.Dropout(self.dropout, deterministic=not train)(
        y.reshape(num_rows, channels))
    # Channel mixing: the MLP runs along the channel axis, shared over points.
    y = nn.LayerNorm(name='channel_norm')(rows)
    y = MlpBlock(self.channel_hidden, channels, self.dropout, name='channel_mlp')(
        y, train=train)
    return rows + nn.Dropout(self.dropout, deterministic=not train)(y)


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
    chex.assert_rank(x, 3)
    chex.assert_axis_dimension(x, 1, self.num_tokens)
    rows = x.reshape(-1, x.shape[-1])  # [B * N, C]
    for i in range(self.num_blocks):
      rows = MixerBlock(self.num_tokens, self.token_hidden, self.channel_hidden,
                        self.dropout, name=f'block_{i}')(rows, train=train)
    return nn.LayerNorm(name='final_norm')(rows).reshape(x.shape)
