r"""HiPART's accuracy on real motion: the shared CMU mocap clips (`cmu_mocap/shared_clips`).

  python -m bench.cmu_accuracy --workdir=/tmp/hipart_cmu_accuracy \
      [--data_dir=DIR] [--manual_dir=../shared/data/cmu_mocap] \
      [--steps_msst=400] [--steps_hiarm=200] [--steps_lifter=400] \
      [--orderings=hierarchical,center_to_periphery,sparse_to_dense,raster] [--smoke]

1. builds `cmu_mocap/shared_clips` from `--manual_dir` (train: clips 01_01..01_10; test:
   01_11, 01_12 and the BVH clip 131_01, another subject);
2. trains, each run in its own workdir under `--workdir` (a rerun skips finished runs and
   resumes unfinished ones): the MSST tokenizer; one HiARM per ordering; three lifters
   (sparse-only baseline, HiPART's generated hierarchy from the `hierarchical` HiARM,
   and the ground-truth-hierarchy oracle);
3. reports on the test split
   (a) MSST reconstruction error per level, in pixels of the 1000-px virtual images and
       in millimeter-equivalent, and codebook usage (the run's last logged evaluation);
   (b) per ordering, the error of the greedily generated, decoded hierarchy per level,
       teacher-forced and generated token accuracy, on clean and occluded inputs
       (`input_pipeline.eval_batches(occlusion=...)`), and the generation time of one
       batch;
   (c) lifters: MPJPE, P-MPJPE and MPJPE on the occluded joints per occlusion level
       (`evaluation.robustness_table`, through `launch.demo.evaluate_all`), on every
       test example;
   (d) a diagnosis: the HiPART and oracle lifters fed the generated hierarchy, the
       tokenizer's reconstruction of the ground truth and the ground truth itself
       (`stage_evals.diagnose_lifters`), and the HiARM the lifter reads on training
       examples;
   as `<workdir>/cmu_accuracy.json` and markdown tables (`cmu_accuracy.md`, printed).
   (a), (b), (d) and the training-time evaluations read every `eval_stride`-th test
   example (HiARM generation is the slow part on a CPU).

Model sizes are the small synthetic ones (launch/configs/synthetic_*.py: tokenizer,
HiARM and lifter with their loss, optimizer and batch settings), not the paper-scale
cmu_*.py models, and the default step counts are short, so that the whole benchmark
takes about an hour of a busy 2-core CPU (measured rates in BENCHMARKS.md); the data,
splits and augmentation are those of launch/configs/cmu_*.py.

`--smoke` (bench.common's flag) runs everything for one step with tiny models on the
builder's `dummy_data` (invented motions in the real file formats), built into its own
data directory under `--workdir` so it never mixes with a real build. `--output` (also
bench.common's) writes a copy of the JSON report.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bench import common
from bench import stage_evals
from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import input_pipeline
from hipart_jax import orderings
from hipart_jax import skeleton
from hipart_jax.training import loop
from launch import demo as demo_lib
from launch import quiet_logs
from launch.configs import cmu_hiarm
from launch.configs import cmu_lifter
from launch.configs import cmu_msst
from launch.configs import synthetic_hiarm
from launch.configs import synthetic_lifter
from launch.configs import synthetic_msst
from tfds_builders.cmu_mocap import cmu_mocap_dataset_builder as cmu_builder

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_CLIPS_DIR = REPO.parent / 'shared' / 'data' / 'cmu_mocap'
DUMMY_DIR = pathlib.Path(cmu_builder.__file__).parent / 'dummy_data'
LIFTER_MODES = ('sparse', 'hierarchical', 'oracle')
# The HiARM whose generations the 'hierarchical' lifter reads.
LIFTER_ORDERING = 'hierarchical'
# `--smoke` compares two orderings unless --orderings is given.
SMOKE_ORDERINGS = (LIFTER_ORDERING, 'raster')

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/hipart_cmu_accuracy',
                               'Run directories, dataset build (smoke) and the report.')
# bench/training.py defines a data_dir flag of the same meaning: either may come first.
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data directory (built there if '
                                'missing; default: the TFDS default).', allow_override=True)
_MANUAL_DIR = flags.DEFINE_string('manual_dir', str(SHARED_CLIPS_DIR),
                                  'CMU clips (asf_amc/, bvh/): the TFDS manual_dir.')
_STEPS_MSST = flags.DEFINE_integer('steps_msst', 400, 'MSST training steps.')
_STEPS_HIARM = flags.DEFINE_integer('steps_hiarm', 200, 'Training steps of each HiARM.')
_STEPS_LIFTER = flags.DEFINE_integer('steps_lifter', 400, 'Training steps of each lifter.')
_ORDERINGS = flags.DEFINE_list('orderings', list(orderings.ORDERING_NAMES),
                               'HiARM orderings to compare (each is its own run).')


def settings(*, smoke: bool, steps_msst: int, steps_hiarm: int, steps_lifter: int,
             orderings_: Sequence[str]) -> ml_collections.ConfigDict:
  """The benchmark's numbers (the `demo`-like config `demo_lib.evaluate_all` reads)."""
  s = ml_collections.ConfigDict(dict(
      smoke=smoke, seed=0, steps_msst=steps_msst, steps_hiarm=steps_hiarm,
      steps_lifter=steps_lifter, orderings=tuple(orderings_),
      occlusion_levels=tuple(evaluation.OCCLUSION_LEVELS),
      batch_size=None,  # None: each stage's synthetic-config batch size.
      eval_batch_size=256,
      # Training-time evaluations and the HiARM tables (b) read every eval_stride-th
      # test example (generation is the slow part); the lifter tables (c) read all.
      eval_stride=4,
      # The diagnosis's HiARM check on training examples reads 1 in train_eval_stride.
      train_eval_stride=16,
      # Generation timing: untimed warm-up call, then the mean of this many calls.
      timing_calls=5,
      # None: the synthetic model sizes; else {stage: overrides}.
      model_overrides=None))
  if smoke:
    s.update(dict(steps_msst=1, steps_hiarm=1, steps_lifter=1, batch_size=16,
                  eval_batch_size=32, timing_calls=1, eval_stride=2,
                  train_eval_stride=4,
                  occlusion_levels=('none', 'one_limb'),
                  model_overrides=dict(
                      msst=dict(width=8, num_blocks=1, token_hidden=8, channel_hidden=8,
                                member_dim=2, sparse_codebook_size=8,
                                dense_codebook_size=8, code_dim=4),
                      hiarm=dict(width=8, num_lsab=1, num_gcsab=1, num_heads=2,
                                 mlp_ratio=1),
                      lifter=dict(width=8, depth=1, num_heads=2, mlp_ratio=1))))
  unknown = set(s.orderings) - set(orderings.ORDERING_NAMES)
  if unknown:
    raise ValueError(f'unknown orderings {sorted(unknown)}; known: {orderings.ORDERING_NAMES}')
  return s


