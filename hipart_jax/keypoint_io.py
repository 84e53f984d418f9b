"""Reading users' 2D keypoint files into Human3.6M-17 keypoint sequences.

`read_keypoints(path)` reads one file (or a folder of OpenPose frames), detects its format
from its structure (`detect_format`; `format=` overrides), converts the detector's layout
to Human3.6M-17 with the `skeleton.KeypointFormat` tables and checks what it reads.

Formats (`FORMATS`):
  npz       `keypoints` [N, 17, 2] pixels in Human3.6M-17 order, or [N, 17, 3] read as
            (x, y, confidence); one pose [17, 2|3] is N = 1, a bare .npy array is read as
            `keypoints`. Optional `scores` or `confidence` [N, 17], `image_size` [2] or
            [N, 2] (width, height), `frame` [N], `track` [N]; other keys are ignored.
  npz_coco17  the same archive with `keypoints` in COCO-17 order (e.g. VideoPose3D's
            custom 2D files); never detected, only requested.
  coco      COCO keypoint results: a list of {image_id, keypoints: 51 numbers (x, y, v),
            score, category_id?, idx|track_id?}. A COCO detection results list (`bbox`
            only, no keypoints) is refused: it holds no pose.
  coco_annotations  a COCO person_keypoints annotation file {images: [{id, width,
            height}], annotations: [{image_id, keypoints: 51 numbers (x, y, v)}]}; each
            detection's image size comes from its entry in `images`.
  halpe     AlphaPose Halpe-26 results: the same list with 78 numbers per detection.
  openpose  OpenPose `*_keypoints.json`: a folder with one file per frame (or one file),
            {people: [{person_id, pose_keypoints_2d: 75 (BODY_25) or 54 (COCO-18)}]}.
  openpose_body25b  the same files written by OpenPose's BODY_25B model (75 numbers in
            another order, `OPENPOSE_BODY25B`); never detected, only requested.
  mmpose    MMPose predictions: {instance_info: [{frame_id, instances: [{keypoints
            [[x, y]] * K, keypoint_scores [K], track_id?}]}]}, {predictions: [[instance]
            per frame]} or a bare list of instances (one image); K = 17 is COCO-17,
            K = 26 Halpe-26.

Rules (tests/test_bad_inputs.py checks each):
  * Confidence: detector scores are clipped to [0, 1] (heatmap and SimCC scores exceed 1).
    COCO/Halpe `v` is a score in results files and a visibility flag in annotation files;
    clipping reads flags right too: 0 (not labelled) = missing, 1 (occluded) and 2
    (visible) = 1.0. No scores in the file means 1. A Human3.6M joint built from several
    keypoints takes their smallest confidence.
  * Non-finite values (NaN, Inf, JSON null) in a keypoint's x, y or confidence make that
    keypoint missing (confidence 0), with a logged warning giving the count.
  * Missing joints (confidence 0) get coordinates (0, 0): the file's values carry nothing.
  * A detection with no confident joint is kept (frame numbering stays whole) with a
    logged warning; `geometry.normalization_frame` gives it the identity frame, so its 3D
    pose is a prior guess only. `confidence.max(-1) == 0` marks such rows.
  * Image size: from the file (npz `image_size`, COCO `images`), else the `image_size`
    argument (`--image_size=W,H` on the command line). Neither is an error, never a
    guess; a file size that disagrees with the argument is an error. Sides must be
    whole numbers of pixels in [1, max_image_side].
  * A confident joint more than `outside_margin` image sizes beyond the image border is
    an error naming the frame (usual causes: wrong image size, normalized coordinates).
  * Tracks: the file's person ids (npz `track`, `idx`/`track_id`, OpenPose `person_id`,
    -1 = none) when every detection has one and `track_ids=True`; else the detection's
    index within its frame, in file order. Ids on only some detections are an error.
    A (track, frame) pair occurs at most once. Rows are sorted by (track, frame).
  * Frames: npz `frame` (else the row index), integer image ids and MMPose frame ids as
    they are; names (AlphaPose image ids, OpenPose file names) give the last number in
    the name, or, when some name has none or two names share one, the name's rank in
    natural sort order.
  * Layouts with equal keypoint counts (`LAYOUTS`: BODY_25 and BODY_25B, Human3.6M-17 and
    COCO-17 in npz files) are told apart by anatomy, never guessed: `anatomy_score`
    measures how far the bone lengths of a reading stray from human proportions
    (`ANATOMY_BONES`) and from left-right symmetry. When another format of the same
    reader fits clearly better (`ANATOMY_MARGIN`) than the one detected or requested, the
    read stops with an error naming both formats and the `--format` flag to choose;
    `anatomy_check=False` reads as requested without the check.
  * Numbers: JSON true/false and strings are not numbers; integer ids (frames, tracks,
    image ids) must fit int64, every number a float64.
  * Anything else raises `KeypointFileError` (a ValueError) naming the file, the field and
    the problem. Nothing is dropped silently.

The rules are one contract that every format's reader applies through the shared checks
below, so the formats' tables, their readers and the checks stay in one module of more
than 400 lines.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
import struct
import tokenize
import warnings
import zipfile
import zlib
from typing import Any, Sequence

from absl import logging
import numpy as np

from hipart_jax import skeleton

FORMATS = ('npz', 'npz_coco17', 'coco', 'coco_annotations', 'halpe', 'openpose',
           'openpose_body25b', 'mmpose')


def _identity_layout(name: str, joints: Sequence[str]) -> skeleton.KeypointFormat:
  return skeleton.KeypointFormat(name=name, keypoint_names=tuple(joints),
                                 to_h36m=tuple((j, ((j, 1.0),)) for j in joints))


# Human3.6M-17 itself, so npz files go through the same conversion and checks.
H36M17 = _identity_layout('h36m17', skeleton.H36M_JOINT_NAMES)
# OpenPose BODY_25B (openpose_train experimental models): COCO-17, then the MPII upper
# neck and head top, then the six foot points. The upper neck lies above the shoulder
# line, so the Human3.6M thorax is the mid-shoulder point as for COCO-17.
OPENPOSE_BODY25B = skeleton.KeypointFormat(
    name='openpose_body25b',
    keypoint_names=skeleton.COCO17.keypoint_names + (
        'neck', 'head_top', 'l_big_toe', 'l_small_toe', 'l_heel', 'r_big_toe',
        'r_small_toe', 'r_heel'),
    to_h36m=tuple((joint, terms) for joint, terms in skeleton.COCO17.to_h36m
                  if joint != 'head') + (('head', (('head_top', 1.0),)),),
)
# Keypoint layouts each format may hold, by keypoint count. Formats read by the same
# reader with the same count are rivals that the anatomy check tells apart.
LAYOUTS = {
    'npz': {17: H36M17},
    'npz_coco17': {17: skeleton.COCO17},
    'coco': {17: skeleton.COCO17},
    'coco_annotations': {17: skeleton.COCO17},
    'halpe': {26: skeleton.HALPE26},
    'openpose': {25: skeleton.OPENPOSE_BODY25, 18: skeleton.OPENPOSE_COCO18},
    'openpose_body25b': {25: OPENPOSE_BODY25B},
    'mmpose': {17: skeleton.COCO17, 26: skeleton.HALPE26},
}
_NPZ_FORMATS = ('npz', 'npz_coco17')
_OPENPOSE_FORMATS = ('openpose', 'openpose_body25b')
# Bones the anatomy check measures (Human3.6M joints) and their typical length as a
# fraction of the pelvis-thorax distance (Human3.6M's mean skeleton, rounded).
ANATOMY_BONES = (
    ('r_hip', 'r_knee', 0.93), ('r_knee', 'r_ankle', 0.92),
    ('l_hip', 'l_knee', 0.93), ('l_knee', 'l_ankle', 0.92),
    ('r_shoulder', 'r_elbow', 0.57), ('r_elbow', 'r_wrist', 0.51),
    ('l_shoulder', 'l_elbow', 0.57), ('l_elbow', 'l_wrist', 0.51),
    ('l_hip', 'r_hip', 0.54), ('l_shoulder', 'r_shoulder', 0.62),
    ('pelvis', 'thorax', 1.0),
)
# Left and right bones of one limb segment (indices into ANATOMY_BONES).
ANATOMY_PAIRS = ((0, 2), (1, 3), (4, 6), (5, 7))
# A term's deviation saturates here (log scale): one wild bone must not decide alone.
ANATOMY_CAP = float(np.log(8.0))
# Terms a detection needs to be scored.
ANATOMY_MIN_TERMS = 4
# A rival reading wins only when its score is lower by this much and by this factor;
# right readings of real files score 0.08-0.2, wrong ones 0.3-0.7 (tests/test_real_2d.py).
ANATOMY_MARGIN = 0.1
ANATOMY_RATIO = 0.6
_NPZ_MAGIC = (b'PK\x03\x04', b'\x93NUMPY')
# What numpy, zipfile and zlib raise on corrupt archives; the npy header is parsed with
# tokenize and ast, and a corrupt shape can exhaust memory.
_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
               tokenize.TokenError, SyntaxError, NotImplementedError, RuntimeError,
               struct.error, KeyError, IndexError, OverflowError, TypeError, MemoryError)
_NPZ_KEYS = ('keypoints', 'scores', 'confidence', 'image_size', 'frame', 'track')
_KNOWN_JSON = ('a COCO/Halpe results list, a COCO annotation file {images, annotations}, '
               'an OpenPose frame {people} or MMPose predictions {instance_info|predictions}')
_LAST_NUMBER = re.compile(r'(\d+)\D*$')
_INT64 = (-2**63, 2**63 - 1)
_FLOAT_MAX = float(np.finfo(np.float64).max)


class KeypointFileError(ValueError):
  """A keypoint input that cannot be used as it is; the message names file, field, problem."""


@dataclasses.dataclass
class KeypointSequence:
  """Everything read from one input (file or folder), in Human3.6M-17 order.

  Attributes:
    keypoints: [N, 17, 2] float32 pixels; (0, 0) where confidence is 0.
    confidence: [N, 17] float32 in [0, 1]; 0 = missing.
    image_size: [N, 2] int32 (width, height) pixels.
    frame: [N] int64 frame / image id.
    track: [N] int64 person track id.
    source: the file or folder read.
    format: the detected (or requested) format, one of FORMATS.
    layout: the name of the keypoint layout read (e.g. 'openpose_body25', 'h36m17').
    anatomy_score: `anatomy_score` of that reading (NaN: too few joints to score).
  Rows are sorted by (track, frame).
  """

  keypoints: np.ndarray
  confidence: np.ndarray
  image_size: np.ndarray
  frame: np.ndarray
  track: np.ndarray
  source: str
  format: str
  layout: str = ''
  anatomy_score: float = float('nan')

  def __post_init__(self):
    n = len(self.frame)
    expected = dict(keypoints=(n, skeleton.NUM_JOINTS, 2), confidence=(n, skeleton.NUM_JOINTS),
                    image_size=(n, 2), frame=(n,), track=(n,))
    for name, shape in expected.items():
      if getattr(self, name).shape != shape:
        raise ValueError(f'KeypointSequence.{name}: shape {getattr(self, name).shape}, '
                         f'expected {shape}')

  def __len__(self) -> int:
    return len(self.frame)


@dataclasses.dataclass
class _Detections:
  """M detections in the file's own layout (K keypoints), before any checks."""
  layout: skeleton.KeypointFormat
  keypoints: np.ndarray  # [M, K, 2] float64
  confidence: np.ndarray  # [M, K] float64, possibly non-finite or outside [0, 1]
  frame: np.ndarray  # [M] int64
  track: np.ndarray  # [M] int64
  image_size: np.ndarray | None = None  # [M, 2] when the file has it


