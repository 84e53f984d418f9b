"""launch/cpu_devices.py: `config.cpu_devices` → the CPU devices JAX creates."""

import os
import pathlib
import subprocess
import sys

import pytest

from launch import cpu_devices
from launch.configs import base
from launch.configs import synthetic_hiarm
from launch.configs import synthetic_lifter
from launch.configs import synthetic_msst

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_resolve():
  assert cpu_devices.resolve(3) == 3
  assert cpu_devices.resolve(0) == len(os.sched_getaffinity(0))  # One per core.
  with pytest.raises(ValueError, match='cpu_devices'):
    cpu_devices.resolve(-1)


def test_configs():
  assert base.get_config().cpu_devices == 1
  assert synthetic_msst.get_config().cpu_devices == 1
  assert synthetic_hiarm.get_config().cpu_devices == 0
  assert synthetic_lifter.get_config('hierarchical').cpu_devices == 0
  assert synthetic_lifter.get_config('sparse').cpu_devices == 1


def test_configure_creates_the_devices():
  """In a fresh process (the count is fixed once JAX starts): 3 devices, and a second
  count afterwards is refused."""
  script = (
      'import jax\n'
      'from launch import cpu_devices\n'
      'count = cpu_devices.configure(3)\n'
      'print(count, jax.local_device_count(), jax.default_backend())\n'
      'try:\n'
      '  cpu_devices.configure(2)\n'
      'except RuntimeError:\n'
      '  print("refused")\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                       text=True, check=True, timeout=120).stdout.split()
  assert out == ['3', '3', 'cpu', 'refused']