def prepare_dataset(data_dir: str | None, manual_dir: str | pathlib.Path) -> None:
  """Builds `cmu_mocap/shared_clips` into `data_dir` from the clips in `manual_dir`.

  Does nothing when the dataset is already built there.
  """
  manual_dir = pathlib.Path(manual_dir)
  if not (manual_dir / 'asf_amc').is_dir():
    raise FileNotFoundError(f'no CMU clips at {manual_dir} (expected asf_amc/ and bvh/); '
                            'pass --manual_dir (see tfds_builders/cmu_mocap/README.md)')
  download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  tfds.data_source(cmu_msst.DATASET, split='train', data_dir=data_dir, download=True,
                   download_and_prepare_kwargs={'download_config': download_config})


def _shorten(config: ml_collections.ConfigDict, small: ml_collections.ConfigDict,
             steps: int, s: ml_collections.ConfigDict, stage: str,
             data_dir: str | None) -> ml_collections.ConfigDict:
  """A cmu_*.py config with the synthetic model, loss and optimizer, run for `steps`."""
  num_actions = config.model.get('num_actions')
  config.model = small.model
  if num_actions is not None:
    config.model.num_actions = num_actions  # CMU's action classes, not synthetic's.
  if s.model_overrides:
    config.model.update(s.model_overrides[stage])
  config.loss = small.loss
  config.optimizer = small.optimizer
  config.batch_size = s.batch_size or small.batch_size
  config.eval_batch_size = s.eval_batch_size
  config.dataset.data_dir = data_dir
  config.dataset.download = False  # prepare_dataset built it.
  config.seed = s.seed
  config.num_train_steps = steps
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, max(steps // 10, 1))
  config.log_every_steps = max(steps // 10, 1)
  config.eval_every_steps = steps
  config.checkpoint_every_steps = steps
  config.tensorboard = False
  return config


def hiarm_run(ordering: str) -> str:
  return f'hiarm_{ordering}'


def stage_configs(s: ml_collections.ConfigDict, workdir: pathlib.Path,
                  data_dir: str | None) -> dict[str, ml_collections.ConfigDict]:
  """{run name: stage config} in training order: msst, the `hierarchical` HiARM (always
  trained: the HiPART lifter reads it), the three lifters, the other HiARM orderings.
  """
  def hiarm(ordering):
    config = _shorten(cmu_hiarm.get_config(ordering), synthetic_hiarm.get_config(ordering),
                      s.steps_hiarm, s, 'hiarm', data_dir)
    config.init_from.msst = str(workdir / 'msst')
    return config

  runs = {'msst': _shorten(cmu_msst.get_config(), synthetic_msst.get_config(),
                           s.steps_msst, s, 'msst', data_dir),
          hiarm_run(LIFTER_ORDERING): hiarm(LIFTER_ORDERING)}
  for mode in LIFTER_MODES:
    config = _shorten(cmu_lifter.get_config(mode), synthetic_lifter.get_config(mode),
                      s.steps_lifter, s, 'lifter', data_dir)
    config.init_from.msst = str(workdir / 'msst')
    config.init_from.hiarm = str(workdir / hiarm_run(LIFTER_ORDERING))
    runs[f'lifter_{mode}'] = config
  for ordering in s.orderings:
    runs.setdefault(hiarm_run(ordering), hiarm(ordering))
  return runs


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` (empty if absent)."""
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_eval(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The last record with evaluation metrics ({} if none)."""
  evals = [r for r in records if any(key.startswith('eval/') for key in r)]
  return dict(evals[-1]) if evals else {}


def is_finished(workdir: pathlib.Path, steps: int) -> bool:
  """True when the run evaluated and checkpointed its final step."""
  evaluated = last_eval(read_metrics(workdir)).get('step') == steps
  return evaluated and (checkpoints.checkpoint_dir(workdir) / str(steps)).is_dir()


def train_steps_per_second(records: Sequence[Mapping[str, Any]]) -> float | None:
  """Median of the logged training steps/s (None if nothing was logged)."""
  values = [r['steps_per_second'] for r in records if 'steps_per_second' in r]
  return float(np.median(values)) if values else None


def train_runs(runs: Mapping[str, ml_collections.ConfigDict], workdir: pathlib.Path,
               train_source: Sequence[Any], eval_source: Sequence[Any],
               hierarchy: Any) -> dict[str, float]:
  """`demo_lib.train_all` with the sources opened once (and a subset for evaluation)."""
  seconds = {}
  for name, config in runs.items():
    start = time.perf_counter()
    logging.info('=== training %s (%d steps) ===', name, config.num_train_steps)
    loop.train_and_evaluate(config, workdir / name, train_source=train_source,
                             eval_source=eval_source, hierarchy=hierarchy)
    seconds[name] = time.perf_counter() - start
  return seconds


# --------------------------------------------------------------------------------------
# Report.

_LIFTER_NAMES = {'sparse': 'sparse-only (baseline)', 'hierarchical': 'HiPART (generated)',
                 'oracle': 'oracle (ground-truth hierarchy)'}


def _fmt(value: Any, digits: int = 1) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return '-'
  return f'{value:.{digits}f}'


def report_markdown(report: Mapping[str, Any]) -> str:
  """Markdown tables (a) MSST, (b) HiARM per ordering, (c) lifters."""
  s = report['settings']
  levels = list(s['occlusion_levels'])
  msst = report['msst']
  lines = ['### (a) MSST reconstruction of held-out hierarchies', '',
           f'{s["steps_msst"]} training steps; 1 in {s["eval_stride"]} test examples; '
           'pixels of the 1000-px virtual images; mm-equivalent = error scaled by the '
           '3D/2D spread of the pose.', '',
           'Last columns: the same ground truth in the frame of an occluded input (the '
           'frames in which HiARM\'s targets are tokenized), px.', '',
           '| level | error (px) | error (mm-equivalent) | '
           + ' | '.join(f'frame: {level}' for level in levels) + ' |',
           '|---|---|---|' + '---|' * len(levels)]
  by_occlusion = report['msst_by_occlusion']
  for level in skeleton.LEVELS:
    lines.append(f'| {level} | {_fmt(msst.get(f"recon_{level}_px"))} '
                 f'| {_fmt(msst.get(f"recon_{level}_mm_equivalent"))} | '
                 + ' | '.join(_fmt(by_occlusion[occlusion][f'recon_{level}_px'])
                              for occlusion in levels) + ' |')
  lines += ['', f'Codebook usage: sparse {_fmt(msst.get("usage_sparse"), 3)}, dense '
            f'{_fmt(msst.get("usage_dense"), 3)}; perplexity sparse '
            f'{_fmt(msst.get("perplexity_sparse"))}, dense '
            f'{_fmt(msst.get("perplexity_dense"))}.', '',
            '### (b) HiARM: greedily generated hierarchy per ordering', '',
            f'{s["steps_hiarm"]} training steps per ordering; 1 in {s["eval_stride"]} '
            'test examples. Error of the decoded '
            'generation against the ground-truth hierarchy (px); token accuracy '
            'teacher-forced (TF) and of the generated tokens (gen), sparse / dense; '
            'generation time of one batch.', '',
            '| ordering | steps | occlusion | sparse px | dense px | fine px | fine mm-eq '
            '| TF acc | gen acc | s / batch |', '|---|---|---|---|---|---|---|---|---|---|']
  for ordering, table in report['hiarm'].items():
    for level in levels:
      m = table[level]
      lines.append(
          f'| {ordering} | {table["decoding_steps"]} | {level} '
          + ''.join(f'| {_fmt(m[f"generated_{lv}_px"])} ' for lv in skeleton.LEVELS)
          + f'| {_fmt(m["generated_fine_mm_equivalent"])} '
          f'| {_fmt(m["sparse_accuracy"], 3)} / {_fmt(m["dense_accuracy"], 3)} '
          f'| {_fmt(m["generated_sparse_token_accuracy"], 3)} / '
          f'{_fmt(m["generated_dense_token_accuracy"], 3)} '
          f'| {_fmt(table["generation_s_per_batch"], 3)} |')
  batch_size = next(iter(report['hiarm'].values()))['generation_batch_size']
  lines += ['', f'(Generation: batch of {batch_size}, greedy, key/value cache, on this '
            'machine.)', '',
            '### (c) Lifters by occlusion level', '',
            f'{s["steps_lifter"]} training steps each; every test example (mean over '
            'actions).', '']
  for key, title in (('mpjpe_mm', 'MPJPE (mm)'), ('p_mpjpe_mm', 'P-MPJPE (mm)'),
                     ('occluded_mpjpe_mm', 'MPJPE of the occluded joints (mm)')):
    lines += [f'{title}:', '', '| lifter | ' + ' | '.join(levels) + ' |',
              '|---|' + '---|' * len(levels)]
    for mode, table in report['lifters'].items():
      lines.append(f'| {_LIFTER_NAMES.get(mode, mode)} | '
                   + ' | '.join(_fmt(table[level].get(key)) for level in levels) + ' |')
    lines.append('')
  diagnosis = report['diagnosis']
  lines += ['### (d) Diagnosis', '',
            f'MPJPE (mm) of the HiPART and oracle lifters fed each hierarchy (1 in '
            f'{s["eval_stride"]} test examples): generated by HiARM (what HiPART sees), '
            'the tokenizer\'s reconstruction of the ground truth (tokenization error '
            'only), the ground truth.', '',
            '| lifter | hierarchy fed | ' + ' | '.join(levels) + ' |',
            '|---|---|' + '---|' * len(levels)]
  feeds = diagnosis['lifter_feeds']
  for key in feeds[levels[0]]:
    lifter, feed = key.split('/')
    lines.append(f'| {lifter} | {feed} | '
                 + ' | '.join(_fmt(feeds[level][key]) for level in levels) + ' |')
  on_train = diagnosis['hiarm_on_train']
  test = report['hiarm'].get(LIFTER_ORDERING, {})
  lines += ['', f'The `{LIFTER_ORDERING}` HiARM on training examples (1 in '
            f'{s["train_eval_stride"]}) and on test examples: generated error (px) and '
            'token accuracy.', '',
            '| examples | occlusion | sparse px | dense px | fine px | gen acc |',
            '|---|---|---|---|---|---|']
  for name, table in (('train', on_train), ('test', test)):
    for level in levels[:2]:
      if level not in table:
        continue
      m = table[level]
      lines.append(f'| {name} | {level} '
                   + ''.join(f'| {_fmt(m[f"generated_{lv}_px"])} ' for lv in skeleton.LEVELS)
                   + f'| {_fmt(m["generated_sparse_token_accuracy"], 3)} / '
                   f'{_fmt(m["generated_dense_token_accuracy"], 3)} |')
  lines += ['']
  lines += ['Training (this machine): ' + ', '.join(
      f'{name} {_fmt(run["steps_per_second"])} steps/s' for name, run in
      report['train'].items()) + '.']
  return '\n'.join(lines) + '\n'


def run(workdir: pathlib.Path, data_dir: str | None, manual_dir: str | pathlib.Path,
        s: ml_collections.ConfigDict) -> dict[str, Any]:
  """Builds the data, trains what is unfinished, evaluates; returns the report."""
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  prepare_dataset(data_dir, manual_dir)
  runs = stage_configs(s, workdir, data_dir)
  todo = {name: config for name, config in runs.items()
          if not is_finished(workdir / name, config.num_train_steps)}
  logging.info('Runs to train: %s (finished: %s)', list(todo),
               [name for name in runs if name not in todo])
  data_config = runs['msst'].dataset
  train_source, hierarchy, _ = input_pipeline.load_source(data_config)
  source, _, _ = input_pipeline.load_source(data_config, data_config.eval_split)
  subset = stage_evals.Strided(source, s.eval_stride)
  seconds = train_runs(todo, workdir, train_source, subset, hierarchy)

  msst_levels = stage_evals.evaluate_msst(runs['msst'], workdir / 'msst', subset, hierarchy,
                              s.occlusion_levels, seed=s.seed)
  hiarm = {}
  for ordering in s.orderings:
    name = hiarm_run(ordering)
    hiarm[ordering] = stage_evals.evaluate_hiarm(runs[name], workdir / name, subset, hierarchy,
                                     s.occlusion_levels, seed=s.seed,
                                     timing_calls=s.timing_calls)
  lifters = demo_lib.evaluate_all(s, runs, workdir)
  # Diagnosis: the HiPART and oracle lifters fed each kind of hierarchy; the HiARM the
  # lifter reads, on training examples (its inputs while the lifter trained).
  diagnosis = stage_evals.diagnose_lifters(
      workdir / 'lifter_hierarchical', workdir / 'lifter_oracle', runs['lifter_hierarchical'],
      subset, hierarchy, s.occlusion_levels, seed=s.seed)
  name = hiarm_run(LIFTER_ORDERING)
  hiarm_on_train = stage_evals.evaluate_hiarm(
      runs[name], workdir / name, stage_evals.Strided(train_source, s.train_eval_stride),
      hierarchy, s.occlusion_levels[:2], seed=s.seed, timing_calls=0)
  for table in lifters.values():
    for metrics in table.values():
      metrics.pop('per_joint', None)  # Keep the JSON readable; per_action stays.
  msst_eval = last_eval(read_metrics(workdir / 'msst'))
  train_info = {}
  for name, config in runs.items():
    train_info[name] = dict(steps=config.num_train_steps, seconds=seconds.get(name),
                            steps_per_second=train_steps_per_second(
                                read_metrics(workdir / name)),
                            batch_size=config.batch_size)
  return dict(
      settings=s.to_dict(),
      machine=common.machine_info(),
      dataset=dict(name=data_config.name, data_dir=data_dir, manual_dir=str(manual_dir),
                   train_examples=len(train_source), test_examples=len(source),
                   eval_subset_examples=len(subset),
                   image_size=[int(v) for v in source[0]['image_size']]),
      models={stage: runs[name].model.to_dict() for stage, name in
              (('msst', 'msst'), ('hiarm', hiarm_run(LIFTER_ORDERING)),
               ('lifter', 'lifter_hierarchical'))},
      train=train_info,
      msst={key[len('eval/'):]: value for key, value in msst_eval.items()
            if key.startswith('eval/')},
      msst_by_occlusion=msst_levels,
      hiarm=hiarm,
      lifters={name[len('lifter_'):]: table for name, table in lifters.items()},
      diagnosis=dict(lifter_feeds=diagnosis, hiarm_on_train=hiarm_on_train),
      seconds=time.perf_counter() - start)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  quiet_logs.install()
  workdir = pathlib.Path(_WORKDIR.value)
  smoke = common.SMOKE.value
  orderings_ = _ORDERINGS.value
  if smoke and not flags.FLAGS['orderings'].present:
    orderings_ = SMOKE_ORDERINGS
  s = settings(smoke=smoke, steps_msst=_STEPS_MSST.value, steps_hiarm=_STEPS_HIARM.value,
               steps_lifter=_STEPS_LIFTER.value, orderings_=orderings_)
  data_dir, manual_dir = _DATA_DIR.value, _MANUAL_DIR.value
  if smoke:  # The dummy clips, in a data_dir of their own.
    data_dir, manual_dir = str(workdir / 'tfds_dummy'), DUMMY_DIR
  report = run(workdir, data_dir, manual_dir, s)
  text = report_markdown(report)
  common.write_json(report, str(workdir / 'cmu_accuracy.json'))
  (workdir / 'cmu_accuracy.md').write_text(text)
  print(text)
  print(f'Report written to {workdir / "cmu_accuracy.json"} and cmu_accuracy.md')
  if common.OUTPUT.value:
    common.write_json(report, common.OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
