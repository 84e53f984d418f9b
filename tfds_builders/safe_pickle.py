"""A restricted unpickler for dataset files that store pickled numpy containers.

VideoPose3D-format `.npz` files (Human3.6M) keep dicts inside 0-d object arrays, and 3DPW
`sequenceFiles/*.pkl` are Python 2 pickles of dicts of numpy arrays. `pickle.load` and
`np.load(..., allow_pickle=True)` would run whatever callable such a file names (a
crafted file can call `os.system`). The loaders here only rebuild numpy arrays, numpy
dtypes and scalars and plain containers (dict, list, tuple, str, bytes, int, float, bool,
None); any other global in the stream raises `UnsafePickleError` naming it. The file
loaders raise ValueError naming the file (and the archive member) for any stream they
cannot rebuild: truncated or corrupt pickles, zip archives or `.npy` headers.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import zipfile
import zlib
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


class UnsafePickleError(pickle.UnpicklingError, ValueError):
  """The pickle references a global outside the numpy/plain-container allow-list."""


def _load_or_raise(file: BinaryIO, encoding: str, where: str) -> Any:
  """`load`, with any failure to rebuild the stream as a ValueError starting `where: `."""
  try:
    return load(file, encoding=encoding)
  except UnsafePickleError as error:
    raise UnsafePickleError(f'{where}: {error}') from error
  except Exception as error:  # pylint: disable=broad-except
    # Only allow-listed numpy constructors run, so any failure is the stream's fault.
    raise ValueError(f'{where}: not a readable pickle ({type(error).__name__}: '
                     f'{error})') from error


def _encode_latin1(text: str, encoding: str = _BYTES_ENCODING) -> bytes:
  """`_codecs.encode` restricted to the latin-1 text→bytes use pickle makes of it."""
  if not isinstance(text, str) or codecs.lookup(encoding).name != 'iso8859-1':
    raise UnsafePickleError(f'refusing _codecs.encode({type(text).__name__}, {encoding!r}): '
                            'only latin-1 text→bytes is allowed')
  return text.encode(encoding)


class _CheckedArray(np.ndarray):
  """The ndarray the unpickler builds: its state must fit its shape before numpy
  allocates it (a corrupt shape would otherwise fill terabytes with None)."""

  def __new__(cls, shape=(0,), dtype=float, *args, **kwargs):
    if math.prod(np.atleast_1d(shape).tolist()) != 0:
      raise pickle.UnpicklingError(f'refusing to build a {shape} array from a pickle '
                                   '(numpy pickles start from an empty one)')
    return super().__new__(cls, shape, dtype, *args, **kwargs)

  def __setstate__(self, state):
    if not isinstance(state, tuple) or len(state) not in (4, 5):
      raise pickle.UnpicklingError(f'bad ndarray state {type(state).__name__}')
    shape, dtype, data = state[-4], state[-3], state[-1]
    if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple) or not all(
        isinstance(n, int) and n >= 0 for n in shape):
      raise pickle.UnpicklingError(f'bad ndarray shape {shape!r} or dtype {dtype!r}')
    size = math.prod(shape)
    stored = (len(data) if isinstance(data, list) else
              len(data) // max(dtype.itemsize, 1) if isinstance(data, (bytes, str)) else -1)
    if stored != size or (not isinstance(data, list) and len(data) != size * dtype.itemsize):
      raise pickle.UnpicklingError(f'ndarray state of shape {shape} and dtype {dtype} '
                                   f'holds {type(data).__name__} of length {len(data)}')
    super().__setstate__(state)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
  """numpy's `_reconstruct`, building a `_CheckedArray` from the empty shape numpy writes."""
  if subtype is not _CheckedArray:
    raise UnsafePickleError(f'refusing to reconstruct {subtype!r}: only numpy.ndarray')
  return _CheckedArray(shape, dtype)


def _plain(value: Any) -> Any:
  """`value` with every `_CheckedArray` (nested in containers too) as a plain ndarray."""
  if isinstance(value, _CheckedArray):
    value = value.view(np.ndarray)
    if value.dtype.hasobject:
      for index, item in np.ndenumerate(value):
        value[index] = _plain(item)
    return value
  if isinstance(value, dict):
    return {key: _plain(item) for key, item in value.items()}
  if isinstance(value, list):
    return [_plain(item) for item in value]
  if isinstance(value, tuple):
    return tuple(_plain(item) for item in value)
  return value


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only numpy array/dtype/scalar constructors."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ('numpy', 'ndarray'):
      return _CheckedArray
    if name == '_reconstruct' and (module, name) in _NUMPY_GLOBALS:
      return _reconstruct
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
  return _plain(RestrictedUnpickler(file, encoding=encoding).load())


def load_pickle_file(path: epath.PathLike, encoding: str = 'ASCII') -> Any:
  """Restricted-unpickles the file at `path` (any `epath`-readable filesystem)."""
  with epath.Path(path).open('rb') as f:
    return _load_or_raise(f, encoding, str(path))


def _read_npy(member: BinaryIO, name: str, encoding: str) -> np.ndarray:
  """Reads one `.npy` stream; object arrays go through the restricted unpickler."""
  buffer = io.BytesIO(member.read())
  try:
    version = np.lib.format.read_magic(buffer)
    if version not in ((1, 0), (2, 0)):
      raise ValueError(f'unsupported .npy format version {version}')
    header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
              np.lib.format.read_array_header_2_0)
    shape, _, dtype = header(buffer)
  except (ValueError, SyntaxError, TypeError, OverflowError) as error:
    raise ValueError(f'{name}: not a readable .npy header: {error}') from error
  if dtype.hasobject:
    array = _load_or_raise(buffer, encoding, name)
    if not isinstance(array, np.ndarray):
      raise UnsafePickleError(f'{name}: object array pickle holds a '
                              f'{type(array).__name__}, not an ndarray')
    return array
  # A corrupt header can declare terabytes; numpy would allocate them before reading.
  needed = math.prod(shape) * dtype.itemsize
  stored = len(buffer.getbuffer()) - buffer.tell()
  if needed != stored:
    raise ValueError(f'{name}: the header declares shape {shape} of {dtype} '
                     f'({needed} bytes), the member holds {stored} bytes of data')
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
    ValueError: naming the file (and member) if the archive or an array is unreadable.
  """
  path = epath.Path(path)
  out = {}
  with path.open('rb') as raw:
    try:
      with zipfile.ZipFile(raw) as archive:
        for member in archive.namelist():
          if not member.endswith('.npy'):
            continue
          with archive.open(member) as stream:
            out[member[:-len('.npy')]] = _read_npy(stream, f'{path}: {member}', encoding)
    except ValueError:
      raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
            NotImplementedError) as error:
      # zipfile's errors for corrupt archives: bad CRC or headers, unknown compression
      # or encryption flags, truncated streams.
      raise ValueError(f'{path}: not a readable .npz archive ({type(error).__name__}: '
                       f'{error})') from error
  return out
