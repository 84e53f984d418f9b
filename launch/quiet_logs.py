"""Keeps the console readable: drops orbax's per-save INFO chatter from absl logging."""

import logging


class _DropLibraryInfo(logging.Filter):
  """Passes warnings and errors from everywhere, INFO only from outside orbax."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def install() -> None:
  """Adds the filter to absl's handler (call once, from an entry point's main)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
