"""The cross-subject CMU benchmark's report (`bench/cmu_accuracy.py`): statistics over
seeds, the targets as measured ratios, and the markdown tables."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from hipart_jax import skeleton

LIFTERS = ('mlp', 'transformer', 'hipart', 'oracle')
BASELINES = ('mlp', 'transformer')
LIFTER_NAMES = {'mlp': 'SimpleBaseline MLP (baseline)',
                'transformer': 'sparse transformer (baseline)',
                'hipart': 'HiPART (generated hierarchy)',
                'oracle': 'oracle (ground-truth hierarchy)'}


def seed_stats(values: Sequence[float | None]) -> dict[str, Any]:
  """Mean, min and max over seeds (None where any seed has no value)."""
  if not values or any(v is None for v in values):
    return dict(mean=None, min=None, max=None, values=list(values))
  return dict(mean=float(np.mean(values)), min=float(np.min(values)),
              max=float(np.max(values)), values=[float(v) for v in values])


def aggregate(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]], levels
              ) -> dict[str, dict[str, Any]]:
  """{level: {metric: seed_stats}, per_subject: {subject: seed_stats}} over seeds."""
  out = {}
  for level in levels:
    tables = [per_seed[s][level] for s in per_seed]
    out[level] = {key: seed_stats([t.get(key) for t in tables])
                  for key in ('mpjpe_mm', 'p_mpjpe_mm', 'occluded_mpjpe_mm')}
    out[level]['per_subject'] = {
        subject: seed_stats([t['per_subject'][subject] for t in tables])
        for subject in tables[0]['per_subject']}
  return out


def targets(lifters: Mapping[str, Mapping[str, Any]], hiarm: Mapping[str, Any],
            levels: Sequence[str]) -> dict[str, Any]:
  """The issue's targets as measured ratios (mean over seeds)."""
  mean = lambda lifter, level, key='mpjpe_mm': lifters[lifter][level][key]['mean']
  best = min(BASELINES, key=lambda b: mean(b, 'none'))
  out = dict(best_baseline=best,
             baselines_clean_mm={b: mean(b, 'none') for b in BASELINES},
             transformer_vs_mlp_clean=mean('transformer', 'none') / mean('mlp', 'none'))
  occluded = [level for level in levels if level != 'none']
  out['hipart_vs_best'] = {level: mean('hipart', level) / mean(best, level)
                           for level in levels}
  out['hipart_vs_best_hidden'] = {
      level: mean('hipart', level, 'occluded_mpjpe_mm') / mean(best, level,
                                                               'occluded_mpjpe_mm')
      for level in occluded}
  spread = lambda lifter: (lifters[lifter]['none']['mpjpe_mm']['max']
                           - lifters[lifter]['none']['mpjpe_mm']['min'])
  out['hipart_clean_minus_best_mm'] = mean('hipart', 'none') - mean(best, 'none')
  out['clean_seed_spread_mm'] = max(spread('hipart'), spread(best))
  if 'hierarchical' in hiarm and 'raster' in hiarm:
    out['generation_fine_px'] = {
        ordering: {level: hiarm[ordering][level]['generated_fine_px'] for level in levels}
        for ordering in ('hierarchical', 'raster')}
  out['met'] = dict(
      baselines_le_60mm=all(v <= 60 for v in out['baselines_clean_mm'].values()),
      transformer_no_worse_than_mlp=out['transformer_vs_mlp_clean'] <= 1.0,
      hipart_le_0_92_occluded=all(out['hipart_vs_best'][l] <= 0.92 for l in occluded),
      hipart_le_0_85_hidden=all(v <= 0.85 for v in out['hipart_vs_best_hidden'].values()),
      hipart_clean_within_spread=(out['hipart_clean_minus_best_mm']
                                  <= out['clean_seed_spread_mm']))
  if 'generation_fine_px' in out:
    g = out['generation_fine_px']
    out['met']['hierarchical_le_raster'] = all(
        g['hierarchical'][l] <= g['raster'][l] for l in levels)
  return out


def _fmt(value: Any, digits: int = 1) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return '-'
  return f'{value:.{digits}f}'


def format_stats(stats: Mapping[str, Any]) -> str:
  """'mean (min–max)' of `seed_stats`, or '-'."""
  if stats['mean'] is None:
    return '-'
  return f'{stats["mean"]:.1f} ({stats["min"]:.1f}–{stats["max"]:.1f})'


def imputation_source_name(key: str) -> str:
  """The table name of a `stage_evals.hidden_joint_imputation` key."""
  if key.endswith('_lifter'):
    return LIFTER_NAMES[key[:-len('_lifter')]]
  return key.replace('_', ' ')


