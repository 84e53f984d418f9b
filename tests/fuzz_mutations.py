"""Mutations shared by the reader fuzz tests (tests/test_fuzz_*readers.py)."""

from hypothesis import example
from hypothesis import strategies as st

CASE_SECONDS = 5.0  # CPU seconds per case, so a loaded machine does not fail it.


def byte_mutation(data: bytes):
  """A strategy of (kind, argument) byte mutations of `data`."""
  size = max(len(data), 1)
  lines = data.split(b'\n')
  truncate = st.integers(0, size - 1).map(lambda cut: ('truncate', cut))
  flips = st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1,
                   max_size=4).map(lambda f: ('flip', f))
  delete = st.integers(0, len(lines) - 1).map(lambda k: ('delete_line', k))
  duplicate = st.integers(0, len(lines) - 1).map(lambda k: ('duplicate_line', k))
  return st.one_of(truncate, flips, delete, duplicate)


def apply_byte_mutation(data: bytes, mutation) -> bytes:
  kind, argument = mutation
  if kind == 'truncate':
    return data[:argument]
  if kind == 'flip':
    out = bytearray(data)
    for position, value in argument:
      out[position % len(out)] = value
    return bytes(out)
  lines = data.split(b'\n')
  if kind == 'delete_line':
    del lines[argument]
  else:
    lines.insert(argument, lines[argument])
  return b'\n'.join(lines)


def with_examples(test, examples):
  """`test` with each of `examples` (keyword dicts) as a hypothesis @example."""
  for kwargs in examples:
    test = example(**kwargs)(test)
  return test
