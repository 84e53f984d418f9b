r"""Generates hierarchies for a whole dataset split with a frozen MSST + HiARM.

  python -m launch.generate --checkpoint=/tmp/w/lifter \
      --dataset=synthetic_poses/small --split=train --output_dir=/tmp/w/generated
  python -m launch.generate --hiarm=/tmp/w/hiarm [--msst=/tmp/w/msst] ...

The generator comes from a hierarchical lifter's workdir (which embeds the MSST and
HiARM it was trained with) or from a HiARM workdir (which embeds the MSST it was
trained on; `--msst`, if given, must be that same MSST). The split is read in order
without augmentation, in jitted batches of one size, and written as npz shards plus a
manifest; the format is documented in hipart_jax/generated_cache.py, and
`generated_cache.load_generated(output_dir)` reads it back sorted by example index.

With `--num_draws=K` it writes K *augmented* draws of the split instead: every example
is occluded, noised and flipped as the training pipeline does (the default
augmentation, seeded by `--seed`), and the hierarchy is generated greedily from each
augmented input (`hipart_jax/augmented_draws.py`). A lifter trains from them with
`--config.dataset.train_draws=<output_dir>`, as fast as without a generator:

  python -m launch.generate --hiarm=/tmp/w/hiarm --dataset=cmu_mocap/multi_subject \
      --split=train --num_draws=4 --output_dir=/tmp/w/draws

Every output file states what it holds (hipart_jax/provenance.py): the manifest's
'meta' and each shard's (draw's) `meta` string give units and coordinate frame (the
model frame), joint_names per hierarchy level, the input (dataset, split,
input_source), the model identity (every stage's checkpoint step and config hash) and
project_version.

Rerunning the same command resumes: shards (draws) already written are skipped. Running
with other settings into the same directory is refused. Errors end the program with a
one-line message.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from hipart_jax import augmented_draws
from hipart_jax import checkpoints
from hipart_jax import generated_cache
from hipart_jax import input_pipeline
from hipart_jax import provenance
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import console

DEFAULT_INPUT_SOURCE = 'gt'


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this tool's flags (called by `__main__`; tests pass their own FlagValues)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Workdir of a lifter in hierarchical mode.',
                      **define)
  flags.DEFINE_string('hiarm', None, 'Workdir of a HiARM (instead of --checkpoint).',
                      **define)
  flags.DEFINE_string('msst', None, 'Workdir of the MSST the HiARM was trained on '
                      '(optional: checked against the one the HiARM embeds).', **define)
  flags.DEFINE_string('dataset', None, 'TFDS name, e.g. synthetic_poses/small.', **define)
  flags.DEFINE_string('split', 'train', 'Split to generate for.', **define)
  flags.DEFINE_string('data_dir', None, 'TFDS data directory.', **define)
  flags.DEFINE_string('input_source', None, 'keypoints_2d source HiARM reads (default: '
                      f'the one it was trained on, else {DEFAULT_INPUT_SOURCE!r}).', **define)
  flags.DEFINE_string('output_dir', None, 'Directory for the shards and manifest.json.',
                      **define)
  flags.DEFINE_integer('batch_size', 256, 'Examples per jitted generation call.', **define)
  flags.DEFINE_integer('shard_size', 8192, 'Examples per shard (a multiple of batch_size).',
                       **define)
  flags.DEFINE_integer('num_samples', 1, 'K hierarchies per example.', **define)
  flags.DEFINE_float('temperature', 0.0, 'HiARM sampling temperature (0: greedy).', **define)
  flags.DEFINE_integer('top_k', 0, 'Sample among the top-k tokens (0: all).', **define)
  flags.DEFINE_integer('seed', 0, 'Sampling seed (augmentation seed with --num_draws).',
                       **define)
  flags.DEFINE_integer('num_draws', 0, 'Write this many augmented draws of the split, '
                       'each with its greedy generation, instead of the unaugmented '
                       'cache (0: the cache).', **define)
  console.define_flags(flag_values)
  flags.mark_flags_as_required(['dataset', 'output_dir'], flag_values=flag_values)


def _fail(message: str) -> SystemExit:
  return SystemExit(f'generate: error: {message}')


def _trained_input_source(meta: Mapping[str, Any]) -> str | None:
  if not meta.get('config'):
    return None
  return json.loads(meta['config']).get('dataset', {}).get('input_source')


def load_generator(checkpoint: str | None, hiarm_dir: str | None, msst_dir: str | None
                   ) -> tuple[Any, Any, dict[str, Any], dict[str, Any], str | None]:
  """(msst, hiarm, collections, generator description, trained input source).

  Raises:
    FileNotFoundError, ValueError: missing or wrong checkpoints (messages name them).
  """
  if bool(checkpoint) == bool(hiarm_dir):
    raise ValueError('pass either --checkpoint (a hierarchical lifter) or --hiarm')
  if checkpoint:
    if msst_dir:
      raise ValueError('--msst goes with --hiarm; a lifter checkpoint embeds its MSST')
    model, variables, meta = checkpoints.load_hipart(checkpoint)
    if model.lifter.mode != 'hierarchical':
      raise ValueError(f'{checkpoint} is a lifter in {model.lifter.mode!r} mode; it has no '
                       'generator (train one in hierarchical mode, or pass --hiarm)')
    collections = {key: variables[key] for key in ('frozen_msst', 'frozen_hiarm')}
    generator = dict(lifter=str(pathlib.Path(checkpoint).absolute()),
                     models=meta['frozen_models'],
                     model=provenance.model_identity(checkpoint, meta))
    return model.msst, model.hiarm, collections, generator, _trained_input_source(meta)
  hiarm_variables, hiarm_meta = checkpoints.restore_params(hiarm_dir, expected_stage='hiarm')
  hierarchy = skeleton.Hierarchy.from_json(hiarm_meta['hierarchy'])
  msst_config = hiarm_meta['frozen_models']['msst']
  msst_variables = hiarm_variables['frozen_msst']
  if msst_dir:
    given, _ = checkpoints.load_frozen(msst_dir, 'msst', hierarchy)
    same = jax.tree.structure(given) == jax.tree.structure(msst_variables) and all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(given),
                                             jax.tree.leaves(msst_variables)))
    if not same:
      raise ValueError(f'--msst={msst_dir} is not the MSST the HiARM {hiarm_dir} was '
                       'trained on')
  msst = hipart.build_msst(msst_config, hierarchy)
  hiarm = hipart.build_hiarm(hiarm_meta['model'], hierarchy, msst)
  collections = {'frozen_msst': msst_variables, 'frozen_hiarm': hiarm_variables}
  generator = dict(hiarm=str(pathlib.Path(hiarm_dir).absolute()),
                   models=dict(msst=msst_config, hiarm=hiarm_meta['model']),
                   model=provenance.model_identity(hiarm_dir, hiarm_meta))
  return msst, hiarm, collections, generator, _trained_input_source(hiarm_meta)


def describe(identity: Mapping[str, Any], hierarchy: skeleton.Hierarchy, *, dataset: str,
             split: str, input_source: str, augmented: bool) -> dict[str, Any]:
  """What the generated files state about themselves (module docstring)."""
  units = provenance.UNITS_MODEL_FRAME + (
      '; sparse_3d meters, root-relative, camera axes' if augmented else '')
  return provenance.describe(
      model=identity, input_description=dict(dataset=dataset, split=split,
                                             input_source=input_source),
      units=units, coordinate_frame=provenance.COORDINATE_FRAME_MODEL,
      joint_names=provenance.hierarchy_joint_names(hierarchy))


def run(*, dataset: str, output_dir: str, checkpoint: str | None = None,
        hiarm: str | None = None, msst: str | None = None, split: str = 'train',
        data_dir: str | None = None, input_source: str | None = None,
        batch_size: int = 256, shard_size: int = 8192, num_samples: int = 1,
        temperature: float = 0.0, top_k: int = 0, seed: int = 0,
        num_draws: int = 0) -> list[str]:
  """Generates into `output_dir`; returns the shards (or draws) written. SystemExit on
  user errors."""
  if num_draws < 0:
    raise _fail(f'--num_draws must be >= 0, got {num_draws}')
  if num_samples < 1 or batch_size < 1 or shard_size % batch_size:
    raise _fail(f'need num_samples >= 1, batch_size >= 1 and shard_size ({shard_size}) a '
                f'multiple of batch_size ({batch_size})')
  try:
    msst_model, hiarm_model, collections, generator, trained_source = load_generator(
        checkpoint, hiarm, msst)
  except (FileNotFoundError, ValueError) as e:
    raise _fail(str(e)) from None
  data_config = input_pipeline.default_data_config()
  data_config.name = dataset
  data_config.data_dir = data_dir
  data_config.input_source = input_source or trained_source or DEFAULT_INPUT_SOURCE
  try:
    source, hierarchy, _ = input_pipeline.load_source(data_config, split)
  except Exception as e:  # pylint: disable=broad-except  # tfds raises many kinds.
    raise _fail(f'cannot open {dataset} split {split!r}: {type(e).__name__}: '
                f'{str(e).splitlines()[0] if str(e) else ""}') from None
  generated = (msst_model, hiarm_model, collections, source, hierarchy, data_config,
               output_dir)
  description = describe(generator['model'], hierarchy, dataset=dataset, split=split,
                         input_source=data_config.input_source, augmented=bool(num_draws))
  try:
    if num_draws:
      written = augmented_draws.write_draws(
          *generated, split=split, num_draws=num_draws, seed=seed, generator=generator,
          chunk_size=batch_size, description=description)
    else:
      written = generated_cache.generate_split(
          *generated, dataset=dataset, split=split, batch_size=batch_size,
          shard_size=shard_size, num_samples=num_samples, temperature=temperature,
          top_k=top_k, seed=seed, generator=generator, description=description)
  except (KeyError, ValueError) as e:
    raise _fail(str(e)) from None
  logging.info('%s: wrote %d %s.', output_dir, len(written),
               'draws' if num_draws else 'shards')
  return written


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flag_values
  console.install(f.progress)
  run(dataset=f.dataset, output_dir=f.output_dir, checkpoint=f.checkpoint, hiarm=f.hiarm,
      msst=f.msst, split=f.split, data_dir=f.data_dir, input_source=f.input_source,
      batch_size=f.batch_size, shard_size=f.shard_size, num_samples=f.num_samples,
      temperature=f.temperature, top_k=f.top_k, seed=f.seed, num_draws=f.num_draws)


if __name__ == '__main__':
  define_flags()
  app.run(main)