def _error(path, field: str, problem: str) -> KeypointFileError:
  return KeypointFileError(f'{path}: {field}: {problem}')


def _preview(value: Any, width: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= width else text[:width] + '...'


def _bad_json_number(value: Any) -> Any:
  """[the first leaf of nested lists that is not a number or null], else None."""
  stack = [value]
  while stack:
    leaf = stack.pop()
    if isinstance(leaf, (list, tuple)):
      stack.extend(leaf)
    elif leaf is None or isinstance(leaf, (float, np.floating)):
      continue
    elif isinstance(leaf, (int, np.integer)) and not isinstance(leaf, bool) and abs(
        leaf) <= _FLOAT_MAX:
      continue
    else:
      return [leaf]
  return None


def _numbers(value: Any, path, field: str) -> np.ndarray:
  """JSON/npz values -> float64 array (JSON null -> NaN); anything non-numeric raises."""
  if isinstance(value, np.ndarray):
    if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
      raise _error(path, field, f'dtype {value.dtype} is not numeric; save float coordinates')
    return value.astype(np.float64)
  bad = _bad_json_number(value)
  if bad is not None:
    kind = 'a number beyond the float64 range' if isinstance(bad[0], int) and not isinstance(
        bad[0], bool) else type(bad[0]).__name__
    raise _error(path, field, f'expected numbers, got {_preview(bad[0])} ({kind}) in '
                 f'{_preview(value)}')
  try:
    return np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError, OverflowError) as e:
    raise _error(path, field, f'expected numbers, got {_preview(value)} ({e})') from None


