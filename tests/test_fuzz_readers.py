"""Property-based fuzzing of the keypoint readers and the CMU BVH and ASF/AMC readers.

Every case mutates a valid seed file: the pose set of tests/keypoint_files.py in every
keypoint format, and the CMU dummy clips. Byte mutations: truncation at any byte, byte
flips, deleted or duplicated lines. Structure mutations: a value deep inside the JSON
(or an npz array) replaced by one of the wrong type, a huge or tiny number (2**63 ints,
1e308, 5e-324), NaN/Inf, an empty array, a wrong shape or a unicode string; keys and
list items deleted or duplicated.

Property of `keypoint_io.read_keypoints`: it returns a valid sequence with one row per
detection of the file, or raises `KeypointFileError` whose message starts with the file
and names a field; never another exception, and each case is read within CASE_SECONDS of
CPU time.
The CMU readers must return or raise ValueError naming the file.

Cases per test: the hypothesis profile (tests/conftest.py; `ci` by default, fixed seed,
`--hypothesis-profile=long` for many more). Crashes found are kept as @example cases.
"""

import copy
import io
import json
import pathlib
import re
import tempfile
import time
import zipfile

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest

from fuzz_mutations import apply_byte_mutation
from fuzz_mutations import byte_mutation
from fuzz_mutations import CASE_SECONDS
from fuzz_mutations import with_examples as _with_examples
import keypoint_files
from hipart_jax import keypoint_io
from hipart_jax import skeleton
from tfds_builders.cmu_mocap import asf_amc
from tfds_builders.cmu_mocap import bvh

IMAGE_SIZE = keypoint_files.IMAGE_SIZE
CMU_DUMMY = pathlib.Path(__file__).resolve().parents[1] / 'tfds_builders/cmu_mocap/dummy_data'


def _write_compressed_npz(directory):
  """The npz seed saved with np.savez_compressed (zlib streams to corrupt)."""
  with np.load(keypoint_files.write_npz(directory)) as archive:
    arrays = dict(archive)
  path = directory / 'poses_compressed.npz'
  np.savez_compressed(path, **arrays)
  return path


def _seeds():
  """name -> (format to request or None, {file name: bytes}); folders hold several files.

  JSON seeds are rewritten one value per line so that line mutations mean something.
  """
  seeds = {}
  with tempfile.TemporaryDirectory() as directory:
    directory = pathlib.Path(directory)
    writers = dict(keypoint_files.WRITERS, npz=keypoint_files.write_npz,
                   npz_compressed=_write_compressed_npz)
    for name, writer in sorted(writers.items()):
      root = directory / name
      root.mkdir()
      path = writer(root)
      files = sorted(path.iterdir()) if path.is_dir() else [path]
      contents = {}
      for file in files:
        data = file.read_bytes()
        if file.suffix == '.json':
          data = json.dumps(json.loads(data), indent=1).encode()
        contents[file.name] = data
      fmt = keypoint_files.FORMAT_OF.get(name)
      seeds[name] = (fmt if name in keypoint_files.DETECTED_AS else None, contents,
                     path.is_dir())
  return seeds


SEEDS = _seeds()
JSON_SEEDS = sorted(n for n, (_, files, _) in SEEDS.items()
                    if all(f.endswith('.json') for f in files))
NPZ_SEEDS = sorted(n for n in SEEDS if n not in JSON_SEEDS)


# ---- The property.


def _expected_rows(fmt: str, path: pathlib.Path) -> int:
  """Detections in a (mutated) input that the reader accepted, counted independently."""
  if fmt in ('npz', 'npz_coco17'):
    with np.load(path) as archive:
      keypoints = archive['keypoints']
    return 1 if keypoints.ndim == 2 else len(keypoints)
  files = sorted(path.glob('*.json')) if path.is_dir() else [path]
  documents = [json.loads(file.read_text(encoding='utf-8')) for file in files]
  if fmt in ('openpose', 'openpose_body25b'):
    return sum(len(d['people']) for d in documents)
  (data,) = documents
  if fmt == 'coco_annotations':
    return len(data['annotations'])
  if fmt == 'mmpose' and isinstance(data, dict):
    if isinstance(data.get('instance_info'), list):
      return sum(len(item['instances']) for item in data['instance_info'])
    return sum(len(frame) for frame in data['predictions'])
  return len(data)


