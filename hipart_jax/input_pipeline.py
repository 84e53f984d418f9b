"""Random-access pose examples → augmented, model-frame numpy batches per local device.

Sources. Any random-access sequence of schema examples (docs/ARCHITECTURE.md, "Dataset
feature schema") works: a TFDS `ArrayRecordDataSource` from `load_source` (examples come
back as dicts of numpy arrays; Text features as bytes, ClassLabel and scalar ints as
Python ints, nested dict features as dicts) or a plain list of dicts in tests. No
TensorFlow runs here.

Order. Training reads the concatenation of per-epoch permutations (epoch e permuted by
`np.random.default_rng([seed, e])`); global step s takes positions [s*B, (s+1)*B) of it
and process p its contiguous slice of that global batch, so processes read disjoint
examples. Augmentation draws from `np.random.default_rng([seed, step, process_index])`.
A batch is therefore a pure function of (seed, step, process), and a job resumed at
step s sees exactly the batches an uninterrupted one would.

Coordinates (docs/ARCHITECTURE.md, "Batches"). 2D: pixels → `geometry.screen_normalize`
→ augmentation (flip, noise, occlusion; see `augment`) → model frame
`geometry.normalization_frame` of the *augmented* input → `geometry.normalize_2d` of
the input and of every ground-truth level. 3D: camera coordinates relative to sparse
joint 0, meters. Batches are shaped [num_local_devices, per_device, ...].

Reading, caching, prefetching and batch assembly share the one order contract above,
which is why they stay in one module of more than 400 lines.
"""

from __future__ import annotations

import collections
import concurrent.futures
import importlib
import importlib.util
import json
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import ml_collections
import numpy as np

from hipart_jax import augment
from hipart_jax import geometry
from hipart_jax import skeleton

Example = Mapping[str, Any]
Batch = dict[str, np.ndarray]
BATCH_KEYS = ('inputs_2d', 'inputs_confidence', 'sparse_2d', 'dense_2d', 'fine_2d',
              'sparse_3d', 'dense_3d', 'fine_3d', 'visible', 'action', 'norm_center',
              'norm_scale', 'image_size', 'index', 'valid')


def default_data_config() -> ml_collections.ConfigDict:
  """The `data` config block read by `load_source`, `TrainBatches` and `eval_batches`.

  Keys:
    name: TFDS name with config, e.g. 'synthetic_poses/tiny'.
    data_dir: TFDS data directory (None: the TFDS default).
    builder_kwargs: extra keyword arguments for the builder.
    download: let `tfds.data_source` prepare the dataset when it is missing.
    train_split, eval_split: split names.
    input_source: which `keypoints_2d` entry is the model input ('gt', 'cpn', ...).
    prefetch_batches: batches prepared ahead by the background thread.
    cache_max_examples: training keeps every example it has read, stacked, in memory
      (`ExampleCache`, about 3.5 KB per example with the default hierarchy) when the
      split has at most this many; 0 disables. Decoding TFDS examples is ~90% of the
      host's work per batch, and every epoch after the first reads them again.
    augment: `augment.default_augment_config()` (training only).
    train_draws: a directory of stored augmented draws (`augmented_draws`); when set,
      training reads its rows (already augmented, with generated hierarchies) instead
      of augmenting `train_split` itself.
    eval_occlusion: the occlusion level (`augment.OCCLUSION_LEVELS`) of the training
      loop's evaluations; '' evaluates clean input.
  """
  return ml_collections.ConfigDict(dict(
      name='synthetic_poses/tiny',
      data_dir=ml_collections.config_dict.placeholder(str),
      builder_kwargs={},
      download=True,
      train_split='train',
      eval_split='test',
      input_source='gt',
      prefetch_batches=2,
      cache_max_examples=200_000,
      augment=augment.default_augment_config(),
      train_draws='',
      eval_occlusion='',
  ))


def _register_project_builder(name: str) -> None:
  """Imports `tfds_builders.<dataset>` (if it exists) so TFDS knows the builder."""
  module = 'tfds_builders.' + name.split('/')[0].split(':')[0]
  if importlib.util.find_spec(module) is not None:
    importlib.import_module(module)