def _whole(values: np.ndarray, path, field: str) -> np.ndarray:
  if (np.any(~np.isfinite(values)) or np.any(values != np.round(values))
      or np.any(np.abs(values) >= 2.0**63)):
    raise _error(path, field, f'expected whole numbers within int64, got '
                 f'{_preview(values.tolist())}')
  return values.astype(np.int64)


def _in_int64(value: int, path, field: str, what: str) -> int:
  if not _INT64[0] <= value <= _INT64[1]:
    raise _error(path, field, f'{what} {_preview(value)} does not fit a 64-bit integer')
  return value


def _track_id(value: Any, path, field: str) -> int | None:
  """A person id (a number, or a list holding one); None or -1 mean none."""
  while isinstance(value, list) and len(value) == 1:
    value = value[0]
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(
      value).is_integer():
    raise _error(path, field, f'expected one whole number as person id, got {_preview(value)};'
                 ' pass track_ids=False to number detections within each frame instead')
  return None if value == -1 else _in_int64(int(value), path, field, 'person id')


def _frame_numbers(names: Sequence[int | str]) -> np.ndarray:
  """Frame ids from integer image ids or file names (rules in the module docstring)."""
  if all(isinstance(name, int) for name in names):
    return np.asarray(names, np.int64)
  numbers = {}
  for name in set(names):
    match = _LAST_NUMBER.search(pathlib.PurePath(str(name)).stem)
    # Numbers longer than int64 count as no number: the names are ranked instead.
    numbers[name] = int(match.group(1)) if match and len(match.group(1)) <= 18 else None
  values = list(numbers.values())
  if None in values or len(set(values)) < len(values):
    order = sorted(numbers, key=lambda n: (numbers[n] is None, numbers[n] or 0, str(n)))
    numbers = {name: rank for rank, name in enumerate(order)}
  return np.asarray([numbers[name] for name in names], np.int64)


def _tracks(frames: np.ndarray, ids: Sequence[int | None], path, use_ids: bool) -> np.ndarray:
  """Person ids when every detection has one, else the index within the frame."""
  present = [i is not None for i in ids]
  if use_ids and all(present):
    return np.asarray(ids, np.int64)
  if use_ids and any(present):
    k = present.index(False)
    raise _error(path, f'detection {k} (frame {frames[k]}) person id',
                 'missing while other detections have one; pass track_ids=False to number '
                 'detections within each frame instead')
  seen, out = {}, []
  for frame in frames.tolist():
    out.append(seen.get(frame, 0))
    seen[frame] = out[-1] + 1
  return np.asarray(out, np.int64)