def _check_valid(sequence: keypoint_io.KeypointSequence):
  n = len(sequence)
  assert n > 0
  assert sequence.keypoints.shape == (n, skeleton.NUM_JOINTS, 2)
  assert sequence.keypoints.dtype == np.float32 and np.isfinite(sequence.keypoints).all()
  assert sequence.confidence.dtype == np.float32 and np.isfinite(sequence.confidence).all()
  assert ((sequence.confidence >= 0) & (sequence.confidence <= 1)).all()
  assert np.all(sequence.keypoints[sequence.confidence == 0] == 0)
  assert sequence.image_size.dtype == np.int32 and (sequence.image_size >= 1).all()
  assert sequence.frame.dtype == np.int64 and sequence.track.dtype == np.int64
  order = np.lexsort((sequence.frame, sequence.track))
  np.testing.assert_array_equal(order, np.arange(n))  # Sorted by (track, frame) ...
  pairs = set(zip(sequence.track.tolist(), sequence.frame.tolist()))
  assert len(pairs) == n  # ... each pair once.


def _read_and_check(path: pathlib.Path, requested: str | None, image_size=IMAGE_SIZE):
  start = time.process_time()
  try:
    sequence = keypoint_io.read_keypoints(path, format=requested, image_size=image_size)
  except keypoint_io.KeypointFileError as error:
    message = str(error)
    named = [str(path)] + [str(f) for f in path.glob('*.json')] if path.is_dir() else [
        str(path)]
    prefix = next((p for p in named if message.startswith(p + ': ')), None)
    assert prefix is not None, f'the message does not start with the file: {message}'
    field, _, problem = message[len(prefix) + 2:].partition(': ')
    assert field.strip() and problem.strip(), f'no field and problem: {message}'
  else:
    _check_valid(sequence)
    assert len(sequence) == _expected_rows(sequence.format, path), 'rows lost or invented'
  assert time.process_time() - start < CASE_SECONDS


def _write_case(directory: pathlib.Path, name: str, files: dict[str, bytes]) -> pathlib.Path:
  _, _, is_folder = SEEDS[name]
  root = directory / name
  root.mkdir()
  for file, data in files.items():
    (root / file).write_bytes(data)
  return root if is_folder else root / next(iter(files))


def _run(name: str, files: dict[str, bytes], image_size=IMAGE_SIZE):
  requested = SEEDS[name][0]
  with tempfile.TemporaryDirectory() as directory:
    _read_and_check(_write_case(pathlib.Path(directory), name, files), requested, image_size)


# ---- Mutations.


@st.composite
def byte_case(draw, name: str):
  files = dict(SEEDS[name][1])
  file = draw(st.sampled_from(sorted(files)))
  files[file] = apply_byte_mutation(files[file], draw(byte_mutation(files[file])))
  return files


HUGE_AND_TINY = [2**63, -2**63 - 1, 2**64 + 1, 10**400, 1e308, -1e308, 1e39, 5e-324, -1e-320,
                 0, -1, 1, 0.5]
SPECIAL_VALUES = st.sampled_from(
    HUGE_AND_TINY + [float('nan'), float('inf'), float('-inf'), None, True, False, '', 'x',
                     '1.5', 'nan', '名前', 'ü\u0000\U0001F600', [], {}, [[]], [None], [1, 2],
                     [[1.0, 2.0, 3.0]] * 17, [0.0] * 51, {'people': []}])
# The special values three times as often as any other kind.
BAD_VALUES = st.one_of(
    SPECIAL_VALUES, SPECIAL_VALUES, SPECIAL_VALUES, st.integers(), st.floats(),
    st.text(max_size=8), st.lists(st.floats(), max_size=6), st.lists(st.integers(), max_size=6))


def _paths(tree, prefix=()):
  """Every (path of keys/indices) into a parsed JSON tree, the root included."""
  yield prefix
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _paths(value, prefix + (key,))
  elif isinstance(tree, list):
    for k, value in enumerate(tree):
      yield from _paths(value, prefix + (k,))


def _apply_structure(tree, path, operation, value):
  """The tree with one operation at `path`: replace, delete, duplicate or rename."""
  if not path:
    return value if operation == 'replace' else tree
  parent = tree
  for step in path[:-1]:
    parent = parent[step]
  last = path[-1]
  if operation == 'replace':
    parent[last] = value
  elif operation == 'delete':
    del parent[last]
  elif operation == 'duplicate' and isinstance(parent, list):
    parent.insert(last, copy.deepcopy(parent[last]))
  elif operation == 'rename' and isinstance(parent, dict) and isinstance(value, str):
    parent[value] = parent.pop(last)
  return tree


