"""Vector quantizer with an EMA codebook, straight-through gradients and dead-code restart.

The codebook is not trained by gradients. It lives, with its running statistics, in the
mutable collection `VQ_COLLECTION` ('vq_stats'), never in 'params':

  codebook          [K, C]  the code vectors used for quantization;
  cluster_size      [K]     EMA of how many encoder vectors each code received;
  cluster_sum       [K, C]  EMA of the sum of those vectors;
  steps_since_used  [K]     training updates since the code was last assigned a vector;
  num_updates       []      training updates so far.

Each training call (`train=True` with 'vq_stats' mutable) assigns every valid encoder
vector to its nearest code, then

  cluster_size <- decay * cluster_size + (1 - decay) * counts
  cluster_sum  <- decay * cluster_sum  + (1 - decay) * sums
  codebook     <- cluster_sum / laplace(cluster_size),
  laplace(n)_k  = (n_k + eps) / (sum(n) + K * eps) * sum(n)

(Laplace smoothing keeps a code with a vanishing count from dividing by ~0). Statistics
start at cluster_size = 1 and cluster_sum = codebook, i.e. each code begins as the mean of
one pseudo-vector at its initial position, so codebook == cluster_sum / cluster_size holds
from the first step and an unused code stays where it is.

With `statistics_axis_name` set (the trainer sets 'batch' under pmap), counts and sums are
`lax.psum`-ed over that axis before the update, and restarted codes are taken from replica
0's batch, so every replica keeps an identical codebook. Calls that do not update (eval,
`encode`) run no collective.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

VQ_COLLECTION = 'vq_stats'
# Optional rng stream for choosing which encoder vectors re-seed dead codes; without it
# the choice is a deterministic rotation over the batch.
RESTART_RNG = 'vq_restart'


def _perplexity(probs: jnp.ndarray) -> jnp.ndarray:
  """exp(entropy) of a [K] distribution; 0 log 0 = 0."""
  safe = jnp.where(probs > 0, probs, 1.0)
  return jnp.exp(-jnp.sum(probs * jnp.log(safe)))


def _usage(counts: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Perplexity and the fraction of codes used, of a [K] histogram."""
  probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
  return dict(perplexity=_perplexity(probs),
              usage=jnp.mean((counts > 0).astype(jnp.float32)))