def _layout(counts: dict[int, skeleton.KeypointFormat], current, size: int, per_keypoint: int,
            path, field: str) -> skeleton.KeypointFormat:
  """The layout of a keypoint field of `size` numbers (`per_keypoint` per keypoint);
  all detections of a file must share one."""
  unit = 'values' if per_keypoint > 1 else 'keypoints'
  expected = ' or '.join(f'{k * per_keypoint} ({f.name})' for k, f in counts.items())
  if size % per_keypoint or size // per_keypoint not in counts:
    raise _error(path, field, f'has {size} {unit}, expected {expected}')
  layout = counts[size // per_keypoint]
  if current is not None and layout != current:
    raise _error(path, field, f'is {layout.name} but earlier detections are {current.name}')
  return layout


# --------------------------------------------------------------------------------------
# Loading and format detection.


def _load_json(path: pathlib.Path) -> Any:
  try:
    text = path.read_text(encoding='utf-8')
  except UnicodeDecodeError as e:
    raise _error(path, 'file', f'is not UTF-8 text ({e.reason} at byte {e.start})') from None
  except OSError as e:
    raise _error(path, 'file', f'cannot be read ({e.strerror})') from None
  if not text.strip():
    raise _error(path, 'file', 'is empty')
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise _error(path, 'file', f'is invalid or truncated JSON: {e.msg} at line {e.lineno} '
                 f'column {e.colno}') from None
  except ValueError as e:  # Integer literals beyond Python's digit limit.
    raise _error(path, 'file', f'holds an unreadable number ({e})') from None
  except RecursionError:
    raise _error(path, 'file', 'nests arrays or objects too deeply to be keypoints') from None


class _FolderFrames:
  """The (file, parsed JSON) pairs of a folder's frames, each file parsed when iterated
  to, so that reading a folder holds one parsed frame at a time, not all of them."""

  def __init__(self, files: Sequence[pathlib.Path]):
    self.files = list(files)

  def __len__(self) -> int:
    return len(self.files)

  def __iter__(self):
    for file in self.files:
      yield file, _load_json(file)


def _load(path: pathlib.Path) -> tuple[str, Any]:
  """('npz', None) | ('json', data) | ('folder', _FolderFrames [(file, data), ...])."""
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == '.json')
    if not files:
      raise _error(path, 'folder', 'holds no .json files (expected OpenPose frames, '
                   'one *_keypoints.json per frame)')
    return 'folder', _FolderFrames(files)
  if not path.exists():
    raise _error(path, 'path', 'does not exist')
  try:
    with open(path, 'rb') as f:
      head = f.read(len(_NPZ_MAGIC[1]))
  except OSError as e:
    raise _error(path, 'file', f'cannot be read ({e.strerror})') from None
  if not head:
    raise _error(path, 'file', 'is empty')
  if head.startswith(_NPZ_MAGIC):
    return 'npz', None
  return 'json', _load_json(path)


def _json_format(path, data: Any) -> str:
  """The format of one parsed JSON document, from its structure."""
  if isinstance(data, dict):
    for key, fmt in (('people', 'openpose'), ('instance_info', 'mmpose'),
                     ('predictions', 'mmpose'), ('annotations', 'coco_annotations')):
      if key in data:
        return fmt
    raise _error(path, 'top level', f'object with keys {sorted(data)[:8]} is not '
                 f'{_KNOWN_JSON}')
  if isinstance(data, list) and not data:
    raise _error(path, 'top level', 'is an empty list: no detections')
  first = data[0] if isinstance(data, list) else None
  if isinstance(first, dict) and 'bbox' in first and 'keypoints' not in first:
    raise _error(path, 'detection 0', 'has a bbox but no keypoints: this is a COCO detection '
                 'results list (person boxes); run a 2D pose estimator on these boxes and '
                 'pass its keypoint results')
  if isinstance(first, dict) and isinstance(first.get('keypoints'), list):
    if first['keypoints'] and isinstance(first['keypoints'][0], list):
      return 'mmpose'
    by_count = {3 * skeleton.COCO17.num_keypoints: 'coco',
                3 * skeleton.HALPE26.num_keypoints: 'halpe'}
    count = len(first['keypoints'])
    if count not in by_count:
      raise _error(path, 'detection 0 keypoints', f'has {count} values, expected 51 '
                   '(COCO-17 x, y, v) or 78 (Halpe-26)')
    return by_count[count]
  raise _error(path, 'top level', f'{_preview(data)} is not {_KNOWN_JSON}')


def _format_of(path, kind: str, payload: Any) -> str:
  if kind == 'npz':
    return 'npz'
  if kind == 'json':
    return _json_format(path, payload)
  for file, data in payload:
    fmt = _json_format(file, data)
    if fmt not in _OPENPOSE_FORMATS:
      raise _error(file, 'format', f'is {fmt}, but folder {path} is read as OpenPose frames '
                   '(one *_keypoints.json per frame); mixed formats in one folder')
  return 'openpose'


def detect_format(path) -> str:
  """The format (one of FORMATS) of a keypoint file or folder, from its structure.

  Raises:
    KeypointFileError: unreadable input, unknown structure, or a folder mixing formats.
  """
  path = pathlib.Path(path)
  return _format_of(path, *_load(path))


# --------------------------------------------------------------------------------------
# Readers: (path, payload, use_ids, fmt) -> _Detections; one reader may serve several
# formats, which then differ by their LAYOUTS.


def _check_declared_size(fp, available: int, path, field: str) -> None:
  """Refuses an .npy header that declares more data than there is, before numpy tries
  to allocate it (a corrupt shape can ask for exabytes)."""
  version = np.lib.format.read_magic(fp)
  read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                 (2, 0): np.lib.format.read_array_header_2_0}.get(version)
  if read_header is None:
    return  # np.load names the unsupported version.
  shape, _, dtype = read_header(fp)
  declared, held = math.prod(shape) * dtype.itemsize, available - fp.tell()
  if declared > held:
    raise _error(path, field, f'declares an array of shape {shape} {dtype} ({declared} bytes) '
                 f'but holds {held} bytes: truncated or corrupt')


def _npz_arrays(path) -> dict[str, np.ndarray]:
  """The arrays of an .npz archive (or a bare .npy, read as `keypoints`) this reader uses."""
  try:
    with open(path, 'rb') as fp:
      if fp.read(len(_NPZ_MAGIC[1])) == _NPZ_MAGIC[1]:
        fp.seek(0)
        _check_declared_size(fp, path.stat().st_size, path, 'keypoints')
    loaded = np.load(path, allow_pickle=False)
  except KeypointFileError:
    raise
  except _NPZ_ERRORS as e:
    raise _error(path, 'file', f'is not a readable .npz archive ({type(e).__name__}: '
                 f'{e})') from None
  if isinstance(loaded, np.ndarray):
    return {'keypoints': _numbers(loaded, path, 'keypoints')}
  arrays = {}
  with loaded:
    if 'keypoints' not in loaded.files:
      raise _error(path, 'keypoints', f'missing; the archive holds {sorted(loaded.files)} '
                   '(expected keypoints [N, 17, 2] pixels in Human3.6M-17 order)')
    for key in sorted(set(_NPZ_KEYS) & set(loaded.files)):
      try:
        member = f'{key}.npy' if f'{key}.npy' in loaded.zip.namelist() else key
        with loaded.zip.open(member) as fp:
          _check_declared_size(fp, loaded.zip.getinfo(member).file_size, path, key)
        arrays[key] = loaded[key]
      except KeypointFileError:
        raise
      except _NPZ_ERRORS as e:
        raise _error(path, key, f'cannot be read ({type(e).__name__}: {e}); save plain '
                     'numeric arrays') from None
  return {key: _numbers(value, path, key) for key, value in arrays.items()}


