r"""Evaluates a trained lifter under an evaluation protocol.

  python -m launch.evaluate --checkpoint=/tmp/w/lifter --protocol=synthetic \
      --workdir=/tmp/w/eval [--occlusion=none,one_limb,two_limbs,random_30] \
      [--num_samples=5 --temperature=1.0 --top_k=0]

The protocol (hipart_jax/protocols.py, docs/PROTOCOLS.md) fixes the dataset, builder
config, split, 2D input source, joints, root and averaging; the checkpoint's meta names
the lifter's mode and embeds its frozen MSST and HiARM. Prints a table of the main
metrics (one row per occlusion level) and the per-action breakdown, and writes
`<workdir>/metrics.json`:

  one level:      the metrics of `evaluation.evaluate` (mpjpe_mm, p_mpjpe_mm, n_mpjpe_mm,
                  pck150, auc, per_action, per_joint, occluded_mpjpe_mm, num_examples,
                  headline, per_group, ...; oracle_mpjpe_mm and mean_uncertainty_mm for
                  K > 1) at the top level, plus 'settings';
  several levels: {'settings', 'levels': {level: metrics}, 'table': {level: {the main
                  metrics}}}.

Either form also holds 'meta' (hipart_jax/provenance.py): units (of the errors),
coordinate_frame (the protocol's root and alignments), joint_names (the evaluated
joints, the order of per_joint), input ({protocol, dataset, split, input_source}),
model (the lifter's and its frozen stages' steps and config hashes) and
project_version.

Undefined values (e.g. an occluded-joint error without occluded joints) are null.
Errors (missing checkpoint, a checkpoint of another stage, an unknown protocol or
occlusion level, a dataset that is not there) end the program with a one-line message.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import execution
from hipart_jax import input_pipeline
from hipart_jax import protocols
from hipart_jax import provenance
from launch import console
from launch.configs import base


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this tool's flags (called by `__main__`; tests pass their own FlagValues)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Workdir of a trained lifter.', **define)
  flags.DEFINE_string('workdir', None, 'Output directory for metrics.json.', **define)
  flags.DEFINE_string('protocol', 'synthetic', 'A name of hipart_jax.protocols.PROTOCOLS.',
                      **define)
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: the TFDS default).',
                      **define)
  flags.DEFINE_list('occlusion', ['none'], 'Comma-separated occlusion levels among '
                    f'{evaluation.OCCLUSION_LEVELS}.', **define)
  flags.DEFINE_integer('num_samples', 1, 'K hypotheses per input (hierarchical lifters).',
                       **define)
  flags.DEFINE_float('temperature', 0.0, 'HiARM sampling temperature (0: greedy).', **define)
  flags.DEFINE_integer('top_k', 0, 'Sample among the top-k tokens (0: all).', **define)
  flags.DEFINE_integer('batch_size', 256, 'Examples per lifter call.', **define)
  flags.DEFINE_integer('seed', 0, 'Occlusion and sampling seed.', **define)
  console.define_flags(flag_values)
  flags.mark_flags_as_required(['checkpoint', 'workdir'], flag_values=flag_values)


def _fail(message: str) -> SystemExit:
  return SystemExit(f'evaluate: error: {message}')


def _json_safe(value: Any) -> Any:
  """NaN/inf → None (JSON has neither), recursively; numpy scalars → Python."""
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if hasattr(value, 'item'):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def data_config_for(protocol: protocols.Protocol, meta: dict[str, Any],
                    data_dir: str | None) -> ml_collections.ConfigDict:
  """The data config: the lifter's training data config with the protocol's data.

  Occluded joints are hidden as in training (`augment.occluded_coordinates`).
  """
  config = input_pipeline.default_data_config()
  trained = json.loads(meta['config']).get('dataset', {}) if meta.get('config') else {}
  augment = trained.get('augment') or {}
  for key in ('occluded_coordinates', 'jitter_std'):
    if key in augment:
      config.augment[key] = augment[key]
  config.name = protocol.tfds_name
  config.data_dir = data_dir
  config.input_source = protocol.input_source
  return config


def describe(spec: protocols.Protocol, identity: dict[str, Any]) -> dict[str, Any]:
  """What metrics.json states about itself (module docstring), as JSON values."""
  return provenance.describe(
      model=identity,
      input_description=dict(protocol=spec.name, dataset=spec.tfds_name, split=spec.split,
                             input_source=spec.input_source),
      units=f'{spec.units_out} (pck and auc: fractions)',
      coordinate_frame=(f'3D poses relative to {spec.root}; alignments '
                        f'{", ".join(spec.alignment)}'),
      joint_names=spec.joints)


def run(*, checkpoint: str, workdir: str, protocol: str = 'synthetic',
        data_dir: str | None = None, occlusion: Sequence[str] = ('none',),
        num_samples: int = 1, temperature: float = 0.0, top_k: int = 0,
        batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
  """Evaluates; writes and returns what metrics.json holds. SystemExit on user errors."""
  if protocol not in protocols.PROTOCOLS:
    raise _fail(f'unknown protocol {protocol!r}; known: {", ".join(protocols.PROTOCOLS)}')
  spec = protocols.PROTOCOLS[protocol]
  unknown = [level for level in occlusion if level not in evaluation.OCCLUSION_LEVELS]
  if unknown or not occlusion:
    raise _fail(f'--occlusion={",".join(occlusion)}: choose among '
                f'{", ".join(evaluation.OCCLUSION_LEVELS)}')
  if num_samples < 1 or batch_size < 1:
    raise _fail('--num_samples and --batch_size must be positive')
  try:
    model, variables, meta = checkpoints.load_hipart(checkpoint)
    model = execution.with_lifter_attention(model, execution.Execution.for_backend(
        base.inference_execution()).lifter_attention)
  except (FileNotFoundError, ValueError) as e:
    raise _fail(f'--checkpoint: {e}') from None
  if num_samples > 1 and temperature == 0 and model.lifter.mode == 'hierarchical':
    logging.warning('num_samples=%d with temperature 0: the hypotheses are identical.',
                    num_samples)
  data_config = data_config_for(spec, meta, data_dir)
  try:
    source, hierarchy, info = input_pipeline.load_source(data_config, spec.split)
  except Exception as e:  # pylint: disable=broad-except  # tfds raises many kinds.
    raise _fail(f'cannot open {spec.tfds_name} split {spec.split!r} (protocol {protocol!r})'
                f': {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}') from None
  action_feature = info.features['action'] if 'action' in info.features else None
  action_names = getattr(action_feature, 'names', None)
  settings = dict(checkpoint=str(checkpoint), lifter_mode=model.lifter.mode,
                  protocol=protocol, dataset=spec.tfds_name, split=spec.split,
                  occlusion=list(occlusion), num_samples=num_samples,
                  temperature=temperature, top_k=top_k, batch_size=batch_size, seed=seed)
  try:
    results = evaluation.robustness_table(
        model, variables, source, hierarchy, data_config, levels=occlusion,
        batch_size=batch_size, num_samples=num_samples, temperature=temperature,
        top_k=top_k, seed=seed, action_names=action_names, protocol=spec)
  except ValueError as e:
    raise _fail(str(e)) from None
  print(f'{protocol}: {spec.tfds_name} {spec.split}, lifter mode {model.lifter.mode}, '
        f'K={num_samples}')
  print(evaluation.format_table(results))
  for level, summary in results.items():
    print(f'\nper action (occlusion {level}):')
    print(evaluation.format_per_action(summary))
  if len(results) == 1:
    output = {**next(iter(results.values())), 'settings': settings}
  else:
    main_keys = [key for key, _ in evaluation.TABLE_COLUMNS]
    output = {'settings': settings, 'levels': results,
              'table': {level: {key: summary.get(key) for key in main_keys if key in summary}
                        for level, summary in results.items()}}
  output['meta'] = describe(spec, provenance.model_identity(checkpoint, meta))
  output = _json_safe(output)
  path = pathlib.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / 'metrics.json').write_text(json.dumps(output, indent=1))
  logging.info('Wrote %s', path / 'metrics.json')
  return output


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flag_values
  console.install(f.progress)
  run(checkpoint=f.checkpoint, workdir=f.workdir, protocol=f.protocol, data_dir=f.data_dir,
      occlusion=f.occlusion, num_samples=f.num_samples, temperature=f.temperature,
      top_k=f.top_k, batch_size=f.batch_size, seed=f.seed)


if __name__ == '__main__':
  define_flags()
  app.run(main)
