"""How well can anything guess the hidden joints from the input? A bound for HiPART.

  python -m bench.imputation_bound --config=launch/configs/cmu_benchmark.py:multi_subject \
      --workdir=/tmp/cmu_benchmark

Run it on a finished `bench.cmu_accuracy` workdir (same flags). A greedy hierarchy is a
function of the lifter's own input, so about the joints the input hides it can tell the
lifter at most what the best function of that input knows. This trains that function
directly: the SimpleBaseline trunk regressing the hidden 2D joints
(`simple_baseline.HiddenJointRegressor`, the MLP baseline's width, depth and dropout),
on the benchmark's stored draws with the lifters' steps, batch size, schedule and seeds.
Its training curve is evaluated with one limb hidden on the validation split. It reports
px per hidden joint on the validation and test subsets of the benchmark's tables (1
example in `eval_stride`), beside the benchmark's HiARM on the validation subset and the
benchmark's own `hidden_joint_imputation` figures on the test subset (HiARM's
generation, a perfect HiARM's, each lifter's) when its report is there.

Writes `<workdir>/imputation_bound.json` and `.md`. The runs (`hidden_joint_regressor_seed*`)
checkpoint and resume like the benchmark's stages.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from bench import cmu_accuracy
from bench import cmu_report
from bench import reporting
from bench import stage_evals
from hipart_jax import checkpoints
from hipart_jax import input_pipeline
from hipart_jax.models import simple_baseline
from hipart_jax.training import loop
from launch import console

STAGE = 'hidden_joint_regressor'
TRAINING_EVAL_OCCLUSION = 'one_limb'


class HiddenJointRegressorStage:
  """A `trainer.Stage`: mean image distance of the hidden input joints to the truth.

  The loss and `hidden_distance_per_example` are sums over the hidden joints per valid
  example (model-frame units), as HiARM's hidden-joint metric is, so that over a split
  `hidden_px_per_example / hidden_joints_per_example` is the px per hidden joint.
  """

  def __init__(self, model: ml_collections.ConfigDict | Mapping[str, Any]):
    self.model = simple_baseline.HiddenJointRegressor(**dict(model))

  def init_variables(self, rng, batch):
    return {'params': self.model.init(rng, batch['inputs_2d'],
                                      batch['inputs_confidence'])['params']}

  def _predict(self, params, batch, rng, train):
    return self.model.apply({'params': params}, batch['inputs_2d'],
                            batch['inputs_confidence'], train=train, rngs={'dropout': rng})

  def loss_fn(self, params, collections, batch, rng, train):
    pred = self._predict(params, batch, rng, train)
    # The epsilon keeps the gradient finite at a zero distance.
    distance = jnp.sqrt(jnp.sum((pred - batch['sparse_2d']) ** 2, -1) + 1e-12)
    loss = stage_evals.sum_over_hidden(distance, batch)
    return loss, ({'hidden_distance_per_example': loss}, collections)

  def eval_metrics(self, variables, batch):
    pred = self._predict(variables['params'], batch, jax.random.key(0), False)
    return {'loss': stage_evals.sum_over_hidden(
                jnp.linalg.norm(pred - batch['sparse_2d'], axis=-1), batch),
            'hidden_px_per_example': stage_evals.sum_over_hidden(
                stage_evals.image_px(pred, batch), batch),
            'hidden_joints_per_example': stage_evals.sum_over_hidden(
                jnp.ones_like(batch['visible'], jnp.float32), batch)}


def run_name(seed: int) -> str:
  return f'{STAGE}_seed{seed}'


def regressor_config(c: ml_collections.ConfigDict, mlp_run: ml_collections.ConfigDict
                     ) -> ml_collections.ConfigDict:
  """The MLP baseline's run config of one seed (draws, steps, batch, schedule), for
  this stage: the MLP's width, depth and dropout, evaluated with one limb hidden."""
  config = mlp_run.copy_and_resolve_references()
  config.stage = STAGE
  mlp = c.lifters.mlp
  config.model = ml_collections.ConfigDict(dict(
      width=mlp.width, num_blocks=mlp.num_blocks, dropout=mlp.dropout))
  config.best_metric = 'eval/loss'
  config.dataset.eval_occlusion = TRAINING_EVAL_OCCLUSION
  config.init_from = ml_collections.ConfigDict()
  return config


def hidden_px(stage: HiddenJointRegressorStage, variables, source: Sequence[Any],
              hierarchy, config: ml_collections.ConfigDict, levels: Sequence[str]
              ) -> dict[str, float]:
  """{occluded level: px per hidden joint} over `source`; levels hiding none skipped."""
  sums = stage_evals.evaluate_levels(stage, variables, source, hierarchy, config, levels,
                                     seed=0)
  return {level: m['hidden_px_per_example'] / m['hidden_joints_per_example']
          for level, m in sums.items() if m['hidden_joints_per_example'] > 0}


