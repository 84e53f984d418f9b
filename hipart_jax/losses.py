"""Loss functions of the three HiPART stages, as pure functions of arrays.

Organized by stage; every weight and temperature is an argument (configs hold values).
Masks are float/bool arrays broadcastable to the per-point or per-sample terms; a masked
mean divides by max(count, 1) so an all-padding batch gives 0, not NaN.
"""

from __future__ import annotations

from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

# --------------------------------------------------------------------------------------
# Shared helpers.


def masked_mean(values: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean of `values` over entries where `mask` is nonzero (all entries if None)."""
  if mask is None:
    return jnp.mean(values)
  mask = jnp.broadcast_to(mask, values.shape).astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _point_mask(valid: jnp.ndarray | None, points: jnp.ndarray) -> jnp.ndarray | None:
  """[B] sample mask → [B, N] point mask for points [B, N, ...] (None stays None)."""
  if valid is None:
    return None
  chex.assert_shape(valid, points.shape[:1])
  return jnp.broadcast_to(valid[:, None], points.shape[:2])


# --------------------------------------------------------------------------------------
# Stage 1: MSST.


def reconstruction_loss(pred: jnp.ndarray, target: jnp.ndarray,
                        mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean squared point error |x - x̂|², averaged over valid points.

  Args:
    pred: [B, N, K] predicted points (K = 2 for 2D poses).
    target: [B, N, K].
    mask: [B, N] True/1 for points that count; None: all.
  Returns:
    [] mean over valid points of the squared Euclidean distance (summed over K).
  """
  chex.assert_equal_shape([pred, target])
  if mask is not None:
    chex.assert_shape(mask, pred.shape[:-1])
  return masked_mean(jnp.sum((pred - target)**2, axis=-1), mask)


def mean_point_distance(pred: jnp.ndarray, target: jnp.ndarray,
                        mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean Euclidean point distance (model units) over valid points.

  Args:
    pred, target: [B, N, K]; mask: [B, N] or None.
  Returns:
    [] scalar.
  """
  chex.assert_equal_shape([pred, target])
  if mask is not None:
    chex.assert_shape(mask, pred.shape[:-1])
  return masked_mean(jnp.linalg.norm(pred - target, axis=-1), mask)


def _l2_normalize(x: jnp.ndarray, eps: float) -> jnp.ndarray:
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x**2, axis=-1, keepdims=True), eps**2))


def local_alignment_loss(sparse_emb: jnp.ndarray, dense_emb: jnp.ndarray,
                         dense_part: np.ndarray | jnp.ndarray, temperature: float,
                         valid: jnp.ndarray | None = None, eps: float = 1e-6) -> jnp.ndarray:
  """Local alignment (LA): InfoNCE between sparse tokens and their parts' dense tokens.

  For sample b and part i, the anchor is sparse token (b, i) and its positive is the mean
  of the dense tokens of part i in sample b. The negatives are the positives of the
  sample's other parts: the loss pulls a part's sparse token toward its own part and
  pushes it away from the other parts of the same pose (docs/DESIGN.md §1). Parts of other
  samples are not negatives, so the loss does not push apart the same part of two
  similar poses, and it does not depend on the batch size or its split over devices.
  Parts that own no dense point (e.g. the root) have no positive and are skipped,
  neither anchors nor negatives; so are invalid samples. Anchors and positives are
  L2-normalized before the dot products (cosine similarity divided by `temperature`).
  Cost: [B, S, S] logits.

  Args:
    sparse_emb: [B, S, C] sparse token embeddings.
    dense_emb: [B, D, C] dense token embeddings.
    dense_part: [D] the part (sparse index) of each dense point.
    temperature: softmax temperature.
    valid: [B] bool, False for padding samples; None: all valid.
    eps: norm floor of the L2 normalization.
  Returns:
    [] mean InfoNCE loss over the valid anchors.
  """
  batch, num_sparse, channels = sparse_emb.shape
  chex.assert_shape(dense_emb, (batch, None, channels))
  chex.assert_shape(dense_part, (dense_emb.shape[1],))
  membership = jax.nn.one_hot(jnp.asarray(dense_part), num_sparse, dtype=dense_emb.dtype)
  group_size = jnp.sum(membership, axis=0)  # [S]
  part_sum = jnp.einsum('bdc,ds->bsc', dense_emb, membership)
  positives = part_sum / jnp.maximum(group_size, 1.0)[None, :, None]  # [B, S, C]

  usable = jnp.broadcast_to(group_size > 0, (batch, num_sparse))
  if valid is not None:
    chex.assert_shape(valid, (batch,))
    usable = usable & valid[:, None].astype(bool)

  anchors = _l2_normalize(sparse_emb, eps)  # [B, S, C]
  positives = _l2_normalize(positives, eps)
  logits = jnp.einsum('bic,bjc->bij', anchors, positives) / temperature  # [B, S, S]
  # Skipped parts are excluded as negatives with a finite floor (no inf - inf NaNs).
  logits = jnp.where(usable[:, None, :], logits, jnp.finfo(logits.dtype).min)
  per_anchor = (jax.nn.logsumexp(logits, axis=-1)
                - jnp.diagonal(logits, axis1=1, axis2=2))  # [B, S]
  return masked_mean(jnp.where(usable, per_anchor, 0.0), usable)


def global_alignment_loss(action_logits: jnp.ndarray, labels: jnp.ndarray,
                          valid: jnp.ndarray | None = None) -> jnp.ndarray:
  """Global alignment (GA): action classification cross-entropy.

  Args:
    action_logits: [B, A] logits of the MSST's global-alignment head.
    labels: [B] int action labels.
    valid: [B] bool or None.
  Returns:
    [] mean cross-entropy over valid samples.
  """
  chex.assert_rank(action_logits, 2)
  chex.assert_shape(labels, action_logits.shape[:1])
  losses = optax.softmax_cross_entropy_with_integer_labels(action_logits,
                                                           labels.astype(jnp.int32))
  return masked_mean(losses, valid)


def msst_loss(recon: Mapping[str, jnp.ndarray], out: Mapping[str, jnp.ndarray],
              batch: Mapping[str, jnp.ndarray], weights: Mapping[str, Any], *,
              dense_part: np.ndarray | jnp.ndarray
              ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Stage-1 objective L1 and its metrics.

  L1 = |x_f - x̂_f|² + |x_d - x̂_d|² + w_s |x_s - x̂_s|² + w_c (commit_s + commit_d)
       + λ_l LA + λ_g GA.

  Args:
    recon: MSST reconstructions {'sparse': [B, S, 2], 'dense': [B, D, 2], 'fine': [B, F, 2]}.
    out: the MSST's `out` dict (embeddings, commitment losses, codebook statistics and,
      when the head is enabled, 'action_logits' [B, A]).
    batch: ground truth 'sparse_2d', 'dense_2d', 'fine_2d' in the model frame; 'action'
      [B] when GA is used; optional 'valid' [B] bool (padding is excluded everywhere).
    weights: mapping or ConfigDict with keys 'sparse' (w_s), 'commitment' (w_c),
      'local_alignment' (λ_l), 'global_alignment' (λ_g), 'la_temperature'.
    dense_part: [D] part of each dense point (`Hierarchy.dense_part_array`), for LA.
  Returns:
    (loss [], metrics) with metrics: loss; recon_{sparse,dense,fine}_{mse,distance}
    (distance: mean point distance in model units); commitment_{sparse,dense};
    local_alignment; global_alignment and action_accuracy (when the head is enabled);
    perplexity_{sparse,dense}; usage_{sparse,dense}.
  """
  valid = batch.get('valid')
  metrics = {}
  for level in ('sparse', 'dense', 'fine'):
    pred, target = recon[level], batch[f'{level}_2d']
    mask = _point_mask(valid, pred)
    metrics[f'recon_{level}_mse'] = reconstruction_loss(pred, target, mask)
    metrics[f'recon_{level}_distance'] = mean_point_distance(pred, target, mask)
  for level in ('sparse', 'dense'):
    metrics[f'commitment_{level}'] = out[f'{level}_commitment_loss']
    metrics[f'perplexity_{level}'] = out[f'{level}_perplexity']
    metrics[f'usage_{level}'] = out[f'{level}_usage']
  metrics['local_alignment'] = local_alignment_loss(
      out['sparse_embedding'], out['dense_embedding'], dense_part,
      weights['la_temperature'], valid)

  loss = (metrics['recon_fine_mse'] + metrics['recon_dense_mse']
          + weights['sparse'] * metrics['recon_sparse_mse']
          + weights['commitment'] * (metrics['commitment_sparse'] + metrics['commitment_dense'])
          + weights['local_alignment'] * metrics['local_alignment'])
  if 'action_logits' in out:
    logits, labels = out['action_logits'], batch['action']
    metrics['global_alignment'] = global_alignment_loss(logits, labels, valid)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    metrics['action_accuracy'] = masked_mean(correct, valid)
    loss = loss + weights['global_alignment'] * metrics['global_alignment']
  elif weights['global_alignment']:
    raise ValueError('weights["global_alignment"] is nonzero but the MSST has no '
                     'global-alignment head (set MSST.num_actions > 0)')
  metrics['loss'] = loss
  return loss, metrics


# --------------------------------------------------------------------------------------
# Stage 2 (HiARM).


def token_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                        mask: jnp.ndarray | None = None, label_smoothing: float = 0.0
                        ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mean cross-entropy and accuracy of token predictions.

  Args:
    logits: [B, N, V]; targets: [B, N] int ids; mask: optional [B, N] bool (False
      entries, e.g. padding, count in neither value).
    label_smoothing: mass spread uniformly over the vocabulary (0: plain CE).
  Returns:
    (loss [], accuracy []) means over the unmasked tokens.
  """
  chex.assert_rank(logits, 3)
  chex.assert_shape(targets, logits.shape[:2])
  vocab = logits.shape[-1]
  labels = optax.smooth_labels(jax.nn.one_hot(targets, vocab), label_smoothing)
  ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return masked_mean(ce, mask), masked_mean(correct, mask)


# --------------------------------------------------------------------------------------
# Stage 3 (lifter).


def mpjpe_loss(pred: jnp.ndarray, target: jnp.ndarray, valid: jnp.ndarray | None = None
               ) -> jnp.ndarray:
  """Mean per-joint position error in the inputs' unit (meters), differentiable at 0.

  Args:
    pred, target: [B, J, 3]; valid: optional [B] bool.
  """
  chex.assert_equal_shape([pred, target])
  error = jnp.sqrt(jnp.sum((pred - target) ** 2, axis=-1) + 1e-12)  # [B, J]
  return masked_mean(error.mean(-1), valid)