def _read_npz(path, payload, use_ids, fmt: str) -> _Detections:
  del payload
  arrays = _npz_arrays(path)
  keypoints = arrays['keypoints']
  if keypoints.ndim == 2:
    keypoints = keypoints[None]
  if keypoints.ndim != 3 or keypoints.shape[1:] not in ((17, 2), (17, 3)):
    raise _error(path, 'keypoints', f'shape {keypoints.shape}, expected [N, 17, 2] (x, y '
                 f'pixels, {LAYOUTS[fmt][17].name} order) or [N, 17, 3] (x, y, confidence)')
  n = len(keypoints)
  if n == 0:
    raise _error(path, 'keypoints', 'holds no detections (N = 0)')
  confidence = None
  if keypoints.shape[2] == 3:
    third = keypoints[..., 2][np.isfinite(keypoints[..., 2])]
    if np.any((third < 0) | (third > 1)):
      raise _error(path, 'keypoints', f'third channel spans [{third.min():g}, {third.max():g}]'
                   ', outside [0, 1]: looks like 3D (x, y, z), but 2D pixels are expected; '
                   'save x, y as [N, 17, 2] and detector scores as `scores` [N, 17]')
    keypoints, confidence = keypoints[..., :2], keypoints[..., 2]
  score_keys = [k for k in ('scores', 'confidence') if k in arrays]
  if len(score_keys) + (confidence is not None) > 1:
    raise _error(path, 'scores', f'confidence given twice ({score_keys} and/or a third '
                 'keypoint channel); keep one')
  for key in score_keys:
    confidence = arrays[key]
    if confidence.shape != (n, 17) and not (n == 1 and confidence.shape == (17,)):
      raise _error(path, key, f'shape {confidence.shape}, expected [{n}, 17]')
    confidence = confidence.reshape(n, 17)
  if confidence is None:
    confidence = np.ones(keypoints.shape[:2])
  ids = {}
  for key in ('frame', 'track'):
    if key in arrays:
      values = arrays[key].reshape(-1)
      if values.shape != (n,):
        raise _error(path, key, f'has {values.size} values, expected {n} (one per pose)')
      ids[key] = _whole(values, path, key)
  frame = ids.get('frame', np.arange(n, dtype=np.int64))
  track = ids['track'] if 'track' in ids and use_ids else _tracks(frame, [None] * n, path, False)
  sizes = None
  if 'image_size' in arrays:
    sizes = arrays['image_size']
    if sizes.shape not in ((2,), (n, 2)):
      raise _error(path, 'image_size', f'shape {sizes.shape}, expected [2] or [{n}, 2] '
                   '(width, height)')
    sizes = np.broadcast_to(sizes, (n, 2))
  return _Detections(LAYOUTS[fmt][17], keypoints, confidence, frame, track, sizes)


def _image_id(value: Any, path, field: str) -> int | str:
  if isinstance(value, bool) or not isinstance(value, (int, str)):
    raise _error(path, field, f'expected an integer or a file name, got {_preview(value)}')
  return _in_int64(value, path, field, 'id') if isinstance(value, int) else value


def _read_results(path, data, use_ids, fmt: str) -> _Detections:
  """COCO-17 / Halpe-26 results lists, or a COCO annotation file {images, annotations}."""
  sizes_by_image, records = None, data
  if fmt == 'coco_annotations':
    if not isinstance(data, dict) or 'annotations' not in data:
      raise _error(path, 'top level', f'{_preview(data)} is not a COCO annotation file '
                   '{images, annotations}; a results list is format coco')
    records, images = data['annotations'], data.get('images')
    if images is not None and not isinstance(images, list):
      raise _error(path, 'images', f'expected a list of {{id, width, height}}, got '
                   f'{_preview(images)}')
    if images:  # Without `images` the sizes come from the image_size argument.
      sizes_by_image = {}
      for k, image in enumerate(images):
        if not isinstance(image, dict) or not {'id', 'width', 'height'} <= image.keys():
          raise _error(path, f'images[{k}]', f'expected {{id, width, height}}, got '
                       f'{_preview(image)}')
        image_id = _image_id(image['id'], path, f'images[{k}] id')
        size = (image['width'], image['height'])
        if sizes_by_image.setdefault(image_id, size) != size:
          raise _error(path, f'images[{k}]', f'image id {image_id!r} is listed twice with '
                       f'sizes {sizes_by_image[image_id]} and {size}')
  elif isinstance(data, dict):
    hint = ('is a COCO annotation file {images, annotations}: format coco_annotations'
            if 'annotations' in data else f'object is not {fmt} results')
    raise _error(path, 'top level', hint)
  if not isinstance(records, list) or not records:
    raise _error(path, 'detections', f'expected a non-empty list of {{image_id, keypoints, '
                 f'score}}, got {_preview(records)}')
  layout, values, image_ids, ids, sizes = None, [], [], [], []
  for k, record in enumerate(records):
    field = f'detection {k}'
    if not isinstance(record, dict) or not {'image_id', 'keypoints'} <= record.keys():
      raise _error(path, field, f'expected {{image_id, keypoints, ...}}, got {_preview(record)}')
    image_ids.append(_image_id(record['image_id'], path, f'{field} image_id'))
    field = f'{field} (image_id {image_ids[-1]!r})'
    flat = _numbers(record['keypoints'], path, f'{field} keypoints').reshape(-1)
    layout = _layout(LAYOUTS[fmt], layout, flat.size, 3, path, f'{field} keypoints')
    values.append(flat.reshape(-1, 3))
    ids.append(_track_id(record.get('idx', record.get('track_id')), path, f'{field} idx')
               if use_ids else None)
    if sizes_by_image is not None:
      if image_ids[-1] not in sizes_by_image:
        raise _error(path, f'{field} image_id', 'is not listed in "images" (no image size)')
      sizes.append(sizes_by_image[image_ids[-1]])
  values = np.stack(values)
  frames = _frame_numbers(image_ids)
  return _Detections(layout, values[..., :2], values[..., 2], frames,
                     _tracks(frames, ids, path, use_ids),
                     _numbers(sizes, path, 'images width/height') if sizes else None)


