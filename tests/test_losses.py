"""Tests for the loss functions (stage 1: MSST)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hipart_jax import losses

WEIGHTS = dict(sparse=0.5, commitment=0.25, local_alignment=0.1, global_alignment=0.2,
               la_temperature=0.3)


def test_reconstruction_loss_and_distance_by_hand():
  pred = jnp.array([[[0., 0.], [3., 4.]], [[1., 1.], [7., 7.]]])
  target = jnp.zeros_like(pred)
  mask = jnp.array([[True, True], [True, False]])
  # Squared distances 0, 25, 2 (the masked 98 is excluded); distances 0, 5, sqrt(2).
  np.testing.assert_allclose(losses.reconstruction_loss(pred, target, mask), 27 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.mean_point_distance(pred, target, mask),
                             (5 + np.sqrt(2)) / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.reconstruction_loss(pred, target), 125 / 4, rtol=1e-6)
  assert float(losses.reconstruction_loss(pred, target, jnp.zeros((2, 2), bool))) == 0.0


def _naive_local_alignment(sparse, dense, dense_part, temperature, valid):
  """Loop-by-loop InfoNCE: each (sample, part) anchor against its sample's usable parts."""
  sparse, dense = np.asarray(sparse, np.float64), np.asarray(dense, np.float64)
  batch, num_parts, _ = sparse.shape
  pairs, positives = [], {}
  for b in range(batch):
    for i in range(num_parts):
      members = [k for k, p in enumerate(dense_part) if p == i]
      if valid[b] and members:
        mean = dense[b, members].mean(axis=0)
        positives[b, i] = mean / np.linalg.norm(mean)
        pairs.append((b, i))
  total = 0.0
  for b, i in pairs:
    anchor = sparse[b, i] / np.linalg.norm(sparse[b, i])
    candidates = [pair for pair in pairs if pair[0] == b]
    logits = np.array([anchor @ positives[pair] / temperature for pair in candidates])
    own = logits[candidates.index((b, i))]
    total += np.log(np.sum(np.exp(logits))) - own
  return total / len(pairs)


@pytest.mark.parametrize('with_padding', [False, True])
def test_local_alignment_matches_naive_loop(with_padding):
  rng = np.random.default_rng(0)
  batch, num_parts, channels = 3, 5, 4
  dense_part = np.array([1, 1, 2, 4, 4, 4, 1])  # parts 0 and 3 own no dense point
  sparse = rng.normal(size=(batch, num_parts, channels)).astype(np.float32)
  dense = rng.normal(size=(batch, len(dense_part), channels)).astype(np.float32)
  valid = np.array([True, not with_padding, True])
  got = jax.jit(losses.local_alignment_loss, static_argnums=3)(
      sparse, dense, dense_part, 0.3, valid)
  want = _naive_local_alignment(sparse, dense, dense_part, 0.3, valid)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Skipped parts really are skipped: their embeddings do not matter.
  moved = sparse.copy()
  moved[:, [0, 3]] += 10.0
  if with_padding:
    moved[1] += 10.0
  np.testing.assert_allclose(losses.local_alignment_loss(moved, dense, dense_part, 0.3, valid),
                             got, rtol=1e-5)


def test_local_alignment_negatives_are_the_same_samples_parts():
  # Other samples are not negatives: a batch's loss is the mean of its samples' losses
  # (equal part counts), and repeating the batch changes nothing.
  rng = np.random.default_rng(2)
  dense_part = np.array([1, 1, 2, 3, 3])
  sparse = rng.normal(size=(4, 4, 6)).astype(np.float32)
  dense = rng.normal(size=(4, 5, 6)).astype(np.float32)
  whole = losses.local_alignment_loss(sparse, dense, dense_part, 0.2)
  each = [losses.local_alignment_loss(sparse[b:b + 1], dense[b:b + 1], dense_part, 0.2)
          for b in range(4)]
  np.testing.assert_allclose(whole, np.mean(each), rtol=1e-5)
  repeated = losses.local_alignment_loss(np.concatenate([sparse, sparse]),
                                         np.concatenate([dense, dense]), dense_part, 0.2)
  np.testing.assert_allclose(repeated, whole, rtol=1e-5)


def test_local_alignment_prefers_aligned_tokens():
  rng = np.random.default_rng(1)
  dense_part = np.repeat(np.arange(1, 6), 2)
  dense = rng.normal(size=(2, 10, 8)).astype(np.float32)
  aligned = np.zeros((2, 6, 8), np.float32)
  aligned[:, 1:] = dense.reshape(2, 5, 2, 8).mean(axis=2)
  shuffled = aligned[:, [0, 2, 3, 4, 5, 1]]
  assert (losses.local_alignment_loss(aligned, dense, dense_part, 0.1)
          < losses.local_alignment_loss(shuffled, dense, dense_part, 0.1))


