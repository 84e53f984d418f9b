r"""HiPART's accuracy on real motion: a cross-subject CMU benchmark against strong baselines.

  python -m bench.cmu_accuracy --config=launch/configs/cmu_benchmark.py:multi_subject \
      --workdir=/tmp/cmu_benchmark [--data_dir=DIR] [--manual_dir=../shared/data/cmu_mocap] \
      [--train_clips=...] [--validation_clips=...] [--test_clips=...] [--config.<field>=...]

1. builds the `cmu_mocap` builder config named by the config argument from `--manual_dir`
   (`multi_subject`: subject-disjoint train / validation / test; see
   tfds_builders/cmu_mocap/README.md). `--train_clips` etc. replace its clip lists (other
   CMU subjects, other conversions: no code change), built as a config of their own;
2. trains, each run in its own directory under `--workdir` (a rerun skips finished runs
   and resumes unfinished ones; wall seconds per run accumulate in `timings.json`):
   the MSST tokenizer; one HiARM per ordering; `num_draws` augmented draws of every
   training example with the hierarchy the first ordering's HiARM generates from each
   (`hipart_jax.augmented_draws`); then, per seed, four lifters reading those same rows:
     mlp          SimpleBaseline MLP (Martinez et al. 2017) on the input joints
     transformer  the spatial transformer on the input joints
     hipart       the generated hierarchy + input joints, `hipart_architecture` lifter
     oracle       the ground-truth hierarchy + input joints, the same lifter;
   every training-time evaluation reads the validation split;
3. reports on the test split, as `<workdir>/cmu_accuracy.json` and `cmu_accuracy.md`:
   (a) lifters per occlusion level (MPJPE, P-MPJPE, MPJPE of the hidden joints): mean
       over seeds and the seed spread; per test subject; the targets as ratios;
   (b) the MSST's reconstruction and each ordering's generation error (1 test example in
       `eval_stride`);
   (c) the diagnosis: the HiPART and oracle lifters fed the generated hierarchy, the
       tokenized ground truth and the ground truth;
   (d) validation curves and training time per run;
   (e) with `validate_lifters`, table (a) on the validation split: the numbers every
       choice of the benchmark's settings reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow_datasets as tfds

from bench import cmu_report
from bench import reporting
from bench import stage_evals
from hipart_jax import augmented_draws
from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import input_pipeline
from hipart_jax import metrics
from hipart_jax.models import hipart
from hipart_jax.training import loop
from launch import console
from launch.configs import cmu_hiarm
from launch.configs import cmu_lifter
from launch.configs import cmu_msst
from tfds_builders.cmu_mocap import cmu_mocap_dataset_builder as cmu_builder

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_CLIPS_DIR = REPO.parent / 'shared' / 'data' / 'cmu_mocap'
DUMMY_DIR = pathlib.Path(cmu_builder.__file__).parent / 'dummy_data'
LIFTERS = cmu_report.LIFTERS
BASELINES = cmu_report.BASELINES
# The `c.hiarm` keys that override the dataset's augmentation for the HiARM runs only.
HIARM_AUGMENT_OVERRIDES = ('occlusion_prob', 'limb_drop_prob')
TIMINGS = 'timings.json'
SPLITS = ('train', 'validation', 'test')



def define_flags() -> None:
  """This program's flags (defined by `__main__` only, so tests can import the module)."""
  config_flags.DEFINE_config_file(
      'config', str(REPO / 'launch' / 'configs' / 'cmu_benchmark.py'),
      'Benchmark settings (launch/configs/cmu_benchmark.py[:builder config | smoke]).')
  flags.DEFINE_string('workdir', '/tmp/hipart_cmu_accuracy',
                      'Run directories, draws, timings and the report.')
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (built there if missing; '
                      'default: the TFDS default).')
  flags.DEFINE_string('manual_dir', str(SHARED_CLIPS_DIR),
                      'CMU clips (asf_amc/, bvh/): the TFDS manual_dir.')
  for split in SPLITS:
    flags.DEFINE_list(f'{split}_clips', None,
                      f'Clip ids of the {split} split, replacing the builder config\'s.')
  console.define_flags()