def run(workdir: pathlib.Path, c: ml_collections.ConfigDict, data_dir: str | None,
        manual_dir: str | pathlib.Path,
        clips: Mapping[str, Sequence[str] | None]) -> dict[str, Any]:
  """Trains (or resumes) one regressor per seed and evaluates them; returns the report."""
  if not (workdir / 'draws' / 'manifest.json').exists():
    raise FileNotFoundError(f'{workdir / "draws"}: no draws; run bench.cmu_accuracy with '
                            'this --workdir first')
  data = cmu_accuracy.data_block(c, data_dir, cmu_accuracy.builder_config(
      c.builder_config, clips))
  cmu_accuracy.prepare_dataset(data, manual_dir)
  train_source, hierarchy, _ = input_pipeline.load_source(data, data.train_split)
  splits = {split: stage_evals.Strided(cmu_accuracy.in_memory(
      input_pipeline.load_source(data, split)[0], split), c.eval_stride)
            for split in (c.validation_split, c.test_split)}
  levels = tuple(c.occlusion_levels)
  out: dict[str, Any] = {'settings': c.to_dict(), 'machine': reporting.machine_info(),
                         'px': {}, 'curves': {}, 'seconds': {}}
  runs = cmu_accuracy.stage_configs(c, workdir, data, num_actions=0)
  for seed in c.seeds:
    config = regressor_config(c, runs[cmu_accuracy.lifter_run('mlp', seed)])
    name = run_name(seed)
    stage = HiddenJointRegressorStage(config.model)
    if not cmu_accuracy.is_finished(workdir / name, config.num_train_steps):
      logging.info('=== training %s (%d steps) ===', name, config.num_train_steps)
      start = time.perf_counter()
      loop.train_and_evaluate(config, workdir / name, stage=stage,
                              train_source=train_source,
                              eval_source=splits[c.validation_split], hierarchy=hierarchy)
      out['seconds'][name] = time.perf_counter() - start
    variables, _ = checkpoints.restore_params(workdir / name, expected_stage=STAGE)
    out['px'][name] = {split: hidden_px(stage, variables, source, hierarchy, config, levels)
                       for split, source in splits.items()}
    out['curves'][name] = [(r['step'], r['eval/loss']) for r in
                           cmu_accuracy.eval_records(workdir / name) if 'eval/loss' in r]
  # The benchmark's HiARM on the validation subset too: the split choices are made on.
  first = cmu_accuracy.hiarm_run(c.orderings[0])
  hiarm = stage_evals.evaluate_hiarm(
      runs[first], workdir / first, splits[c.validation_split], hierarchy, levels, seed=0,
      timing_calls=0)
  out['hiarm_validation'] = {level: hiarm[level]['hidden_sparse_px'] for level in levels
                             if hiarm[level]['hidden_sparse_px'] is not None}
  benchmark = workdir / 'cmu_accuracy.json'
  if benchmark.exists():
    out['benchmark_hidden_joint_imputation'] = json.loads(benchmark.read_text())[
        'diagnosis']['hidden_joint_imputation']
  return out


def report_markdown(report: Mapping[str, Any]) -> str:
  """The px-per-hidden-joint table: the regressor per split (mean (min–max) over seeds),
  then the benchmark's own figures on the test subset."""
  c = report['settings']
  runs = [run_name(seed) for seed in c['seeds']]
  levels = sorted({level for name in runs for split in report['px'][name].values()
                   for level in split}, key=list(c['occlusion_levels']).index)
  lines = [f'px per hidden joint, 1 example in {c["eval_stride"]}; the regressor: mean '
           f'(min–max) over seeds {list(c["seeds"])}', '',
           '| source | split | ' + ' | '.join(levels) + ' |',
           '|---|---|' + '---|' * len(levels)]
  for split in (c['validation_split'], c['test_split']):
    cells = [cmu_report.format_stats(cmu_report.seed_stats(
        [report['px'][name][split][level] for name in runs])) for level in levels]
    lines.append(f'| hidden-joint regressor | {split} | ' + ' | '.join(cells) + ' |')
  lines.append(f'| hiarm generated | {c["validation_split"]} | ' + ' | '.join(
      f'{report["hiarm_validation"][level]:.1f}' for level in levels) + ' |')
  for source, by_level in _by_source(report.get('benchmark_hidden_joint_imputation', {})):
    cells = [f'{by_level[level]:.1f}' if level in by_level else '-' for level in levels]
    lines.append(f'| {cmu_report.imputation_source_name(source)} | {c["test_split"]} | '
                 + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _by_source(imputation: Mapping[str, Mapping[str, float]]):
  """[(source, {level: px})] from the benchmark's {level: {source: px}}."""
  sources = {}
  for level, values in imputation.items():
    for source, value in values.items():
      sources.setdefault(source, {})[level] = value
  return list(sources.items())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  console.install(flags.FLAGS.progress)
  c, workdir = flags.FLAGS.config, pathlib.Path(flags.FLAGS.workdir)
  report = run(workdir, c, *cmu_accuracy.data_flags(c, workdir))
  text = report_markdown(report)
  reporting.write_json(report, str(workdir / 'imputation_bound.json'))
  (workdir / 'imputation_bound.md').write_text(text)
  print(text)


if __name__ == '__main__':
  cmu_accuracy.define_flags()
  app.run(main)