def _read_openpose(path, frames_data, use_ids, fmt: str) -> _Detections:
  """OpenPose frames: [(file, parsed JSON)], one per frame."""
  layout, values, file_of_row, ids, names = None, [], [], [], []
  for index, (file, data) in enumerate(frames_data):  # One parsed frame at a time.
    names.append(file.name)
    people = data.get('people') if isinstance(data, dict) else None
    if not isinstance(people, list):
      raise _error(file, 'people', 'missing or not a list: not an OpenPose frame')
    for k, person in enumerate(people):
      field = f'people[{k}]'
      flat = person.get('pose_keypoints_2d', person.get('pose_keypoints')) if isinstance(
          person, dict) else None
      if flat is None:
        raise _error(file, field, f'has no pose_keypoints_2d: {_preview(person)}')
      flat = _numbers(flat, file, f'{field} pose_keypoints_2d').reshape(-1)
      layout = _layout(LAYOUTS[fmt], layout, flat.size, 3, file,
                       f'{field} pose_keypoints_2d')
      values.append(flat.reshape(-1, 3))
      file_of_row.append(index)
      ids.append(_track_id(person.get('person_id'), file, f'{field} person_id')
                 if use_ids else None)
  frame_of_file = _frame_numbers(names)
  if not values:
    raise _error(path, 'people', f'no person in any of the {len(frames_data)} frames')
  frames = frame_of_file[np.asarray(file_of_row, np.int64)]
  empty = len(frames_data) - len(set(frames))
  if empty:
    logging.warning('%s: %d of %d OpenPose frames have no person', path, empty,
                    len(frames_data))
  values, frames = np.stack(values), np.asarray(frames, np.int64)
  return _Detections(layout, values[..., :2], values[..., 2], frames,
                     _tracks(frames, ids, path, use_ids))


def _read_mmpose(path, data, use_ids, fmt: str) -> _Detections:
  """MMPose {instance_info}, {predictions} or a bare list of instances (one image)."""
  if isinstance(data, dict) and isinstance(data.get('instance_info'), list):
    entries = []
    for k, item in enumerate(data['instance_info']):
      if not isinstance(item, dict) or 'instances' not in item:
        raise _error(path, f'instance_info[{k}]', f'expected {{frame_id, instances}}, got '
                     f'{_preview(item)}')
      entries.append((f'instance_info[{k}]', item.get('frame_id', k), item['instances']))
  elif isinstance(data, dict) and isinstance(data.get('predictions'), list):
    entries = [(f'predictions[{k}]', k, item) for k, item in enumerate(data['predictions'])]
  elif isinstance(data, list):
    entries = [('top level', 0, data)]
  else:
    raise _error(path, 'top level', 'is not MMPose predictions ({instance_info: [...]}, '
                 '{predictions: [...]} or a list of instances)')
  layout, points, scores, image_ids, ids = None, [], [], [], []
  for where, frame_id, instances in entries:
    if not isinstance(instances, list):
      raise _error(path, where, f'expected a list of instances, got {_preview(instances)}')
    for k, instance in enumerate(instances):
      field = f'{where} instance {k}'
      if not isinstance(instance, dict) or 'keypoints' not in instance:
        raise _error(path, field, f'expected {{keypoints, keypoint_scores}}, got '
                     f'{_preview(instance)}')
      xy = _numbers(instance['keypoints'], path, f'{field} keypoints')
      if xy.ndim != 2 or xy.shape[1] != 2:
        hint = ': looks like 3D (x, y, z)' if xy.ndim == 2 and xy.shape[1] == 3 else ''
        raise _error(path, f'{field} keypoints', f'shape {xy.shape}, expected [K, 2] 2D '
                     f'pixels{hint}')
      layout = _layout(LAYOUTS[fmt], layout, len(xy), 1, path, f'{field} keypoints')
      score = instance.get('keypoint_scores')
      score = np.ones(len(xy)) if score is None else _numbers(
          score, path, f'{field} keypoint_scores').reshape(-1)
      if score.shape != (len(xy),):
        raise _error(path, f'{field} keypoint_scores', f'has {score.size} values for '
                     f'{len(xy)} keypoints')
      points.append(xy)
      scores.append(score)
      image_ids.append(_image_id(frame_id, path, f'{where} frame_id'))
      ids.append(_track_id(instance.get('track_id'), path, f'{field} track_id')
                 if use_ids else None)
  if not points:
    raise _error(path, 'instances', f'no instance in any of the {len(entries)} frames')
  frames = _frame_numbers(image_ids)
  return _Detections(layout, np.stack(points), np.stack(scores), frames,
                     _tracks(frames, ids, path, use_ids))


_READERS = {
    'npz': _read_npz,
    'npz_coco17': _read_npz,
    'coco': _read_results,
    'coco_annotations': _read_results,
    'halpe': _read_results,
    'openpose': _read_openpose,
    'openpose_body25b': _read_openpose,
    'mmpose': _read_mmpose,
}


