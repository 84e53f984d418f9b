"""What a person sees of a long loop: a progress bar on a terminal, rate lines in a log.

`Progress(what, total)` counts work as a loop does it. When stderr is a terminal (and
`allow_bars(False)` has not been called) it draws a tqdm bar with the rate and the time
left; otherwise, so that captured logs (tests, CI, batch jobs) hold no bar redraws, it
logs `what: done/total (rate/s, ETA ...)` at most every `log_every_seconds` and one
`what: done/total in <time> (rate/s)` at the end. Either way it only reports: the loop's
results do not depend on it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from absl import logging as absl_logging
import tqdm

LOG_EVERY_SECONDS = 10.0

_bars_allowed = True


def allow_bars(allowed: bool) -> None:
  """Turns progress bars on (the default, on terminals only) or off for this process."""
  global _bars_allowed
  _bars_allowed = bool(allowed)


def bars_shown() -> bool:
  """Whether a `Progress` started now draws a bar: allowed, and stderr is a terminal."""
  isatty = getattr(sys.stderr, 'isatty', None)
  return _bars_allowed and isatty is not None and isatty()


def format_duration(seconds: float) -> str:
  """Seconds as a person reads them: '45s', '6m40s', '2h05m'; '?' when not finite."""
  if not 0 <= seconds < float('inf'):
    return '?'
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


class _ClearBarBeforeRecords(logging.Filter):
  """Erases the bar before a log line is written, so the line does not start mid-bar."""

  def __init__(self, bar: tqdm.tqdm):
    super().__init__()
    self._bar = bar

  def filter(self, record: logging.LogRecord) -> bool:
    self._bar.clear()
    return True


class Progress:
  """Counts units of work done out of `total` (a context manager; see the module doc).

  Args:
    what: what is counted, e.g. 'lifted poses' (the bar's label and the log lines').
    total: units the loop will do in all (with `initial` of them done before it starts).
    unit: the bar's unit name, e.g. 'pose' (shown as 'pose/s').
    initial: units done already (a resumed run).
    enabled: False reports nothing at all.
    log_every_seconds: without a bar, the least time between two rate lines; None logs
      none (a caller that prints its own lines, like the training loop).
  """

  def __init__(self, what: str, total: int, *, unit: str = 'it', initial: int = 0,
               enabled: bool = True, log_every_seconds: float | None = LOG_EVERY_SECONDS):
    self.what, self.total, self.done = what, int(total), int(initial)
    self._initial = self.done
    self._log_every_seconds = log_every_seconds if enabled else None
    self._start = self._last_log = time.perf_counter()
    self._bar = self._clear_filter = None
    if enabled and bars_shown():
      self._bar = tqdm.tqdm(total=self.total, initial=self.done, desc=what, unit=unit,
                            file=sys.stderr, dynamic_ncols=True, leave=True)
      self._clear_filter = _ClearBarBeforeRecords(self._bar)
      for handler in logging.root.handlers:
        handler.addFilter(self._clear_filter)

  @property
  def has_bar(self) -> bool:
    return self._bar is not None

  def rate(self) -> float:
    """Units per second since the start (0 before any unit is done)."""
    return (self.done - self._initial) / max(time.perf_counter() - self._start, 1e-9)

  def _line(self, final: bool = False) -> str:
    rate = self.rate()
    if final:
      took = format_duration(time.perf_counter() - self._start)
      return f'{self.what}: {self.done}/{self.total} in {took} ({rate:.3g}/s)'
    eta = format_duration((self.total - self.done) / rate) if rate > 0 else '?'
    return f'{self.what}: {self.done}/{self.total} ({rate:.3g}/s, ETA {eta})'

  def update(self, count: int = 1) -> None:
    self.done += int(count)
    if self._bar is not None:
      self._bar.update(count)
    elif self._log_every_seconds is not None:
      now = time.perf_counter()
      if now - self._last_log >= self._log_every_seconds and self.done < self.total:
        self._last_log = now
        absl_logging.info('%s', self._line())

  def close(self) -> None:
    """Ends the bar, or logs the final rate line (none when there was nothing to do)."""
    if self._bar is not None:
      for handler in logging.root.handlers:
        handler.removeFilter(self._clear_filter)
      self._bar.close()
    elif self._log_every_seconds is not None and self.total > self._initial:
      absl_logging.info('%s', self._line(final=True))
    self._bar, self._log_every_seconds = None, None

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()