def load_source(config: ml_collections.ConfigDict, split: str | None = None
                ) -> tuple[Sequence[Example], skeleton.Hierarchy, Any]:
  """Opens a split of a TFDS pose builder for random access.

  Args:
    config: the data config (`name`, `data_dir`, `builder_kwargs`, `download`,
      `train_split`).
    split: split to open; `config.train_split` when None.
  Returns:
    (source: random-access sequence of example dicts, hierarchy from
    `info.metadata['hierarchy']`, info: the builder's `tfds.core.DatasetInfo`).
  """
  # Imported here: everything but opening a dataset (batching, augmentation, the
  # trainer, inference) runs without TFDS and TensorFlow installed or imported.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  split = config.train_split if split is None else split
  _register_project_builder(config.name)
  source = tfds.data_source(
      config.name, split=split, data_dir=config.get('data_dir'),
      builder_kwargs=dict(config.get('builder_kwargs') or {}),
      download=config.get('download', True))
  info = source.dataset_info
  metadata = info.metadata or {}
  if 'hierarchy' not in metadata:
    raise ValueError(f"dataset {config.name!r} has no 'hierarchy' in info.metadata; "
                     'pose builders must store Hierarchy.to_json() there')
  hierarchy_json = metadata['hierarchy']
  if isinstance(hierarchy_json, str):
    hierarchy_json = json.loads(hierarchy_json)
  return source, skeleton.Hierarchy.from_json(hierarchy_json), info


# --------------------------------------------------------------------------------------
# Examples → batch arrays.


def read_examples(source: Sequence[Example], indices: Sequence[int]) -> list[Example]:
  """Reads `indices` from the source, in one call when it supports batched reads."""
  indices = [int(i) for i in indices]
  if hasattr(source, '__getitems__'):
    return list(source.__getitems__(indices))
  return [source[i] for i in indices]


def stack_examples(examples: Sequence[Example], input_source: str,
                   hierarchy: skeleton.Hierarchy) -> Batch:
  """Stacks schema examples into screen-space arrays (before augmentation).

  Returns:
    dict with `inputs_2d` [N, S, 2] and `<level>_2d` [N, K, 2] screen-normalized,
    `inputs_confidence` [N, S], `<level>_3d` [N, K, 3] camera coordinates relative to
    sparse joint 0, `image_size` [N, 2] int32, `action` [N] int32.
  """
  if input_source not in examples[0]['keypoints_2d']:
    raise KeyError(f'input source {input_source!r} not in the examples; they have '
                   f'{sorted(examples[0]["keypoints_2d"])}')
  size = np.stack([ex['image_size'] for ex in examples]).astype(np.int32)
  keypoints = np.stack([ex['keypoints_2d'][input_source] for ex in examples])
  expected = {'inputs': (hierarchy.num_sparse, 3), 'sparse': hierarchy.num_sparse,
              'dense': hierarchy.num_dense, 'fine': hierarchy.num_fine}
  if keypoints.shape[1:] != expected['inputs']:
    raise ValueError(f'keypoints_2d[{input_source!r}] has shape {keypoints.shape[1:]}, '
                     f'expected {expected["inputs"]}')
  keypoints = keypoints.astype(np.float32)
  arrays = dict(inputs_2d=geometry.screen_normalize(keypoints[..., :2], size),
                inputs_confidence=keypoints[..., 2], image_size=size,
                action=np.asarray([ex['action'] for ex in examples], np.int32))
  root = np.stack([ex['sparse_3d'][skeleton.ROOT] for ex in examples]).astype(np.float32)
  for level in skeleton.LEVELS:
    for dim in (2, 3):
      key = f'{level}_{dim}d'
      value = np.stack([ex[key] for ex in examples]).astype(np.float32)
      if value.shape[1:] != (expected[level], dim):
        raise ValueError(f'{key} has shape {value.shape[1:]}, the hierarchy expects '
                         f'{(expected[level], dim)}')
      arrays[key] = (geometry.screen_normalize(value, size) if dim == 2 else
                     geometry.to_root_relative(value, root))
  return arrays