# --------------------------------------------------------------------------------------
# Data.


def builder_config(name: str, clips: Mapping[str, Sequence[str] | None]
                   ) -> cmu_builder.CmuMocapConfig | None:
  """None for a registered config as it is; else a copy with the given clip lists,
  named after its contents so that another list never reuses its build."""
  given = {split: tuple(c) for split, c in clips.items() if c}
  if not given:
    return None
  registered = {c.name: c for c in cmu_builder.Builder.BUILDER_CONFIGS}
  if name not in registered:
    raise ValueError(f'unknown cmu_mocap config {name!r}; known: {sorted(registered)}')
  fields = {f'{split}_clips': value for split, value in given.items()}
  digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
  return dataclasses.replace(registered[name], name=f'{name}_{digest}', **fields)


def data_block(c: ml_collections.ConfigDict, data_dir: str | None,
               config: cmu_builder.CmuMocapConfig | None) -> ml_collections.ConfigDict:
  """The stage configs' `dataset` block for this benchmark's data."""
  data = cmu_msst.get_config().dataset
  if config is None:
    data.name = f'cmu_mocap/{c.builder_config}'
  else:
    data.name = 'cmu_mocap'
    data.builder_kwargs = {'config': config}
  data.data_dir = data_dir
  data.eval_split = c.validation_split
  data.download = False
  return data


def dataset_name(data: ml_collections.ConfigDict) -> str:
  """'cmu_mocap/<builder config>' of a `data_block`."""
  config = (data.get('builder_kwargs') or {}).get('config')
  return data.name if config is None else f'{data.name}/{config.name}'


def prepare_dataset(data: ml_collections.ConfigDict, manual_dir: str | pathlib.Path) -> None:
  """Builds the dataset into `data.data_dir` unless it is there already."""
  manual_dir = pathlib.Path(manual_dir)
  if not manual_dir.is_dir():
    raise FileNotFoundError(f'no CMU clips at {manual_dir} (expected asf_amc/ and bvh/); '
                            'pass --manual_dir (see tfds_builders/cmu_mocap/README.md)')
  builder = tfds.builder(data.name, data_dir=data.data_dir,
                         **dict(data.get('builder_kwargs') or {}))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


def in_memory(source: Sequence[Any], name: str, chunk: int = 4096) -> list[Any]:
  """Every example of a source, decoded once: each stage, evaluation and lifter reads the
  same split again, and TFDS decoding is most of the host's work per example."""
  examples = []
  start = time.perf_counter()
  for first in range(0, len(source), chunk):
    examples += input_pipeline.read_examples(
        source, range(first, min(first + chunk, len(source))))
  logging.info('%s: %d examples decoded in %.0f s', name, len(examples),
               time.perf_counter() - start)
  return examples


# --------------------------------------------------------------------------------------
# Runs.


