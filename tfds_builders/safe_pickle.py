"""A restricted unpickler for dataset files that store pickled numpy containers.

VideoPose3D-format `.npz` files (Human3.6M) keep dicts inside 0-d object arrays, and 3DPW
`sequenceFiles/*.pkl` are Python 2 pickles of dicts of numpy arrays. `pickle.load` and
`np.load(..., allow_pickle=True)` would run whatever callable such a file names (a
crafted file can call `os.system`). The loaders here only rebuild numpy arrays, numpy
dtypes and scalars and plain containers (dict, list, tuple, str, bytes, int, float, bool,
None); any other global in the stream raises `UnsafePickleError` naming it.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
from typing import Any, BinaryIO

import numpy as np
from etils import epath

# (module, name) pairs a numpy-array pickle references. Python 2 pickles name the same
# objects under their Python 2 modules (`copy_reg`, `__builtin__`); `pickle`'s
# `fix_imports` maps those to Python 3 names before `find_class` sees them.
_NUMPY_GLOBALS = frozenset({
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'),
    ('numpy._core.numeric', '_frombuffer'),
})
# Python 3 pickles with protocol < 3 write `bytes` as `_codecs.encode(text, 'latin1')`.
_BYTES_ENCODING = 'latin1'


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global outside the numpy/plain-container allow-list."""


def _encode_latin1(text: str, encoding: str = _BYTES_ENCODING) -> bytes:
  """`_codecs.encode` restricted to the latin-1 text→bytes use pickle makes of it."""
  if not isinstance(text, str) or codecs.lookup(encoding).name != 'iso8859-1':
    raise UnsafePickleError(f'refusing _codecs.encode({type(text).__name__}, {encoding!r}): '
                            'only latin-1 text→bytes is allowed')
  return text.encode(encoding)


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only numpy array/dtype/scalar constructors."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _NUMPY_GLOBALS:
      return super().find_class(module, name)
    if (module, name) == ('_codecs', 'encode'):
      return _encode_latin1
    raise UnsafePickleError(
        f'refusing to load global {module}.{name}: this loader only accepts numpy arrays, '
        'dtypes and plain containers (dict, list, tuple, str, int, float)')


def loads(data: bytes, encoding: str = 'ASCII') -> Any:
  """Unpickles `data` with the restricted unpickler.

  Args:
    data: the pickle bytes.
    encoding: how to decode Python 2 `str` objects (`'latin1'` for Python 2 pickles that
      hold numpy arrays, as 3DPW's).
  Returns:
    The unpickled object.
  Raises:
    UnsafePickleError: if the stream names any callable outside the allow-list.
  """
  return load(io.BytesIO(data), encoding=encoding)


def load(file: BinaryIO, encoding: str = 'ASCII') -> Any:
  """Like `loads` for an open binary file."""
  return RestrictedUnpickler(file, encoding=encoding).load()


def load_pickle_file(path: epath.PathLike, encoding: str = 'ASCII') -> Any:
  """Restricted-unpickles the file at `path` (any `epath`-readable filesystem)."""
  with epath.Path(path).open('rb') as f:
    return load(f, encoding=encoding)


def _read_npy(member: BinaryIO, name: str, encoding: str) -> np.ndarray:
  """Reads one `.npy` stream; object arrays go through the restricted unpickler."""
  buffer = io.BytesIO(member.read())
  version = np.lib.format.read_magic(buffer)
  if version == (1, 0):
    _, _, dtype = np.lib.format.read_array_header_1_0(buffer)
  elif version == (2, 0):
    _, _, dtype = np.lib.format.read_array_header_2_0(buffer)
  else:
    raise ValueError(f'{name}: unsupported .npy format version {version}')
  if dtype.hasobject:
    array = load(buffer, encoding=encoding)
    if not isinstance(array, np.ndarray):
      raise UnsafePickleError(f'{name}: object array pickle holds a '
                              f'{type(array).__name__}, not an ndarray')
    return array
  buffer.seek(0)
  return np.lib.format.read_array(buffer, allow_pickle=False)


def load_npz(path: epath.PathLike, encoding: str = 'ASCII') -> dict[str, np.ndarray]:
  """Loads every array of an `.npz` file without trusting its pickles.

  Args:
    path: the `.npz` file.
    encoding: decoding of Python 2 strings inside object arrays.
  Returns:
    {key: array}; a dict stored with `np.savez(f, key=some_dict)` comes back as a 0-d
    object array, unwrap it with `.item()`.
  Raises:
    UnsafePickleError: if an object array's pickle names a disallowed global.
  """
  path = epath.Path(path)
  out = {}
  with path.open('rb') as raw, zipfile.ZipFile(raw) as archive:
    for member in archive.namelist():
      if not member.endswith('.npy'):
        continue
      with archive.open(member) as stream:
        out[member[:-len('.npy')]] = _read_npy(stream, f'{path.name}:{member}', encoding)
  return out