@st.composite
def structure_case(draw, name: str):
  files = dict(SEEDS[name][1])
  file = draw(st.sampled_from(sorted(files)))
  tree = json.loads(files[file])
  for _ in range(draw(st.integers(1, 3))):
    # A field first (list indices as '*'), then one of its places: a rare field such as
    # a track id is hit as often as the hundreds of coordinates.
    by_field = {}
    for path in _paths(tree):
      by_field.setdefault(tuple('*' if isinstance(k, int) else k for k in path), []).append(
          path)
    path = draw(st.sampled_from(by_field[draw(st.sampled_from(sorted(by_field, key=repr)))]))
    operation = draw(st.sampled_from(('replace', 'replace', 'delete', 'duplicate', 'rename')))
    # A copy: sampled values are shared objects, and the tree is edited in place.
    tree = _apply_structure(tree, path, operation, copy.deepcopy(draw(BAD_VALUES)))
  files[file] = json.dumps(tree, indent=1).encode()
  return files


NPZ_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int8, np.uint64, np.bool_,
              np.complex64, np.dtype('<U3'), np.dtype('S2'), np.dtype('datetime64[s]'))
SPECIAL_NUMBERS = [float('nan'), float('inf'), float('-inf'), 1e308, -1e308, 1e39, 5e-324,
                   2.0**63, -2.0**63, 1e30, 0.0, -1.0, 1.5]
NPZ_ARRAYS = st.one_of(
    hnp.arrays(st.sampled_from(NPZ_DTYPES),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=20)),
    hnp.arrays(np.float64, st.sampled_from([(0, 17, 2), (6, 17, 2), (6, 17, 3), (17, 2),
                                            (6, 17), (6,), (2,), (6, 2), (1, 17, 2), ()]),
               elements=st.sampled_from(SPECIAL_NUMBERS) | st.floats(0, 2000)))


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  return buffer.getvalue()


@st.composite
def npz_case(draw, name: str):
  (file, data), = SEEDS[name][1].items()
  with np.load(io.BytesIO(data)) as archive:
    arrays = {key: archive[key] for key in archive.files}
  for _ in range(draw(st.integers(1, 3))):
    key = draw(st.sampled_from(sorted(arrays) + ['keypoints', 'scores', 'confidence',
                                                 'image_size', 'frame', 'track', 'junk']))
    operation = draw(st.sampled_from(('replace', 'delete', 'poke', 'reshape')))
    if operation == 'delete':
      arrays.pop(key, None)
    elif (operation == 'poke' and key in arrays and arrays[key].size
          and arrays[key].dtype.kind in 'biuf'):  # Only numbers take a special number.
      poked = arrays[key].astype(np.float64)
      poked.reshape(-1)[draw(st.integers(0, poked.size - 1))] = draw(
          st.sampled_from(SPECIAL_NUMBERS))
      arrays[key] = poked
    elif operation == 'reshape' and key in arrays:
      arrays[key] = arrays[key].reshape(-1) if draw(st.booleans()) else arrays[key][None]
    else:
      arrays[key] = draw(NPZ_ARRAYS)
  return {file: _npz_bytes(arrays, compressed='compressed' in name)}


# ---- Regression cases: found by this fuzzer (or its first runs) on the reader before its
# fixes, each once a bare exception or a wrong read; now a KeypointFileError or a valid
# read. Each is an @example of the test that found it.


def _edited(name: str, *edits) -> dict[str, bytes]:
  """A seed's files with (file index, path, value) replacements."""
  files = dict(SEEDS[name][1])
  names = sorted(files)
  for index, path, value in edits:
    tree = json.loads(files[names[index]])
    files[names[index]] = json.dumps(_apply_structure(tree, path, 'replace', value)).encode()
  return files


def _npz_edited(name: str, **arrays) -> dict[str, bytes]:
  (file, data), = SEEDS[name][1].items()
  with np.load(io.BytesIO(data)) as archive:
    merged = dict(archive) | arrays
  return {file: _npz_bytes(merged, compressed='compressed' in name)}


def _npz_with_shape(name: str, shape: str) -> dict[str, bytes]:
  """The npz seed whose keypoints header declares `shape` (data unchanged)."""
  (file, data), = SEEDS[name][1].items()
  source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
  with zipfile.ZipFile(out, 'w') as target:
    for member in source.namelist():
      raw = source.read(member)
      if member == 'keypoints.npy':
        size = int.from_bytes(raw[8:10], 'little')
        header = raw[10:10 + size].decode('latin1')
        header = header.replace(header[header.index('(') + 1:header.index(')')], shape)
        header = header.rstrip().ljust(size - 1) + '\n'
        raw = raw[:10] + header.encode('latin1') + raw[10 + size:]
      target.writestr(member, raw)
  return {file: out.getvalue()}


