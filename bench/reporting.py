"""Flag-free helpers of the benchmark reports: the machine description and the JSON.

Kept apart from `bench.common` (which defines the shared timing flags) so that a script
with flags of its own, such as `bench.cmu_accuracy`, can use them.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
from typing import Any, Mapping

import jax
import numpy as np




def _lscpu_model() -> str:
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10,
                         check=False).stdout
  except (OSError, subprocess.SubprocessError):
    return platform.processor() or 'unknown'
  for line in out.splitlines():
    if line.startswith('Model name:'):
      return line.split(':', 1)[1].strip()
  return platform.processor() or 'unknown'


def machine_info() -> dict[str, Any]:
  """CPU model, cores, load, versions and the JAX devices of this process."""
  import flax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      hostname=platform.node(),
      cpu_model=_lscpu_model(),
      cpu_cores=os.cpu_count(),
      load_average=list(os.getloadavg()),
      python=platform.python_version(),
      jax=jax.__version__,
      flax=flax.__version__,
      backend=jax.default_backend(),
      device=devices[0].device_kind,
      num_devices=len(devices),
      xla_flags=os.environ.get('XLA_FLAGS', ''),
  )


def _plain(value: Any) -> Any:
  """JSON-compatible copy (numpy scalars → Python numbers, tuples → lists)."""
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


def write_json(report: Mapping[str, Any], path: str | None) -> str:
  """Serializes the report (to `path` when given); returns the JSON text."""
  text = json.dumps(_plain(report), indent=2, sort_keys=False, allow_nan=False)
  if path:
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + '\n')
  return text
