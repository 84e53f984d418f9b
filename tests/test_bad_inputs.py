"""The catalogue of bad keypoint inputs and the exact outcome of each.

Every case either raises `KeypointFileError` whose message names the file, the field and
the problem, or is read with the documented mask (keypoint_io's module docstring). The
last section covers the checkpoints `launch/infer.py` refuses, with their exact message.
"""

import json
import logging
import re

from absl import flags
import numpy as np
import pytest

import pipeline_fixture
from hipart_jax import checkpoints
from hipart_jax import keypoint_io
from hipart_jax import skeleton
from launch import infer

SIZE = (640, 480)
_POSE = np.array([[320 + 4 * j, 200 + 6 * j] for j in range(17)], np.float64)  # COCO-17 px


def _coco(image_id=0, xy=_POSE, scores=None, **extra):
  scores = np.full(len(xy), 0.9) if scores is None else np.asarray(scores, np.float64)
  flat = np.concatenate([xy, scores[:, None]], -1).reshape(-1).tolist()
  return dict(image_id=image_id, category_id=1, keypoints=flat, score=0.8, **extra)


def _json(path, data):
  path.write_text(json.dumps(data))
  return path


def _npz(path, **arrays):
  arrays.setdefault('keypoints', np.tile(skeleton.COCO17.convert(_POSE)[0], (3, 1, 1)))
  arrays.setdefault('image_size', np.array(SIZE))
  np.savez(path, **arrays)
  return path


def _raises(path, field, problem, shown=None, **kwargs):
  """Reads `path`, expecting an error that names `shown` (default: path), field, problem."""
  with pytest.raises(keypoint_io.KeypointFileError) as info:
    keypoint_io.read_keypoints(path, **kwargs)
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  assert message.startswith(f'{shown or path}: '), message
  assert field in message, message
  assert re.search(problem, message), message
  return message


# ---- Files that are not keypoint files at all.


def test_nonexistent_path(tmp_path):
  _raises(tmp_path / 'nope.json', 'path', 'does not exist')


@pytest.mark.parametrize('name,content', [('empty.json', ''), ('blank.json', ' \n\t'),
                                          ('empty.npz', '')])
def test_empty_file(tmp_path, name, content):
  path = tmp_path / name
  path.write_text(content)
  _raises(path, 'file', 'is empty')


def test_truncated_json(tmp_path):
  path = tmp_path / 'cut.json'
  path.write_text(json.dumps([_coco()])[:100])
  _raises(path, 'file', r'invalid or truncated JSON: .* line 1 column 101')


def test_binary_junk(tmp_path):
  path = tmp_path / 'junk.json'
  path.write_bytes(b'\xff\xfe\x00garbage')
  _raises(path, 'file', 'is not UTF-8 text')


@pytest.mark.parametrize('data,problem', [
    ({'poses': [1, 2]}, r"object with keys \['poses'\] is not a COCO/Halpe results list"),
    ([1, 2, 3], 'is not a COCO/Halpe results list'),
    ([], 'is an empty list: no detections'),
    ('hello', 'is not a COCO'),
])
def test_json_of_unknown_shape(tmp_path, data, problem):
  _raises(_json(tmp_path / 'odd.json', data), 'top level', problem)


def test_directory_without_json(tmp_path):
  (tmp_path / 'frame_0.png').write_bytes(b'\x89PNG')
  _raises(tmp_path, 'folder', r'holds no \.json files')


def test_mixed_formats_in_one_folder(tmp_path):
  frame = dict(version=1.3, people=[dict(person_id=[-1], pose_keypoints_2d=[1.0] * 75)])
  _json(tmp_path / 'a_000000000000_keypoints.json', frame)
  coco = _json(tmp_path / 'b_results.json', [_coco()])
  _raises(tmp_path, 'format', r'is coco, but folder .* mixed formats', shown=coco,
          image_size=SIZE)


