"""The SimpleBaseline lifter (Martinez et al., ICCV 2017): a residual MLP, 2D → 3D.

The field's classic lifting baseline (mmpose ships it as SimpleBaseline3D): the 2D
points are flattened into one vector, mapped to `width` channels, passed through
residual blocks of two (linear, norm, ReLU, dropout) layers each, and read out as the
17 root-relative 3D joints. Input modes are the transformer lifter's (`lifter.py`):
'sparse' reads the 17 input joints and their confidence; 'hierarchical' and 'oracle'
add a hierarchy's 2D points (generated or ground truth) through a second, zero-initialized
embedding, so the same network, started as the sparse one, measures what the hierarchy
adds.

The norm is LayerNorm rather than the paper's BatchNorm: it has no batch statistics to
carry through the trainer, and behaves the same in training and evaluation.

`HiddenJointRegressor` is the same trunk read out in the image instead: a diagnostic
that guesses the hidden input joints (`bench/imputation_bound.py`).
"""

from __future__ import annotations

from typing import Mapping

import chex
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hipart_jax import skeleton
from hipart_jax.models import lifter as lifter_lib


# What the non-sparse modes read of a hierarchy (`SimpleBaseline.hierarchy_points`).
HIERARCHY_POINTS = ('all', 'hidden_parts')


class ResidualBlock(nn.Module):
  """x + [linear → norm → ReLU → dropout] × 2, at constant width."""

  dropout: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    # x: [B, C]
    y = x
    for _ in range(2):
      y = nn.Dense(x.shape[-1])(y)
      y = nn.LayerNorm()(y)
      y = nn.relu(y)
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return x + y


def embed_input_joints(inputs_2d: jnp.ndarray, inputs_confidence: jnp.ndarray,
                       width: int) -> jnp.ndarray:
  """[B, 17, 2] joints, [B, 17] confidence → [B, width]: the 'embedding' layer.

  Like `residual_trunk`, it is called inside a compact `__call__`, so its layer belongs
  to (and is named in) the calling module.
  """
  batch = inputs_2d.shape[0]
  chex.assert_shape(inputs_2d, (batch, skeleton.NUM_JOINTS, 2))
  chex.assert_shape(inputs_confidence, (batch, skeleton.NUM_JOINTS))
  inputs = jnp.concatenate([inputs_2d.reshape(batch, -1), inputs_confidence], -1)
  return nn.Dense(width, name='embedding')(inputs)


def residual_trunk(x: jnp.ndarray, *, num_blocks: int, dropout: float,
                   train: bool) -> jnp.ndarray:
  """[B, C] embedding → [B, C]: norm, ReLU, dropout, then the residual blocks."""
  x = nn.relu(nn.LayerNorm(name='embedding_norm')(x))
  x = nn.Dropout(dropout, deterministic=not train)(x)
  for i in range(num_blocks):
    x = ResidualBlock(dropout, name=f'block_{i}')(x, train=train)
  return x


