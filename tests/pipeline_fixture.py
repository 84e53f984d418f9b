"""Trains a tiny HiPART (all three stages) on in-memory fake examples, for tests.

`train_tiny_pipeline(root)` runs the real configs (launch/configs/synthetic_*.py) through
the real trainer with small models and few steps, and returns the workdirs. conftest's
session fixture `tiny_pipeline` runs it once per test session.
"""

from __future__ import annotations

import pathlib

from hipart_jax import skeleton
from hipart_jax import train
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


def tiny(config, steps: int):
  """Shrinks a stage config to test size."""
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = steps
  config.log_every_steps = steps
  config.eval_every_steps = steps
  config.checkpoint_every_steps = steps
  config.optimizer.warmup_steps = 2
  config.tensorboard = False
  config.dataset.prefetch_batches = 0
  return config


def msst_config(steps: int = 4):
  config = tiny(synthetic_msst.get_config(), steps)
  config.model.update(width=16, num_blocks=1, token_hidden=16, channel_hidden=16,
                      member_dim=4, sparse_codebook_size=16, dense_codebook_size=16,
                      code_dim=8, num_actions=len(fake_examples.ACTION_NAMES))
  return config


def hiarm_config(msst_dir, steps: int = 4, ordering: str = 'hierarchical'):
  config = tiny(synthetic_hiarm.get_config(ordering), steps)
  config.model.update(width=16, num_lsab=1, num_gcsab=1, num_heads=2, mlp_ratio=2)
  config.init_from.msst = str(msst_dir)
  return config


def lifter_config(mode: str, msst_dir=None, hiarm_dir=None, steps: int = 4):
  config = tiny(synthetic_lifter.get_config(mode), steps)
  config.model.update(width=16, depth=1, num_heads=2, mlp_ratio=2)
  config.init_from.msst = str(msst_dir or '')
  config.init_from.hiarm = str(hiarm_dir or '')
  return config


def run(config, workdir):
  train_source, eval_source = sources()
  return train.train_and_evaluate(config, workdir, train_source=train_source,
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
