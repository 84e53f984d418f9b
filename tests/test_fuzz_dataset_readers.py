"""Property-based fuzzing of the dataset readers of tfds_builders/.

Readers: the VideoPose3D `.npz` files of Human3.6M (read through the restricted
unpickler, `safe_pickle.load_npz`, then `human36m_dataset_builder`), the official
Human3.6M `D3_Positions` CDF files (`official.read_pose`, cdflib), the MPI-INF-3DHP
`annot_data.mat` files (`mat_annotations.read_sequence`, MATLAB v7.3 through h5py and v5
through scipy) and the 3DPW sequence pickles (`pw3d_dataset_builder.read_sequence_file`
and `sequence_examples`).

Every case mutates a small valid seed: the builders' dummy files, or files written here
(a CDF, a MATLAB v5 file). Byte mutations: truncation at any byte, byte flips, deleted or
duplicated lines. Structure mutations: a value of the stored tree (an array of a dict
inside an npz or a pickle, a MATLAB variable, the CDF `Pose` variable) replaced by one of
the wrong type, a huge or tiny number, NaN/Inf, an empty array or a wrong shape; keys
deleted.

Property: the reader returns a valid result (finite numbers, the shapes it documents,
one example per frame the file holds, counted here independently) or raises ValueError
whose message names the file before its first ': '; never another exception, and each
case is read within CASE_SECONDS of CPU time. Cases per test: the hypothesis profile
(tests/conftest.py). Crashes found are kept as @example cases.
"""

import copy
import io
import pathlib
import pickle
import shutil
import tempfile
import time

from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest

from fuzz_mutations import apply_byte_mutation
from fuzz_mutations import byte_mutation
from fuzz_mutations import CASE_SECONDS
from fuzz_mutations import with_examples
from tfds_builders import safe_pickle
from tfds_builders.human36m import human36m_dataset_builder as h36m
from tfds_builders.human36m import official
from tfds_builders.mpi_inf_3dhp import mat_annotations
from tfds_builders.pw3d import pw3d_dataset_builder as pw3d

BUILDERS = pathlib.Path(__file__).resolve().parents[1] / 'tfds_builders'
H36M_DUMMY = BUILDERS / 'human36m' / 'dummy_data'
MPI_DUMMY = BUILDERS / 'mpi_inf_3dhp' / 'dummy_data' / 'mpi_inf_3dhp_test_set'
PW3D_SEED = BUILDERS / 'pw3d' / 'dummy_data' / pw3d.SEQUENCE_DIR / 'test' / 'downtown_walking_00.pkl'
H36M_GT = {c.name: c for c in h36m.Builder.BUILDER_CONFIGS}['gt']
PW3D_CONFIG = pw3d.Builder.BUILDER_CONFIGS[0]

SPECIAL_NUMBERS = [float('nan'), float('inf'), float('-inf'), 1e308, -1e308, 1e39, 5e-324,
                   2.0**63, -2.0**63, 1e30, 0.0, -1.0]
BAD_VALUES = st.sampled_from([
    None, True, 0, -1, 2**63, 10**400, 1e308, float('nan'), float('inf'), '', 'x', '名前',
    b'\x00', [], {}, [[]], [None], [1, 2], {'a': 1}, (1, 'x'), np.zeros(0), np.zeros((0, 17, 2)),
    np.zeros((3, 32, 3)), np.zeros((2, 17, 2)), np.zeros((4, 4)), np.zeros(3, 'S2'),
    np.array(['a', 'b']), np.zeros((2, 3), np.complex64), np.array([1, 'x'], object),
    np.zeros((3, 2), bool), np.full((2, 3), np.nan)])


def _names_file(message: str, path: pathlib.Path) -> bool:
  """Whether the message's first ': '-separated part names the file."""
  head = message.split(': ', 1)[0]
  return path.name in head and bool(message[len(head) + 2:].strip())


def _check_error_or(read, path: pathlib.Path, check):
  """Runs `read(path)`: a ValueError naming the file, or a result that passes `check`."""
  start = time.process_time()
  try:
    result = read(path)
  except ValueError as error:
    assert _names_file(str(error), path), f'the message does not name {path.name}: {error}'
  else:
    check(result)
  assert time.process_time() - start < CASE_SECONDS