def _decoded(settings: Mapping[str, Any]) -> str:
  """How the report's generated hierarchies were decoded (HiARM's code_temperature)."""
  temperature = settings.get('hiarm', {}).get('model', {}).get('code_temperature', 0.0)
  if not temperature:
    return 'decoded'
  return f'each token decoded as its expected code at code_temperature {temperature}'


def report_markdown(report: Mapping[str, Any]) -> str:
  s = report['settings']
  levels = list(s['occlusion_levels'])
  seeds = s['seeds']
  lines = [f'Dataset `{report["dataset"]["name"]}`: {report["dataset"]["train_examples"]} '
           f'train, {report["dataset"]["validation_examples"]} validation, '
           f'{report["dataset"]["test_examples"]} test examples (test subjects '
           f'{", ".join(report["dataset"]["test_subjects"])}). Lifters: '
           f'{s["lifter_steps"]} steps of {s["lifter_batch_size"]} over '
           f'{s["num_draws"]} augmented draws of every training example '
           f'({report["lifter_epochs"]:.1f} epochs of the draws); seeds {list(seeds)}; '
           'mean (min–max) over seeds, mm.', '']
  for key, title in (('mpjpe_mm', 'MPJPE'), ('p_mpjpe_mm', 'P-MPJPE'),
                     ('occluded_mpjpe_mm', 'MPJPE of the hidden joints')):
    lines += [f'**{title}** (test split)', '', '| lifter | ' + ' | '.join(levels) + ' |',
              '|---|' + '---|' * len(levels)]
    for lifter, table in report['lifters'].items():
      lines.append(f'| {LIFTER_NAMES[lifter]} | '
                   + ' | '.join(format_stats(table[level][key]) for level in levels) + ' |')
    lines.append('')
  validation = report.get('lifters_validation')
  if validation:
    occluded = [level for level in levels if level != 'none']
    lines += ['**MPJPE on the validation split** (every choice of the settings reads this '
              'table, never the test split; columns after the levels: the hidden joints)',
              '', '| lifter | ' + ' | '.join(levels) + ' | '
              + ' | '.join(f'hidden, {level}' for level in occluded) + ' |',
              '|---|' + '---|' * (len(levels) + len(occluded))]
    for lifter, table in validation.items():
      lines.append(f'| {LIFTER_NAMES[lifter]} | '
                   + ' | '.join(format_stats(table[level]['mpjpe_mm']) for level in levels)
                   + ' | ' + ' | '.join(format_stats(table[level]['occluded_mpjpe_mm'])
                                        for level in occluded) + ' |')
    lines.append('')
  subjects = report['dataset']['test_subjects']
  lines += ['**MPJPE per test subject** (mm, mean over seeds)', '',
            '| lifter | occlusion | ' + ' | '.join(subjects) + ' |',
            '|---|---|' + '---|' * len(subjects)]
  for lifter, table in report['lifters'].items():
    for level in levels:
      per = table[level]['per_subject']
      lines.append(f'| {LIFTER_NAMES[lifter]} | {level} | '
                   + ' | '.join(_fmt(per[x]['mean']) if x in per else '-'
                                for x in subjects) + ' |')
  t = report['targets']
  lines += ['', f'**Targets** (best baseline: {t["best_baseline"]})', '',
            '| target | measured | met |', '|---|---|---|',
            '| both baselines ≤ 60 mm clean | '
            + ', '.join(f'{b} {_fmt(v)}' for b, v in t['baselines_clean_mm'].items())
            + f' | {t["met"]["baselines_le_60mm"]} |',
            f'| transformer ≤ MLP clean | ratio {_fmt(t["transformer_vs_mlp_clean"], 3)} '
            f'| {t["met"]["transformer_no_worse_than_mlp"]} |',
            '| HiPART ≤ 0.92 × best, each occluded level | '
            + ', '.join(f'{l} {_fmt(v, 3)}' for l, v in t['hipart_vs_best'].items())
            + f' | {t["met"]["hipart_le_0_92_occluded"]} |',
            '| HiPART ≤ 0.85 × best, hidden joints | '
            + ', '.join(f'{l} {_fmt(v, 3)}' for l, v in t['hipart_vs_best_hidden'].items())
            + f' | {t["met"]["hipart_le_0_85_hidden"]} |',
            f'| HiPART clean not worse (within seed spread) | '
            f'{_fmt(t["hipart_clean_minus_best_mm"], 2)} mm vs spread '
            f'{_fmt(t["clean_seed_spread_mm"], 2)} mm | '
            f'{t["met"]["hipart_clean_within_spread"]} |']
  if 'generation_fine_px' in t:
    g = t['generation_fine_px']
    lines.append('| hierarchical generation error ≤ raster (fine px) | '
                 + ', '.join(f'{l} {_fmt(g["hierarchical"][l], 2)} vs '
                             f'{_fmt(g["raster"][l], 2)}' for l in levels)
                 + f' | {t["met"]["hierarchical_le_raster"]} |')
  msst, by_occlusion = report['msst'], report['msst_by_occlusion']
  lines += ['', f'**MSST reconstruction** (1 test example in {s["eval_stride"]}, px of the '
            'virtual images; columns: the ground truth in the frame of an occluded input)',
            '', '| level | ' + ' | '.join(levels) + ' |', '|---|' + '---|' * len(levels)]
  for level in skeleton.LEVELS:
    lines.append(f'| {level} | ' + ' | '.join(
        _fmt(by_occlusion[o][f'recon_{level}_px']) for o in levels) + ' |')
  lines += ['', f'Codebook usage sparse {_fmt(msst.get("usage_sparse"), 3)}, dense '
            f'{_fmt(msst.get("usage_dense"), 3)}.', '',
            f'**HiARM per ordering**: greedy generation, {_decoded(s)}; error (px) per '
            'level and generated token accuracy (sparse / dense), 1 test example in '
            f'{s["eval_stride"]}', '',
            '| ordering | steps | occlusion | sparse px | dense px | fine px | hidden joints '
            'px | gen acc |', '|---|---|---|---|---|---|---|---|']
  for ordering, table in report['hiarm'].items():
    for level in levels:
      m = table[level]
      lines.append(f'| {ordering} | {table["decoding_steps"]} | {level} '
                   + ''.join(f'| {_fmt(m[f"generated_{lv}_px"])} ' for lv in skeleton.LEVELS)
                   + f'| {_fmt(m.get("hidden_sparse_px"))} '
                   f'| {_fmt(m["generated_sparse_token_accuracy"], 3)} / '
                   f'{_fmt(m["generated_dense_token_accuracy"], 3)} |')
  feeds = report['diagnosis']['lifter_feeds']
  lines += ['', f'**Diagnosis**: MPJPE (mm) of the seed-{seeds[0]} HiPART and oracle '
            f'lifters fed each hierarchy (1 test example in {s["eval_stride"]})', '',
            '| lifter | hierarchy fed | ' + ' | '.join(levels) + ' |',
            '|---|---|' + '---|' * len(levels)]
  for key in feeds[levels[0]]:
    lifter, feed = key.split('/')
    lines.append(f'| {lifter} | {feed} | '
                 + ' | '.join(_fmt(feeds[level][key]) for level in levels) + ' |')
  imputation = report['diagnosis'].get('hidden_joint_imputation', {})
  hidden_levels = [level for level in levels if level in imputation]
  if hidden_levels:
    lines += ['', '**Hidden joints in the image** (px per hidden joint, 1 test example in '
              f'{s["eval_stride"]}): HiARM\'s generated sparse joints, the tokenized '
              'truth (a perfect HiARM\'s), and each seed-'
              f'{seeds[0]} lifter\'s 3D estimate mapped into the image by the affine map '
              'that best fits its visible joints; the fit of the true 3D is that '
              'mapping\'s own floor', '',
              '| source | ' + ' | '.join(hidden_levels) + ' |',
              '|---|' + '---|' * len(hidden_levels)]
    for key in imputation[hidden_levels[0]]:
      lines.append(f'| {imputation_source_name(key)} | ' + ' | '.join(
          _fmt(imputation[level][key]) for level in hidden_levels) + ' |')
  on_train = report['diagnosis']['hiarm_on_train']
  lines += ['', f'HiARM on training examples (1 in {s["train_eval_stride"]}): fine '
            'px ' + ', '.join(f'{l} {_fmt(on_train[l]["generated_fine_px"])}'
                              for l in levels if l in on_train) + '.', '',
            '**Validation curves** (value of each run\'s best_metric at its evaluations)',
            '', '| run | metric | curve (step: value) |', '|---|---|---|']
  for name, points in report['curves'].items():
    lines.append(f'| {name} | {report["best_metrics"][name]} | '
                 + ', '.join(f'{step}: {_fmt(v, 2)}' for step, v in points) + ' |')
  lines += ['', '**Wall time** (s, this machine; summed over invocations): '
            + ', '.join(f'{k} {v:.0f}' for k, v in report['timings'].items())
            + f'; total {sum(report["timings"].values()):.0f} s.']
  return '\n'.join(lines) + '\n'
