"""What an output file states about itself: units, frames, joint order, model identity.

Every file the tools write (infer's poses, evaluate's metrics, generate's caches and
draws, export's bundle) carries these fields, so a file read months later, or by
someone without the run's command line, still says what its numbers are:

  units, coordinate_frame   of the poses the file stores;
  joint_names               the order of their joints;
  input                     where the poses came from (a file, or a dataset split);
  model                     `model_identity`: every stage's checkpoint step and the
                            sha256 of its model config;
  project_version           the installed hipart-jax version.

`model_identity` reads a checkpoint's meta (`checkpoints.restore_params` adds the
restored 'step'; a stage that embeds frozen stages records their steps as
'frozen_steps', null in checkpoints written before the steps were recorded).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import pathlib
from typing import Any, Mapping, Sequence

from hipart_jax import skeleton

PACKAGE = 'hipart-jax'
UNITS_3D = 'meters'
COORDINATE_FRAME_3D = ('camera, root-relative: pelvis at 0, x right, y down, z forward '
                       '(the image axes, z away from the camera)')
UNITS_PIXELS = 'pixels'
COORDINATE_FRAME_PIXELS = 'image: x right, y down, origin at the top-left corner'
UNITS_MODEL_FRAME = 'model frame (screen-normalized units of the input bounding box)'
COORDINATE_FRAME_MODEL = ("the example's model frame (docs/ARCHITECTURE.md, "
                          '"Coordinates"): screen = p * norm_scale + norm_center')
UNITS_METRICS = 'millimeters (mpjpe_mm, p_mpjpe_mm, n_mpjpe_mm, per_joint, per_action)'
JOINT_NAMES = tuple(skeleton.H36M_JOINT_NAMES)


def config_sha256(config: Mapping[str, Any] | None) -> str | None:
  """sha256 of a model config as canonical JSON (sorted keys); None for None."""
  if config is None:
    return None
  return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def project_version() -> str:
  try:
    return importlib.metadata.version(PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    return 'unknown (not installed)'


def model_identity(checkpoint: str | pathlib.Path, meta: Mapping[str, Any]
                   ) -> dict[str, Any]:
  """The identity of a checkpoint and of the frozen stages it embeds, as JSON values.

  Args:
    checkpoint: the workdir the checkpoint was loaded from.
    meta: its meta, as `checkpoints.restore_params` returns it (with 'step').
  Returns:
    {checkpoint (absolute), stage, mode (lifters; else None), step, config_sha256,
     frozen: {stage name: {config_sha256, step}}} for every frozen stage.
  """
  frozen_steps = meta.get('frozen_steps') or {}
  frozen = {name: dict(config_sha256=config_sha256(config), step=frozen_steps.get(name))
            for name, config in sorted((meta.get('frozen_models') or {}).items())}
  model = meta.get('model') or {}
  return dict(checkpoint=str(pathlib.Path(checkpoint).absolute()),
              stage=meta.get('stage'),
              mode=model.get('mode') if meta.get('stage') == 'lifter' else None,
              step=meta.get('step'), config_sha256=config_sha256(meta.get('model')),
              frozen=frozen)


def describe(*, model: Mapping[str, Any], input_description: Mapping[str, Any],
             units: str = UNITS_3D, coordinate_frame: str = COORDINATE_FRAME_3D,
             joint_names: Sequence[str] | Mapping[str, Sequence[str]] = JOINT_NAMES,
             **extra: Any) -> dict[str, Any]:
  """The fields every output file carries (module docstring), as JSON values.

  Args:
    model: `model_identity` (or a bundle's recorded identity).
    input_description: where the poses came from, e.g. {'file', 'format', 'layout'} or
      {'dataset', 'split', 'input_source'}.
    units, coordinate_frame, joint_names: of the poses the file stores (joint_names
      a mapping {level: names} for files holding several levels of a hierarchy).
    extra: further fields of one tool (e.g. infer's input_file).
  """
  return dict(units=units, coordinate_frame=coordinate_frame,
              joint_names=({k: list(v) for k, v in joint_names.items()}
                           if isinstance(joint_names, Mapping) else list(joint_names)),
              input=dict(input_description),
              model=dict(model), project_version=project_version(), **extra)


def hierarchy_joint_names(hierarchy: skeleton.Hierarchy) -> dict[str, list[str]]:
  """Names of every level's points, in the order arrays store them.

  Dense and fine points have no anatomical names: each is named by the joint (or dense
  point) it belongs to (`Hierarchy.dense_part`, `Hierarchy.fine_parent`), e.g.
  'l_knee/dense_12' and 'l_knee/dense_12/fine_40'.
  """
  dense = [f'{JOINT_NAMES[part]}/dense_{k}' for k, part in enumerate(hierarchy.dense_part)]
  fine = [f'{dense[parent]}/fine_{k}' for k, parent in enumerate(hierarchy.fine_parent)]
  return {'sparse': list(JOINT_NAMES), 'dense': dense, 'fine': fine}