def _schedule(config: ml_collections.ConfigDict, steps: int, batch_size: int, lr: float,
              evals: int, seed: int) -> ml_collections.ConfigDict:
  config.num_train_steps = steps
  config.batch_size = batch_size
  config.optimizer.lr = lr
  config.optimizer.warmup_steps = max(steps // 20, 1)
  config.eval_every_steps = max(steps // max(evals, 1), 1)
  config.checkpoint_every_steps = config.eval_every_steps
  config.log_every_steps = max(steps // 50, 1)
  config.seed = seed
  config.tensorboard = False
  return config


def lifter_model(c: ml_collections.ConfigDict, lifter: str) -> ml_collections.ConfigDict:
  """The model block of one of `LIFTERS`."""
  if lifter in BASELINES:
    return ml_collections.ConfigDict(c.lifters[lifter].to_dict())
  model = ml_collections.ConfigDict(c.lifters[c.hipart_architecture].to_dict())
  model.mode = 'hierarchical' if lifter == 'hipart' else 'oracle'
  if lifter == 'hipart' and c.hipart_hierarchy_points != 'all':
    if 'hierarchy_points' not in model:
      raise ValueError(f'hipart_hierarchy_points={c.hipart_hierarchy_points!r} needs the '
                       f'SimpleBaseline lifter; hipart_architecture is '
                       f'{c.hipart_architecture!r}')
    model.hierarchy_points = c.hipart_hierarchy_points
  return model


def hiarm_run(ordering: str) -> str:
  return f'hiarm_{ordering}'


def lifter_run(lifter: str, seed: int) -> str:
  return f'lifter_{lifter}_seed{seed}'


def stage_configs(c: ml_collections.ConfigDict, workdir: pathlib.Path,
                  data: ml_collections.ConfigDict, num_actions: int
                  ) -> dict[str, ml_collections.ConfigDict]:
  """{run name: stage config}: msst, one HiARM per ordering, then the lifters per seed."""
  if c.hipart_architecture not in BASELINES:
    raise ValueError(f'hipart_architecture={c.hipart_architecture!r}; expected one of '
                     f'{BASELINES}')
  seed = c.seeds[0]
  msst = _schedule(cmu_msst.get_config(), c.msst.steps, c.msst.batch_size, c.msst.lr,
                   c.msst.evals, seed)
  msst.model = ml_collections.ConfigDict(c.msst.model.to_dict())
  msst.model.num_actions = num_actions
  msst.loss = ml_collections.ConfigDict(c.msst.loss.to_dict())
  runs = {'msst': msst}
  for ordering in c.orderings:
    config = _schedule(cmu_hiarm.get_config(ordering), c.hiarm.steps, c.hiarm.batch_size,
                       c.hiarm.lr, c.hiarm.evals, seed)
    config.model = ml_collections.ConfigDict(c.hiarm.model.to_dict())
    config.model.ordering = ordering
    config.init_from.msst = str(workdir / 'msst')
    runs[hiarm_run(ordering)] = config
  for seed in c.seeds:
    for lifter in LIFTERS:
      config = _schedule(cmu_lifter.get_config('sparse'), c.lifter_steps,
                         c.lifter_batch_size, c.lifter_lr, c.lifter_evals, seed)
      config.model = lifter_model(c, lifter)
      config.dataset.train_draws = str(workdir / 'draws')
      config.init_from.msst = str(workdir / 'msst')
      config.init_from.hiarm = str(workdir / hiarm_run(c.orderings[0]))
      runs[lifter_run(lifter, seed)] = config
  for config in runs.values():
    train_draws = config.dataset.train_draws
    config.dataset = ml_collections.ConfigDict(data.to_dict())
    config.dataset.train_draws = train_draws
    config.eval_batch_size = c.eval_batch_size
  for key in HIARM_AUGMENT_OVERRIDES:
    if c.hiarm[key] is not None:
      for ordering in c.orderings:
        runs[hiarm_run(ordering)].dataset.augment[key] = c.hiarm[key]
  return runs


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` (empty if absent)."""
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def eval_records(workdir: pathlib.Path) -> list[dict[str, Any]]:
  return [r for r in read_metrics(workdir) if any(k.startswith('eval/') for k in r)]


def is_finished(workdir: pathlib.Path, steps: int) -> bool:
  """True when the run evaluated and checkpointed its final step."""
  evals = eval_records(workdir)
  return (bool(evals) and evals[-1].get('step') == steps
          and (checkpoints.checkpoint_dir(workdir) / str(steps)).is_dir())


class Timings:
  """Wall seconds per run, accumulated over invocations in `<workdir>/timings.json`."""

  def __init__(self, workdir: pathlib.Path):
    self._path = workdir / TIMINGS
    self.seconds: dict[str, float] = (json.loads(self._path.read_text())
                                      if self._path.exists() else {})

  def add(self, name: str, seconds: float) -> None:
    self.seconds[name] = self.seconds.get(name, 0.0) + seconds
    self._path.write_text(json.dumps(self.seconds, indent=1))


def train_runs(runs: Mapping[str, ml_collections.ConfigDict], names: Sequence[str],
               workdir: pathlib.Path, timings: Timings, *, train_source, eval_sources,
               hierarchy) -> None:
  """Trains (or resumes) the named runs that are not finished."""
  for name in names:
    config = runs[name]
    if is_finished(workdir / name, config.num_train_steps):
      continue
    logging.info('=== training %s (%d steps) ===', name, config.num_train_steps)
    start = time.perf_counter()
    loop.train_and_evaluate(config, workdir / name, train_source=train_source,
                             eval_source=eval_sources[config.stage], hierarchy=hierarchy)
    timings.add(name, time.perf_counter() - start)


def write_draws(c, runs, workdir: pathlib.Path, timings: Timings, train_source,
                hierarchy) -> None:
  """The augmented draws of the training split, generated by the first ordering's HiARM."""
  hiarm_dir = workdir / hiarm_run(c.orderings[0])
  variables, meta = checkpoints.restore_params(hiarm_dir, expected_stage='hiarm')
  msst = hipart.build_msst(meta['frozen_models']['msst'], hierarchy)
  hiarm = hipart.build_hiarm(meta['model'], hierarchy, msst)
  collections = {'frozen_msst': variables['frozen_msst'], 'frozen_hiarm': variables}
  data = runs['msst'].dataset
  start = time.perf_counter()
  written = augmented_draws.write_draws(
      msst, hiarm, collections, train_source, hierarchy, data, workdir / 'draws',
      split=data.train_split, num_draws=c.num_draws, seed=c.seeds[0],
      hierarchy_source=c.draws_hierarchy,
      generator=dict(hiarm=str(hiarm_dir.absolute()), model=meta['model']))
  if written:
    timings.add('draws', time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# Evaluation.


def subjects_of(source: Sequence[Any]) -> np.ndarray:
  """[N] subject names of a source's examples, in order."""
  examples = input_pipeline.read_examples(source, range(len(source)))
  return np.asarray([e['subject'].decode() if isinstance(e['subject'], bytes)
                     else str(e['subject']) for e in examples])


def generator_digest(variables: Mapping[str, Any]) -> str:
  """A digest of a HiPART lifter's frozen generator (MSST and HiARM variables)."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves({k: variables[k] for k in ('frozen_msst', 'frozen_hiarm')}):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def evaluate_lifter(workdir: pathlib.Path, source, hierarchy, data, levels, *,
                    batch_size: int, action_names, subjects: np.ndarray,
                    generated: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
  """{level: {mpjpe_mm, p_mpjpe_mm, occluded_mpjpe_mm, per_action, per_subject}}.

  A HiPART lifter fills `generated` (if given, empty) with its generated hierarchies per
  level, or reads them from it when they are there: its seeds share one HiARM, so the
  first seed's decoding serves them all.

  Raises:
    ValueError: `generated` holds the hierarchies of another frozen MSST + HiARM.
  """
  model, variables, _ = checkpoints.load_hipart(str(workdir))
  reuse = generated is not None and model.lifter.mode == 'hierarchical'
  if reuse:
    digest = generator_digest(variables)
    if generated.setdefault('generator', digest) != digest:
      raise ValueError(f'{workdir}: its frozen MSST + HiARM differ from those of the '
                       'lifter whose generated hierarchies it was to share')
  out = {}
  for level in levels:
    summary = evaluation.evaluate(model, variables, source, hierarchy, data,
                                  batch_size=batch_size, occlusion=level, seed=0,
                                  action_names=action_names, progress=False,
                                  return_predictions=True,
                                  generated=generated.get(level) if reuse else None)
    predictions = summary.pop('predictions')
    if reuse:
      generated[level] = predictions['generated']
    errors = metrics.mpjpe(predictions['pose_3d'], predictions['target_3d'])  # [N] mm
    who = subjects[predictions['index']]
    summary['per_subject'] = {s: float(errors[who == s].mean()) for s in np.unique(who)}
    summary.pop('per_joint', None)
    out[level] = summary
  return out


def evaluate_lifters(c: ml_collections.ConfigDict, workdir: pathlib.Path, source,
                     hierarchy, data, action_names, subjects: np.ndarray
                     ) -> dict[str, dict[int, dict[str, Any]]]:
  """{lifter: {seed: `evaluate_lifter`}} over every lifter and seed, on one split whose
  [N] example subjects are `subjects` (`subjects_of`). HiPART's seeds share the
  hierarchies its HiARM generates."""
  out = {}
  for lifter in LIFTERS:
    generated = {}  # Filled by the first seed, read by the others (HiPART only).
    out[lifter] = {seed: evaluate_lifter(
        workdir / lifter_run(lifter, seed), source, hierarchy, data,
        tuple(c.occlusion_levels), batch_size=c.eval_batch_size, action_names=action_names,
        subjects=subjects, generated=generated) for seed in c.seeds}
  return out


def curves(runs: Mapping[str, ml_collections.ConfigDict], workdir: pathlib.Path
           ) -> dict[str, list[tuple[int, float]]]:
  """{run: [(step, validation value of its best_metric)]}: the learning curves."""
  out = {}
  for name, config in runs.items():
    key = config.best_metric
    out[name] = [(r['step'], r[key]) for r in eval_records(workdir / name) if key in r]
  return out


# --------------------------------------------------------------------------------------


def run(workdir: pathlib.Path, c: ml_collections.ConfigDict, data_dir: str | None,
        manual_dir: str | pathlib.Path,
        clips: Mapping[str, Sequence[str] | None]) -> dict[str, Any]:
  """Builds the data, trains what is unfinished, evaluates; returns the report."""
  workdir.mkdir(parents=True, exist_ok=True)
  timings = Timings(workdir)
  data = data_block(c, data_dir, builder_config(c.builder_config, clips))
  start = time.perf_counter()
  prepare_dataset(data, manual_dir)
  timings.add('dataset', time.perf_counter() - start)
  start = time.perf_counter()
  train_source, hierarchy, info = input_pipeline.load_source(data, data.train_split)
  train_source = in_memory(train_source, data.train_split)
  validation = in_memory(input_pipeline.load_source(data, c.validation_split)[0],
                         c.validation_split)
  test = in_memory(input_pipeline.load_source(data, c.test_split)[0], c.test_split)
  timings.add('decoding', time.perf_counter() - start)
  action_names = info.features['action'].names
  runs = stage_configs(c, workdir, data, num_actions=len(action_names))
  strided_validation = stage_evals.Strided(validation, c.eval_stride)
  eval_sources = dict(msst=strided_validation, hiarm=strided_validation, lifter=validation)
  sources = dict(train_source=train_source, eval_sources=eval_sources, hierarchy=hierarchy)
  generators = ['msst'] + [hiarm_run(o) for o in c.orderings]
  train_runs(runs, generators, workdir, timings, **sources)
  write_draws(c, runs, workdir, timings, train_source, hierarchy)
  lifter_names = [lifter_run(l, s) for s in c.seeds for l in LIFTERS]
  train_runs(runs, lifter_names, workdir, timings, **sources)

  levels = tuple(c.occlusion_levels)
  lifters_validation = None
  if c.validate_lifters:
    start = time.perf_counter()
    lifters_validation = {lifter: cmu_report.aggregate(per_seed, levels) for lifter, per_seed
                          in evaluate_lifters(c, workdir, validation, hierarchy, data,
                                              action_names, subjects_of(validation)).items()}
    timings.add('validation', time.perf_counter() - start)
  start = time.perf_counter()
  subjects = subjects_of(test)
  per_seed = evaluate_lifters(c, workdir, test, hierarchy, data, action_names, subjects)
  lifters = {lifter: cmu_report.aggregate(per_seed[lifter], levels) for lifter in LIFTERS}
  subset = stage_evals.Strided(test, c.eval_stride)
  msst_levels = stage_evals.evaluate_msst(runs['msst'], workdir / 'msst', subset,
                                          hierarchy, levels, seed=0)
  hiarm = {o: stage_evals.evaluate_hiarm(runs[hiarm_run(o)], workdir / hiarm_run(o), subset,
                                         hierarchy, levels, seed=0,
                                         timing_calls=c.timing_calls)
           for o in c.orderings}
  seed = c.seeds[0]
  diagnosis = stage_evals.diagnose_lifters(
      workdir / lifter_run('hipart', seed), workdir / lifter_run('oracle', seed),
      runs[lifter_run('hipart', seed)], subset, hierarchy, levels, seed=0)
  imputation = stage_evals.hidden_joint_imputation(
      workdir / lifter_run('hipart', seed),
      {b: workdir / lifter_run(b, seed) for b in BASELINES},
      runs[lifter_run('hipart', seed)], subset, hierarchy, levels, seed=0)
  first = hiarm_run(c.orderings[0])
  hiarm_on_train = stage_evals.evaluate_hiarm(
      runs[first], workdir / first, stage_evals.Strided(train_source, c.train_eval_stride),
      hierarchy, levels[:2], seed=0, timing_calls=0)
  timings.add('evaluation', time.perf_counter() - start)
  msst_eval = eval_records(workdir / 'msst')
  return dict(
      settings=c.to_dict(),
      machine=reporting.machine_info(),
      dataset=dict(name=dataset_name(data), data_dir=data_dir, manual_dir=str(manual_dir),
                   train_examples=len(train_source), validation_examples=len(validation),
                   test_examples=len(test), test_subjects=sorted(set(subjects.tolist()))),
      lifter_epochs=c.lifter_steps * c.lifter_batch_size / (c.num_draws * len(train_source)),
      models={name: runs[name].model.to_dict() for name in
              ['msst', first] + [lifter_run(l, seed) for l in LIFTERS]},
      lifters=lifters,
      lifters_per_seed=per_seed,
      lifters_validation=lifters_validation,
      targets=cmu_report.targets(lifters, hiarm, levels),
      msst={k[len('eval/'):]: v for k, v in (msst_eval[-1] if msst_eval else {}).items()
            if k.startswith('eval/')},
      msst_by_occlusion=msst_levels,
      hiarm=hiarm,
      diagnosis=dict(lifter_feeds=diagnosis, hidden_joint_imputation=imputation,
                     hiarm_on_train=hiarm_on_train),
      curves=curves(runs, workdir),
      best_metrics={name: config.best_metric for name, config in runs.items()},
      timings=dict(timings.seconds))


def data_flags(c: ml_collections.ConfigDict, workdir: pathlib.Path
               ) -> tuple[str | None, str | pathlib.Path, dict[str, list[str] | None]]:
  """(data_dir, manual_dir, {split: clips}) of the flags; a smoke config reads the
  dummy clips, in a data_dir of its own in the workdir."""
  f = flags.FLAGS
  data_dir, manual_dir = f.data_dir, f.manual_dir
  clips = {split: f[f'{split}_clips'].value for split in SPLITS}
  if c.smoke:
    data_dir, manual_dir = str(workdir / 'tfds_dummy'), DUMMY_DIR
    clips = {split: value or list(c[f'smoke_{split}_clips']) for split, value in clips.items()}
  return data_dir, manual_dir, clips


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  console.install(flags.FLAGS.progress)
  c, workdir = flags.FLAGS.config, pathlib.Path(flags.FLAGS.workdir)
  report = run(workdir, c, *data_flags(c, workdir))
  text = cmu_report.report_markdown(report)
  reporting.write_json(report, str(workdir / 'cmu_accuracy.json'))
  (workdir / 'cmu_accuracy.md').write_text(text)
  print(text)
  print(f'Report written to {workdir / "cmu_accuracy.json"} and cmu_accuracy.md')


if __name__ == '__main__':
  define_flags()
  app.run(main)