JSON_REGRESSIONS = {
    'halpe': [
        _edited('halpe', (0, (2, 'idx'), 2**63)),  # OverflowError building int64 tracks.
        _edited('halpe', (0, (2, 'idx'), [-2**63 - 1])),
        _edited('halpe', (0, (2, 'image_id'), 'frame_' + '9' * 40 + '.jpg')),  # int64 name.
    ],
    'coco': [
        _edited('coco', (0, (1, 'image_id'), 2**63)),  # OverflowError in the frame ids.
        _edited('coco', (0, (1, 'keypoints', 7), 10**400)),  # OverflowError int to float.
        _edited('coco', (0, (1, 'keypoints', 7), True)),  # Read as 1.0 px.
    ],
    # A big-toe x of 1e39 overflowed float32: every converted joint became NaN, unchecked.
    'openpose_body25': [
        _edited('openpose_body25', (0, ('people', 0, 'pose_keypoints_2d', 57), 1e39))],
    'mmpose_coco17': [
        _edited('mmpose_coco17', (0, ('instance_info', 0, 'frame_id'), 2**63))],
}
BYTE_REGRESSIONS = {
    'coco': [{'coco.json': b'[{"image_id": ' + b'9' * 5000 + b', "keypoints": []}]'},  # ValueError
             {'coco.json': b'[' * 100000 + b']' * 100000}],  # RecursionError.
    'npz': [_npz_with_shape('npz', '99999999999, 17, 2')],  # MemoryError.
    'npz_compressed': [_npz_with_shape('npz_compressed', '99999999999, 17, 2')],
}
NPZ_REGRESSIONS = {
    'npz': [_npz_edited('npz', frame=np.array([0, 1e30, 2, 3, 4, 5]))],  # Wrapped int64.
}


# ---- The tests.


@pytest.mark.parametrize('name', sorted(SEEDS))
def test_byte_mutations(name):
  @given(files=byte_case(name))
  def check(files):
    _run(name, files)
  _with_examples(check, [dict(files=f) for f in BYTE_REGRESSIONS.get(name, [])])()


@pytest.mark.parametrize('name', JSON_SEEDS)
def test_json_structure_mutations(name):
  @given(files=structure_case(name))
  def check(files):
    _run(name, files)
  _with_examples(check, [dict(files=f) for f in JSON_REGRESSIONS.get(name, [])])()


@pytest.mark.parametrize('name', NPZ_SEEDS)
def test_npz_structure_mutations(name):
  @given(files=npz_case(name), image_size=st.sampled_from([IMAGE_SIZE, None]))
  def check(files, image_size):
    _run(name, files, image_size)
  _with_examples(check, [dict(files=f, image_size=IMAGE_SIZE)
                         for f in NPZ_REGRESSIONS.get(name, [])])()


def test_compressed_npz_with_a_corrupt_stream():
  """A byte of the zlib stream replaced: zlib.error once escaped (or a CRC error)."""
  (file, data), = SEEDS['npz_compressed'][1].items()
  start = data.index(b'keypoints.npy') + len(b'keypoints.npy') + 40
  for position in range(start, start + 40, 4):
    corrupt = bytearray(data)
    corrupt[position] ^= 0xFF
    _run('npz_compressed', {file: bytes(corrupt)})


# ---- The CMU readers: BVH, ASF and AMC (tfds_builders/cmu_mocap).

BAD_TOKENS = ['nan', 'inf', '-inf', '1e999', '9' * 30, '-' + '9' * 400, '名前', '{', '}',
              'End', 'JOINT', 'ROOT', 'CHANNELS', 'OFFSET', ':bonedata', 'begin', 'end',
              '()', '(', '-0', '0x10', '1_000', '٣', '²', '']
BVH_SEED = 'bvh/131_01.bvh'
ASF_SEED, AMC_SEED = 'asf_amc/01/01.asf', 'asf_amc/01/01_01.amc'


def _cmu_seed(relative: str) -> bytes:
  return (CMU_DUMMY / relative).read_bytes()


@st.composite
def cmu_case(draw, data: bytes):
  """Byte mutations, or whitespace tokens replaced by bad ones."""
  if draw(st.booleans()):
    return apply_byte_mutation(data, draw(byte_mutation(data)))
  tokens = data.split(b' ')
  for _ in range(draw(st.integers(1, 3))):
    k = draw(st.integers(0, len(tokens) - 1))
    tokens[k] = draw(st.sampled_from(BAD_TOKENS)).encode()
  return b' '.join(tokens)


def _cmu_check(read, path: pathlib.Path, data: bytes):
  """The CMU property: a result, or ValueError naming the file, in bounded time."""
  path.write_bytes(data)
  start = time.process_time()
  try:
    result = read(path)
  except ValueError as error:
    assert str(error).startswith(f'{path}: '), str(error)
    result = None
  assert time.process_time() - start < CASE_SECONDS
  return result


