r"""Lifts a file of 2D keypoints to 3D with a trained HiPART.

  python -m launch.infer --checkpoint=/tmp/w/lifter --input=poses.json \
      --output=poses_3d.npz [--image_size=1920,1080] [--num_samples=5 --temperature=1]
      [--plot]

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
Both describe themselves (`describe`): units ('meters'), coordinate_frame, joint_names
(the order of the 17 joints), input_file, input_format and input_layout (as read),
model (JSON: checkpoint, stage, mode, step, config_sha256 and the frozen stages' config
hashes, with their steps where the checkpoint meta records them) and project_version;
in the .npz each is one string entry (model a JSON string), in the .json keys of "meta".
`no_visible_joint` marks detections without any confident joint: they are kept (nothing
is dropped), but their 3D pose is the lifter's guess from no evidence.

`--plot` writes PNG figures beside the output (`<output stem>_<row>.png`) for a few
evenly spaced rows: the 2D input with the generated hierarchy and the 3D skeleton
(needs matplotlib, the `viz` extra).

Inference runs `hipart.predict` in batches of one size (the last padded), so a run
compiles once. On a CPU host each batch is split over one XLA device per core and
evaluated 16 poses at a time (`EXECUTION`; `--cpu_devices`, `--chunk_size` override
it). Bad input, a missing checkpoint, a checkpoint of another stage or an unknown
output extension end the program with a one-line message.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import pathlib
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import execution
from hipart_jax import keypoint_io
from hipart_jax import plotting
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import console

OUTPUT_EXTENSIONS = ('.npz', '.json')
# How inference runs on a CPU host (`execution.Execution`); other backends run plainly.
EXECUTION = {'cpu': {'devices': 0, 'predict_chunk_size': 16}}
UNITS = 'meters'
COORDINATE_FRAME = ('camera, root-relative: pelvis at 0, x right, y down, z forward '
                    '(the image axes, z away from the camera)')
# Figure layout for --plot.
FIGURE_SIZE = (10.0, 5.0)
FIGURE_DPI = 80


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this tool's flags (called by `__main__`; tests pass their own FlagValues)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Workdir of a trained lifter.', **define)
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
  flags.mark_flags_as_required(['checkpoint', 'input', 'output'], flag_values=flag_values)


def _fail(message: str) -> SystemExit:
  return SystemExit(f'infer: error: {message}')


def _config_hash(config: Any) -> str | None:
  if config is None:
    return None
  return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _latest_step(checkpoint: str) -> int | None:
  """The step `checkpoints.load_hipart` restores: the largest step directory."""
  path = pathlib.Path(checkpoint)
  if (path / checkpoints.CHECKPOINT_SUBDIR).is_dir():
    path = path / checkpoints.CHECKPOINT_SUBDIR
  steps = [int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
  return max(steps) if steps else None


def _project_version() -> str:
  try:
    return importlib.metadata.version('hipart-jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown (not installed)'


def describe(sequence: keypoint_io.KeypointSequence, checkpoint: str, model: hipart.HiPART,
             meta: dict[str, Any]) -> dict[str, Any]:
  """What an output file states about itself (module docstring), as JSON values."""
  frozen_steps = meta.get('frozen_steps') or {}
  frozen = {name: dict(config_sha256=_config_hash(config), step=frozen_steps.get(name))
            for name, config in sorted((meta.get('frozen_models') or {}).items())}
  return dict(
      units=UNITS, coordinate_frame=COORDINATE_FRAME,
      joint_names=list(skeleton.H36M_JOINT_NAMES),
      input_file=str(pathlib.Path(sequence.source).absolute()),
      input_format=sequence.format, input_layout=sequence.layout,
      model=dict(checkpoint=str(pathlib.Path(checkpoint).absolute()),
                 stage=meta.get('stage'), mode=model.lifter.mode,
                 step=_latest_step(checkpoint), config_sha256=_config_hash(meta.get('model')),
                 frozen=frozen),
      project_version=_project_version())


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
  paths = []
  for row in rows:
    figure = plt.figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI)
    image = figure.add_subplot(1, 2, 1)
    plotting.draw_hierarchy_2d(
        image, arrays['keypoints_2d'][row], arrays['confidence'][row],
        {level: arrays[f'{level}_2d'][row] for level in skeleton.LEVELS
         if f'{level}_2d' in arrays}, image_size=arrays['image_size'][row])
    image.legend(loc='upper right', fontsize='small')
    image.set_title(f'frame {arrays["frame"][row]}, track {arrays["track"][row]}')
    space = figure.add_subplot(1, 2, 2, projection='3d')
    plotting.draw_skeletons_3d(space, [(arrays['pose_3d'][row], 'b', 1.0)])
    space.set_title('3D, root-relative')
    path = output.with_name(f'{output.stem}_{row:06d}.png')
    figure.savefig(path)
    plt.close(figure)
    paths.append(path)
  return paths


def run(*, checkpoint: str, input_path: str, output: str, input_format: str | None = None,
        image_size: str | None = None, track_ids: bool = True, anatomy_check: bool = True,
        num_samples: int = 1,
        temperature: float = 0.0, top_k: int = 0, batch_size: int = 256, seed: int = 0,
        plot: bool = False, num_plot_rows: int = 4, chunk_size: int | None = None
        ) -> dict[str, np.ndarray]:
  """Reads, lifts, writes; returns the arrays of the .npz layout. SystemExit on user errors.

  Each batch is split over every local device (JAX's; `main` first makes one per core
  of a CPU host) and evaluated `chunk_size` poses at a time (None: `EXECUTION`'s).
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
  try:
    model, variables, meta = checkpoints.load_hipart(checkpoint)
  except (FileNotFoundError, ValueError) as e:
    raise _fail(f'--checkpoint: {e}') from None
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
  description = describe(sequence, checkpoint, model, meta)
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
  run(checkpoint=f.checkpoint, input_path=f.input, output=f.output, input_format=f.format,
      image_size=f.image_size, track_ids=f.track_ids, anatomy_check=f.anatomy_check,
      num_samples=f.num_samples,
      temperature=f.temperature, top_k=f.top_k, batch_size=f.batch_size, seed=f.seed,
      plot=f.plot, num_plot_rows=f.plot_rows, chunk_size=f.chunk_size)


if __name__ == '__main__':
  define_flags()
  app.run(main)
