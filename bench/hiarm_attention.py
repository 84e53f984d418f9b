r"""HiARM's teacher-forced attention: dense mask blocks vs every logit of the full masks.

  python -m bench.hiarm_attention [--output=hiarm_attention.json] [--smoke]

Times the trainer's HiARM step (`trainer.make_train_step` under `execution.map_step`,
with the config's XLA options, as `loop.train_and_evaluate` runs it) of the CMU accuracy
benchmark (`launch/configs/cmu_benchmark.py`: its HiARM size, batch size and both
orderings), and of the same with the paper's HiARM size, with `HiARM.mask_blocks` True
(the attention computes only the blocks of slots a mask lets meet,
`Ordering.teacher_forcing_blocks`) and False (every logit of the [S + 2T, S + 2T]
masks). The frozen MSST is randomly initialized (a step's cost does not depend on its
values) and the batch is random. Both variants share the state and the batch and are
timed round-robin, so `speedup` = time(full masks) / time(blocks) is measured side by
side. `logits_share_*` is the blocks' logit count over the full masks'.
`--global_chunks` also times the blocks with other numbers of blocks per stream of a
GCSAB (`HiARM.global_chunks`): `chunks_<n>_s`. `--smoke` times the smoke config's HiARM
in the hierarchical ordering only.
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any

from absl import app
from absl import flags
import jax
import numpy as np

from bench import cmu_accuracy
from bench import common
from hipart_jax import execution
from hipart_jax import orderings
from hipart_jax import skeleton
from hipart_jax.models import hipart
from hipart_jax.training import stages
from hipart_jax.training import trainer
from launch.configs import base
from launch.configs import cmu_benchmark

SIZES = ('cmu_benchmark', 'paper')
_GLOBAL_CHUNKS = flags.DEFINE_list(
    'global_chunks', [str(orderings.GLOBAL_CHUNKS)], 'Blocks per stream of a GCSAB mask '
    f'to time; the default ({orderings.GLOBAL_CHUNKS}) is always among them.')


def logits_share(order: orderings.Ordering) -> dict[str, float]:
  """The blocks' logits ÷ the full masks', for the local and the global blocks."""
  full = order.teacher_forcing_mask(local=True).size
  return {kind: sum(b.mask.size for b in order.teacher_forcing_blocks(local=local)[0]) / full
          for kind, local in (('local', True), ('global', False))}


def model_variants(model, chunks: list[int]) -> dict[str, object]:
  """{'blocks': the default, 'chunks_<n>': other GCSAB block counts, 'full_masks'}."""
  variants = {'blocks': model.clone(mask_blocks=True, global_chunks=orderings.GLOBAL_CHUNKS)}
  variants.update({f'chunks_{n}': model.clone(mask_blocks=True, global_chunks=n)
                   for n in chunks if n != orderings.GLOBAL_CHUNKS})
  variants['full_masks'] = model.clone(mask_blocks=False)
  return variants


def save_random_msst(config, hierarchy: skeleton.Hierarchy, directory: pathlib.Path
                     ) -> None:
  """A randomly initialized MSST of `config`'s size, saved as its trainer would."""
  msst = hipart.build_msst(config.model, hierarchy)
  batch = common.random_batch(np.random.default_rng(0), hierarchy, 2)
  levels = [batch[f'{level}_2d'] for level in skeleton.LEVELS]
  init = jax.jit(lambda rng: msst.init(rng, *levels, train=False))
  variables = init.lower(jax.random.key(0)).compile(
      compiler_options=common.FAST_COMPILE)(jax.random.key(0))
  state = dict(params=variables['params'],
               collections={k: v for k, v in variables.items() if k != 'params'})
  common.save_step_zero(str(directory), config, state,
                        {'stage': 'msst', 'model': config.model.to_dict(),
                         'hierarchy': hierarchy.to_json()})


def run(*, smoke: bool, repeats: int, min_time: float, chunks: list[int]
        ) -> dict[str, Any]:
  c = cmu_benchmark.get_config('smoke' if smoke else 'multi_subject')
  hierarchy = skeleton.default_hierarchy()
  results, models = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    workdir = pathlib.Path(tmp)
    runs = cmu_accuracy.stage_configs(c, workdir, cmu_accuracy.data_block(c, None, None),
                                      num_actions=0)
    save_random_msst(runs['msst'], hierarchy, workdir / 'msst')
    batch_size = c.hiarm.batch_size
    batch = common.random_batch(np.random.default_rng(0), hierarchy, batch_size)
    batch = jax.tree.map(lambda x: x[None], batch)  # One device's block.
    for size in SIZES[:1] if smoke else SIZES:
      for ordering in c.orderings[:1] if smoke else c.orderings:
        config = runs[cmu_accuracy.hiarm_run(ordering)]
        if size == 'paper':
          config.model.update(base.hiarm_model('paper', ordering).to_dict())
        models[size] = config.model.to_dict()
        plan = execution.Execution.for_backend(config.get('execution'))
        steps, state = {}, None
        hiarm = hipart.build_hiarm(config.model, hierarchy,
                                   hipart.build_msst(runs['msst'].model, hierarchy))
        for name, model in model_variants(hiarm, chunks).items():
          stage = stages.make_stage(config, hierarchy)
          stage.model = model
          if state is None:
            state = trainer.create_train_state(stage, config, jax.random.key(0),
                                               jax.tree.map(lambda x: x[0], batch))
          step = execution.map_step(
              trainer.make_train_step(stage, microbatch_size=plan.microbatch_size),
              compiler_options=plan.compiler_options)
          steps[name] = lambda step=step: step(state, batch)
        times = common.time_interleaved(steps, repeats=repeats, min_time=min_time)
        results.append(dict(
            size=size, ordering=ordering, batch_size=batch_size,
            parameters=common.count_parameters(state.params),
            blocks_s=times['blocks']['best_s'], full_masks_s=times['full_masks']['best_s'],
            speedup=times['full_masks']['best_s'] / times['blocks']['best_s'],
            **{f'{name}_s': t['best_s'] for name, t in times.items()
               if name.startswith('chunks_')},
            **{f'logits_share_{k}': v for k, v in
               logits_share(stage.model.decoding_order).items()}))
  return dict(machine=common.machine_info(),
              config=dict(batch_size=batch_size, repeats=repeats, min_time=min_time,
                          models=models),
              results=results)


def tables(report: dict[str, Any]) -> list[str]:
  chunks = sorted({k for row in report['results'] for k in row if k.startswith('chunks_')})
  return [common.format_table(
      report['results'],
      ['size', 'ordering', 'batch_size', 'parameters', 'blocks_s', *chunks, 'full_masks_s',
       'speedup', 'logits_share_local', 'logits_share_global'],
      "The trainer's HiARM step, seconds: mask blocks vs full masks")]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  smoke = common.SMOKE.value
  report = run(smoke=smoke, repeats=1 if smoke else common.REPEATS.value,
               chunks=[int(n) for n in _GLOBAL_CHUNKS.value],
               min_time=0.0 if smoke else common.MIN_TIME.value)
  common.finish(report, tables(report))


if __name__ == '__main__':
  app.run(main)
