r"""The README's main job: HiPART end to end on the embedded synthetic dataset.

  python -m launch.demo --workdir=/tmp/hipart_demo

1. prepares `synthetic_poses` (no downloads);
2. trains the MSST tokenizer, HiARM, and three lifters (sparse-only baseline, HiPART's
   hierarchical input, and the ground-truth-hierarchy oracle) with the synthetic stage
   configs (launch/configs/synthetic_*.py) shortened by launch/configs/demo.py;
3. evaluates the three lifters on the test subjects with and without occlusion;
4. lifts a few test poses from pixels with K sampled hypotheses;
5. writes `report.md`, `report.json` and figures to the workdir, and prints the MPJPE
   table (lifter × occlusion level).

Every stage resumes from its workdir, so an interrupted demo continues where it stopped.
`--config=launch/configs/demo.py:smoke` is the seconds-long variant the tests run.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from hipart_jax import augment
from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import execution
from hipart_jax import input_pipeline
from hipart_jax import plotting
from hipart_jax import skeleton
from hipart_jax.training import loop
from launch import console
from launch.configs import base
from launch.configs import synthetic_hiarm
from launch.configs import synthetic_lifter
from launch.configs import synthetic_msst



def stage_configs(demo: ml_collections.ConfigDict, workdir: pathlib.Path,
                  data_dir: str | None) -> dict[str, ml_collections.ConfigDict]:
  """The stage configs the demo trains, keyed by run name, in training order."""

  def shorten(config, steps):
    config.dataset.name = demo.dataset
    config.dataset.data_dir = data_dir
    config.seed = demo.seed
    config.batch_size = demo.batch_size
    config.eval_batch_size = demo.eval_batch_size
    config.num_train_steps = steps
    config.model = base.model_at_scale(config, demo.model_scale)
    config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, max(steps // 10, 1))
    config.log_every_steps = max(steps // 10, 1)
    config.eval_every_steps = steps
    config.checkpoint_every_steps = steps
    return config

  runs = {'msst': shorten(synthetic_msst.get_config(), demo.msst_steps),
          'hiarm': shorten(synthetic_hiarm.get_config(), demo.hiarm_steps)}
  runs['hiarm'].init_from.msst = str(workdir / 'msst')
  for mode in demo.lifter_modes:
    config = shorten(synthetic_lifter.get_config(mode), demo.lifter_steps)
    config.model.depth = demo.lifter_depth
    config.init_from.msst = str(workdir / 'msst')
    config.init_from.hiarm = str(workdir / 'hiarm')
    runs[f'lifter_{mode}'] = config
  return runs


def train_all(runs: dict[str, ml_collections.ConfigDict], workdir: pathlib.Path
              ) -> dict[str, float]:
  """Trains (or resumes) every run; returns wall seconds per run."""
  seconds = {}
  for name, config in runs.items():
    start = time.perf_counter()
    logging.info('=== training %s (%d steps) ===', name, config.num_train_steps)
    loop.train_and_evaluate(config, workdir / name)
    seconds[name] = time.perf_counter() - start
  return seconds


def _load_for_inference(lifter_workdir: pathlib.Path):
  model, variables, meta = checkpoints.load_hipart(str(lifter_workdir))
  plan = execution.Execution.for_backend(base.inference_execution())
  return execution.with_lifter_attention(model, plan.lifter_attention), variables, meta


def evaluate_all(demo, runs, workdir: pathlib.Path) -> dict[str, dict[str, dict]]:
  """{lifter run: {occlusion level: metrics}} on the test split."""
  data_config = runs['msst'].dataset
  source, hierarchy, info = input_pipeline.load_source(data_config, data_config.eval_split)
  action_names = info.features['action'].names
  results = {}
  for name in runs:
    if not name.startswith('lifter_'):
      continue
    model, variables, _ = _load_for_inference(workdir / name)
    results[name] = evaluation.robustness_table(
        model, variables, source, hierarchy, data_config,
        levels=tuple(demo.occlusion_levels), batch_size=demo.eval_batch_size,
        action_names=action_names, seed=demo.seed, progress=False)
  return results


def infer_examples(demo, runs, workdir: pathlib.Path) -> dict[str, np.ndarray]:
  """Lifts the first test examples from pixels (one arm hidden) with K hypotheses."""
  data_config = runs['msst'].dataset
  source, _, _ = input_pipeline.load_source(data_config, data_config.eval_split)
  examples = [source[i] for i in range(demo.num_inference_examples)]
  keypoints = np.stack([e['keypoints_2d'][data_config.input_source] for e in examples])
  pixels, confidence = keypoints[..., :2].copy(), keypoints[..., 2].copy()
  hidden = [skeleton.H36M_JOINT_NAMES.index(j) for j in augment.LIMBS['left_arm']]
  confidence[:, hidden] = 0.0
  pixels[:, hidden] = 0.0
  model, variables, _ = _load_for_inference(workdir / 'lifter_hierarchical')
  out = evaluation.predict_in_batches(
      model, variables, pixels, confidence, np.stack([e['image_size'] for e in examples]),
      jax.random.key(demo.seed), batch_size=demo.num_inference_examples,
      temperature=demo.temperature, num_samples=demo.num_samples, progress=False)
  target = np.stack([e['sparse_3d'] - e['sparse_3d'][:1] for e in examples])
  out.update(keypoints=pixels, confidence=confidence, target_3d=target,
             true_keypoints=keypoints[..., :2],
             image_size=np.stack([e['image_size'] for e in examples]),
             hierarchy=np.asarray(json.dumps(model.hierarchy.to_json())))
  np.savez(workdir / 'inference.npz', **out)
  return out


_MODE_NAMES = {'lifter_sparse': 'sparse-only (baseline)',
               'lifter_hierarchical': 'HiPART (generated hierarchy)',
               'lifter_oracle': 'oracle (ground-truth hierarchy)'}


def _fmt(value) -> str:
  return '-' if value is None else f'{value:.1f}'


def report_markdown(demo, results, inference, seconds, figures) -> str:
  """The report: MPJPE per lifter and occlusion level, then the inference summary."""
  levels = list(demo.occlusion_levels)
  lines = ['# HiPART demo report', '',
           f'Dataset `{demo.dataset}` (test subjects); training steps per stage: MSST '
           f'{demo.msst_steps}, HiARM {demo.hiarm_steps}, lifters {demo.lifter_steps}. '
           'A short run on a small synthetic dataset: the numbers show the pipeline '
           'working end to end, not the paper\'s accuracy.', '',
           '## MPJPE (mm) by occlusion level', '',
           '| lifter | ' + ' | '.join(levels) + ' |',
           '|---|' + '---|' * len(levels)]
  for name, table in results.items():
    lines.append(f'| {_MODE_NAMES.get(name, name)} | '
                 + ' | '.join(_fmt(table[level]['mpjpe_mm']) for level in levels) + ' |')
  lines += ['', '## P-MPJPE (mm) and MPJPE on the occluded joints only (mm)', '',
            '| lifter | level | P-MPJPE | occluded-joint MPJPE | PCK@150 |',
            '|---|---|---|---|---|']
  for name, table in results.items():
    for level in levels:
      m = table[level]
      lines.append(f'| {_MODE_NAMES.get(name, name)} | {level} | {_fmt(m["p_mpjpe_mm"])} '
                   f'| {_fmt(m.get("occluded_mpjpe_mm"))} | {m["pck150"]:.3f} |')
  error = np.linalg.norm(inference['pose_3d'] - inference['target_3d'], axis=-1)
  lines += ['', '## Inference from pixels (left arm hidden)', '',
            f'{len(error)} test poses lifted with K = {demo.num_samples} hypotheses '
            f'(temperature {demo.temperature}): MPJPE of the hypothesis mean '
            f'{error.mean() * 1000:.1f} mm; mean per-joint spread '
            f'{inference["uncertainty_mm"].mean():.1f} mm overall, '
            f'{inference["uncertainty_mm"][:, 11:14].mean():.1f} mm on the hidden arm. '
            'Arrays in `inference.npz`.', '']
  lines += [f'![{name}]({name})' for name in figures]
  lines += ['', '## Wall time (s)', '', '| run | seconds |', '|---|---|']
  lines += [f'| {name} | {value:.0f} |' for name, value in seconds.items()]
  return '\n'.join(lines) + '\n'


def plot_inference(inference, workdir: pathlib.Path) -> list[str]:
  """One figure: input joints, generated hierarchy, and 3D hypotheses vs ground truth."""
  plt = plotting.pyplot()
  if plt is None:
    return []
  poses = [plotting.LiftedPose(
      keypoints=inference['true_keypoints'][i], visible=inference['confidence'][i] > 0,
      pose_3d=inference['target_3d'][i], pose_3d_label='ground truth',
      generated={level: inference[f'{level}_2d'][i] for level in skeleton.LEVELS
                 if f'{level}_2d' in inference},
      hypotheses_3d=inference['hypotheses_3d'][i], hidden_truth_known=True,
      title=f'pose {i}') for i in range(len(inference['pose_3d']))]
  hierarchy = skeleton.Hierarchy.from_json(json.loads(str(inference['hierarchy'])))
  fig = plotting.lifted_poses_figure(plt, poses, hierarchy, summary='mean')
  name = 'inference.png'
  fig.savefig(workdir / name, dpi=80)
  plt.close(fig)
  return [name]


def run(demo: ml_collections.ConfigDict, workdir: str | pathlib.Path,
        data_dir: str | None = None) -> str:
  """Trains, evaluates, infers and writes the report; returns the report's markdown."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  runs = stage_configs(demo, workdir, data_dir)
  seconds = train_all(runs, workdir)
  results = evaluate_all(demo, runs, workdir)
  inference = infer_examples(demo, runs, workdir)
  figures = plot_inference(inference, workdir)
  seconds['total'] = time.perf_counter() - start
  report = report_markdown(demo, results, inference, seconds, figures)
  (workdir / 'report.md').write_text(report)
  (workdir / 'report.json').write_text(json.dumps(
      {'results': results, 'seconds': seconds, 'config': demo.to_dict()}, indent=1,
      default=str))
  return report