def test_openpose_folder_without_people(tmp_path):
  for k in range(2):
    _json(tmp_path / f'v_{k:012d}_keypoints.json', dict(version=1.3, people=[]))
  _raises(tmp_path, 'people', 'no person in any of the 2 frames', image_size=SIZE)


# ---- Wrong counts, shapes and types.


@pytest.mark.parametrize('count', [50, 3, 0])  # 3 values: a single joint.
def test_wrong_keypoint_count_first_detection(tmp_path, count):
  record = _coco()
  record['keypoints'] = record['keypoints'][:count]
  _raises(_json(tmp_path / 'r.json', [record]), 'detection 0 keypoints',
          f'has {count} values, expected 51')


def test_wrong_keypoint_count_later_detection(tmp_path):
  records = [_coco(0), _coco(1), _coco(2)]
  records[2]['keypoints'] += [1.0] * 27  # 78 values: Halpe-26 inside a COCO-17 file.
  _raises(_json(tmp_path / 'r.json', records), 'detection 2 (image_id 2) keypoints',
          r'has 78 values, expected 51 \(coco17\)', image_size=SIZE)


def test_openpose_wrong_count_names_the_frame_file(tmp_path):
  good = dict(people=[dict(person_id=[-1], pose_keypoints_2d=[1.0] * 75)])
  bad = dict(people=[dict(person_id=[-1], pose_keypoints_2d=[1.0] * 60)])
  _json(tmp_path / 'v_000000000000_keypoints.json', good)
  bad_file = _json(tmp_path / 'v_000000000001_keypoints.json', bad)
  _raises(tmp_path, 'people[0] pose_keypoints_2d',
          r'has 60 values, expected 75 \(openpose_body25\) or 54', shown=bad_file,
          image_size=SIZE)


@pytest.mark.parametrize('points,problem', [
    ([[1.0, 2.0, 3.0]] * 17, r'shape \(17, 3\), expected \[K, 2\] 2D pixels: looks like 3D'),
    ([[1.0, 2.0]] * 18, r'has 18 keypoints, expected 17 \(coco17\) or 26 \(halpe26\)'),
])
def test_mmpose_bad_keypoints(tmp_path, points, problem):
  data = dict(instance_info=[dict(frame_id=1, instances=[dict(keypoints=points)])])
  _raises(_json(tmp_path / 'mm.json', data), 'instance_info[0] instance 0 keypoints', problem)


def test_single_joint_npz(tmp_path):
  _raises(_npz(tmp_path / 'one.npz', keypoints=np.zeros((4, 1, 2))), 'keypoints',
          r'shape \(4, 1, 2\), expected \[N, 17, 2\]')


def test_npz_missing_keypoints(tmp_path):
  path = tmp_path / 'vp3d.npz'
  np.savez(path, positions_2d=np.zeros((3, 17, 2)), image_size=np.array(SIZE))
  _raises(path, 'keypoints', r"missing; the archive holds \['image_size', 'positions_2d'\]")


@pytest.mark.parametrize('keypoints,problem', [
    (np.full((2, 17, 2), 'a'), 'dtype <U1 is not numeric'),
    (np.ones((2, 17, 2), bool), 'dtype bool is not numeric'),
    (np.array([None] * 3, object), r'cannot be read \(.*pickle'),
])
def test_npz_non_numeric_keypoints(tmp_path, keypoints, problem):
  _raises(_npz(tmp_path / 'x.npz', keypoints=keypoints), 'keypoints', problem)


def test_json_strings_for_numbers(tmp_path):
  record = _coco()
  record['keypoints'][4] = 'left'
  _raises(_json(tmp_path / 'r.json', [record]), 'detection 0 (image_id 0) keypoints',
          "expected numbers, got .*'left'", image_size=SIZE)


def test_npz_3d_array_is_refused(tmp_path):
  points = np.concatenate([np.zeros((2, 17, 2)), np.full((2, 17, 1), 3.5)], -1)  # z meters
  _raises(_npz(tmp_path / 'x.npz', keypoints=points), 'keypoints',
          r'third channel spans \[3.5, 3.5\], outside \[0, 1\]: looks like 3D')


