"""Shared pytest fixtures."""

import os
import pathlib

from hypothesis import HealthCheck
from hypothesis import settings
import suite_xla_flags

suite_xla_flags.install()  # Before JAX starts a backend (it reads XLA_FLAGS then).

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Fuzz tests (tests/test_fuzz_readers.py): `ci` (the default) replays a fixed, seeded set
# of cases so that the suite is reproducible and fast; `--hypothesis-profile=long` draws
# many more, freshly random. No example database: runs leave nothing in the checkout.
_FUZZ = dict(deadline=None, database=None, print_blob=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile('ci', max_examples=20, derandomize=True, **_FUZZ)
settings.register_profile('long', max_examples=3000, **_FUZZ)
settings.load_profile('ci')

# Tests compile many programs that differ only by Python closure identity (each train run
# builds its own step functions); a compilation cache shared by this run's xdist workers
# lets identical HLO compile once. One directory per run, so every run starts cold.
_RUN_ID = os.environ.get('PYTEST_XDIST_TESTRUNUID', str(os.getpid()))
_CACHE_DIR = os.environ.get('HIPART_TEST_COMPILATION_CACHE',
                            f'/tmp/hipart_test_jax_cache_{_RUN_ID}')
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def cmu_mocap_dir():
  """The shared CMU clips beside the checkout; tests that need them skip without them."""
  path = pathlib.Path(os.environ.get('HIPART_CMU_DIR', SHARED_DATA / 'cmu_mocap'))
  if not (path / 'asf_amc').is_dir():
    pytest.skip(f'CMU mocap clips not found at {path}')
  return path


@pytest.fixture(scope='session')
def tiny_pipeline(tmp_path_factory):
  """Workdirs of a tiny HiPART trained once per test run (tests/pipeline_fixture.py).

  Under pytest-xdist every worker has its own session: the first worker to get here
  trains into a directory shared by all workers (under a lock) and the others reuse it.
  """
  import fcntl  # pylint: disable=g-import-not-at-top
  import pipeline_fixture  # pylint: disable=g-import-not-at-top
  shared = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    shared = shared.parent  # The run's base temp, common to the workers.
  root = shared / 'tiny_pipeline'
  root.mkdir(exist_ok=True)
  with open(shared / 'tiny_pipeline.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      done = root / 'done'
      if done.exists():
        return {name: root / name for name in done.read_text().split()}
      dirs = pipeline_fixture.train_tiny_pipeline(root)
      done.write_text(' '.join(dirs))
      return dirs
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