# --------------------------------------------------------------------------------------
# Checks shared by every format.


def _image_sizes(path, from_file, argument, n: int, max_side: int) -> np.ndarray:
  """[n, 2] int32 (width, height) from the file, else from the argument (see docstring)."""
  def valid(value, field):
    sizes = _numbers(value, path, field)
    if sizes.shape[-1:] != (2,) or np.any(~np.isfinite(sizes)) or np.any(
        sizes != np.round(sizes)) or np.any((sizes < 1) | (sizes > max_side)):
      raise _error(path, field, f'{_preview(sizes.tolist())} is not (width, height) in whole '
                   f'pixels within [1, {max_side}]')
    return sizes.astype(np.int32)
  arg = None
  if argument is not None:
    if isinstance(argument, str):
      parts = re.split(r'\s*[,x]\s*', argument.strip().lower())
      try:
        argument = [float(part) for part in parts]
      except ValueError:
        raise _error(path, 'image_size argument', f'expected numbers, got {argument!r} '
                     '(W,H in whole pixels)') from None
    arg = valid(argument, 'image_size argument').reshape(-1)
  if from_file is not None:
    sizes = valid(from_file, 'image_size')
    differs = np.flatnonzero(np.any(sizes != arg, axis=-1)) if arg is not None else []
    if len(differs):
      raise _error(path, 'image_size', f'the file says {sizes[differs[0]].tolist()} (width, '
                   f'height) but the image_size argument says {arg.tolist()}')
    return sizes
  if arg is None:
    raise _error(path, 'image_size', 'unknown: the file stores none, and pixel keypoints '
                 'cannot be normalized without it; pass image_size=(width, height) '
                 '(--image_size=W,H on the command line)')
  return np.broadcast_to(arg, (n, 2)).copy()


def _check_inside(path, keypoints, confidence, sizes, frame, track, margin: float):
  """Raises if a confident joint lies more than `margin` image sizes beyond the border."""
  size = sizes[:, None, :].astype(np.float64)
  far = (confidence[..., None] > 0) & ((keypoints < -margin * size)
                                       | (keypoints > (1 + margin) * size))
  if far.any():
    i, j, _ = np.argwhere(far)[0]
    x, y = keypoints[i, j].tolist()
    w, h = sizes[i].tolist()
    raise _error(path, 'keypoints', f'frame {frame[i]} (track {track[i]}): '
                 f'{skeleton.H36M_JOINT_NAMES[j]} at ({x:.6g}, {y:.6g}) lies more than '
                 f'{margin:g}x the image size outside the {w}x{h} image; wrong image size, or '
                 'coordinates not in pixels?')


def _convert(layout: skeleton.KeypointFormat, keypoints: np.ndarray,
             confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`layout.convert` in float64, so that absurd coordinates stay finite for the checks
  (float32 would turn them into inf, and inf times a zero weight into NaN elsewhere)."""
  weights = layout.weights.astype(np.float64)
  used = weights != 0
  coords = np.einsum('jk,...kc->...jc', weights, keypoints)
  return coords, np.where(used, confidence[..., None, :], np.inf).min(axis=-1)


def anatomy_score(layout: skeleton.KeypointFormat, keypoints: np.ndarray,
                  confidence: np.ndarray) -> tuple[float, int]:
  """How badly reading keypoints as `layout` fits human anatomy (lower is better).

  Per detection, the Human3.6M bones of ANATOMY_BONES with both ends confident give
  log(length / typical length); the terms are each bone's deviation from the detection's
  median (its scale) and each left-right pair's log length ratio, capped at
  ANATOMY_CAP. A detection's score is the mean of its terms (it needs
  ANATOMY_MIN_TERMS); the file's score is the median over detections.

  Args:
    layout: the keypoint layout to try.
    keypoints: [N, K, 2] pixels in the file's order; confidence: [N, K] (0 = missing).
  Returns:
    (score, number of detections scored); score is NaN when none could be.
  """
  names = skeleton.H36M_JOINT_NAMES
  start = np.array([names.index(a) for a, _, _ in ANATOMY_BONES])
  stop = np.array([names.index(b) for _, b, _ in ANATOMY_BONES])
  typical = np.log([length for _, _, length in ANATOMY_BONES])
  with np.errstate(all='ignore'), warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # All-NaN rows: detections unscored.
    joints, joint_confidence = _convert(layout, keypoints, confidence)
    seen = (joint_confidence[:, start] > 0) & (joint_confidence[:, stop] > 0)
    length = np.linalg.norm(joints[:, start] - joints[:, stop], axis=-1)
    ratio = np.where(seen, np.log(np.maximum(length, 1e-9)) - typical, np.nan)
    deviation = np.abs(ratio - np.nanmedian(ratio, axis=1, keepdims=True))
    left, right = np.array(ANATOMY_PAIRS).T
    asymmetry = np.abs(ratio[:, left] - ratio[:, right])
    terms = np.minimum(np.concatenate([deviation, asymmetry], axis=1), ANATOMY_CAP)
    count = np.sum(np.isfinite(terms), axis=1)
    per_detection = np.nanmean(terms, axis=1)[count >= ANATOMY_MIN_TERMS]
    per_detection = per_detection[np.isfinite(per_detection)]
  if not per_detection.size:
    return float('nan'), 0
  return float(np.median(per_detection)), int(per_detection.size)


def _rivals(fmt: str, layout: skeleton.KeypointFormat) -> list[tuple[str, Any]]:
  """(format, layout) of every other format its reader reads with the same count."""
  count = layout.num_keypoints
  return [(other, LAYOUTS[other][count]) for other in FORMATS
          if _READERS[other] is _READERS[fmt] and count in LAYOUTS[other]
          and LAYOUTS[other][count] != layout]


def _check_anatomy(path, fmt: str, requested: bool, layout, keypoints, confidence) -> float:
  """Raises when a rival layout fits the anatomy clearly better; returns `layout`'s score."""
  score, _ = anatomy_score(layout, keypoints, confidence)
  for other, rival in _rivals(fmt, layout):
    rival_score, _ = anatomy_score(rival, keypoints, confidence)
    if rival_score < score - ANATOMY_MARGIN and rival_score < ANATOMY_RATIO * score:
      how = 'requested' if requested else 'detected by keypoint count'
      raise _error(path, 'keypoint layout', f'the {layout.num_keypoints} keypoints per '
                   f'detection fit {rival.name} (format {other}: anatomy score '
                   f'{rival_score:.2f}) better than {layout.name} (format {fmt}, {how}: '
                   f'{score:.2f}); both have {layout.num_keypoints} keypoints, so the file '
                   f'does not say which it is. Choose with --format={other} or '
                   f'--format={fmt} --noanatomy_check (score: bone lengths against human '
                   'proportions and left-right symmetry, 0 = ideal)')
  return score