def mpjpe_table(results: dict[str, dict[str, dict]], levels: list[str]) -> str:
  """The demo's main result as console text: MPJPE (mm) per lifter and occlusion level."""
  rows = [['lifter', *levels]] + [
      [_MODE_NAMES.get(name, name), *(_fmt(table[level]['mpjpe_mm']) for level in levels)]
      for name, table in results.items()]
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ['  '.join([row[0].ljust(widths[0])]
                     + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
           for row in rows]
  return '\n'.join(['MPJPE (mm) by occlusion level, test subjects:', *lines])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  console.install(flags.FLAGS.progress)
  workdir = pathlib.Path(flags.FLAGS.workdir)
  run(flags.FLAGS.config, workdir, flags.FLAGS.data_dir)
  results = json.loads((workdir / 'report.json').read_text())['results']
  print(f'Report written to {workdir / "report.md"}\n')
  print(mpjpe_table(results, list(flags.FLAGS.config.occlusion_levels)))


if __name__ == '__main__':
  # Flags are defined here, not at import, so the library functions above can be
  # imported beside other absl programs (tests, benchmarks) without flag clashes.
  config_flags.DEFINE_config_file('config', 'launch/configs/demo.py',
                                  'Demo config (launch/configs/demo.py).')
  flags.DEFINE_string('workdir', '/tmp/hipart_demo', 'Output directory.')
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: TFDS).')
  console.define_flags()
  app.run(main)
