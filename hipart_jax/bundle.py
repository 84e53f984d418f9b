"""A self-contained inference bundle: a trained HiPART to hand to someone.

`write` turns a lifter checkpoint's (model, variables, meta) into one directory that
needs neither orbax nor the training state; `read` loads it back for `hipart.predict`;
`verify` checks it. Format (version 1):

  manifest.json       {format_version, model (the source checkpoint's
                      `provenance.model_identity`), checkpoint_meta (what
                      `hipart.from_meta` rebuilds the modules from: stage, model,
                      hierarchy, frozen_models, frozen_steps, step), stages ({name:
                      {step, config_sha256, model config}}), variables ({collection:
                      {file, stage}}), joint_format, input_source (the 2D keypoints the
                      lifter was trained on), predict (the calling convention of
                      predict.jax_export), files ({name: sha256}), bundle_sha256 (sha256
                      over the sorted 'name sha256' lines), project_version}.
  <collection>.msgpack  one top-level collection of the lifter's variables
                      (`flax.serialization.msgpack_serialize`): 'params' (the lifter),
                      'frozen_msst', 'frozen_hiarm'; parameters and model statistics,
                      no optimizer state.
  predict.jax_export  `jax.export` of the greedy `hipart.predict` at a fixed batch size
                      with the variables baked in (StableHLO): (keypoints [B, 17, 2]
                      float32 pixels, confidence [B, 17] float32, image_size [B, 2]
                      float32 width, height) → {'pose_3d': [B, 17, 3] float32 meters,
                      root-relative, camera axes; hierarchical lifters also 'sparse_2d'
                      [B, S, 2], 'dense_2d' [B, D, 2], 'fine_2d' [B, F, 2] pixels}. A
                      shorter batch is padded to B (e.g. repeating its last row) and the
                      outputs of the padding rows dropped; rows do not interact.

Load the function without this project:
  `jax.export.deserialize(bytearray(open('predict.jax_export', 'rb').read())).call(...)`.
A missing or changed file, a garbled manifest or an unknown format version raise
`BundleError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, Mapping, Sequence

from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np

from hipart_jax import provenance
from hipart_jax import skeleton
from hipart_jax.models import hipart

FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
PREDICT_FILE = 'predict.jax_export'
# The stage each top-level collection of a lifter's variables belongs to.
COLLECTION_STAGES = {'params': 'lifter', 'frozen_msst': 'msst', 'frozen_hiarm': 'hiarm'}
PADDING_RULE = ('a batch shorter than batch_size is padded to batch_size (e.g. by '
                'repeating its last row) and the padding rows of the outputs dropped; rows '
                'are independent, so padding never changes the real rows')
META_KEYS = ('stage', 'model', 'hierarchy', 'frozen_models', 'frozen_steps', 'step')


class BundleError(ValueError):
  """A bundle directory that is not a complete, unchanged bundle of this format."""


def sha256_file(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def bundle_sha256(files: Mapping[str, str]) -> str:
  """One hash of the whole bundle: sha256 over the sorted 'name sha256' lines."""
  lines = ''.join(f'{name} {files[name]}\n' for name in sorted(files))
  return hashlib.sha256(lines.encode()).hexdigest()


def _greedy_predict(model: hipart.HiPART, variables: Mapping[str, Any]):
  """(keypoints [B, 17, 2], confidence [B, 17], image_size [B, 2]) → the bundle's
  outputs (module docstring), greedy and with one hypothesis."""

  def predict(keypoints, confidence, image_size):
    out = hipart.predict(model, variables, keypoints, confidence, image_size,
                         jax.random.key(0), temperature=0.0, top_k=0, num_samples=1)
    result = {'pose_3d': out['pose_3d']}
    for level in skeleton.LEVELS:
      if f'{level}_2d' in out:
        result[f'{level}_2d'] = out[f'{level}_2d'][:, 0]
    return result

  return predict


def _decoding_description(model: hipart.HiPART) -> str:
  text = 'greedy (temperature 0), one hypothesis'
  if model.hiarm is not None and model.hiarm.code_temperature > 0:
    text += f', expected code vectors at code_temperature {model.hiarm.code_temperature}'
  return text


def _calling_convention(model: hipart.HiPART, batch_size: int,
                        platforms: Sequence[str]) -> dict[str, Any]:
  b, j = batch_size, skeleton.NUM_JOINTS
  h = model.hierarchy
  outputs = {'pose_3d': dict(shape=[b, j, 3], dtype='float32', units=provenance.UNITS_3D,
                             coordinate_frame=provenance.COORDINATE_FRAME_3D)}
  if model.lifter.mode == 'hierarchical':
    for level, size in (('sparse', j), ('dense', h.num_dense), ('fine', h.num_fine)):
      outputs[f'{level}_2d'] = dict(shape=[b, size, 2], dtype='float32',
                                    units=provenance.UNITS_PIXELS,
                                    coordinate_frame=provenance.COORDINATE_FRAME_PIXELS)
  return dict(
      file=PREDICT_FILE, batch_size=b, platforms=list(platforms),
      decoding=_decoding_description(model),
      inputs=[dict(name='keypoints', shape=[b, j, 2], dtype='float32',
                   units=provenance.UNITS_PIXELS, joint_order='h36m17'),
              dict(name='confidence', shape=[b, j], dtype='float32',
                   units='detector score in [0, 1]; 0 marks a missing joint'),
              dict(name='image_size', shape=[b, 2], dtype='float32',
                   units='pixels (width, height)')],
      outputs=outputs, padding=PADDING_RULE,
      load="jax.export.deserialize(bytearray(open('predict.jax_export', 'rb').read()))"
           '.call(keypoints, confidence, image_size)')


def write(model: hipart.HiPART, variables: Mapping[str, Any], meta: Mapping[str, Any],
          checkpoint: str | pathlib.Path, output_dir: str | pathlib.Path, *,
          batch_size: int, platforms: Sequence[str] = ('cpu',)) -> dict[str, Any]:
  """Writes the bundle of a lifter checkpoint into `output_dir`; returns the manifest.

  Args:
    model, variables, meta: `checkpoints.load_hipart(checkpoint)`.
    checkpoint: the lifter workdir (recorded in the model identity).
    output_dir: created; files of an earlier bundle there are replaced.
    batch_size: B of the exported function.
    platforms: the `jax.export` lowering platforms (e.g. ('cpu', 'cuda')).
  Raises:
    ValueError: a lifter that inference cannot run (the 'oracle' mode), or B < 1.
  """
  if model.lifter.mode not in ('sparse', 'hierarchical'):
    raise ValueError(f'{checkpoint}: a lifter in {model.lifter.mode!r} mode needs the '
                     'ground-truth hierarchy; a bundle holds sparse or hierarchical lifters')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  variables = jax.device_get(dict(variables))
  unknown = sorted(set(variables) - set(COLLECTION_STAGES))
  if unknown:
    raise ValueError(f'{checkpoint}: variables hold collections {unknown} this bundle '
                     f'format does not know ({sorted(COLLECTION_STAGES)})')
  collections = {}
  for key, value in variables.items():
    name = f'{key}.msgpack'
    (output_dir / name).write_bytes(serialization.msgpack_serialize(value))
    collections[key] = dict(file=name, stage=COLLECTION_STAGES[key])
  specs = (jax.ShapeDtypeStruct((batch_size, skeleton.NUM_JOINTS, 2), jnp.float32),
           jax.ShapeDtypeStruct((batch_size, skeleton.NUM_JOINTS), jnp.float32),
           jax.ShapeDtypeStruct((batch_size, 2), jnp.float32))
  exported = jax.export.export(jax.jit(_greedy_predict(model, variables)),
                               platforms=tuple(platforms))(*specs)
  (output_dir / PREDICT_FILE).write_bytes(exported.serialize())
  identity = provenance.model_identity(checkpoint, meta)
  stages = {'lifter': dict(step=identity['step'], config_sha256=identity['config_sha256'],
                           model=meta['model'])}
  for name, frozen in identity['frozen'].items():
    stages[name] = dict(frozen, model=meta['frozen_models'][name])
  trained = json.loads(meta['config']).get('dataset', {}) if meta.get('config') else {}
  files = {name: sha256_file(output_dir / name)
           for name in sorted([c['file'] for c in collections.values()] + [PREDICT_FILE])}
  manifest = dict(
      format_version=FORMAT_VERSION, model=identity,
      checkpoint_meta={key: meta[key] for key in META_KEYS if key in meta},
      stages=stages, variables=collections,
      joint_format=dict(layout='h36m17', joint_names=list(provenance.JOINT_NAMES),
                        hierarchy=model.hierarchy.to_json(),
                        hierarchy_joint_names=provenance.hierarchy_joint_names(
                            model.hierarchy)),
      input_source=trained.get('input_source'),
      predict=_calling_convention(model, batch_size, platforms),
      files=files, bundle_sha256=bundle_sha256(files),
      project_version=provenance.project_version())
  (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
  return manifest


def verify(bundle_dir: str | pathlib.Path) -> dict[str, Any]:
  """The manifest of a bundle whose files are all there and unchanged.

  Raises:
    BundleError: no or garbled manifest, another format version, a missing file, or a
      file whose sha256 is not the manifest's (each message names the file).
  """
  bundle_dir = pathlib.Path(bundle_dir)
  path = bundle_dir / MANIFEST
  if not path.is_file():
    raise BundleError(f'{bundle_dir}: not a model bundle: no {MANIFEST} (write one with '
                      'python -m launch.export)')
  try:
    manifest = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise BundleError(f'{path}: corrupted bundle: the manifest is not valid JSON ({e})'
                      ) from None
  if not isinstance(manifest, dict):
    raise BundleError(f'{path}: corrupted bundle: the manifest is not a JSON object')
  if manifest.get('format_version') != FORMAT_VERSION:
    raise BundleError(f'{path}: format_version {manifest.get("format_version")!r}, this '
                      f'code reads version {FORMAT_VERSION}')
  missing = [key for key in ('files', 'variables', 'checkpoint_meta', 'model', 'predict')
             if not isinstance(manifest.get(key), dict)]
  if missing:
    raise BundleError(f'{path}: corrupted bundle: the manifest lacks {missing}')
  for name, expected in sorted(manifest['files'].items()):
    file = bundle_dir / name
    if not file.is_file():
      raise BundleError(f'{file}: corrupted bundle: the file is missing ({MANIFEST} '
                        'lists it)')
    actual = sha256_file(file)
    if actual != expected:
      raise BundleError(f'{file}: checksum mismatch: sha256 {actual}, {MANIFEST} says '
                        f'{expected}; the file changed after export')
  return manifest


def read(bundle_dir: str | pathlib.Path
         ) -> tuple[hipart.HiPART, dict[str, Any], dict[str, Any]]:
  """(HiPART, variables, manifest) of a verified bundle, ready for `hipart.predict`.

  Raises:
    BundleError: see `verify`; also a variables file that does not parse.
  """
  bundle_dir = pathlib.Path(bundle_dir)
  manifest = verify(bundle_dir)
  variables = {}
  for key, entry in manifest['variables'].items():
    path = bundle_dir / entry['file']
    if entry['file'] not in manifest['files']:
      raise BundleError(f'{path}: corrupted bundle: not among the checksummed files')
    try:
      variables[key] = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # pylint: disable=broad-except  # msgpack raises many kinds.
      raise BundleError(f'{path}: corrupted bundle: cannot read the variables '
                        f'({type(e).__name__}: {e})') from None
  variables = jax.tree.map(np.asarray, variables)
  try:
    model = hipart.from_meta(manifest['checkpoint_meta'])
  except (KeyError, TypeError, ValueError) as e:
    raise BundleError(f'{bundle_dir / MANIFEST}: corrupted bundle: checkpoint_meta does '
                      f'not describe a model ({type(e).__name__}: {e})') from None
  return model, variables, manifest
