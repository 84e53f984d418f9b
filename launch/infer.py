r"""Lifts a file of 2D keypoints to 3D with a trained HiPART.

  python -m launch.infer --checkpoint=/tmp/w/lifter --input=poses.json \
      --output=poses_3d.npz [--image_size=1920,1080] [--num_samples=5 --temperature=1]
      [--plot]
  python -m launch.infer --model=/tmp/w/bundle ...   # a bundle of launch.export

`--model` runs from an inference bundle (hipart_jax/bundle.py: configs and parameters,
checksummed) instead of a lifter workdir; exactly one of the two is given.

Input (hipart_jax/keypoint_io.py): npz, COCO or Halpe keypoint results, a COCO
annotation file, OpenPose frames (a file or a folder; BODY_25, COCO-18, or BODY_25B with
`--format=openpose_body25b`), MMPose predictions; `--format` overrides the detection.
Results lists carry no image size: pass `--image_size=W,H`. A file whose anatomy fits
another format of the same keypoint count better stops with an error naming both
(`--noanatomy_check` reads it as `--format` says).

Output, by the extension of `--output`; rows sorted by (track, frame) like the input:
  .npz   pose_3d [N, 17, 3] float32 meters, root-relative (pelvis at 0), camera axes
         (x right, y down, z forward), Human3.6M-17 joint order (`joint_names`);
         frame [N], track [N], confidence [N, 17], keypoints_2d [N, 17, 2] (the input,
         pixels), image_size [N, 2], no_visible_joint [N] bool; with K > 1 hypotheses_3d
         [N, K, 17, 3] (pose_3d is their mean) and uncertainty_mm [N, 17] (per-joint RMS
         spread of the hypotheses); for a hierarchical lifter the generated hierarchy of
         the first hypothesis in pixels: sparse_2d [N, 17, 2], dense_2d [N, D, 2],
         fine_2d [N, F, 2], and `hierarchy` (Hierarchy.to_json() as a JSON string).
  .json  {"meta": the description below, "poses": a list of {frame, track, pose_3d:
         [[x, y, z]] * 17, no_visible_joint, and uncertainty_mm: [17] with K > 1}}.
Both describe themselves (`describe`, hipart_jax/provenance.py): units ('meters'),
coordinate_frame, joint_names (the order of the 17 joints), input ({file, format,
layout}; also flat as input_file, input_format and input_layout), model
(`provenance.model_identity`: checkpoint, stage, mode, step, config_sha256 and every
frozen stage's config_sha256 and step; from a bundle its recorded identity plus
`bundle` and `bundle_sha256`) and project_version; in the .npz each is one string
entry (model and input JSON strings), in the .json keys of "meta".
`no_visible_joint` marks detections without any confident joint: they are kept (nothing
is dropped), but their 3D pose is the lifter's guess from no evidence.

`--plot` writes PNG figures beside the output (`<output stem>_<row>.png`) for a few
evenly spaced rows: the 2D input with the generated hierarchy and the 3D skeleton
(needs matplotlib, the `viz` extra).

Inference runs `hipart.predict` in batches of one size (the last padded), so a run
compiles once. On a CPU host each batch is split over one XLA device per core and
evaluated 16 poses at a time, the lifter's attention one pose at a time
(`base.inference_execution()`; `--cpu_devices`, `--chunk_size` override the first two). Bad input, a missing checkpoint, a checkpoint of another stage or an unknown
output extension end the program with a one-line message.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from hipart_jax import bundle
from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import execution
from hipart_jax import keypoint_io
from hipart_jax import plotting
from hipart_jax import provenance
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import console
from launch.configs import base

OUTPUT_EXTENSIONS = ('.npz', '.json')
EXECUTION = base.inference_execution()
FIGURE_DPI = 80


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this tool's flags (called by `__main__`; tests pass their own FlagValues)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Workdir of a trained lifter.', **define)
  flags.DEFINE_string('model', None, 'An inference bundle of launch.export (instead of '
                      '--checkpoint).', **define)
  flags.DEFINE_string('input', None, 'Keypoint file, or a folder of OpenPose frames.',
                      **define)
  flags.DEFINE_string('output', None, 'Output file: .npz or .json.', **define)
  flags.DEFINE_enum('format', None, keypoint_io.FORMATS, 'Input format (default: detect).',
                    **define)
  flags.DEFINE_string('image_size', None, 'W,H pixels, for inputs without image sizes.',
                      **define)
  flags.DEFINE_bool('anatomy_check', True, 'Refuse a file whose anatomy fits another format '
                    'with the same keypoint count better (else read it as --format says).',
                    **define)
  flags.DEFINE_bool('track_ids', True, "Use the file's person ids as tracks (else number "
                    'detections within each frame).', **define)
  flags.DEFINE_integer('num_samples', 1, 'K hypotheses per pose (hierarchical lifters).',
                       **define)
  flags.DEFINE_float('temperature', 0.0, 'HiARM sampling temperature (0: greedy).', **define)
  flags.DEFINE_integer('top_k', 0, 'Sample among the top-k tokens (0: all).', **define)
  flags.DEFINE_integer('batch_size', 256, 'Poses per jitted call.', **define)
  flags.DEFINE_integer('chunk_size', None, 'Poses evaluated at a time inside a call '
                       '(execution.predict; 0: the whole call at once). Default: 16 on a '
                       'CPU host, 0 on GPU/TPU.', **define)
  flags.DEFINE_integer('cpu_devices', None, 'XLA devices of a CPU host, each call split '
                       'over them (0: one per core, 1: one). Default: one per core.',
                       **define)
  flags.DEFINE_integer('seed', 0, 'Sampling seed.', **define)
  flags.DEFINE_bool('plot', False, 'Write PNG figures beside the output.', **define)
  flags.DEFINE_integer('plot_rows', 4, 'How many rows --plot draws.', **define)
  console.define_flags(flag_values)
  flags.mark_flags_as_required(['input', 'output'], flag_values=flag_values)


def _fail(message: str) -> SystemExit:
  return SystemExit(f'infer: error: {message}')


def describe(sequence: keypoint_io.KeypointSequence, identity: dict[str, Any]
             ) -> dict[str, Any]:
  """What an output file states about itself (module docstring), as JSON values."""
  input_file = str(pathlib.Path(sequence.source).absolute())
  return provenance.describe(
      model=identity, input_description=dict(file=input_file, format=sequence.format,
                                             layout=sequence.layout),
      input_file=input_file, input_format=sequence.format, input_layout=sequence.layout)


def load_model(checkpoint: str | None, model_dir: str | None
               ) -> tuple[hipart.HiPART, dict[str, Any], dict[str, Any]]:
  """(model, variables, model identity) from a lifter workdir or a bundle; SystemExit
  when neither or both are given, or when either does not load."""
  if bool(checkpoint) == bool(model_dir):
    raise _fail('pass exactly one of --checkpoint (a lifter workdir) and --model (a '
                'bundle of launch.export)')
  if model_dir:
    try:
      model, variables, manifest = bundle.read(model_dir)
    except bundle.BundleError as e:
      raise _fail(f'--model: {e}') from None
    identity = dict(manifest['model'], bundle=str(pathlib.Path(model_dir).absolute()),
                    bundle_sha256=manifest.get('bundle_sha256'))
    return model, variables, identity
  try:
    model, variables, meta = checkpoints.load_hipart(checkpoint)
  except (FileNotFoundError, ValueError) as e:
    raise _fail(f'--checkpoint: {e}') from None
  return model, variables, provenance.model_identity(checkpoint, meta)


def _npz_arrays(sequence: keypoint_io.KeypointSequence, out: dict[str, np.ndarray],
                model: hipart.HiPART, num_samples: int,
                description: dict[str, Any]) -> dict[str, np.ndarray]:
  arrays = dict(pose_3d=out['pose_3d'].astype(np.float32), frame=sequence.frame,
                track=sequence.track, confidence=sequence.confidence,
                keypoints_2d=sequence.keypoints, image_size=sequence.image_size,
                no_visible_joint=sequence.confidence.max(-1) <= 0)
  for key, value in description.items():  # Strings, so np.load needs no pickle.
    arrays[key] = np.asarray(json.dumps(value) if isinstance(value, dict) else value)
  if num_samples > 1:
    arrays['hypotheses_3d'] = out['hypotheses_3d'].astype(np.float32)
    arrays['uncertainty_mm'] = out['uncertainty_mm'].astype(np.float32)
  if model.lifter.mode == 'hierarchical':
    for level in skeleton.LEVELS:
      arrays[f'{level}_2d'] = out[f'{level}_2d'][:, 0].astype(np.float32)
    arrays['hierarchy'] = np.asarray(json.dumps(model.hierarchy.to_json()))
  return arrays


def _json_document(arrays: dict[str, np.ndarray],
                   description: dict[str, Any]) -> dict[str, Any]:
  records = []
  for row in range(len(arrays['frame'])):
    record = dict(frame=int(arrays['frame'][row]), track=int(arrays['track'][row]),
                  pose_3d=arrays['pose_3d'][row].tolist(),
                  no_visible_joint=bool(arrays['no_visible_joint'][row]))
    if 'uncertainty_mm' in arrays:
      record['uncertainty_mm'] = arrays['uncertainty_mm'][row].tolist()
    records.append(record)
  return dict(meta=description, poses=records)


def plot_rows(arrays: dict[str, np.ndarray], output: pathlib.Path,
              num_rows: int) -> list[pathlib.Path]:
  """PNG figures of up to `num_rows` evenly spaced rows; returns their paths."""
  plt = plotting.pyplot()
  if plt is None:
    return []
  count = len(arrays['frame'])
  rows = np.unique(np.linspace(0, count - 1, min(num_rows, count)).round().astype(int))
  hierarchy = (skeleton.Hierarchy.from_json(json.loads(str(arrays['hierarchy'])))
               if 'hierarchy' in arrays else None)
  paths = []
  for row in rows:
    hypotheses = arrays['hypotheses_3d'][row] if 'hypotheses_3d' in arrays else None
    pose = plotting.LiftedPose(
        keypoints=arrays['keypoints_2d'][row], visible=arrays['confidence'][row] > 0,
        pose_3d=arrays['pose_3d'][row],
        pose_3d_label='prediction' if hypotheses is None else 'mean prediction',
        generated={level: arrays[f'{level}_2d'][row][None] for level in skeleton.LEVELS
                   if f'{level}_2d' in arrays},
        hypotheses_3d=hypotheses,
        image_size=arrays['image_size'][row],
        title=f'frame {arrays["frame"][row]}, track {arrays["track"][row]}')
    figure = plotting.lifted_poses_figure(plt, [pose], hierarchy, summary='first',
                                          side_by_side=True)
    path = output.with_name(f'{output.stem}_{row:06d}.png')
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    paths.append(path)
  return paths


def run(*, checkpoint: str | None = None, model_dir: str | None = None, input_path: str,
        output: str, input_format: str | None = None,
        image_size: str | None = None, track_ids: bool = True, anatomy_check: bool = True,
        num_samples: int = 1,
        temperature: float = 0.0, top_k: int = 0, batch_size: int = 256, seed: int = 0,
        plot: bool = False, num_plot_rows: int = 4, chunk_size: int | None = None
        ) -> dict[str, np.ndarray]:
  """Reads, lifts, writes; returns the arrays of the .npz layout. SystemExit on user errors.

  The model comes from `checkpoint` (a lifter workdir) or `model_dir` (a bundle of
  launch.export): exactly one of them. Each batch is split over every local device
  (JAX's; `main` first makes one per core of a CPU host) and evaluated `chunk_size`
  poses at a time (None: `EXECUTION`'s).
  """
  output_path = pathlib.Path(output)
  if output_path.suffix.lower() not in OUTPUT_EXTENSIONS:
    raise _fail(f'--output={output}: the extension must be one of {OUTPUT_EXTENSIONS}')
  if num_samples < 1 or batch_size < 1:
    raise _fail('--num_samples and --batch_size must be positive')
  if chunk_size is not None and chunk_size < 0:
    raise _fail(f'--chunk_size must be >= 0, got {chunk_size}')
  try:
    sequence = keypoint_io.read_keypoints(input_path, format=input_format,
                                          image_size=image_size, track_ids=track_ids,
                                          anatomy_check=anatomy_check)
  except keypoint_io.KeypointFileError as e:
    raise _fail(str(e)) from None
  model, variables, identity = load_model(checkpoint, model_dir)
  model = execution.with_lifter_attention(
      model, execution.Execution.for_backend(EXECUTION).lifter_attention)
  if model.lifter.mode not in ('sparse', 'hierarchical'):
    raise _fail(f'--checkpoint={checkpoint}: a lifter in {model.lifter.mode!r} mode needs '
                'the ground-truth hierarchy; inference takes sparse or hierarchical lifters')
  if num_samples > 1 and temperature == 0:
    logging.warning('num_samples=%d with temperature 0: greedy decoding makes the %d '
                    'hypotheses identical; set --temperature > 0 to sample.',
                    num_samples, num_samples)
  out = evaluation.predict_in_batches(
      model, variables, sequence.keypoints, sequence.confidence, sequence.image_size,
      jax.random.key(seed), batch_size=batch_size, temperature=temperature, top_k=top_k,
      num_samples=num_samples, devices=jax.local_devices(),
      chunk_size=(execution.Execution.for_backend(EXECUTION).predict_chunk_size
                  if chunk_size is None else chunk_size))
  description = describe(sequence, identity)
  arrays = _npz_arrays(sequence, out, model, num_samples, description)
  output_path.parent.mkdir(parents=True, exist_ok=True)
  if output_path.suffix.lower() == '.npz':
    with open(output_path, 'wb') as f:
      np.savez(f, **arrays)
  else:
    output_path.write_text(json.dumps(_json_document(arrays, description)))
  logging.info('Wrote %d poses to %s', len(sequence), output_path)
  if plot:
    for path in plot_rows(arrays, output_path, num_plot_rows):
      logging.info('Wrote %s', path)
  return arrays


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flag_values
  console.install(f.progress)
  try:
    devices = f.cpu_devices
    if devices is None:
      devices = EXECUTION['cpu']['devices']
    execution.configure_cpu_devices(devices)
  except (ValueError, RuntimeError) as e:
    raise _fail(f'--cpu_devices: {e}') from None
  run(checkpoint=f.checkpoint, model_dir=f.model, input_path=f.input, output=f.output,
      input_format=f.format,
      image_size=f.image_size, track_ids=f.track_ids, anatomy_check=f.anatomy_check,
      num_samples=f.num_samples,
      temperature=f.temperature, top_k=f.top_k, batch_size=f.batch_size, seed=f.seed,
      plot=f.plot, num_plot_rows=f.plot_rows, chunk_size=f.chunk_size)


if __name__ == '__main__':
  define_flags()
  app.run(main)
