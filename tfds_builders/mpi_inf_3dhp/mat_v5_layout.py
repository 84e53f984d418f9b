"""A check of a MATLAB v5 MAT-file's element layout, run before scipy parses it.

scipy's compiled v5 reader trusts the tags of the file: an unknown data type code or a
stray flag bit in a variable's header crashes the process (a segmentation fault) rather
than raising. `check_layout` walks the top-level data elements (each an 8-byte tag: type
and byte count, or the 4-byte "small element" form) and, for the requested variables,
their array flags, dimensions, name and real/imaginary parts, as the MAT-File Format
reference (MathWorks, "MAT-File Format", version 5 level) lays them out; it raises a
ValueError naming the file and the variable for anything out of place.
"""

from __future__ import annotations

import math
import struct
import zlib

_HEADER_BYTES = 128
MI_MATRIX, MI_COMPRESSED = 14, 15
MI_INT32, MI_UINT32, MI_INT8 = 5, 6, 1
# Numeric data types: miINT8 ... miUINT64 (8, 10 and 11 are reserved) → bytes per value.
_NUMERIC_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}
# Numeric array classes mxDOUBLE_CLASS (6) ... mxUINT64_CLASS (15).
_NUMERIC_CLASSES = range(6, 16)
_COMPLEX, _GLOBAL, _LOGICAL = 0x08, 0x04, 0x02


def _elements(data: bytes, where: str, order: str):
  """Yields (type, payload) for the data elements packed in `data`."""
  position = 0
  while position < len(data):
    if len(data) - position < 8:
      raise ValueError(f'{where}: {len(data) - position} stray bytes after the last element')
    code, size = struct.unpack_from(order + 'II', data, position)
    if code >> 16:  # Small element: size and type in one word, data in the next four.
      code, size, start, padded = code & 0xFFFF, code >> 16, position + 4, 4
      if size > 4:
        raise ValueError(f'{where}: small data element of {size} bytes (at most 4)')
    else:
      start, padded = position + 8, size if code == MI_COMPRESSED else -(-size // 8) * 8
    if start + size > len(data):
      raise ValueError(f'{where}: element at byte {position} declares {size} bytes, the '
                       f'file has {len(data) - start} left')
    yield code, data[start:start + size]
    position = start + padded


def _check_matrix(payload: bytes, where: str, order: str, wanted) -> None:
  parts = _elements(payload, where, order)
  try:
    flags_type, flags = next(parts)
    dims_type, dims_data = next(parts)
    name_type, name_data = next(parts)
  except StopIteration:
    raise ValueError(f'{where}: variable header cut short') from None
  if flags_type != MI_UINT32 or len(flags) != 8:
    raise ValueError(f'{where}: bad array flags element (type {flags_type})')
  if dims_type != MI_INT32 or not dims_data or len(dims_data) % 4:
    raise ValueError(f'{where}: bad dimensions element (type {dims_type})')
  if name_type != MI_INT8:
    raise ValueError(f'{where}: bad array name element (type {name_type})')
  name = name_data.decode('latin1')
  if name not in wanted:
    return
  where = f'{where}: {name}'
  array_class, flag_bits = flags[0], flags[1]
  if order == '>':
    array_class, flag_bits = flags[3], flags[2]
  if array_class not in _NUMERIC_CLASSES:
    raise ValueError(f'{where}: MATLAB array class {array_class}, expected a numeric array')
  if flag_bits & ~(_COMPLEX | _GLOBAL | _LOGICAL):
    raise ValueError(f'{where}: unknown array flags {flag_bits:#04x}')
  dims = struct.unpack(f'{order}{len(dims_data) // 4}i', dims_data)
  if min(dims) < 0:
    raise ValueError(f'{where}: negative dimensions {dims}')
  values = math.prod(dims)
  expected_parts = 2 if flag_bits & _COMPLEX else 1
  numeric = list(parts)
  if len(numeric) != expected_parts:
    raise ValueError(f'{where}: {len(numeric)} data parts, expected {expected_parts}')
  for code, part in numeric:
    if code not in _NUMERIC_TYPE_BYTES:
      raise ValueError(f'{where}: data type {code} is not a numeric MATLAB type')
    if len(part) != values * _NUMERIC_TYPE_BYTES[code]:
      raise ValueError(f'{where}: {len(part)} data bytes for dimensions {dims}')


def check_layout(path, data: bytes, wanted: tuple[str, ...]) -> None:
  """Raises ValueError naming `path` unless `data` is a well-formed v5 MAT-file."""
  where = str(path)
  if len(data) < _HEADER_BYTES:
    raise ValueError(f'{where}: {len(data)} bytes, shorter than the MAT-file header')
  indicator = data[126:128]
  if indicator not in (b'IM', b'MI'):
    raise ValueError(f'{where}: bad endian indicator {indicator!r}')
  order = '<' if indicator == b'IM' else '>'
  for code, payload in _elements(data[_HEADER_BYTES:], where, order):
    if code == MI_COMPRESSED:
      try:
        payload = zlib.decompress(payload)
      except zlib.error as error:
        raise ValueError(f'{where}: corrupt compressed element ({error})') from None
      inner = list(_elements(payload, where, order))
      if len(inner) != 1:
        raise ValueError(f'{where}: compressed element holds {len(inner)} elements')
      code, payload = inner[0]
    if code != MI_MATRIX:
      raise ValueError(f'{where}: top-level element of type {code}, expected a matrix')
    _check_matrix(payload, where, order, wanted)
