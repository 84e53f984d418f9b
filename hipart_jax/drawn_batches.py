"""Training batches from stored augmented draws (written by `augmented_draws`).

A draws directory holds `manifest.json` and one `draw-NNN.npz` per draw (format:
`augmented_draws`); `load_draws` reads every row back and `DrawnBatches` serves them
as training batches, in place of `input_pipeline.TrainBatches`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Iterator, Mapping

import numpy as np

from hipart_jax import input_pipeline

FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
# What a lifter's train step reads (its 3D target, input, and both hierarchies).
DRAW_KEYS = ('inputs_2d', 'inputs_confidence', 'visible', 'sparse_2d', 'dense_2d',
             'fine_2d', 'sparse_3d', 'action', 'norm_center', 'norm_scale', 'image_size',
             'index', 'valid', 'generated_sparse_2d', 'generated_dense_2d',
             'generated_fine_2d')


def read_manifest(directory: str | pathlib.Path) -> dict[str, Any]:
  path = pathlib.Path(directory) / MANIFEST
  if not path.exists():
    raise FileNotFoundError(f'{path}: no manifest; write the draws with '
                            'augmented_draws.write_draws (or launch.generate --draws)')
  manifest = json.loads(path.read_text())
  if manifest.get('format_version') != FORMAT_VERSION:
    raise ValueError(f'{path}: format_version {manifest.get("format_version")!r}, '
                     f'expected {FORMAT_VERSION}')
  return manifest


def load_draws(directory: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Every draw's rows, concatenated: {key: [num_draws * num_examples, ...]}.

  Raises:
    FileNotFoundError: a draw the manifest lists is missing (the run was interrupted).
    ValueError: a draw file lacks a key or has the wrong number of rows.
  """
  directory = pathlib.Path(directory)
  manifest = read_manifest(directory)
  expected = manifest['settings']['num_examples']
  parts = []
  for name in manifest['draws']:
    path = directory / name
    if not path.exists():
      raise FileNotFoundError(f'{path}: missing; rerun the generation to finish it')
    with np.load(path) as data:
      missing = [key for key in DRAW_KEYS if key not in data]
      if missing:
        raise ValueError(f'{path}: missing arrays {missing}')
      rows = {key: data[key] for key in DRAW_KEYS}
    wrong = [key for key, value in rows.items() if value.shape[0] != expected]
    if wrong:
      raise ValueError(f'{path}: {wrong} have {rows[wrong[0]].shape[0]} rows, the manifest '
                       f'says {expected}')
    parts.append(rows)
  return {key: np.concatenate([p[key] for p in parts]) for key in DRAW_KEYS}


class DrawnBatches:
  """Training batches from stored draws; batch(step) is a pure function of (seed, step).

  Rows are read in per-epoch permutations (`np.random.default_rng([seed, epoch])`), and
  process p takes its contiguous slice of each global batch, as `TrainBatches` does;
  the rows are already augmented, so nothing else is drawn.
  """

  def __init__(self, rows: Mapping[str, np.ndarray], *, global_batch_size: int,
               num_local_devices: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    self._rows = dict(rows)
    self._num_rows = len(next(iter(self._rows.values())))
    if self._num_rows == 0:
      raise ValueError('the draws hold no rows')
    self.local_batch_size = input_pipeline._check_batch_sizes(  # pylint: disable=protected-access
        global_batch_size, num_local_devices, process_index, process_count)
    self._global_batch_size = global_batch_size
    self._num_local_devices = num_local_devices
    self._seed = int(seed)
    self._process_index = process_index
    self._permutations: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return self._num_rows

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      if len(self._permutations) >= 2:
        del self._permutations[min(self._permutations)]
      self._permutations[epoch] = np.random.default_rng(
          [self._seed, epoch]).permutation(self._num_rows)
    return self._permutations[epoch]

  def indices(self, step: int) -> np.ndarray:
    """[local_batch_size] row indices this process reads at `step`."""
    start = step * self._global_batch_size + self._process_index * self.local_batch_size
    positions = np.arange(start, start + self.local_batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, self._num_rows)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
      where = epochs == epoch
      out[where] = self._permutation(int(epoch))[offsets[where]]
    return out

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """Rows of `step`: {key: [num_local_devices, per_device, ...]}."""
    if step < 0:
      raise ValueError(f'step must be non-negative, got {step}')
    rows = self.indices(step)
    return input_pipeline.shard_for_devices(
        {key: value[rows] for key, value in self._rows.items()}, self._num_local_devices)

  def iterate(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches of steps start_step, start_step + 1, ... (endless)."""
    def batches():
      step = start_step
      while True:
        yield self.batch(step)
        step += 1
    return batches()
