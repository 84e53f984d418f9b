"""Tests for the SHA-256 manifests of checkpoint steps (hipart_jax/checkpoint_checksums.py
and their use in hipart_jax/checkpoints.py). Same-length corruptions of a trained run,
through training resume, launch.evaluate and launch.infer: tests/test_training_faults.py.
"""

import json
import os

import orbax.checkpoint as ocp
import pytest

import test_checkpoints
from hipart_jax import checkpoint_checksums
from hipart_jax import checkpoints

CHECKSUMS = checkpoint_checksums.CHECKSUMS_FILE


def item_files(step_dir):
  return sorted(p.relative_to(step_dir).as_posix() for item in ('state', 'meta')
                for p in (step_dir / item).rglob('*') if p.is_file())


def save_steps(workdir, steps=(2, 4)):
  manager = checkpoints.make_manager(workdir, test_checkpoints.make_config(keep=2))
  for step in steps:
    checkpoints.save(manager, step, test_checkpoints.make_state(step, float(step)),
                     {'stage': 'msst', 'model': {'width': 8}})
  checkpoints.wait_until_finished(manager)
  manager.close()
  return checkpoints.checkpoint_dir(workdir)


def make_legacy(step_dir):
  """Turns a step into one saved before checksums were kept: no manifest, no mark."""
  (step_dir / CHECKSUMS).unlink()
  metadata = step_dir / '_CHECKPOINT_METADATA'
  fields = json.loads(metadata.read_text())
  fields['custom_metadata'] = {}
  metadata.write_text(json.dumps(fields))


def test_every_kept_step_lists_each_file_of_its_items(tmp_path):
  folder = save_steps(tmp_path, steps=(1, 2, 3, 4))
  assert sorted(p.name for p in folder.iterdir()) == ['3', '4']  # Retention: keep=2.
  for step in (3, 4):
    step_dir = folder / str(step)
    files = checkpoint_checksums.read_checksums(step_dir)
    assert sorted(files) == item_files(step_dir)
    assert any(name.startswith('state/') for name in files) and 'meta/metadata' in files
    assert files['meta/metadata']['size'] == (step_dir / 'meta' / 'metadata').stat().st_size
    checkpoint_checksums.verify_checksums(step_dir, files)
    assert not list(step_dir.glob(f'{CHECKSUMS}.*'))  # No temporary file left.
  variables, _ = checkpoints.restore_params(tmp_path)
  assert float(variables['vq_stats']['counts'][0]) == 4.0


def test_checksums_are_written_after_the_items_are_finalized(tmp_path, monkeypatch):
  """The manifest is written after orbax finalized the items and before it renames the
  temporary directory: it never describes a half-written step."""
  finalize = ocp.CompositeCheckpointHandler.finalize
  seen = []

  def recording_finalize(self, directory):
    seen.append((directory.name, (directory / CHECKSUMS).exists()))
    return finalize(self, directory)
  monkeypatch.setattr(ocp.CompositeCheckpointHandler, 'finalize', recording_finalize)
  folder = save_steps(tmp_path, steps=(2,))
  assert seen == [(f'2{ocp.path.step.TMP_DIR_SUFFIX}', False)]
  assert (folder / '2' / CHECKSUMS).is_file()


def test_a_failed_commit_leaves_no_step_and_no_manifest(tmp_path, monkeypatch):
  def broken(self, directory):
    raise OSError(5, 'I/O error')
  monkeypatch.setattr(ocp.CompositeCheckpointHandler, 'finalize', broken)
  with pytest.raises(checkpoints.CheckpointSaveError, match='I/O error'):
    save_steps(tmp_path, steps=(2,))
  folder = checkpoints.checkpoint_dir(tmp_path)
  assert not (folder / '2').exists() and not list(folder.rglob(CHECKSUMS))


def test_a_deleted_manifest_is_refused(tmp_path):
  folder = save_steps(tmp_path)
  (folder / '4' / CHECKSUMS).unlink()
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=rf'checkpoints/4: {CHECKSUMS} is missing \(the step was saved '
                           'with one\\)'):
    checkpoints.restore_params(tmp_path)


def test_a_changed_or_garbled_manifest_is_refused(tmp_path):
  folder = save_steps(tmp_path)
  manifest = folder / '4' / CHECKSUMS
  text = manifest.read_text()
  fields = json.loads(text)
  name, entry = sorted(fields['files'].items())[0]
  digest = entry['sha256']
  fields['files'][name]['sha256'] = ('0' if digest[0] != '0' else '1') + digest[1:]
  manifest.write_text(json.dumps(fields))
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'checkpoints/4: {CHECKSUMS} does not match its own '
                           '"files_sha256"'):
    checkpoints.restore_params(tmp_path)
  manifest.write_text(text[:len(text) // 2])
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'checkpoints/4: {CHECKSUMS} is not valid JSON'):
    checkpoints.restore_params(tmp_path)
  manifest.write_text(json.dumps({'format_version': 1, 'algorithm': 'sha256',
                                  'files': {'meta/metadata': 'abc'}}))
  with pytest.raises(checkpoints.CorruptCheckpointError, match='field "files"'):
    checkpoints.restore_params(tmp_path)


def test_a_step_saved_without_checksums_restores_with_a_warning(tmp_path, caplog):
  folder = save_steps(tmp_path)
  make_legacy(folder / '4')
  caplog.set_level('WARNING')
  variables, meta = checkpoints.restore_params(tmp_path)
  assert meta['step'] == 4 and float(variables['vq_stats']['counts'][0]) == 4.0
  assert f'{folder / "4"} has no {CHECKSUMS} (saved before checksums were kept)' in (
      caplog.text)
  # Without checksums only orbax's own reading catches a damaged file.
  data = max((p for p in (folder / '4' / 'state').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)
  os.truncate(data, data.stat().st_size // 2)
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=r'checkpoints/4: the state item does not restore \('):
    checkpoints.restore_params(tmp_path)


def test_resume_sets_aside_a_changed_step_and_restores_the_previous(tmp_path, caplog):
  folder = save_steps(tmp_path)
  metadata = folder / '4' / 'meta' / 'metadata'
  metadata.write_text(metadata.read_text().replace('"width": 8', '"width": 9'))
  manager = checkpoints.make_manager(tmp_path, test_checkpoints.make_config(keep=2))
  caplog.set_level('WARNING')
  state, meta = checkpoints.restore_latest(manager, test_checkpoints.make_state())
  manager.close()
  assert int(state.step) == 2 and meta['model'] == {'width': 8}
  assert 'meta/metadata does not match its SHA-256 in checksums.json' in caplog.text
  assert (folder / 'corrupt-4' / CHECKSUMS).is_file() and not (folder / '4').exists()
