r"""Writes a trained lifter as a self-contained inference bundle.

  python -m launch.export --checkpoint=/tmp/w/lifter_hierarchical --output=/tmp/w/bundle \
      [--batch_size=64] [--platforms=cpu,cuda]

The bundle (format: hipart_jax/bundle.py) holds the parameters of every stage (no
optimizer state) with their model configs, the hierarchy and joint format, the 2D
input source the lifter was trained on, a `jax.export` (StableHLO) of the greedy
`hipart.predict` at `--batch_size` with its calling convention, and the sha256 of every
file in `manifest.json`. Run it with `python -m launch.infer --model=<bundle>`, or load
`predict.jax_export` with `jax.export.deserialize` in any JAX program (README, "Hand a
model to someone"). A missing checkpoint, a checkpoint of another stage than the lifter
or a lifter that inference cannot run end the program with a one-line message.
"""

from __future__ import annotations

from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from hipart_jax import bundle
from hipart_jax import checkpoints


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this tool's flags (called by `__main__`; tests pass their own FlagValues)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Workdir of a trained lifter.', **define)
  flags.DEFINE_string('output', None, 'Bundle directory to write.', **define)
  flags.DEFINE_integer('batch_size', 64, 'Batch size B of the exported predict function.',
                       **define)
  flags.DEFINE_list('platforms', ['cpu'], 'jax.export lowering platforms (cpu, cuda, '
                    'rocm, tpu); the function runs on any of them.', **define)
  flags.mark_flags_as_required(['checkpoint', 'output'], flag_values=flag_values)


def _fail(message: str) -> SystemExit:
  return SystemExit(f'export: error: {message}')


def run(*, checkpoint: str, output: str, batch_size: int = 64,
        platforms: Sequence[str] = ('cpu',)) -> dict:
  """Writes the bundle; returns its manifest. SystemExit on user errors."""
  if batch_size < 1:
    raise _fail(f'--batch_size must be >= 1, got {batch_size}')
  try:
    model, variables, meta = checkpoints.load_hipart(checkpoint)
  except (FileNotFoundError, ValueError) as e:
    raise _fail(f'--checkpoint: {e}') from None
  try:
    manifest = bundle.write(model, variables, meta, checkpoint, output,
                            batch_size=batch_size, platforms=platforms)
  except ValueError as e:
    raise _fail(str(e)) from None
  logging.info('Wrote the bundle of %s (step %s) to %s, sha256 %s', checkpoint,
               manifest['model']['step'], output, manifest['bundle_sha256'])
  return manifest


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flag_values
  run(checkpoint=f.checkpoint, output=f.output, batch_size=f.batch_size,
      platforms=f.platforms)


if __name__ == '__main__':
  define_flags()
  app.run(main)
