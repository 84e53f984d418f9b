"""Trains a tiny HiPART (all three stages) on in-memory fake examples, for tests.

`train_tiny_pipeline(root)` runs the stage configs' `tiny` variants
(launch/configs/synthetic_*.py) through the real trainer and returns the workdirs.
conftest's session fixture `tiny_pipeline` runs it once per test session.
"""

from __future__ import annotations

import pathlib

from hipart_jax import skeleton
from hipart_jax.training import loop
from launch.configs import base
from launch.configs import synthetic_hiarm
from launch.configs import synthetic_lifter
from launch.configs import synthetic_msst
import fake_examples

HIERARCHY = skeleton.default_hierarchy()
NUM_TRAIN, NUM_EVAL = 96, 20
MSST_STEPS = 60


def sources():
  return (fake_examples.fake_examples(NUM_TRAIN, HIERARCHY, seed=0),
          fake_examples.fake_examples(NUM_EVAL, HIERARCHY, seed=1))


def msst_config(steps: int = 4):
  return base.make_tiny(synthetic_msst.get_config(), steps)


def hiarm_config(msst_dir, steps: int = 4, ordering: str = 'hierarchical'):
  config = base.make_tiny(synthetic_hiarm.get_config(ordering), steps)
  config.init_from.msst = str(msst_dir)
  return config


def lifter_config(mode: str, msst_dir=None, hiarm_dir=None, steps: int = 4):
  config = base.make_tiny(synthetic_lifter.get_config(mode), steps)
  config.init_from.msst = str(msst_dir or '')
  config.init_from.hiarm = str(hiarm_dir or '')
  return config


def run(config, workdir):
  train_source, eval_source = sources()
  return loop.train_and_evaluate(config, workdir, train_source=train_source,
                                 eval_source=eval_source, hierarchy=HIERARCHY)


def train_tiny_pipeline(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """Workdirs {'msst', 'hiarm', 'lifter_hierarchical', 'lifter_sparse'} of tiny runs."""
  dirs = {name: root / name for name in ('msst', 'hiarm', 'lifter_hierarchical',
                                        'lifter_sparse')}
  msst = msst_config(steps=MSST_STEPS)  # Long enough to show learning (test_stages).
  msst.log_every_steps = 1
  msst.optimizer.lr = 3e-3
  run(msst, dirs['msst'])
  run(hiarm_config(dirs['msst']), dirs['hiarm'])
  run(lifter_config('hierarchical', dirs['msst'], dirs['hiarm']),
      dirs['lifter_hierarchical'])
  run(lifter_config('sparse'), dirs['lifter_sparse'])
  return dirs


def saved_step(workdir) -> int:
  """The step of the newest checkpoint a workdir holds (its step directory's name)."""
  root = pathlib.Path(workdir) / 'checkpoints'
  return max(int(p.name) for p in root.iterdir() if p.name.isdigit())


def expected_steps(dirs, name: str) -> tuple[int, dict[str, int]]:
  """(step, {frozen stage: step}) a model identity of workdir `dirs[name]` must state."""
  frozen = {'lifter_hierarchical': ('msst', 'hiarm'), 'hiarm': ('msst',)}.get(name, ())
  return saved_step(dirs[name]), {stage: saved_step(dirs[stage]) for stage in frozen}


def assert_identity(identity, dirs, name: str, stage: str) -> None:
  """`identity` (provenance.model_identity as JSON) names `dirs[name]` and its steps."""
  step, frozen = expected_steps(dirs, name)
  assert identity['checkpoint'] == str(pathlib.Path(dirs[name]).absolute())
  assert identity['stage'] == stage and identity['step'] == step
  assert {k: v['step'] for k, v in identity['frozen'].items()} == frozen
  assert all(len(v['config_sha256']) == 64 for v in identity['frozen'].values())
