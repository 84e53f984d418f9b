"""Augmented draws of a training split, each with the hierarchy generated from it.

Training a HiPART lifter runs HiARM's decoding loop in every step, which a CPU cannot
afford for a converged run. Generate once, train many times: `write_draws` augments
every example of a split `num_draws` times (occlusion, noise, flips: the input
pipeline's training augmentation, `TrainBatches.batch_from_stacked`), generates the
hierarchy from each augmented input with the frozen MSST + HiARM, and stores the model-
frame batch arrays. `drawn_batches.DrawnBatches` serves training batches from those rows, so
every lifter trained on them (sparse baselines, HiPART, the oracle) reads the same
augmented inputs.

Format (one directory):
  manifest.json   {'format_version', 'settings': {dataset, split, num_examples,
                   num_draws, seed, augment, generator, hierarchy}, 'draws': [names],
                   'meta': what the files state about themselves
                   (hipart_jax/provenance.py)}
  draw-NNN.npz    the rows of draw NNN, one per example in split order: every key of
                  `DRAW_KEYS`, leading dimension num_examples. `generated_<level>_2d`
                  is the greedy generation in the model frame of that row's input;
                  `meta` [] str is the manifest's 'meta' as JSON.
Draws are written atomically (a temporary file renamed into place), so a killed run
leaves whole draws only and a rerun with the same settings writes the missing ones; a
run with other settings into the same directory is refused.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from hipart_jax import drawn_batches
from hipart_jax import input_pipeline
from hipart_jax import progress as progress_lib
from hipart_jax import skeleton
from hipart_jax.models import hipart

DRAW_KEYS = drawn_batches.DRAW_KEYS
MANIFEST = drawn_batches.MANIFEST


def draw_name(draw: int) -> str:
  return f'draw-{draw:03d}.npz'


def _settings(data_config: ml_collections.ConfigDict, split: str, num_examples: int,
              num_draws: int, seed: int, generator: Mapping[str, Any],
              hierarchy: skeleton.Hierarchy) -> dict[str, Any]:
  return dict(dataset=data_config.name, split=split, input_source=data_config.input_source,
              num_examples=num_examples, num_draws=num_draws, seed=seed,
              augment=data_config.augment.to_dict(), generator=dict(generator),
              hierarchy=hierarchy.to_json())


def _json_roundtrip(value: Any) -> Any:
  return json.loads(json.dumps(value))


# What a draw's `generated_*` hierarchy is: HiARM's greedy generation from the augmented
# input, or the MSST's reconstruction of the truth (what a perfect HiARM would generate:
# the upper bound of a lifter trained on generated hierarchies, at this tokenizer).
HIERARCHY_SOURCES = ('generated', 'tokenized_truth')


def _generate_fn(msst, hiarm, hierarchy_source: str):
  """Jitted (collections, batch) → {level: [B, P, 2]}, the hierarchy of `hierarchy_source`
  (batch: `inputs_2d` [B, 17, 2], `inputs_confidence` [B, 17], `<level>_2d`)."""

  @jax.jit
  def generate(collections, batch):
    if hierarchy_source == 'tokenized_truth':
      return hipart.tokenized_hierarchy(
          msst, collections['frozen_msst'],
          {level: batch[f'{level}_2d'] for level in skeleton.LEVELS})
    out = hipart.generate_hierarchy(msst, hiarm, collections, batch['inputs_2d'],
                                    batch['inputs_confidence'], jax.random.key(0))
    return {level: value[:, 0] for level, value in out.items()}
  return generate


def draw_rows(batches: input_pipeline.TrainBatches, num_examples: int, draw: int,
              chunk_size: int, generate, collections,
              meter: progress_lib.Progress | None = None) -> dict[str, np.ndarray]:
  """Draw `draw` of every example: augmented model-frame rows + generated hierarchy.

  Chunk c of draw d is augmented as training step d * num_chunks + c of `batches`, so a
  draw is a pure function of (seed, draw).

  `meter`, if given, counts the examples as they are drawn.

  Returns:
    {key: [num_examples, ...]} for every key of `DRAW_KEYS`.
  """
  num_chunks = -(-num_examples // chunk_size)
  parts = []
  for chunk in range(num_chunks):
    indices = np.arange(chunk * chunk_size, min((chunk + 1) * chunk_size, num_examples))
    real = indices.size
    padded = np.concatenate([indices, np.full(chunk_size - real, indices[-1])])
    batch = batches.batch_from_stacked(draw * num_chunks + chunk, padded,
                                       batches.stacked(padded))
    batch = {key: value[0] for key, value in batch.items()}  # One device's block.
    keys = ('inputs_2d', 'inputs_confidence') + tuple(f'{l}_2d' for l in skeleton.LEVELS)
    generated = jax.device_get(generate(collections, {key: batch[key] for key in keys}))
    rows = {key: batch[key][:real] for key in DRAW_KEYS if key in batch}
    rows.update({f'generated_{level}_2d': np.asarray(generated[level][:real], np.float32)
                 for level in skeleton.LEVELS})
    parts.append(rows)
    if meter is not None:
      meter.update(real)
  return {key: np.concatenate([p[key] for p in parts]) for key in DRAW_KEYS}


def write_draws(msst, hiarm, collections: Mapping[str, Any],
                source: Sequence[input_pipeline.Example], hierarchy: skeleton.Hierarchy,
                data_config: ml_collections.ConfigDict, output_dir: str | pathlib.Path, *,
                split: str, num_draws: int, seed: int, generator: Mapping[str, Any],
                chunk_size: int = 512, hierarchy_source: str = 'generated',
                description: Mapping[str, Any] | None = None) -> list[str]:
  """Writes the missing draws of `source` into `output_dir`; returns their names.

  Args:
    msst, hiarm, collections: the frozen generator ({'frozen_msst', 'frozen_hiarm'}).
    source, hierarchy: the split's examples and the dataset's hierarchy.
    data_config: the data block (`input_source`, `augment`: the training augmentation).
    output_dir: the draws directory (created).
    split: the split's name (recorded).
    num_draws: augmented copies of every example.
    seed: augmentation seed.
    generator: where the frozen models came from (recorded).
    chunk_size: examples per jitted generation call.
    hierarchy_source: one of `HIERARCHY_SOURCES`; recorded with `generator` unless it is
      'generated'.
    description: what the files state about themselves (`provenance.describe`).
  Raises:
    ValueError: the directory holds draws made with other settings.
  """
  if num_draws < 1 or chunk_size < 1:
    raise ValueError(f'need num_draws >= 1 and chunk_size >= 1, got {num_draws}, '
                     f'{chunk_size}')
  if hierarchy_source not in HIERARCHY_SOURCES:
    raise ValueError(f'hierarchy_source={hierarchy_source!r}; expected one of '
                     f'{HIERARCHY_SOURCES}')
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  if hierarchy_source != 'generated':
    generator = dict(generator, hierarchy_source=hierarchy_source)
  settings = _json_roundtrip(_settings(data_config, split, len(source), num_draws, seed,
                                       generator, hierarchy))
  manifest_path = output_dir / MANIFEST
  if manifest_path.exists():
    existing = drawn_batches.read_manifest(output_dir)
    if existing['settings'] != settings:
      changed = sorted(k for k in settings if existing['settings'].get(k) != settings[k])
      raise ValueError(f'{output_dir} holds draws made with other settings (differing: '
                       f'{changed}); use another directory')
  names = [draw_name(d) for d in range(num_draws)]
  description = _json_roundtrip(dict(description or {}))
  manifest_path.write_text(json.dumps(dict(format_version=drawn_batches.FORMAT_VERSION,
                                           settings=settings, draws=names,
                                           meta=description), indent=1))
  batches = input_pipeline.TrainBatches(source, hierarchy, data_config,
                                        global_batch_size=chunk_size, num_local_devices=1,
                                        seed=seed)
  generate = _generate_fn(msst, hiarm, hierarchy_source)
  written = []
  todo = [(draw, name) for draw, name in enumerate(names)
          if not (output_dir / name).exists()]
  with progress_lib.Progress('drawn examples', len(todo) * len(source),
                             unit='example') as meter:
    for draw, name in todo:
      path = output_dir / name
      start = time.perf_counter()
      rows = draw_rows(batches, len(source), draw, chunk_size, generate, collections, meter)
      temporary = path.with_name(path.name + '.tmp')
      with open(temporary, 'wb') as f:
        np.savez(f, **rows, meta=np.asarray(json.dumps(description)))
      os.replace(temporary, path)
      logging.info('%s: draw %d of %d (%d examples) in %.0f s', output_dir, draw + 1,
                   num_draws, len(source), time.perf_counter() - start)
      written.append(name)
  return written