def _amc_reader():
  skeleton_ = asf_amc.parse_asf(_cmu_seed(ASF_SEED).decode())
  return lambda path: asf_amc.read_amc(path, skeleton_)


CMU_READERS = {'bvh': (lambda: bvh.read_bvh, BVH_SEED),
               'asf': (lambda: asf_amc.read_asf, ASF_SEED), 'amc': (_amc_reader, AMC_SEED)}


def _seed_lines(relative: str) -> list[str]:
  return _cmu_seed(relative).decode().split('\n')


def _replace_line(relative: str, starts: str, new: str, keep: bool = False) -> bytes:
  """The seed with its first line starting with `starts` (stripped) replaced by `new`,
  or with `new` inserted before it when `keep`."""
  lines = _seed_lines(relative)
  k = next(i for i, line in enumerate(lines) if line.strip().startswith(starts))
  lines[k:k + 1] = [new, lines[k]] if keep else [new]
  return '\n'.join(lines).encode()


def _finite(kind: str, result) -> bool:
  if kind == 'bvh':
    skeleton_, motion = result
    return bool(np.isfinite(skeleton_.offsets).all() and np.isfinite(motion.values).all()
                and np.isfinite(motion.frame_time) and motion.frame_time > 0)
  if kind == 'asf':
    return all(np.isfinite(b.length) and np.isfinite(b.direction).all() for b in result.bones)
  return all(np.isfinite(v).all() for v in result.values.values())


# Defects this fuzzer found in the CMU readers, one case each: the reader crashed with
# another exception than ValueError, or returned non-finite numbers without a word. Each
# now raises ValueError naming the file and the line or field: (kind, data, message).
CMU_REGRESSIONS = {
    'asf_end_twice': ('asf', _replace_line(ASF_SEED, 'end', '  end', keep=True),
                      r"ASF line \d+: 'end' without a 'begin'"),  # Was TypeError.
    'asf_parenthesis_line': ('asf', _replace_line(ASF_SEED, 'direction', '  (', keep=True),
                             r"ASF line \d+: :bonedata line '\(' has no field name"),
    'asf_nan_direction': ('asf', _replace_line(ASF_SEED, 'direction', '    direction nan 0 1'),
                          r'ASF line \d+: bone lhipjoint: direction: .* not all finite'),
    'bvh_nan_offset': ('bvh', _replace_line(BVH_SEED, 'OFFSET', '\tOFFSET nan inf -inf'),
                       r"BVH line \d+: joint Hips OFFSET 'nan' is not finite"),
    'bvh_nan_frame_time': ('bvh', _replace_line(BVH_SEED, 'Frame Time', 'Frame Time: nan'),
                           r"BVH line \d+: Frame Time: 'nan' is not finite"),
    'bvh_negative_frame_time': ('bvh', _replace_line(BVH_SEED, 'Frame Time', 'Frame Time: -1'),
                                r'BVH line \d+: Frame Time: -1.0 is not positive'),
    'amc_nan_value': ('amc', _replace_line(AMC_SEED, 'lthumb', 'lthumb nan -13.78'),
                      r'AMC line \d+: bone lthumb: .* not all finite'),
}


@pytest.mark.parametrize('kind', sorted(CMU_READERS))
def test_cmu_reader_mutations(tmp_path_factory, kind):
  make_reader, seed = CMU_READERS[kind]
  read, path = make_reader(), tmp_path_factory.mktemp(kind) / f'case.{kind}'

  @given(data=cmu_case(_cmu_seed(seed)))
  def check(data):
    result = _cmu_check(read, path, data)
    if result is not None:
      assert _finite(kind, result), 'non-finite numbers read without an error'
    if kind == 'bvh' and result is not None:
      skeleton_, motion = result
      assert motion.values.shape == (len(motion.values), skeleton_.num_channels)
  _with_examples(check, [dict(data=data) for case_kind, data, _ in CMU_REGRESSIONS.values()
                         if case_kind == kind])()


@pytest.mark.parametrize('case', sorted(CMU_REGRESSIONS))
def test_cmu_reader_regressions(tmp_path, case):
  """Each regression raises the reader's ValueError, naming the file and the line."""
  kind, data, message = CMU_REGRESSIONS[case]
  make_reader, _ = CMU_READERS[kind]
  path = tmp_path / f'case.{kind}'
  path.write_bytes(data)
  with pytest.raises(ValueError, match=re.escape(f'{path}: ') + message):
    make_reader()(path)
