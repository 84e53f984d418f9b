"""How many XLA devices JAX makes of a CPU host (`config.cpu_devices`).

JAX gives a CPU host one device, whose ops XLA spreads over the cores. A train step of
small ops (the HiARM and HiPART lifter configs) runs faster with one device per core and
the batch mapped over them like over accelerators: 1.3-1.5x on 2 cores (BENCHMARKS.md,
change 12). The count must be set before JAX starts its backends, so launchers call
`configure` first thing. It changes only the CPU platform: on a GPU/TPU host the
accelerators stay the default devices.
"""

from __future__ import annotations

import os

import jax


def resolve(count: int) -> int:
  """`config.cpu_devices` → a device count: 0 means one per core this process may use."""
  if count < 0:
    raise ValueError(f'config.cpu_devices must be >= 0 (0: one per core), got {count}')
  return count or len(os.sched_getaffinity(0))


def configure(count: int) -> int:
  """Makes JAX create `resolve(count)` CPU devices (call before any JAX operation).

  Returns:
    the resolved count.
  Raises:
    RuntimeError: JAX's backends are already running with another count.
  """
  count = resolve(count)
  if count != 1:
    jax.config.update('jax_num_cpu_devices', count)
  return count