def _tree_paths(tree, prefix=()):
  """Every path of keys/indices into dicts, lists and object arrays of `tree`."""
  yield prefix
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _tree_paths(value, prefix + (key,))
  elif isinstance(tree, (list, tuple)):
    for k, value in enumerate(tree):
      yield from _tree_paths(value, prefix + (k,))


def _poke(value, draw):
  """`value` with one element (or the whole) replaced by a special number, or reshaped."""
  try:
    array = np.array(value, copy=True)
  except ValueError:  # A ragged list.
    return copy.deepcopy(draw(BAD_VALUES))
  kind = draw(st.sampled_from(('poke', 'reshape', 'cut', 'dtype')))
  if array.dtype.kind not in 'biuf' or array.size == 0:
    return copy.deepcopy(draw(BAD_VALUES))
  if kind == 'poke':
    array = array.astype(np.float64)
    array.reshape(-1)[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from(
        SPECIAL_NUMBERS))
    return array
  if kind == 'reshape':
    return array.reshape(-1) if draw(st.booleans()) else array[None]
  if kind == 'cut':
    return array[:draw(st.integers(0, len(array)))] if array.ndim else array
  return array.astype(draw(st.sampled_from([np.float16, np.int8, np.uint64, np.bool_,
                                            np.complex64, np.dtype('<U3')])))


def mutate_tree(draw, tree):
  """`tree` with 1-3 places replaced by a bad value or a poked array, or deleted."""
  tree = copy.deepcopy(tree)
  for _ in range(draw(st.integers(1, 3))):
    paths = list(_tree_paths(tree))[1:]
    if not paths:
      break
    path = draw(st.sampled_from(paths))
    parent = tree
    for step in path[:-1]:
      parent = parent[step]
    if isinstance(parent, tuple):
      continue
    operation = draw(st.sampled_from(('replace', 'poke', 'poke', 'delete')))
    if operation == 'delete':
      del parent[path[-1]]
    elif operation == 'poke' and isinstance(parent[path[-1]], (np.ndarray, list)):
      parent[path[-1]] = _poke(parent[path[-1]], draw)
    else:
      parent[path[-1]] = copy.deepcopy(draw(BAD_VALUES))
  return tree


def _assert_finite_example(example):
  """Every number of a schema example (nested dicts of arrays) is finite."""
  for value in example.values():
    if isinstance(value, dict):
      _assert_finite_example(value)
    elif isinstance(value, np.ndarray) and value.dtype.kind == 'f':
      assert np.isfinite(value).all()


# ---- Human3.6M, VideoPose3D npz files (safe_pickle.load_npz + the builder).

H36M_FILES = (h36m.FILE_3D, h36m.FILES_2D['gt'])
H36M_SUBJECTS = {split: subjects for split, subjects in h36m.SPLIT_SUBJECTS.items()}


def _h36m_read(path: pathlib.Path):
  """Every example the `gt` config builds from the folder of `path`, per split."""
  data = h36m.load_source_data(path.parent, H36M_GT)
  return {split: list(h36m.generate_examples(data, subjects, 1, H36M_GT, split))
          for split, subjects in H36M_SUBJECTS.items()}


def _h36m_expected_examples(folder: pathlib.Path) -> int:
  """Examples the files hold: per sequence and camera with 2D, the shorter length."""
  # Safe here: the restricted unpickler accepted these files before this runs.
  load = lambda name: np.load(folder / name, allow_pickle=True)
  positions_3d = load(h36m.FILE_3D)['positions_3d'].item()
  positions_2d = load(h36m.FILES_2D['gt'])['positions_2d'].item()
  count = 0
  for subjects in H36M_SUBJECTS.values():
    for subject in subjects:
      for action, joints in positions_3d.get(subject, {}).items():
        per_camera = positions_2d.get(subject, {}).get(action)
        for sequence in [] if per_camera is None else per_camera:
          if sequence is not None and len(sequence):
            count += min(len(joints), len(sequence))
  return count