def test_global_alignment_is_masked_cross_entropy():
  logits = jnp.array([[2., 0., 0.], [0., 1., 0.], [5., 5., 5.]])
  labels = jnp.array([0, 2, 1])
  log_probs = np.asarray(jax.nn.log_softmax(logits))
  want = -(log_probs[0, 0] + log_probs[1, 2]) / 2
  got = losses.global_alignment_loss(logits, labels, jnp.array([True, True, False]))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def _fake_stage1(seed=0, batch=3, num_actions=4):
  rng = np.random.default_rng(seed)
  dense_part = np.array([1, 1, 2, 2, 3])
  sizes = dict(sparse=4, dense=5, fine=7)
  f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  recon = {level: f32(batch, n, 2) for level, n in sizes.items()}
  data = {f'{level}_2d': f32(batch, n, 2) for level, n in sizes.items()}
  data['action'] = jnp.asarray(rng.integers(0, num_actions, size=batch))
  out = dict(sparse_embedding=f32(batch, 4, 6), dense_embedding=f32(batch, 5, 6),
             sparse_commitment_loss=jnp.float32(0.7), dense_commitment_loss=jnp.float32(0.4),
             sparse_perplexity=jnp.float32(3.0), dense_perplexity=jnp.float32(4.0),
             sparse_usage=jnp.float32(0.5), dense_usage=jnp.float32(0.25),
             action_logits=f32(batch, num_actions))
  return recon, out, data, dense_part


def test_msst_loss_combines_terms_with_weights():
  recon, out, data, dense_part = _fake_stage1()
  loss, metrics = losses.msst_loss(recon, out, data, WEIGHTS, dense_part=dense_part)
  mse = {level: losses.reconstruction_loss(recon[level], data[f'{level}_2d'])
         for level in ('sparse', 'dense', 'fine')}
  la = losses.local_alignment_loss(out['sparse_embedding'], out['dense_embedding'],
                                   dense_part, WEIGHTS['la_temperature'])
  ga = losses.global_alignment_loss(out['action_logits'], data['action'])
  want = (mse['fine'] + mse['dense'] + 0.5 * mse['sparse'] + 0.25 * (0.7 + 0.4)
          + 0.1 * la + 0.2 * ga)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], loss)
  np.testing.assert_allclose(metrics['recon_fine_mse'], mse['fine'])
  np.testing.assert_allclose(metrics['local_alignment'], la)
  np.testing.assert_allclose(metrics['global_alignment'], ga)
  assert float(metrics['perplexity_dense']) == 4.0 and float(metrics['usage_sparse']) == 0.5
  assert {f'recon_{level}_distance' for level in ('sparse', 'dense', 'fine')} <= set(metrics)
  assert 0.0 <= float(metrics['action_accuracy']) <= 1.0


def test_msst_loss_excludes_padding_samples():
  recon, out, data, dense_part = _fake_stage1(seed=1)
  data['valid'] = jnp.array([True, True, False])
  loss, _ = losses.msst_loss(recon, out, data, WEIGHTS, dense_part=dense_part)
  changed = dict(data, fine_2d=data['fine_2d'].at[2].add(3.0),
                 action=data['action'].at[2].set((data['action'][2] + 1) % 4))
  changed_out = dict(out, sparse_embedding=out['sparse_embedding'].at[2].add(1.0))
  loss_changed, _ = losses.msst_loss(recon, changed_out, changed, WEIGHTS,
                                     dense_part=dense_part)
  np.testing.assert_allclose(loss_changed, loss, rtol=1e-6)
  all_valid = dict(changed, valid=jnp.array([True, True, True]))
  loss_all, _ = losses.msst_loss(recon, changed_out, all_valid, WEIGHTS, dense_part=dense_part)
  assert abs(float(loss_all) - float(loss)) > 1e-3


def test_msst_loss_needs_the_head_for_global_alignment():
  recon, out, data, dense_part = _fake_stage1()
  del out['action_logits']
  with pytest.raises(ValueError, match='global-alignment head'):
    losses.msst_loss(recon, out, data, WEIGHTS, dense_part=dense_part)
  _, metrics = losses.msst_loss(recon, out, data, dict(WEIGHTS, global_alignment=0.0),
                                dense_part=dense_part)
  assert 'global_alignment' not in metrics