def _finish(path, fmt: str, det: _Detections, image_size, outside_margin: float,
            max_image_side: int, requested: bool, anatomy_check: bool) -> KeypointSequence:
  """Masks, converts to Human3.6M-17, checks and sorts the detections of one input."""
  nonfinite = ~(np.isfinite(det.keypoints).all(-1) & np.isfinite(det.confidence))
  if nonfinite.any():
    logging.warning('%s: %d keypoints with NaN, Inf or null coordinates or confidence are '
                    'marked missing (confidence 0)', path, nonfinite.sum())
  file_confidence = np.clip(np.where(nonfinite, 0.0, det.confidence), 0.0, 1.0)
  file_keypoints = np.where(nonfinite[..., None], 0.0, det.keypoints)
  with np.errstate(over='ignore', invalid='ignore'):  # _check_inside names absurd values.
    keypoints, confidence = _convert(det.layout, file_keypoints, file_confidence)
  order = np.lexsort((det.frame, det.track))
  keypoints, confidence = keypoints[order], confidence[order].astype(np.float32)
  frame, track = det.frame[order], det.track[order]
  twice = np.flatnonzero((np.diff(track) == 0) & (np.diff(frame) == 0))
  if twice.size:
    raise _error(path, 'frame', f'frame {frame[twice[0]]} occurs twice in track '
                 f'{track[twice[0]]}; one person appears once per frame (pass '
                 'track_ids=False if the person ids are not real tracks)')
  sizes = _image_sizes(path, None if det.image_size is None else det.image_size[order],
                       image_size, len(order), max_image_side)
  _check_inside(path, keypoints, confidence, sizes, frame, track, outside_margin)
  if anatomy_check:
    score = _check_anatomy(path, fmt, requested, det.layout, file_keypoints, file_confidence)
  else:
    score = anatomy_score(det.layout, file_keypoints, file_confidence)[0]
  keypoints = np.where(confidence[..., None] > 0, keypoints, 0.0).astype(np.float32)
  empty = np.flatnonzero(confidence.max(-1) <= 0)
  if empty.size:
    logging.warning('%s: %d detections have no confident joint (first: track %d, frame %d); '
                    'kept, their 3D pose is a prior guess only', path, empty.size,
                    track[empty[0]], frame[empty[0]])
  return KeypointSequence(keypoints, confidence, sizes, frame, track, str(path), fmt,
                          det.layout.name, score)


def read_keypoints(path, *, format: str | None = None,  # pylint: disable=redefined-builtin
                   image_size: str | Sequence[int] | None = None, track_ids: bool = True,
                   outside_margin: float = 1.0, max_image_side: int = 32768,
                   anatomy_check: bool = True) -> KeypointSequence:
  """Reads 2D keypoints of any of FORMATS as a Human3.6M-17 sequence (module docstring).

  Args:
    path: a keypoint file, or a folder of OpenPose `*_keypoints.json` frames.
    format: one of FORMATS; None detects it from the file's structure.
    image_size: (width, height) pixels, or a 'W,H' string; needed when the file has none.
    track_ids: use the file's person ids as tracks; False numbers the detections within
      each frame instead (for files whose ids are not tracks).
    outside_margin: confident joints may lie at most this many image sizes beyond the
      image border.
    max_image_side: the largest accepted image width or height, pixels.
    anatomy_check: refuse a file whose anatomy fits another format with the same
      keypoint count clearly better (module docstring); False reads it as `format` says.
  Returns:
    KeypointSequence with N detections: keypoints [N, 17, 2], confidence [N, 17],
    image_size [N, 2], frame [N], track [N], sorted by (track, frame).
  Raises:
    KeypointFileError: the input cannot be used; the message names file, field, problem.
  """
  path = pathlib.Path(path)
  if format is not None and format not in FORMATS:
    raise _error(path, 'format', f'{format!r} is not one of {FORMATS}')
  kind, payload = _load(path)
  fmt = format or _format_of(path, kind, payload)
  fits = {'npz': fmt in _NPZ_FORMATS, 'folder': fmt in _OPENPOSE_FORMATS,
          'json': fmt not in _NPZ_FORMATS}[kind]
  if not fits:
    raise _error(path, 'format', f'{fmt} was requested, but this input is '
                 f'{ {"npz": "an npz archive", "json": "a JSON file"}.get(kind, "a folder")}')
  if kind == 'json' and fmt in _OPENPOSE_FORMATS:
    payload = [(path, payload)]
  detections = _READERS[fmt](path, payload, track_ids, fmt)
  return _finish(path, fmt, detections, image_size, outside_margin, max_image_side,
                 requested=format is not None, anatomy_check=anatomy_check)
