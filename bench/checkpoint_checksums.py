r"""What the SHA-256 checksums of a checkpoint cost at save and at restore.

  python -m bench.checkpoint_checksums [--config=h36m] [--extra_mb=256] \
      [--output=checksums.json] [--smoke]

Saves the train state of a HiPART lifter at the sizes of `launch/configs/<prefix>_*.py`
(lifter params with their AdamW state, the frozen MSST and HiARM variables: what a
lifter checkpoint holds) through `hipart_jax.checkpoints`, then times, best of
`--repeats`:
  save_s           `checkpoints.save` + `wait_until_finished` (the manifest included);
  write_checksums_s  hashing the step's files and writing `checksums.json` alone;
  restore_s        `checkpoints.restore_params` (the verification included);
  verify_s         reading and verifying the manifest alone.
With `--extra_mb` a second state adds one random float32 array of that many MiB, to see
how the cost grows with the bytes. Files are read from the page cache (they were just written);
a cold read is not measured.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import optax

from bench import common
from hipart_jax import checkpoint_checksums
from hipart_jax import checkpoints
from hipart_jax import skeleton
from hipart_jax.training import trainer

_EXTRA_MB = flags.DEFINE_integer('extra_mb', 256, 'MiB of one extra float32 array in a '
                                 'second, larger state; 0 for none.')
SMOKE_EXTRA_MB = 1


def lifter_state(prefix: str, *, smoke: bool, extra_mb: int = 0) -> trainer.TrainState:
  """A lifter checkpoint's train state at the config's sizes (random values)."""
  variables = common.init_models(prefix, skeleton.default_hierarchy(), smoke=smoke)[
      'variables']
  params = variables['params']
  collections = {name: value for name, value in variables.items() if name != 'params'}
  if extra_mb:
    # Random values: zstd (orbax compresses chunks) keeps them at their size.
    collections['extra'] = jax.random.normal(jax.random.key(1), (extra_mb << 18,))
  tx = optax.adamw(1e-3)
  return trainer.TrainState(step=jnp.asarray(1, jnp.int32), params=params,
                            collections=collections, opt_state=tx.init(params),
                            rng=jax.random.key_data(jax.random.key(0)), tx=tx)


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def measure(state: trainer.TrainState, root: pathlib.Path, repeats: int
            ) -> dict[str, Any]:
  """The timings of the module docstring for one state saved under `root`."""
  config = ml_collections.ConfigDict(dict(keep_checkpoints=repeats + 1,
                                          best_metric='eval/loss', best_mode='min'))
  manager = checkpoints.make_manager(root, config)
  steps = iter(range(1, repeats + 1))

  def save():
    checkpoints.save(manager, next(steps), state, {'stage': 'lifter'})
    checkpoints.wait_until_finished(manager)
  save_s = _best_seconds(save, repeats)
  manager.close()
  step_dir = checkpoints.checkpoint_dir(root) / '1'
  items = ('state', 'meta')
  write_s = _best_seconds(lambda: checkpoint_checksums.write_checksums(step_dir, items),
                          repeats)
  files = checkpoint_checksums.read_checksums(step_dir)
  verify_s = _best_seconds(lambda: checkpoint_checksums.verify_checksums(
      step_dir, checkpoint_checksums.read_checksums(step_dir)), repeats)
  restore_s = _best_seconds(lambda: common.block(
      checkpoints.restore_params(root, step=1)), repeats)
  checked = sum(entry['size'] for entry in files.values())
  return dict(parameters=common.count_parameters(state.params),
              state_floats=common.count_parameters(
                  (state.params, state.collections, state.opt_state)),
              files=len(files), bytes_checked=checked, save_s=save_s,
              write_checksums_s=write_s, restore_s=restore_s, verify_s=verify_s,
              verify_share_of_restore=verify_s / restore_s,
              hash_bytes_per_s=checked / verify_s)


def run(prefix: str = 'h36m', *, extra_mb: int = 256, repeats: int = 5,
        smoke: bool = False) -> dict[str, Any]:
  if smoke:
    prefix, extra_mb, repeats = 'synthetic', min(extra_mb, SMOKE_EXTRA_MB), 1
  rows = []
  root = pathlib.Path(tempfile.mkdtemp(prefix='bench_checksums_'))
  try:
    for name, extra in (('lifter', 0), (f'lifter + {extra_mb} MiB', extra_mb)):
      if name != 'lifter' and not extra:
        continue
      state = lifter_state(prefix, smoke=smoke, extra_mb=extra)
      rows.append(dict(state=name, **measure(state, root / str(len(rows)), repeats)))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return dict(machine=common.machine_info(),
              config=dict(prefix=prefix, extra_mb=extra_mb, repeats=repeats), results=rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  report = run(common.CONFIG.value, extra_mb=_EXTRA_MB.value,
               repeats=common.REPEATS.value, smoke=common.SMOKE.value)
  columns = ('state', 'state_floats', 'files', 'bytes_checked', 'save_s',
             'write_checksums_s', 'restore_s', 'verify_s', 'verify_share_of_restore',
             'hash_bytes_per_s')
  common.finish(report, [common.format_table(report['results'], columns,
                                             'Checkpoint checksums (best of repeats)')])


if __name__ == '__main__':
  app.run(main)