def _h36m_case(mutated: str, data: bytes):
  with tempfile.TemporaryDirectory() as directory:
    folder = pathlib.Path(directory)
    for name in H36M_FILES:
      shutil.copy(H36M_DUMMY / name, folder / name)
    (folder / mutated).write_bytes(data)

    def check(examples):
      flat = [example for split in examples.values() for _, example in split]
      assert len(flat) == _h36m_expected_examples(folder), 'examples lost or invented'
      for example in flat:
        _assert_finite_example(example)
    _check_error_or(_h36m_read, folder / mutated, check)


def _npz_bytes(tree: dict) -> bytes:
  """`tree`'s values saved as npz arrays; anything but an array as a 0-d object array."""
  arrays = {}
  for key, value in tree.items():
    if not isinstance(value, np.ndarray):
      value, stored = np.empty((), object), value
      value[()] = stored
    arrays[key] = value
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


@st.composite
def h36m_structure_case(draw):
  name = draw(st.sampled_from(H36M_FILES))
  with np.load(H36M_DUMMY / name, allow_pickle=True) as archive:  # The repo's own file.
    tree = {key: archive[key].item() if archive[key].dtype == object else archive[key]
            for key in archive.files}
  return name, _npz_bytes(mutate_tree(draw, tree))


@st.composite
def h36m_byte_case(draw):
  name = draw(st.sampled_from(H36M_FILES))
  data = (H36M_DUMMY / name).read_bytes()
  return name, apply_byte_mutation(data, draw(byte_mutation(data)))


def _h36m_edited(name: str, edit) -> tuple[str, bytes]:
  """(name, bytes) of a dummy file whose tree `edit` changed in place."""
  with np.load(H36M_DUMMY / name, allow_pickle=True) as archive:  # The repo's own file.
    tree = {key: archive[key].item() if archive[key].dtype == object else archive[key]
            for key in archive.files}
  edit(tree)
  return name, _npz_bytes(tree)


def _zip_crc_flipped(name: str) -> tuple[str, bytes]:
  data = bytearray((H36M_DUMMY / name).read_bytes())
  data[14] ^= 0xFF  # The first member's CRC-32 in its local header.
  return name, bytes(data)


# Regressions, found by these tests on the readers before their fixes; each raised
# another exception than ValueError (named in the comment) or read wrong values.
H36M_REGRESSIONS = [
    _h36m_edited(h36m.FILES_2D['gt'], lambda t: t['positions_2d'].update(S1=7)),  # AttributeError
    _h36m_edited(h36m.FILES_2D['gt'],  # TypeError (len of a camera's bool)
                 lambda t: t['positions_2d']['S1']['Walking 1'].__setitem__(0, True)),
    _h36m_edited(h36m.FILE_3D, lambda t: t['positions_3d'].update(S1=3)),  # TypeError
    _h36m_edited(h36m.FILE_3D, lambda t: t['positions_3d']['S1'].update({5: np.zeros(
        (2, 32, 3))})),  # AttributeError (action 5)
    _h36m_edited(h36m.FILES_2D['gt'],  # ValueError of numpy (truth of an array)
                 lambda t: t['metadata'].update(num_joints=np.zeros(3))),
    _h36m_edited(h36m.FILE_3D,  # ValueError of the schema naming no file
                 lambda t: t['positions_3d']['S9']['Directions'].__setitem__((0, 0, 0), np.nan)),
]


def test_h36m_npz_byte_mutations():
  @given(case=h36m_byte_case())
  def check(case):
    _h36m_case(*case)
  with_examples(check, [dict(case=_zip_crc_flipped(h36m.FILE_3D))])()  # BadZipFile


def test_h36m_npz_structure_mutations():
  @given(case=h36m_structure_case())
  def check(case):
    _h36m_case(*case)
  with_examples(check, [dict(case=c) for c in H36M_REGRESSIONS])()


# ---- Human3.6M, official D3_Positions CDF files (official.read_pose, cdflib).

CDF_FRAMES = 3


