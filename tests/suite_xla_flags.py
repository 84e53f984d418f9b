"""XLA flags of the test suite's processes: fast compiles (tests/conftest.py sets them).

The suite spends most of its time compiling programs that then run a few steps on tiny
shapes, so it compiles them at XLA:CPU's lowest optimization level (about half the
compile time, slower code; bench/common.FAST_COMPILE makes the same trade for smoke
benchmarks). Set `HIPART_TEST_OPTIMIZED_XLA=1` to run the suite at the default level.
"""

import os

FAST_COMPILE = ('--xla_backend_optimization_level=0'
                ' --xla_llvm_disable_expensive_passes=true')


def suite_flags() -> str:
  """The flags every process of the suite starts with (without anything a test adds)."""
  return '' if os.environ.get('HIPART_TEST_OPTIMIZED_XLA') == '1' else FAST_COMPILE


def install() -> None:
  """Puts `suite_flags()` in this process's `XLA_FLAGS`, ahead of any the user set (a
  later flag wins); call it before JAX starts its CPU backend."""
  flags = ' '.join(filter(None, [suite_flags(), os.environ.get('XLA_FLAGS', '')]))
  if flags:
    os.environ['XLA_FLAGS'] = flags
