"""What the tools print: hipart_jax/progress.py, launch/console.py, and `launch.infer`'s
whole console output at the default and at a raised verbosity."""

import io
import logging
import pathlib
import re
import subprocess
import sys

from absl import logging as absl_logging
import numpy as np
import pytest

import fake_examples
import pipeline_fixture
from hipart_jax import progress
from hipart_jax.training import run as run_lib
from launch import console

REPO = pathlib.Path(__file__).resolve().parents[1]
# An absl line: level letter, date, time, thread, then `file.py:line] message`.
ABSL_LINE = re.compile(r'^([IWEF])\d{4} [\d:.]+ +\d+ ([\w.-]+\.py):\d+\] ')
PROJECT_FILES = {path.name for package in console.PROJECT_PACKAGES
                 for path in (REPO / package).rglob('*.py')}


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_duration_and_step_line_formats():
  assert [progress.format_duration(s) for s in (0, 45, 400, 7500, float('inf'))] == [
      '0s', '45s', '6m40s', '2h05m', '?']
  line = run_lib.format_step_line(1200, 3000, [('loss', 0.123449), ('eval/mpjpe_mm', 12.34)],
                                  4.5)
  assert line == 'step 1200/3000  loss 0.1234  eval/mpjpe_mm 12.3  4.5 steps/s  ETA 6m40s'
  assert run_lib.format_step_line(3, 6, [('eval/loss', 0.5)]) == 'step 3/6  eval/loss 0.5'


@pytest.mark.parametrize('stream, allowed, bar', [
    (io.StringIO, True, False), (_Terminal, True, True), (_Terminal, False, False)])
def test_bar_only_on_a_terminal_unless_turned_off(monkeypatch, caplog, stream, allowed, bar):
  stderr = stream()
  monkeypatch.setattr(sys, 'stderr', stderr)
  progress.allow_bars(allowed)
  try:
    with caplog.at_level(logging.INFO):
      with progress.Progress('lifted poses', 5, unit='pose') as meter:
        assert meter.has_bar == bar
        for _ in range(5):
          meter.update(1)
  finally:
    progress.allow_bars(True)
  written = stderr.getvalue()
  if bar:
    assert 'lifted poses' in written and '5/5' in written
    assert 'lifted poses' not in caplog.text
  else:
    assert written == ''  # No redraws, no carriage returns.
    assert re.search(r'lifted poses: 5/5 in \d+s \([\d.e+]+/s\)', caplog.text)


def test_filter_keeps_project_info_and_every_warning(monkeypatch):
  keep = console.ProjectInfoOnly()

  def record(path, level):
    return logging.LogRecord('absl', level, path, 1, 'message', None, None)

  library = '/venv/site-packages/orbax/checkpoint/checkpoint_manager.py'
  project = str(REPO / 'hipart_jax' / 'checkpoints.py')
  assert keep.filter(record(project, logging.INFO))
  assert not keep.filter(record(library, logging.INFO))
  assert keep.filter(record(library, logging.WARNING))
  monkeypatch.setattr(absl_logging, 'get_verbosity', lambda: 1)
  assert keep.filter(record(library, logging.INFO))
  assert keep.filter(record(library, logging.DEBUG))


@pytest.fixture(scope='module')
def keypoint_file(tmp_path_factory):
  examples = fake_examples.fake_examples(5, pipeline_fixture.HIERARCHY, seed=3)
  path = tmp_path_factory.mktemp('console') / 'poses.npz'
  np.savez(path, keypoints=np.stack([e['sparse_2d'] for e in examples]),
           confidence=np.full((5, 17), 0.9, np.float32),
           image_size=np.asarray(fake_examples.IMAGE_SIZE))
  return path


def _infer_output(checkpoint, keypoint_file, output, *extra):
  result = subprocess.run(
      [sys.executable, '-m', 'launch.infer', f'--checkpoint={checkpoint}',
       f'--input={keypoint_file}', f'--output={output}', '--cpu_devices=1', *extra],
      capture_output=True, text=True, timeout=300, check=False, cwd=str(REPO))
  assert result.returncode == 0, result.stderr[-3000:]
  return (result.stdout + result.stderr).splitlines()


def _library_info_lines(lines):
  return [line for line in lines if (m := ABSL_LINE.match(line)) and m.group(1) == 'I'
          and m.group(2) not in PROJECT_FILES]


def test_infer_prints_a_handful_of_lines(tiny_pipeline, keypoint_file, tmp_path):
  lines = _infer_output(tiny_pipeline['lifter_sparse'], keypoint_file, tmp_path / 'a.npz')
  assert 1 <= len(lines) <= 6, '\n'.join(lines)
  assert not _library_info_lines(lines), '\n'.join(lines)
  assert not [line for line in lines if 'orbax' in line or 'tensorflow' in line]
  assert any(line.endswith(f'Wrote 5 poses to {tmp_path / "a.npz"}') for line in lines)


def test_infer_shows_library_lines_at_verbosity_1(tiny_pipeline, keypoint_file, tmp_path):
  lines = _infer_output(tiny_pipeline['lifter_sparse'], keypoint_file, tmp_path / 'a.npz',
                        '--verbosity=1')
  library = _library_info_lines(lines)
  assert len(library) >= 5, '\n'.join(lines)
  assert any(ABSL_LINE.match(line).group(2) == 'checkpoint_manager.py' for line in library)