def _write_cdf(path: pathlib.Path, values: np.ndarray, variable: str = 'Pose'):
  """`values` [1, frames, columns] as a CDF variable, like the official files."""
  from cdflib import cdfwrite  # pylint: disable=g-import-not-at-top
  types = {np.dtype(np.float32): cdfwrite.CDF.CDF_FLOAT,
           np.dtype(np.float64): cdfwrite.CDF.CDF_DOUBLE,
           np.dtype(np.int32): cdfwrite.CDF.CDF_INT4, np.dtype(np.uint8): cdfwrite.CDF.CDF_UINT1}
  writer = cdfwrite.CDF(str(path), delete=True)
  writer.write_var({'Variable': variable, 'Data_Type': types[values.dtype], 'Num_Elements': 1,
                    'Rec_Vary': True, 'Dim_Sizes': list(values.shape[1:])}, var_data=values)
  writer.close()


def _cdf_seed_values() -> np.ndarray:
  rng = np.random.default_rng(0)
  return (rng.normal(size=(1, CDF_FRAMES, 96)) * 500).astype(np.float32)


def _cdf_check(path: pathlib.Path, frames: int | None = None):
  """`frames`: the frames the case holds; None: whatever the variable the file holds."""
  def check(positions):
    if frames is None:
      import cdflib  # pylint: disable=g-import-not-at-top
      stored = np.asarray(cdflib.CDF(str(path)).varget('Pose'))
      assert positions.shape == (stored.size // 96, 32, 3), 'frames lost or invented'
    else:
      assert positions.shape == (frames, 32, 3), 'frames lost or invented'
    assert positions.dtype == np.float32
    assert np.isfinite(positions).all()
  _check_error_or(official.read_pose, path, check)


@pytest.fixture(scope='module')
def cdf_seed(tmp_path_factory):
  pytest.importorskip('cdflib')
  path = tmp_path_factory.mktemp('cdf') / 'Walking 1.cdf'
  _write_cdf(path, _cdf_seed_values())
  return path.read_bytes()


def test_h36m_cdf_byte_mutations(tmp_path, cdf_seed):
  path = tmp_path / 'Walking 1.cdf'

  @given(mutation=byte_mutation(cdf_seed))
  def check(mutation):
    path.write_bytes(apply_byte_mutation(cdf_seed, mutation))
    _cdf_check(path)  # A flipped byte can change the declared frames.
  # cdflib's MemoryError, IndexError and OverflowError on truncated files.
  with_examples(check, [dict(mutation=('truncate', cut)) for cut in (5, 1968, 1988)])()


CDF_SHAPES = [(1, 3, 96), (1, 0, 96), (1, 3, 95), (1, 3, 97), (1, 1, 96), (2, 3, 96),
              (1, 3, 32, 3), (1, 96), (1, 3, 1)]


@st.composite
def cdf_values(draw):
  shape = draw(st.sampled_from(CDF_SHAPES))
  dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.uint8]))
  values = draw(st.sampled_from([0.0, 1.0, 500.0, 1e30])) * np.ones(shape)
  for _ in range(draw(st.integers(0, 3))):
    if values.size:
      values.reshape(-1)[draw(st.integers(0, values.size - 1))] = draw(
          st.sampled_from(SPECIAL_NUMBERS))
  if np.issubdtype(dtype, np.integer):
    values = np.nan_to_num(values, posinf=100, neginf=0).clip(0, 100)
  return values.astype(dtype)