class SimpleBaseline(nn.Module):
  """2D points → root-relative 3D pose (meters), the Martinez et al. MLP.

  Attributes:
    hierarchy: the point hierarchy (sizes of the levels read in the non-sparse modes).
    mode: one of `lifter.LIFTER_MODES`.
    width: channels of every hidden layer (1024 in the paper).
    num_blocks: residual blocks (2 in the paper).
    dropout: dropout rate inside the blocks (0.5 in the paper).
    hierarchy_points: which of the hierarchy's points the non-sparse modes read: 'all',
      or 'hidden_parts', only the points of body parts whose input joint is hidden
      (confidence 0), the others read as 0. A generated hierarchy is a function of the
      input, so where the input shows the joint it adds only quantization noise.
  """

  hierarchy: skeleton.Hierarchy
  mode: str = 'sparse'
  width: int = 1024
  num_blocks: int = 2
  dropout: float = 0.5
  hierarchy_points: str = 'all'

  @nn.compact
  def __call__(self, inputs_2d: jnp.ndarray, inputs_confidence: jnp.ndarray,
               hierarchy_2d: Mapping[str, jnp.ndarray] | None = None, *,
               train: bool = False) -> jnp.ndarray:
    """Lifts one batch: inputs, shapes and output are those of `lifter.Lifter.__call__`
    ([B, 17, 2] joints, [B, 17] confidence, the hierarchy's levels for the non-sparse
    modes → [B, 17, 3] root-relative meters, joint 0 exactly zero)."""
    if self.mode not in lifter_lib.LIFTER_MODES:
      raise ValueError(f'SimpleBaseline.mode={self.mode!r}; expected one of '
                       f'{lifter_lib.LIFTER_MODES}')
    batch = inputs_2d.shape[0]
    x = embed_input_joints(inputs_2d, inputs_confidence, self.width)
    if self.mode != 'sparse':
      if hierarchy_2d is None:
        raise ValueError(f'SimpleBaseline(mode={self.mode!r}) needs hierarchy_2d')
      h = self.hierarchy
      if self.hierarchy_points not in HIERARCHY_POINTS:
        raise ValueError(f'SimpleBaseline.hierarchy_points={self.hierarchy_points!r}; '
                         f'expected one of {HIERARCHY_POINTS}')
      hidden = inputs_confidence <= 0  # [B, 17]
      levels = []
      for level, size, part in zip(skeleton.LEVELS, (h.num_sparse, h.num_dense, h.num_fine),
                                   (np.arange(h.num_sparse), h.dense_part_array,
                                    h.fine_part)):
        points = hierarchy_2d[level]
        chex.assert_shape(points, (batch, size, 2))
        if self.hierarchy_points == 'hidden_parts':
          points = jnp.where(hidden[:, part, None], points, 0.0)
        levels.append(points.reshape(batch, -1))
      # The hierarchy's own embedding starts at zero, so the network starts as the
      # sparse baseline and learns what the hierarchy adds to the exact input joints.
      x = x + nn.Dense(self.width, kernel_init=nn.initializers.zeros,
                       name='hierarchy_embedding')(jnp.concatenate(levels, -1))
    x = residual_trunk(x, num_blocks=self.num_blocks, dropout=self.dropout, train=train)
    # A zero head starts every pose at the root: with the default init the first
    # outputs are about a meter off, and clipped gradients take hundreds of steps to
    # bring them back.
    pose = nn.Dense(skeleton.NUM_JOINTS * 3, kernel_init=nn.initializers.zeros,
                    name='head')(x).reshape(batch, -1, 3)
    return pose - pose[:, skeleton.ROOT:skeleton.ROOT + 1]


class HiddenJointRegressor(nn.Module):
  """The SimpleBaseline trunk regressing the input joints in the image: a diagnostic.

  Trained on the joints the input hides (`bench/imputation_bound.py`), it is the best
  deterministic guess of them from what the input shows, and so measures the most that a
  greedy hierarchy, itself a function of the input, can tell a lifter about them. The
  head is zero at init and adds to the input points, so visible joints start exact.

  Attributes: `width`, `num_blocks`, `dropout`, as for `SimpleBaseline`.
  """

  width: int = 1024
  num_blocks: int = 2
  dropout: float = 0.5

  @nn.compact
  def __call__(self, inputs_2d: jnp.ndarray, inputs_confidence: jnp.ndarray, *,
               train: bool = False) -> jnp.ndarray:
    """[B, 17, 2] joints (model frame), [B, 17] confidence → [B, 17, 2] joints."""
    x = embed_input_joints(inputs_2d, inputs_confidence, self.width)
    x = residual_trunk(x, num_blocks=self.num_blocks, dropout=self.dropout, train=train)
    offsets = nn.Dense(skeleton.NUM_JOINTS * 2, kernel_init=nn.initializers.zeros,
                       name='head')(x)
    return inputs_2d + offsets.reshape(inputs_2d.shape)