def test_npz_confidence_given_twice(tmp_path):
  points = np.concatenate([np.zeros((3, 17, 2)), np.ones((3, 17, 1))], -1)
  _raises(_npz(tmp_path / 'x.npz', keypoints=points, scores=np.ones((3, 17))), 'scores',
          'confidence given twice')


def test_npz_fractional_frame_ids(tmp_path):
  _raises(_npz(tmp_path / 'x.npz', frame=np.array([0, 1.5, 2])), 'frame',
          'expected whole numbers')


def test_truncated_npz(tmp_path):
  good = _npz(tmp_path / 'good.npz').read_bytes()
  path = tmp_path / 'cut.npz'
  path.write_bytes(good[:len(good) // 2])
  _raises(path, 'file', 'is not a readable .npz archive')


# ---- Values: non-finite, empty frames, out of the image.


def test_nan_and_inf_coordinates_are_masked(tmp_path, caplog):
  record = _coco()
  record['keypoints'][3 * 9] = None  # JSON null x of the COCO left wrist.
  record['keypoints'][3 * 10 + 1] = float('inf')  # Right wrist y.
  path = tmp_path / 'r.json'
  path.write_text(json.dumps([record]))  # Python's json writes Infinity.
  with caplog.at_level(logging.WARNING):
    sequence = keypoint_io.read_keypoints(path, image_size=SIZE)
  wrists = [skeleton.H36M_JOINT_NAMES.index(n) for n in ('l_wrist', 'r_wrist')]
  assert np.all(sequence.confidence[0, wrists] == 0)
  assert np.all(sequence.keypoints[0, wrists] == 0)
  assert np.all(np.delete(sequence.confidence[0], wrists) > 0)
  assert np.all(np.isfinite(sequence.keypoints))
  assert '2 keypoints with NaN, Inf or null' in caplog.text


def test_nan_confidence_in_npz_is_masked(tmp_path, caplog):
  scores = np.ones((3, 17))
  scores[1, 0] = np.nan
  with caplog.at_level(logging.WARNING):
    sequence = keypoint_io.read_keypoints(_npz(tmp_path / 'x.npz', scores=scores))
  assert sequence.confidence[1, 0] == 0 and np.sum(sequence.confidence == 0) == 1
  assert '1 keypoints with NaN' in caplog.text


def test_all_zero_confidence_frame_is_kept_and_reported(tmp_path, caplog):
  records = [_coco(0), _coco(1, scores=np.zeros(17)), _coco(2)]
  with caplog.at_level(logging.WARNING):
    sequence = keypoint_io.read_keypoints(_json(tmp_path / 'r.json', records),
                                          image_size=SIZE)
  np.testing.assert_array_equal(sequence.frame, [0, 1, 2])
  assert np.all(sequence.confidence[1] == 0) and np.all(sequence.keypoints[1] == 0)
  assert np.all(sequence.confidence[[0, 2]] > 0)
  assert '1 detections have no confident joint (first: track 0, frame 1)' in caplog.text


def test_one_confident_joint_is_kept(tmp_path):
  scores = np.zeros(17)
  scores[0] = 0.7  # Only the nose.
  sequence = keypoint_io.read_keypoints(_json(tmp_path / 'r.json', [_coco(scores=scores)]),
                                        image_size=SIZE)
  np.testing.assert_array_equal(np.flatnonzero(sequence.confidence[0]),
                                [skeleton.H36M_JOINT_NAMES.index('neck_nose')])


def test_keypoints_far_outside_the_image(tmp_path):
  records = [_coco(k) for k in range(9)]
  records[7]['keypoints'][3 * 15] = 3 * SIZE[0]  # Left ankle x, a whole image beyond.
  _raises(_json(tmp_path / 'r.json', records), 'keypoints',
          r'frame 7 \(track 0\): l_ankle at \(1920, .*\) lies more than 1x the image size '
          r'outside the 640x480 image', image_size=SIZE)


def test_slightly_outside_the_image_is_accepted(tmp_path):
  record = _coco()
  record['keypoints'][3 * 15] = 1.9 * SIZE[0]  # 0.9 image widths beyond the right border.
  record['keypoints'][3 * 16 + 1] = -0.9 * SIZE[1]  # 0.9 image heights above the top.
  sequence = keypoint_io.read_keypoints(_json(tmp_path / 'r.json', [record]), image_size=SIZE)
  assert sequence.keypoints[0, skeleton.H36M_JOINT_NAMES.index('l_ankle'), 0] == 1216
  assert sequence.keypoints[0, skeleton.H36M_JOINT_NAMES.index('r_ankle'), 1] == -432


def test_far_outside_but_missing_joint_is_accepted(tmp_path):
  scores = np.full(17, 0.9)
  scores[15] = 0.0
  record = _coco(scores=scores)
  record['keypoints'][3 * 15] = 1e7
  sequence = keypoint_io.read_keypoints(_json(tmp_path / 'r.json', [record]), image_size=SIZE)
  assert sequence.confidence[0, skeleton.H36M_JOINT_NAMES.index('l_ankle')] == 0
  assert np.abs(sequence.keypoints).max() < 1000


# ---- Image sizes.


@pytest.mark.parametrize('argument', ['-640,480', (640, 0), '640x480x3', 'wide,tall',
                                      (1e9, 480), (640.5, 480)])
def test_bad_image_size_argument(tmp_path, argument):
  _raises(_json(tmp_path / 'r.json', [_coco()]), 'image_size argument',
          r'is not \(width, height\)|expected numbers', image_size=argument)


@pytest.mark.parametrize('sizes', [np.array([-640, 480]), np.array([640, 1e6]),
                                   np.array([[640, 480]] * 2), np.array([640.0, np.nan])])
def test_bad_image_size_in_npz(tmp_path, sizes):
  _raises(_npz(tmp_path / 'x.npz', image_size=sizes), 'image_size',
          r'is not \(width, height\)|expected \[2\] or \[3, 2\]')


def test_image_size_missing(tmp_path):
  _raises(_json(tmp_path / 'r.json', [_coco()]), 'image_size',
          r'unknown: .*--image_size=W,H')


def test_image_size_argument_disagrees_with_file(tmp_path):
  _raises(_npz(tmp_path / 'x.npz'), 'image_size',
          r'the file says \[640, 480\] .* the image_size argument says \[1920, 1080\]',
          image_size='1920,1080')


# ---- Frames and tracks.


def test_duplicated_frame_in_npz_track(tmp_path):
  _raises(_npz(tmp_path / 'x.npz', frame=np.array([4, 5, 4]), track=np.array([2, 2, 2])),
          'frame', 'frame 4 occurs twice in track 2')


def test_alphapose_ids_that_are_not_tracks(tmp_path):
  records = [_coco('0.jpg', idx=[0.0]), _coco('0.jpg', idx=[0.0])]
  path = _json(tmp_path / 'alphapose-results.json', records)
  _raises(path, 'frame', 'frame 0 occurs twice in track 0.*track_ids=False',
          image_size=SIZE)
  sequence = keypoint_io.read_keypoints(path, image_size=SIZE, track_ids=False)
  np.testing.assert_array_equal(sequence.track, [0, 1])


def test_track_ids_on_some_detections_only(tmp_path):
  records = [_coco(0, track_id=3), _coco(1)]
  _raises(_json(tmp_path / 'r.json', records), 'detection 1 (frame 1) person id',
          'missing while other detections have one', image_size=SIZE)


def test_non_numeric_track_id(tmp_path):
  path = _json(tmp_path / 'r.json', [_coco(0, idx='bob'), _coco(0, idx='bob')])
  _raises(path, 'detection 0 (image_id 0) idx', 'expected one whole number as person id',
          image_size=SIZE)
  sequence = keypoint_io.read_keypoints(path, image_size=SIZE, track_ids=False)
  np.testing.assert_array_equal(sequence.track, [0, 1])


def test_bad_image_id(tmp_path):
  _raises(_json(tmp_path / 'r.json', [_coco(image_id=[1])]), 'detection 0 image_id',
          'expected an integer or a file name', image_size=SIZE)


def test_coco_detection_boxes_without_keypoints(tmp_path):
  boxes = [dict(image_id=785, category_id=1, bbox=[277.1, 45.7, 225.1, 333.6], score=0.99)]
  _raises(_json(tmp_path / 'det.json', boxes), 'detection 0',
          'has a bbox but no keypoints: this is a COCO detection results list')


def _annotations(images, image_ids=(1,)):
  return dict(images=images, annotations=[_coco(image_id=i) for i in image_ids])


def test_coco_annotations_image_listed_twice_with_two_sizes(tmp_path):
  images = [dict(id=1, width=640, height=480), dict(id=1, width=320, height=240)]
  _raises(_json(tmp_path / 'gt.json', _annotations(images)), 'images[1]',
          r"image id 1 is listed twice with sizes \(640, 480\) and \(320, 240\)")


def test_coco_annotations_image_not_listed(tmp_path):
  _raises(_json(tmp_path / 'gt.json', _annotations([dict(id=1, width=640, height=480)],
                                                    image_ids=(2,))),
          'detection 0 (image_id 2) image_id', 'is not listed in "images"')


def test_coco_annotations_without_images_take_the_argument(tmp_path):
  sequence = keypoint_io.read_keypoints(_json(tmp_path / 'gt.json', _annotations([])),
                                        image_size=SIZE)
  assert sequence.format == 'coco_annotations'
  np.testing.assert_array_equal(sequence.image_size, [SIZE])


@pytest.mark.parametrize('field,value,problem', [
    ('idx', 2**63, 'person id 9223372036854775808 does not fit a 64-bit integer'),
    ('idx', [-2**63 - 1], 'person id -9223372036854775809 does not fit'),
    ('image_id', 2**63, 'id 9223372036854775808 does not fit a 64-bit integer'),
])
def test_integer_ids_beyond_int64(tmp_path, field, value, problem):
  _raises(_json(tmp_path / 'r.json', [_coco(**{field: value})]), field, problem,
          image_size=SIZE)


def test_frame_number_in_a_name_beyond_int64(tmp_path):
  names = [f'img_{10**30 + k}.jpg' for k in (1, 0)]  # Ranked instead: 1 and 0.
  sequence = keypoint_io.read_keypoints(
      _json(tmp_path / 'r.json', [_coco(image_id=n) for n in names]), image_size=SIZE)
  np.testing.assert_array_equal(sequence.frame, [0, 1])


@pytest.mark.parametrize('value,problem', [
    (True, r'got True \(bool\)'), (10**400, r'got 10+\.\.\. \(a number beyond the float64'),
    ({'x': 1}, r"got \{'x': 1\} \(dict\)")], ids=['bool', 'huge_int', 'object'])
def test_json_keypoint_values_that_are_not_numbers(tmp_path, value, problem):
  record = _coco()
  record['keypoints'][7] = value
  _raises(_json(tmp_path / 'r.json', [record]), 'detection 0 (image_id 0) keypoints',
          'expected numbers, ' + problem, image_size=SIZE)


def test_json_integer_literal_beyond_the_digit_limit(tmp_path):
  path = tmp_path / 'r.json'
  path.write_text('[{"image_id": ' + '9' * 5000 + ', "keypoints": []}]')
  _raises(path, 'file', 'holds an unreadable number')


def test_json_nested_too_deeply(tmp_path):
  path = tmp_path / 'r.json'
  path.write_text('[' * 100000 + ']' * 100000)
  _raises(path, 'file', 'nests arrays or objects too deeply')


def test_npz_frame_beyond_int64(tmp_path):
  _raises(_npz(tmp_path / 'x.npz', frame=np.array([0, 1e30, 2])), 'frame',
          'expected whole numbers within int64')


def test_huge_coordinate_is_named_not_turned_into_nan(tmp_path):
  """1e300 px overflows float32: converted in float64 it is refused as outside the image
  instead of spreading NaN into the joints built from it."""
  xy = _POSE.copy()
  xy[11] = [1e300, 1e300]  # Left hip: pelvis and spine are built from it.
  _raises(_json(tmp_path / 'r.json', [_coco(xy=xy)]), 'keypoints',
          r'frame 0 \(track 0\): pelvis at \(5e\+299, 5e\+299\) lies more than 1x',
          image_size=SIZE)


# ---- Format requests that do not fit the input.


@pytest.mark.parametrize('fmt,problem', [('npz', 'npz was requested, but this input is a '
                                          'JSON file'),
                                         ('npz_coco17', 'npz_coco17 was requested'),
                                         ('coco_annotations', 'is not a COCO annotation file'),
                                         ('yaml', r"'yaml' is not one of \('npz'")])
def test_requested_format_does_not_fit(tmp_path, fmt, problem):
  _raises(_json(tmp_path / 'r.json', [_coco()]), 'format', problem, format=fmt,
          image_size=SIZE)


def test_requested_openpose_for_coco_results(tmp_path):
  _raises(_json(tmp_path / 'r.json', [_coco()]), 'people',
          'missing or not a list: not an OpenPose frame', format='openpose', image_size=SIZE)


def test_requested_halpe_for_coco_results(tmp_path):
  _raises(_json(tmp_path / 'r.json', [_coco()]), 'detection 0 (image_id 0) keypoints',
          r'has 51 values, expected 78 \(halpe26\)', format='halpe', image_size=SIZE)


def test_requested_coco_results_for_an_annotation_file(tmp_path):
  _raises(_json(tmp_path / 'gt.json', _annotations([dict(id=1, width=640, height=480)])),
          'top level', 'is a COCO annotation file .*: format coco_annotations', format='coco')


def test_requested_openpose_body25b_for_a_folder_of_coco_results(tmp_path):
  (tmp_path / 'op').mkdir()
  _json(tmp_path / 'op' / 'a.json', [_coco()])
  _raises(tmp_path / 'op', 'people', 'missing or not a list: not an OpenPose frame',
          shown=tmp_path / 'op' / 'a.json', format='openpose_body25b')


# ---- Checkpoints launch/infer.py refuses: one line, exactly.


def _infer_error(checkpoint, tmp_path):
  """The SystemExit message of `python -m launch.infer` (flags, main) on a good input."""
  flag_values = flags.FlagValues()
  infer.define_flags(flag_values)
  flag_values(['infer', f'--checkpoint={checkpoint}', f'--input={_npz(tmp_path / "x.npz")}',
               f'--output={tmp_path / "out.npz"}',
               '--cpu_devices=1'])  # In-process: leave this process's JAX devices alone.
  with pytest.raises(SystemExit) as info:
    infer.main(['infer'], flag_values)
  assert not (tmp_path / 'out.npz').exists()
  return info.value.code


def test_checkpoint_directory_that_does_not_exist(tmp_path):
  missing = tmp_path / 'no_such_run'
  assert _infer_error(missing, tmp_path) == (
      f"infer: error: --checkpoint: checkpoint directory '{missing}' does not exist")


def test_checkpoint_of_another_stage(tiny_pipeline, tmp_path):
  msst = tiny_pipeline['msst'] / checkpoints.CHECKPOINT_SUBDIR
  assert _infer_error(tiny_pipeline['msst'], tmp_path) == (
      f"infer: error: --checkpoint: checkpoint '{msst}' step {pipeline_fixture.MSST_STEPS} "
      "holds stage 'msst', expected stage 'lifter'")