class VectorQuantizer(nn.Module):
  """Nearest-neighbour quantization of vectors against an EMA-updated codebook.

  Attributes:
    num_codes: K, codebook size.
    dim: C, code dimension.
    decay: EMA decay of the cluster statistics.
    epsilon: Laplace smoothing constant of the cluster sizes.
    dead_after_steps: a code unused for this many consecutive training updates is
      re-seeded from an encoder vector of the current batch; 0 disables restarts.
    statistics_axis_name: named axis to psum batch statistics over (None: no collective).
    init_stddev: standard deviation of the initial codebook.
  """

  num_codes: int
  dim: int
  decay: float = 0.99
  epsilon: float = 1e-5
  dead_after_steps: int = 0
  statistics_axis_name: str | None = None
  init_stddev: float = 1.0

  def setup(self):
    shape = (self.num_codes, self.dim)
    init = nn.initializers.normal(self.init_stddev)
    self.codebook = self.variable(VQ_COLLECTION, 'codebook',
                                  lambda: init(self.make_rng('params'), shape, jnp.float32))
    self.cluster_size = self.variable(VQ_COLLECTION, 'cluster_size',
                                      lambda: jnp.ones((self.num_codes,), jnp.float32))
    self.cluster_sum = self.variable(VQ_COLLECTION, 'cluster_sum', lambda: self.codebook.value)
    self.steps_since_used = self.variable(VQ_COLLECTION, 'steps_since_used',
                                          lambda: jnp.zeros((self.num_codes,), jnp.int32))
    self.num_updates = self.variable(VQ_COLLECTION, 'num_updates',
                                     lambda: jnp.zeros((), jnp.int32))

  def lookup(self, ids: jnp.ndarray) -> jnp.ndarray:
    """Code vectors of integer ids: [...] -> [..., C]."""
    return jnp.take(self.codebook.value, ids, axis=0)

  def expected_code(self, probs: jnp.ndarray) -> jnp.ndarray:
    """The mean code vector under a distribution over the codes: [..., K] -> [..., C]."""
    chex.assert_axis_dimension(probs, -1, self.num_codes)
    return probs @ self.codebook.value

  def __call__(self, z: jnp.ndarray, mask: jnp.ndarray | None = None, *,
               train: bool) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Quantizes encoder vectors (and updates the codebook when training).

    Args:
      z: [..., C] encoder outputs, e.g. [B, N, C].
      mask: [...] (e.g. [B, N]) True/1 for vectors that may update the codebook and count
        in the losses and statistics; padded slots are still quantized. None: all valid.
      train: update the EMA statistics (only if 'vq_stats' is mutable and not during init).
    Returns:
      quantized: [..., C] code vectors with straight-through gradients to `z`.
      out: dict with
        ids: [...] int32 code indices;
        commitment_loss: [] mean over valid vectors and channels of (z - sg(q))^2;
        perplexity: [] exp(entropy) of the batch's code histogram;
        usage: [] fraction of codes used by the batch.
      When the statistics are updated with `statistics_axis_name` set, perplexity and usage
      describe the global batch (psum-ed histogram); otherwise this replica's batch, and no
      collective runs, so eval calls work outside a named axis.
    """
    chex.assert_axis_dimension(z, -1, self.dim)
    lead = z.shape[:-1]
    flat, weights = self._flatten(z, mask)
    ids, q = self._assign(flat)
    update = (train and self.is_mutable_collection(VQ_COLLECTION)
              and not self.is_initializing())
    counts, sums = self._statistics(ids, flat, weights)
    if update and self.statistics_axis_name is not None:
      counts, sums = lax.psum((counts, sums), self.statistics_axis_name)

    num_valid = jnp.sum(weights)
    squared = jnp.sum((flat - lax.stop_gradient(q))**2, axis=-1)  # [N]
    commitment = jnp.sum(weights * squared) / (jnp.maximum(num_valid, 1.0) * self.dim)

    if update:
      self._update(counts, sums, flat, weights)

    # Straight-through estimator: argmin has no gradient, so the forward pass uses the
    # code vector q while the backward pass treats quantization as the identity. Written
    # as z + sg(q - z): its value is q (up to rounding), and its derivative w.r.t. z is
    # the identity because the stop_gradient term is a constant for autodiff. Decoder-side
    # losses thus reach the encoder as if it had produced q itself.
    q = q.reshape(z.shape).astype(z.dtype)
    quantized = z + lax.stop_gradient(q - z)
    out = dict(ids=ids.reshape(lead), commitment_loss=commitment, **_usage(counts))
    return quantized, out

  def _flatten(self, z, mask):
    """[N, C] float32 vectors and [N] float32 weights (1 valid, 0 padding)."""
    flat = z.reshape(-1, self.dim).astype(jnp.float32)
    if mask is None:
      return flat, jnp.ones(flat.shape[:1], jnp.float32)
    chex.assert_shape(mask, z.shape[:-1])
    return flat, mask.reshape(-1).astype(jnp.float32)

  def _assign(self, flat):
    """Nearest codes of [N, C] vectors: ([N] int32 ids, [N, C] code vectors)."""
    codebook = self.codebook.value  # [K, C]
    distances = (jnp.sum(flat**2, axis=-1, keepdims=True)
                 - 2.0 * jnp.matmul(flat, codebook.T, precision=lax.Precision.HIGHEST)
                 + jnp.sum(codebook**2, axis=-1)[None])  # [N, K]
    ids = jnp.argmin(distances, axis=-1).astype(jnp.int32)  # [N]
    return ids, jnp.take(codebook, ids, axis=0)

  def _statistics(self, ids, flat, weights):
    """This replica's [K] counts and [K, C] sums of the valid vectors per code."""
    assignments = jax.nn.one_hot(ids, self.num_codes) * weights[:, None]  # [N, K]
    counts = jnp.sum(assignments, axis=0)
    return counts, jnp.matmul(assignments.T, flat, precision=lax.Precision.HIGHEST)

  def _update(self, counts: jnp.ndarray, sums: jnp.ndarray, flat: jnp.ndarray,
              weights: jnp.ndarray):
    """EMA step and dead-code restart.

    Args:
      counts: [K] valid vectors assigned to each code (psum-ed over replicas).
      sums: [K, C] sum of those vectors (psum-ed over replicas).
      flat: [N, C] this replica's encoder vectors.
      weights: [N] 1 for valid vectors, 0 for padding.
    """
    cluster_size = self.decay * self.cluster_size.value + (1.0 - self.decay) * counts
    cluster_sum = self.decay * self.cluster_sum.value + (1.0 - self.decay) * sums
    total = jnp.sum(cluster_size)
    smoothed = ((cluster_size + self.epsilon)
                / (total + self.num_codes * self.epsilon) * total)
    codebook = cluster_sum / smoothed[:, None]
    steps = jnp.where(counts > 0, 0, self.steps_since_used.value + 1)

    if self.dead_after_steps > 0:
      dead = steps >= self.dead_after_steps  # [K]
      candidates, available = self._restart_candidates(dead, flat, weights)
      restart = dead & available
      codebook = jnp.where(restart[:, None], candidates, codebook)
      # A restarted code starts over like a fresh one: one pseudo-vector at its position.
      cluster_size = jnp.where(restart, 1.0, cluster_size)
      cluster_sum = jnp.where(restart[:, None], candidates, cluster_sum)
      steps = jnp.where(restart, 0, steps)

    self.codebook.value = codebook
    self.cluster_size.value = cluster_size
    self.cluster_sum.value = cluster_sum
    self.steps_since_used.value = steps.astype(jnp.int32)
    self.num_updates.value = self.num_updates.value + 1

  def _restart_candidates(self, dead: jnp.ndarray, flat: jnp.ndarray, weights: jnp.ndarray
                          ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """One encoder vector per code for re-seeding (only the dead codes' rows are used).

    Valid rows are ranked (randomly with the RESTART_RNG stream, else by a rotation that
    advances with `num_updates`); the j-th dead code takes the j-th ranked row (cycling
    when there are more dead codes than valid rows), so dead codes get distinct vectors.

    Args:
      dead: [K] bool.
      flat: [N, C] encoder vectors of this replica.
      weights: [N] 1 for valid rows.
    Returns:
      ([K, C] candidates, [] bool whether any valid row was available), identical on every
      replica of `statistics_axis_name` (replica 0's rows are broadcast).
    """
    num_rows = flat.shape[0]
    if self.has_rng(RESTART_RNG):
      score = jax.random.uniform(self.make_rng(RESTART_RNG), (num_rows,))
    else:
      offset = self.num_updates.value * self.num_codes
      score = ((jnp.arange(num_rows) + offset) % num_rows).astype(jnp.float32)
    valid = weights > 0
    order = jnp.argsort(jnp.where(valid, score, jnp.inf))  # valid rows first
    num_valid = jnp.sum(valid.astype(jnp.int32))
    dead_rank = jnp.cumsum(dead.astype(jnp.int32)) - 1  # j for the j-th dead code
    rows = order[jnp.maximum(dead_rank, 0) % jnp.maximum(num_valid, 1)]  # [K]
    candidates = jnp.take(flat, rows, axis=0)
    available = num_valid > 0
    if self.statistics_axis_name is not None:
      first = lax.axis_index(self.statistics_axis_name) == 0
      candidates = lax.psum(jnp.where(first, candidates, 0.0), self.statistics_axis_name)
      available = lax.psum(jnp.where(first, available, False).astype(jnp.int32),
                           self.statistics_axis_name) > 0
    return candidates, available