def test_h36m_cdf_structure_mutations(tmp_path, cdf_seed):
  del cdf_seed  # Needs cdflib.
  path = tmp_path / 'Walking 1.cdf'

  @given(values=cdf_values(), variable=st.sampled_from(['Pose', 'Pose', 'pose', 'Other']))
  def check(values, variable):
    _write_cdf(path, values, variable)
    _cdf_check(path, values.size // 96)
  # Millimeters beyond float32 once in meters were read as inf.
  with_examples(check, [dict(values=np.full((1, 3, 96), 1e308), variable='Pose')])()


# ---- MPI-INF-3DHP annot_data.mat (mat_annotations.read_sequence; h5py and scipy).

MAT_FIELDS = mat_annotations.FIELDS_PER_FRAME + tuple(mat_annotations.POSE_FIELDS)
MAT_SEED = MPI_DUMMY / 'TS1' / 'annot_data.mat'


def _mat_variables() -> dict[str, np.ndarray]:
  """The seed's variables in MATLAB order (as scipy reads a v5 file)."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(MAT_SEED, 'r') as mat:
    return {name: np.asarray(mat[name][()]).T for name in MAT_FIELDS}


def _write_mat(path: pathlib.Path, variables: dict[str, np.ndarray], version: str):
  """v5 (v5z: compressed, as MATLAB's -v7) through scipy in MATLAB order, v7.3 as HDF5
  datasets (h5py order, reversed)."""
  if version in ('v5', 'v5z'):
    from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
    scipy_io.savemat(path, variables, do_compression=version == 'v5z')
  else:
    import h5py  # pylint: disable=g-import-not-at-top
    with h5py.File(path, 'w') as mat:
      for name, value in variables.items():
        mat[name] = value.T.astype('S') if value.dtype.kind == 'U' else value.T


def _stored_frames(path: pathlib.Path) -> int:
  """The frames the file's valid_frame holds, read here with h5py or scipy directly."""
  raw = mat_annotations.read_mat(path, ('valid_frame',))['valid_frame']
  return int(raw.size)


def _mat_check(path: pathlib.Path):
  def check(sequence):
    n = _stored_frames(path)
    assert sequence.num_frames == n, 'frames lost or invented'
    assert sequence.valid.shape == (n,) and sequence.valid.dtype == bool
    assert sequence.activity.shape == (n,) and sequence.activity.dtype == np.int32
    assert ((sequence.activity >= 0) & (sequence.activity < 8)).all()
    assert sequence.annot2.shape == (n, 17, 2) and sequence.annot2.dtype == np.float64
    assert sequence.univ_annot3.shape == (n, 17, 3)
  _check_error_or(mat_annotations.read_sequence, path, check)


@pytest.fixture(scope='module')
def mat_seeds(tmp_path_factory):
  """{'v7.3': the dummy TS1 file's bytes, 'v5', 'v5z': its variables as v5 files}."""
  pytest.importorskip('h5py')
  pytest.importorskip('scipy')
  seeds = {'v7.3': MAT_SEED.read_bytes()}
  for version in ('v5', 'v5z'):
    path = tmp_path_factory.mktemp('mat') / 'annot_data.mat'
    _write_mat(path, _mat_variables(), version)
    seeds[version] = path.read_bytes()
  return seeds


@st.composite
def mat_byte_case(draw, seeds):
  data = seeds[draw(st.sampled_from(sorted(seeds)))]
  return apply_byte_mutation(data, draw(byte_mutation(data)))


def test_mpi_mat_byte_mutations(tmp_path, mat_seeds):
  path = tmp_path / 'annot_data.mat'

  @given(data=mat_byte_case(mat_seeds))
  def check(data):
    path.write_bytes(data)
    _mat_check(path)
  # scipy's v5 reader crashed the process (segmentation fault) on a stray flag bit.
  v5 = bytearray(mat_seeds['v5'])
  v5[393] = 153
  with_examples(check, [dict(data=bytes(v5))])()


# Values both writers store: no None, dicts or ragged lists.
MAT_VALUES = st.sampled_from([
    np.zeros(0), np.zeros((0, 17)), np.zeros((1, 0)), np.zeros((2, 17, 1, 6)),
    np.zeros((3, 17, 1, 6)), np.zeros((2, 17, 6)), np.zeros((6, 17, 2)), np.zeros((1, 6)),
    np.ones((6, 1)), np.ones((1, 5)), np.full((1, 6), np.nan), np.full((1, 6), 2.0**63),
    np.array([[1.0, 0.0, 1.0, 0.5, 1.0, 1.0]]), np.array([[1e308, -1, 9, 0, 3, 7]]),
    np.array(['abc']), np.zeros((1, 6), np.complex128), np.zeros((1, 6), bool),
    np.zeros((1, 6), np.int8), np.float64(1.0), np.zeros((2, 17, 1, 6), np.float32)])


@st.composite
def mat_structure_case(draw):
  variables = _mat_variables()
  for _ in range(draw(st.integers(1, 3))):
    name = draw(st.sampled_from(MAT_FIELDS))
    operation = draw(st.sampled_from(('replace', 'poke', 'poke', 'delete')))
    if operation == 'delete':
      variables.pop(name, None)
    elif (operation == 'poke' and name in variables and variables[name].size and
          variables[name].dtype.kind in 'biuf'):
      value = variables[name].astype(np.float64)
      value.reshape(-1)[draw(st.integers(0, value.size - 1))] = draw(
          st.sampled_from(SPECIAL_NUMBERS))
      variables[name] = value
    else:
      variables[name] = np.array(draw(MAT_VALUES), copy=True)
  return draw(st.sampled_from(('v5', 'v5z', 'v7.3'))), variables


def test_mpi_mat_structure_mutations(tmp_path, mat_seeds):
  del mat_seeds  # Needs h5py and scipy.
  path = tmp_path / 'annot_data.mat'

  @given(case=mat_structure_case())
  def check(case):
    version, variables = case
    _write_mat(path, variables, version)
    _mat_check(path)
  check()


# ---- 3DPW sequence pickles (pw3d_dataset_builder.read_sequence_file, sequence_examples).


def _pw3d_read(path: pathlib.Path):
  return list(pw3d.sequence_examples(pw3d.read_sequence_file(path), path.stem, PW3D_CONFIG))


def _pw3d_check(path: pathlib.Path):
  def check(examples):
    # Safe here: the restricted unpickler accepted this file before this runs.
    data = pickle.loads(path.read_bytes(), encoding='latin1')
    expected = sum(int(np.sum(np.asarray(valid) > 0)) for valid in data['campose_valid'])
    assert len(examples) == expected, 'frames lost or invented'
    for _, example in examples:
      _assert_finite_example(example)
  _check_error_or(_pw3d_read, path, check)


def test_pw3d_pickle_byte_mutations(tmp_path):
  seed = PW3D_SEED.read_bytes()
  path = tmp_path / PW3D_SEED.name

  @given(mutation=byte_mutation(seed))
  def check(mutation):
    path.write_bytes(apply_byte_mutation(seed, mutation))
    _pw3d_check(path)
  check()


def test_pw3d_huge_array_state_is_refused(tmp_path):
  """A pickled object array whose state claims 2**30 items: numpy filled 8 GB (a hang)."""
  data = pickle.dumps({'a': np.array([None] * 3, object)}, protocol=2)
  assert data.count(b'K\x01K\x03\x85') == 1
  path = tmp_path / PW3D_SEED.name
  path.write_bytes(data.replace(b'K\x01K\x03\x85', b'K\x01J\x00\x00\x00\x40\x85'))
  with pytest.raises(ValueError, match='ndarray state of shape'):
    pw3d.read_sequence_file(path)


@st.composite
def pw3d_structure_case(draw):
  tree = safe_pickle.load_pickle_file(PW3D_SEED, encoding='latin1')
  return pickle.dumps(mutate_tree(draw, tree), protocol=2)


def _pw3d_edited(edit) -> bytes:
  tree = safe_pickle.load_pickle_file(PW3D_SEED, encoding='latin1')
  edit(tree)
  return pickle.dumps(tree, protocol=2)


PW3D_REGRESSIONS = [
    _pw3d_edited(lambda t: t['campose_valid'].append(np.ones(3))),  # An actor dropped.
    _pw3d_edited(lambda t: t.update(img_frame_ids=np.int64(4))),  # IndexError
    _pw3d_edited(lambda t: t.update(poses2d=None)),  # TypeError
    _pw3d_edited(lambda t: t.update(cam_intrinsics=[[1, 0, 'x']] * 3)),  # ValueError of numpy
    _pw3d_edited(lambda t: t.update(img_frame_ids=np.full(3, 2.0**63))),  # Frame ids wrapped.
]


def test_pw3d_pickle_structure_mutations(tmp_path):
  path = tmp_path / PW3D_SEED.name

  @given(data=pw3d_structure_case())
  def check(data):
    path.write_bytes(data)
    _pw3d_check(path)
  with_examples(check, [dict(data=d) for d in PW3D_REGRESSIONS])()
