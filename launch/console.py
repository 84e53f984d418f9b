"""What the command-line tools print: the project's own lines, without library chatter.

Each entry point defines `--progress` (`define_flags`) and calls `install` once its
flags are parsed:
  * at absl's default verbosity, INFO lines come only from this project's packages
    (orbax's per-save notes, tfds's and JAX's start-up INFO are dropped); warnings and
    errors come from everywhere; `--verbosity=1` or more shows every library's lines
    (and DEBUG ones, such as the training loop's full metric dictionaries);
  * progress bars (`hipart_jax.progress`) are drawn when stderr is a terminal, unless
    `--noprogress`.
TensorFlow's C++ INFO lines are silenced in `launch/__init__.py`, before TensorFlow loads.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from absl import flags
from absl import logging as absl_logging

from hipart_jax import progress

# Packages whose INFO lines are this project's.
PROJECT_PACKAGES = ('hipart_jax', 'launch', 'tfds_builders', 'bench')


def _package_directories() -> tuple[str, ...]:
  directories = []
  for name in PROJECT_PACKAGES:
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
      directories += [os.path.join(os.path.realpath(path), '')
                      for path in spec.submodule_search_locations]
  return tuple(directories)


class ProjectInfoOnly(logging.Filter):
  """Passes warnings and errors from everywhere, INFO only from this project's files,
  and everything at `--verbosity` 1 or more."""

  def __init__(self):
    super().__init__()
    self._directories = _package_directories()
    self._seen: dict[str, bool] = {}

  def is_project_file(self, path: str) -> bool:
    if path not in self._seen:
      self._seen[path] = os.path.realpath(path).startswith(self._directories)
    return self._seen[path]

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or absl_logging.get_verbosity() >= 1
            or self.is_project_file(record.pathname))


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--progress` (each tool calls it beside its own flags)."""
  flags.DEFINE_bool('progress', True, 'Draw progress bars when stderr is a terminal '
                    '(never with --noprogress; captured output never gets them).',
                    flag_values=flag_values)


def install(show_progress: bool = True) -> None:
  """Filters absl's handler and sets the bars (call from main, after flag parsing)."""
  handler = absl_logging.get_absl_handler()
  for old in [f for f in handler.filters if isinstance(f, ProjectInfoOnly)]:
    handler.removeFilter(old)
  handler.addFilter(ProjectInfoOnly())
  progress.allow_bars(show_progress)
