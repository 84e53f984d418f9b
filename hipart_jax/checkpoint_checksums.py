"""SHA-256 checksums of a checkpoint step's files, written at the save, checked at restore.

orbax keeps no checksum of the bytes it restores: the array chunks in the OCDBT data
files and the JSON items are read as they are, so a same-length change of a data file
restores silently with wrong values. Each step directory therefore holds
`checksums.json`:

  {"format_version": 1, "algorithm": "sha256",
   "files": {"<item>/<path>": {"size": <bytes>, "sha256": "<hex>"}, ...},
   "files_sha256": sha256 over the sorted '<path> <size> <sha256>' lines (so that a
                   change of the manifest itself is told apart from a changed file)}

It lists every file of the step's items (`state/`, `meta/`). `checkpoints.py` writes it
into orbax's temporary step directory after the items are finalized and before orbax
renames that directory to `<step>`, so the manifest is part of the atomic commit: a step
directory either holds its complete manifest or was never committed, and retention
deletes it with the step. The step-level files orbax updates during the rename
(`_CHECKPOINT_METADATA` with the commit time, `commit_success.txt`) are not listed; they
hold bookkeeping (metrics, timestamps), not what a restore returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

CHECKSUMS_FILE = 'checksums.json'
FORMAT_VERSION = 1
_BLOCK_BYTES = 1 << 20  # Read size while hashing: large enough to run at disk speed.


class CorruptCheckpointError(ValueError):
  """A step directory exists but cannot be restored (the message names it and why)."""


def sha256_of_file(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(_BLOCK_BYTES), b''):
      digest.update(block)
  return digest.hexdigest()


def _files_sha256(files: Mapping[str, Mapping[str, Any]]) -> str:
  lines = ''.join(f'{name} {files[name]["size"]} {files[name]["sha256"]}\n'
                  for name in sorted(files))
  return hashlib.sha256(lines.encode()).hexdigest()


def _item_files(step_dir: pathlib.Path, items: Sequence[str]) -> list[str]:
  """Paths relative to `step_dir` of every file under the item directories, sorted."""
  return sorted(p.relative_to(step_dir).as_posix() for item in items
                for p in (step_dir / item).rglob('*') if p.is_file())


def write_checksums(step_dir: pathlib.Path, items: Sequence[str]) -> dict[str, Any]:
  """Writes `step_dir/checksums.json` for the files of `items`; returns the manifest.

  The manifest goes to a temporary file first and is renamed into place, so a reader
  never sees half of it.
  """
  files = {}
  for name in _item_files(step_dir, items):
    path = step_dir / name
    files[name] = {'size': path.stat().st_size, 'sha256': sha256_of_file(path)}
  manifest = {'format_version': FORMAT_VERSION, 'algorithm': 'sha256', 'files': files,
              'files_sha256': _files_sha256(files)}
  partial = step_dir / f'{CHECKSUMS_FILE}.partial'
  with open(partial, 'w') as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, step_dir / CHECKSUMS_FILE)
  return manifest


def read_checksums(step_dir: pathlib.Path) -> dict[str, Mapping[str, Any]]:
  """The `files` of `step_dir/checksums.json`.

  Raises:
    FileNotFoundError: the step has no manifest.
    CorruptCheckpointError: the manifest is not valid JSON of this format, or its
      entries do not match its own `files_sha256`.
  """
  path = step_dir / CHECKSUMS_FILE
  text = path.read_bytes()
  problem = f'checkpoint {step_dir}: {CHECKSUMS_FILE} '
  try:
    manifest = json.loads(text)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptCheckpointError(f'{problem}is not valid JSON ({type(e).__name__}: '
                                 f'{e})') from None
  if not isinstance(manifest, dict) or manifest.get('format_version') != FORMAT_VERSION:
    raise CorruptCheckpointError(f'{problem}is not a checksum manifest of format version '
                                 f'{FORMAT_VERSION}')
  files = manifest.get('files')
  entries_ok = isinstance(files, dict) and all(
      isinstance(entry, dict) and isinstance(entry.get('size'), int)
      and isinstance(entry.get('sha256'), str) for entry in files.values())
  if not entries_ok or manifest.get('algorithm') != 'sha256':
    raise CorruptCheckpointError(f'{problem}field "files" (or "algorithm") is not a '
                                 'map of path -> {size, sha256}')
  if manifest.get('files_sha256') != _files_sha256(files):
    raise CorruptCheckpointError(f'{problem}does not match its own "files_sha256" (the '
                                 'manifest itself changed since the save)')
  return files


def verify_checksums(step_dir: pathlib.Path, files: Mapping[str, Mapping[str, Any]]
                     ) -> None:
  """Raises CorruptCheckpointError naming the first listed file that is missing, has
  another size or other bytes than at the save (sizes are compared before any hashing).
  """
  for name, entry in sorted(files.items()):
    path = step_dir / name
    if not path.is_file():
      raise CorruptCheckpointError(f'checkpoint {step_dir}: {name} is missing '
                                   f'({CHECKSUMS_FILE} lists it)')
    size = path.stat().st_size
    if size != entry['size']:
      raise CorruptCheckpointError(f'checkpoint {step_dir}: {name} has {size} bytes, '
                                   f'{entry["size"]} when saved (truncated or rewritten)')
  for name, entry in sorted(files.items()):
    if sha256_of_file(step_dir / name) != entry['sha256']:
      raise CorruptCheckpointError(f'checkpoint {step_dir}: {name} does not match its '
                                   f'SHA-256 in {CHECKSUMS_FILE} (its bytes changed since '
                                   'the save)')