class ExampleCache:
  """Stacked screen-space arrays (`stack_examples`) of the examples read so far.

  `stacked(indices)` equals `stack_examples(read_examples(source, indices), ...)` bit for
  bit (every array is computed per example), but reads each example from the source
  only once: later epochs index numpy arrays instead of decoding TFDS records. Rows are
  allocated for the whole split up front (`np.empty`: memory is committed as rows are
  filled). Safe to call from several threads.
  """

  def __init__(self, source: Sequence[Example], input_source: str,
               hierarchy: skeleton.Hierarchy):
    self._source = source
    self._input_source = input_source
    self._hierarchy = hierarchy
    self._loaded = np.zeros(len(source), bool)
    self._columns: Batch | None = None
    self._lock = threading.Lock()

  def stacked(self, indices: np.ndarray) -> Batch:
    """`stack_examples` of these examples: dict of [N, ...] arrays."""
    indices = np.asarray(indices, np.int64)
    with self._lock:
      missing = np.unique(indices[~self._loaded[indices]])
      if missing.size:
        arrays = stack_examples(read_examples(self._source, missing), self._input_source,
                                self._hierarchy)
        if self._columns is None:
          self._columns = {key: np.empty((len(self._source),) + value.shape[1:], value.dtype)
                           for key, value in arrays.items()}
        for key, value in arrays.items():
          self._columns[key][missing] = value
        self._loaded[missing] = True
      return {key: column[indices] for key, column in self._columns.items()}


def assemble_batch(arrays: Batch, occluded: np.ndarray, missing: np.ndarray, *,
                   occluded_coordinates: str, jitter_std: float,
                   jitter_normal: np.ndarray, indices: np.ndarray,
                   valid: np.ndarray) -> Batch:
  """The final batch: model frame from the (augmented) input, hidden joints' coordinates.

  Args:
    arrays: screen-space arrays (`stack_examples`, possibly `augment.augment_batch`),
      leading dim N; `inputs_confidence` already 0 where occluded.
    occluded: [N, S] bool, hidden by augmentation.
    missing: [N, S] bool, absent in the source (confidence 0 before augmentation);
      always zeroed.
    occluded_coordinates, jitter_std, jitter_normal [N, S, 2]: `augment.hide_coordinates`.
    indices: [N] example indices; valid: [N] bool.
  Returns:
    dict of `BATCH_KEYS`, each [N, ...].
  """
  confidence = arrays['inputs_confidence']
  inputs, center, scale = geometry.to_model_frame(arrays['inputs_2d'], confidence)
  batch = dict(
      inputs_2d=augment.hide_coordinates(inputs, occluded, missing, occluded_coordinates,
                                         jitter_std, jitter_normal),
      inputs_confidence=confidence,
      visible=~occluded,
      action=arrays['action'],
      norm_center=center,
      norm_scale=scale,
      image_size=arrays['image_size'],
      index=np.asarray(indices, np.int32),
      valid=np.asarray(valid, bool))
  for level in skeleton.LEVELS:
    batch[f'{level}_2d'] = geometry.normalize_2d(arrays[f'{level}_2d'], center, scale)
    batch[f'{level}_3d'] = arrays[f'{level}_3d']
  dtypes = dict(visible=bool, valid=bool, action=np.int32, image_size=np.int32,
                index=np.int32)
  return {key: np.asarray(batch[key], dtypes.get(key, np.float32)) for key in BATCH_KEYS}


def shard_for_devices(batch: Batch, num_local_devices: int) -> Batch:
  """[N, ...] → [num_local_devices, N / num_local_devices, ...]."""
  def split(value):
    if value.shape[0] % num_local_devices:
      raise ValueError(f'batch of {value.shape[0]} does not split over '
                       f'{num_local_devices} devices')
    return value.reshape(num_local_devices, -1, *value.shape[1:])
  return {key: split(value) for key, value in batch.items()}


# --------------------------------------------------------------------------------------
# Prefetching.


def prefetch(function: Callable[[Any], Batch], arguments: Iterable[Any],
             depth: int) -> Iterator[Batch]:
  """Yields `function(a)` for each argument in order, computed `depth` items ahead.

  One background thread does the work, so sources are never read concurrently, and the
  output is the same as the plain `map` (each item is a pure function of its argument).
  """
  if depth <= 0:
    yield from map(function, arguments)
    return
  arguments = iter(arguments)
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
    pending = collections.deque()
    try:
      for argument in arguments:
        pending.append(executor.submit(function, argument))
        if len(pending) > depth:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for future in pending:
        future.cancel()


# --------------------------------------------------------------------------------------
# Training batches.


def _check_batch_sizes(global_batch_size: int, num_local_devices: int, process_index: int,
                       process_count: int) -> int:
  """Validates the batch layout; returns the per-process batch size."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} must be a positive multiple '
                     f'of process_count {process_count}')
  local = global_batch_size // process_count
  if local % num_local_devices:
    raise ValueError(f'per-process batch {local} must be a multiple of num_local_devices '
                     f'{num_local_devices}')
  return local


class TrainBatches:
  """Endless, augmented training batches; batch(step) is a pure function of (seed, step).

  Attributes:
    local_batch_size: examples this process reads per step (global / process_count).
  """

  def __init__(self, source: Sequence[Example], hierarchy: skeleton.Hierarchy,
               config: ml_collections.ConfigDict, *, global_batch_size: int,
               num_local_devices: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    """Args:
      source: random-access sequence of schema examples.
      hierarchy: the dataset's hierarchy (sizes of the levels, flip permutations).
      config: the data config (`input_source`, `prefetch_batches`, `augment`).
      global_batch_size: examples per step over all processes.
      num_local_devices: leading batch dimension (devices of this process).
      seed: data-order and augmentation seed (non-negative).
      process_index, process_count: this process among all reading processes.
    Raises:
      ValueError: on an empty source, a batch layout that does not split evenly, or
        flips (`augment.flip_prob > 0`) with a hierarchy that is not left/right symmetric.
    """
    if len(source) == 0:
      raise ValueError('the training source is empty')
    self.local_batch_size = _check_batch_sizes(global_batch_size, num_local_devices,
                                               process_index, process_count)
    self._source = source
    self._hierarchy = hierarchy
    self._config = config
    self._augment = config.augment
    self._global_batch_size = global_batch_size
    self._num_local_devices = num_local_devices
    self._seed = int(seed)
    self._process_index = process_index
    self._flip_permutations = (hierarchy.flip_permutations()
                               if self._augment.flip_prob > 0 else None)
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()
    self._cache = None
    if 0 < len(source) <= config.get('cache_max_examples', 0):
      self._cache = ExampleCache(source, config.input_source, hierarchy)

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      if epoch not in self._permutations:
        if len(self._permutations) >= 2:  # Steps only move forward: keep the last two.
          del self._permutations[min(self._permutations)]
        rng = np.random.default_rng([self._seed, epoch])
        self._permutations[epoch] = rng.permutation(len(self._source))
      return self._permutations[epoch]

  def indices(self, step: int) -> np.ndarray:
    """[local_batch_size] int64 example indices this process reads at `step`."""
    start = step * self._global_batch_size + self._process_index * self.local_batch_size
    positions = np.arange(start, start + self.local_batch_size, dtype=np.int64)
    num_examples = len(self._source)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
      where = epochs == epoch
      out[where] = self._permutation(int(epoch))[offsets[where]]
    return out

  def batch(self, step: int) -> Batch:
    """The batch of `step`: dict of `BATCH_KEYS`, each [num_local_devices, per_device, ...]."""
    if step < 0:
      raise ValueError(f'step must be non-negative, got {step}')
    indices = self.indices(step)
    return self.batch_from_stacked(step, indices, self.stacked(indices))

  def stacked(self, indices: np.ndarray) -> Batch:
    """`stack_examples` of these examples (from the `ExampleCache` when there is one)."""
    if self._cache is not None:
      return self._cache.stacked(indices)
    return stack_examples(read_examples(self._source, indices), self._config.input_source,
                          self._hierarchy)

  def batch_from_stacked(self, step: int, indices: np.ndarray, stacked: Batch) -> Batch:
    """Augmentation, model frame and device split of `stacked(indices(step))`."""
    rng = np.random.default_rng([self._seed, step, self._process_index])
    arrays, occluded = augment.augment_batch(rng, stacked, self._flip_permutations,
                                             self._augment)
    missing = (arrays['inputs_confidence'] <= 0) & ~occluded  # Absent in the source.
    batch = assemble_batch(
        arrays, occluded, missing, occluded_coordinates=self._augment.occluded_coordinates,
        jitter_std=self._augment.jitter_std,
        jitter_normal=rng.standard_normal(arrays['inputs_2d'].shape),
        indices=indices, valid=np.ones(len(indices), bool))
    return shard_for_devices(batch, self._num_local_devices)

  def iterate(self, start_step: int = 0) -> Iterator[Batch]:
    """Batches of steps start_step, start_step + 1, ... (endless), prefetched."""
    def steps():
      step = start_step
      while True:
        yield step
        step += 1
    return prefetch(self.batch, steps(), self._config.get('prefetch_batches', 2))


# --------------------------------------------------------------------------------------
# Evaluation batches.


def eval_shard(num_examples: int, local_batch_size: int, process_index: int,
               process_count: int) -> tuple[np.ndarray, np.ndarray]:
  """This process's evaluation indices, padded so every process runs the same steps.

  Processes take contiguous, near-equal shards (sizes differ by at most one); each shard
  is padded to `num_batches * local_batch_size` with copies of a real example (its
  last, or example 0 for an empty shard) marked invalid.

  Returns:
    (indices [num_batches * local_batch_size] int64, valid [same] bool).
  """
  start = process_index * num_examples // process_count
  stop = (process_index + 1) * num_examples // process_count
  largest_shard = -(-num_examples // process_count)
  num_batches = max(1, -(-largest_shard // local_batch_size))
  total = num_batches * local_batch_size
  real = np.arange(start, stop, dtype=np.int64)
  filler = real[-1] if real.size else 0
  indices = np.concatenate([real, np.full(total - real.size, filler, np.int64)])
  valid = np.arange(total) < real.size
  return indices, valid


def eval_batches(source: Sequence[Example], hierarchy: skeleton.Hierarchy,
                 config: ml_collections.ConfigDict, *, global_batch_size: int,
                 num_local_devices: int, process_index: int = 0, process_count: int = 1,
                 occlusion: str | None = None, seed: int = 0) -> Iterator[Batch]:
  """One ordered pass over the split; every example is valid in exactly one process.

  No flip or noise. With `occlusion` (an `augment.OCCLUSION_LEVELS` name) each example is
  occluded by `np.random.default_rng([seed, index])`, so the occlusion of an example does
  not depend on batch size or process count. Hidden joints' coordinates follow
  `config.augment.occluded_coordinates` (jitter drawn from the same generator).

  Args:
    source, hierarchy, config: as for `TrainBatches`.
    global_batch_size, num_local_devices, process_index, process_count: batch layout.
    occlusion: None or an occlusion level ('none', 'one_limb', 'two_limbs', 'random_30').
    seed: occlusion seed.
  Yields:
    dicts of `BATCH_KEYS`, each [num_local_devices, per_device, ...]; `valid` is False on
    padding.
  """
  if len(source) == 0:
    raise ValueError('the evaluation source is empty')
  if occlusion is not None and occlusion not in augment.OCCLUSION_LEVELS:
    raise ValueError(f'unknown occlusion level {occlusion!r}; known: '
                     f'{list(augment.OCCLUSION_LEVELS)}')
  local = _check_batch_sizes(global_batch_size, num_local_devices, process_index,
                             process_count)
  indices, valid = eval_shard(len(source), local, process_index, process_count)
  num_joints = hierarchy.num_sparse

  def make(batch_number: int) -> Batch:
    where = slice(batch_number * local, (batch_number + 1) * local)
    batch_indices = indices[where]
    arrays = stack_examples(read_examples(source, batch_indices), config.input_source,
                            hierarchy)
    missing = arrays['inputs_confidence'] <= 0
    occluded = np.zeros_like(missing)
    jitter_normal = np.zeros(arrays['inputs_2d'].shape, np.float32)
    if occlusion not in (None, 'none'):
      for row, index in enumerate(batch_indices):
        rng = np.random.default_rng([seed, int(index)])
        occluded[row] = augment.level_occlusion(rng, occlusion, ~missing[row:row + 1])[0]
        jitter_normal[row] = rng.standard_normal((num_joints, 2))
    arrays['inputs_confidence'] = np.where(occluded, 0, arrays['inputs_confidence'])
    batch = assemble_batch(
        arrays, occluded, missing,
        occluded_coordinates=config.augment.occluded_coordinates,
        jitter_std=config.augment.jitter_std, jitter_normal=jitter_normal,
        indices=batch_indices, valid=valid[where])
    return shard_for_devices(batch, num_local_devices)

  return prefetch(make, range(indices.size // local), config.get('prefetch_batches', 2))
