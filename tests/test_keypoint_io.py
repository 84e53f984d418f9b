"""Format round trips for hipart_jax.keypoint_io.

One known COCO-17 pose set (two people, three frames, one missing keypoint) is written in
every supported format; each must read back as the same Human3.6M-17 sequence as the
equivalent npz file.
"""

import json

import numpy as np
import pytest

from hipart_jax import keypoint_io
from hipart_jax import skeleton

IMAGE_SIZE = (1920, 1080)
FRAMES = (10, 11, 12)
PEOPLE = 2
# A standing person in COCO-17 order (pixels, image of 1920x1080), facing the camera.
_TEMPLATE = np.array([
    [0, -150], [-10, -160], [10, -160], [-25, -155], [25, -155],  # nose, eyes, ears
    [-60, -100], [60, -100], [-80, -20], [80, -20], [-90, 50], [90, 50],  # arms
    [-40, 50], [40, 50], [-45, 180], [45, 180], [-50, 300], [50, 300]], np.float64)


def _coco_pose_set():
  """([P, T, 17, 2] pixels, [P, T, 17] scores): person p at frame t, COCO-17 order."""
  rng = np.random.default_rng(0)
  centers = np.array([[600.0, 500.0], [1300.0, 520.0]])
  xy = (_TEMPLATE[None, None] + centers[:, None, None]
        + rng.normal(0, 8, (PEOPLE, len(FRAMES), 17, 2)))
  scores = rng.uniform(0.3, 1.0, (PEOPLE, len(FRAMES), 17))
  scores[1, 1, 9] = 0.0  # Person 1 loses the left wrist in the second frame.
  return xy, scores


def _named_points(xy, scores):
  """Every keypoint name any layout uses -> ([..., 2], [...]), consistent with COCO-17.

  Points COCO-17 lacks are built the way the Human3.6M tables read them from COCO-17
  (neck = mid-shoulders, hip = mid-hips, head top = mean of eyes and ears, confidence
  the minimum), so every layout converts to the same Human3.6M pose.
  """
  names = dict(zip(skeleton.COCO17.keypoint_names,
                   zip(np.moveaxis(xy, -2, 0), np.moveaxis(scores, -1, 0))))

  def mean(*keys):
    return (np.mean([names[k][0] for k in keys], axis=0),
            np.min([names[k][1] for k in keys], axis=0))
  names['neck'] = mean('l_shoulder', 'r_shoulder')
  names['hip'] = names['mid_hip'] = mean('l_hip', 'r_hip')
  names['head_top'] = mean('l_eye', 'r_eye', 'l_ear', 'r_ear')
  for side in ('l', 'r'):
    ankle_xy, ankle_score = names[f'{side}_ankle']
    for k, foot in enumerate(('big_toe', 'small_toe', 'heel')):
      names[f'{side}_{foot}'] = (ankle_xy + [5.0 * k, 20.0], ankle_score)
  return names


def _in_layout(layout):
  """([P, T, K, 2], [P, T, K]) of the pose set in `layout`'s keypoint order."""
  names = _named_points(*_coco_pose_set())
  xy = np.stack([names[k][0] for k in layout.keypoint_names], axis=-2)
  return xy, np.stack([names[k][1] for k in layout.keypoint_names], axis=-1)


def _flat(xy, scores):
  return np.concatenate([xy, scores[..., None]], -1).reshape(-1).tolist()


def _write_json(path, data):
  path.write_text(json.dumps(data))
  return path


def _write_npz(tmp_path):
  xy, scores = _coco_pose_set()
  h36m, confidence = skeleton.COCO17.convert(xy, scores)
  path = tmp_path / 'poses.npz'
  frame = np.broadcast_to(np.array(FRAMES), (PEOPLE, len(FRAMES)))
  track = np.broadcast_to(np.arange(PEOPLE)[:, None], (PEOPLE, len(FRAMES)))
  np.savez(path, keypoints=h36m.reshape(-1, 17, 2), scores=confidence.reshape(-1, 17),
           image_size=np.array(IMAGE_SIZE), frame=frame.reshape(-1), track=track.reshape(-1))
  return path


def _results(tmp_path, layout, name, image_id, track=None):
  """COCO/AlphaPose results list; in the middle frame person 1 is listed first."""
  xy, scores = _in_layout(layout)
  records = []
  for t, frame in enumerate(FRAMES):
    for p in ((1, 0) if t == 1 and track else (0, 1)):
      record = dict(image_id=image_id(frame), category_id=1, score=0.9,
                    keypoints=_flat(xy[p, t], scores[p, t]))
      if track:
        record['idx'] = track(p)
      records.append(record)
  return _write_json(tmp_path / name, records)


def _write_coco(tmp_path):
  return _results(tmp_path, skeleton.COCO17, 'coco.json', lambda f: f)


def _write_halpe(tmp_path):
  return _results(tmp_path, skeleton.HALPE26, 'alphapose-results.json',
                  lambda f: f'frame_{f:04d}.jpg', track=lambda p: [float(p)])


def _write_openpose(tmp_path, layout=skeleton.OPENPOSE_BODY25, person_ids=False):
  folder = tmp_path / 'openpose'
  folder.mkdir()
  xy, scores = _in_layout(layout)
  for t, frame in enumerate(FRAMES):
    people = [dict(person_id=[p if person_ids else -1],
                   pose_keypoints_2d=_flat(xy[p, t], scores[p, t]), face_keypoints_2d=[])
              for p in range(PEOPLE)]
    _write_json(folder / f'clip_{frame:012d}_keypoints.json', dict(version=1.3, people=people))
  return folder


def _mmpose_instance(xy, scores, track=None):
  instance = dict(keypoints=xy.tolist(), keypoint_scores=scores.tolist(), bbox=[[0, 0, 1, 1]],
                  bbox_score=0.9)
  if track is not None:
    instance['track_id'] = track
  return instance


def _write_mmpose(tmp_path, layout=skeleton.COCO17):
  xy, scores = _in_layout(layout)
  info = [dict(frame_id=frame, instances=[_mmpose_instance(xy[p, t], scores[p, t], track=p)
                                          for p in ((1, 0) if t == 1 else (0, 1))])
          for t, frame in enumerate(FRAMES)]
  return _write_json(tmp_path / 'results_clip.json',
                     dict(meta_info=dict(dataset_name='coco'), instance_info=info))


def _write_mmpose_predictions(tmp_path):
  xy, scores = _in_layout(skeleton.COCO17)
  predictions = [[_mmpose_instance(xy[p, t], scores[p, t]) for p in range(PEOPLE)]
                 for t in range(len(FRAMES))]
  return _write_json(tmp_path / 'predictions.json', dict(predictions=predictions))


WRITERS = {
    'coco': _write_coco,
    'halpe': _write_halpe,
    'openpose_body25': _write_openpose,
    'openpose_coco18': lambda d: _write_openpose(d, skeleton.OPENPOSE_COCO18),
    'openpose_ids': lambda d: _write_openpose(d, person_ids=True),
    'mmpose_coco17': _write_mmpose,
    'mmpose_halpe26': lambda d: _write_mmpose(d, skeleton.HALPE26),
    'mmpose_predictions': _write_mmpose_predictions,
}
FORMAT_OF = {'coco': 'coco', 'halpe': 'halpe', 'openpose_body25': 'openpose',
             'openpose_coco18': 'openpose', 'openpose_ids': 'openpose',
             'mmpose_coco17': 'mmpose', 'mmpose_halpe26': 'mmpose',
             'mmpose_predictions': 'mmpose'}


@pytest.fixture(name='reference')
def _reference(tmp_path):
  return keypoint_io.read_keypoints(_write_npz(tmp_path))


def test_npz_reference_is_the_converted_pose_set(reference):
  xy, scores = _coco_pose_set()
  h36m, confidence = skeleton.COCO17.convert(xy, scores)
  np.testing.assert_allclose(reference.keypoints.reshape(h36m.shape),
                             np.where(confidence[..., None] > 0, h36m, 0), atol=1e-4)
  np.testing.assert_allclose(reference.confidence.reshape(confidence.shape), confidence)
  assert reference.format == 'npz'
  assert reference.keypoints.dtype == np.float32 and reference.confidence.dtype == np.float32
  assert reference.image_size.dtype == np.int32 and reference.frame.dtype == np.int64
  np.testing.assert_array_equal(reference.image_size, np.tile(IMAGE_SIZE, (6, 1)))
  np.testing.assert_array_equal(reference.track, [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(reference.frame, FRAMES * 2)
  # The missing COCO left wrist makes the Human3.6M left wrist (13) missing, at (0, 0).
  assert reference.confidence[4, 13] == 0 and np.all(reference.keypoints[4, 13] == 0)
  assert np.all(np.delete(reference.confidence, 4, axis=0) > 0)


@pytest.mark.parametrize('name', sorted(WRITERS))
def test_every_format_reads_as_the_npz(tmp_path, reference, name):
  path = WRITERS[name](tmp_path)
  assert keypoint_io.detect_format(path) == FORMAT_OF[name]
  sequence = keypoint_io.read_keypoints(path, image_size=IMAGE_SIZE)
  assert sequence.format == FORMAT_OF[name] and sequence.source == str(path)
  np.testing.assert_allclose(sequence.keypoints, reference.keypoints, atol=1e-4)
  np.testing.assert_allclose(sequence.confidence, reference.confidence, atol=1e-6)
  np.testing.assert_array_equal(sequence.track, reference.track)
  np.testing.assert_array_equal(sequence.image_size, reference.image_size)
  # MMPose `predictions` lists carry no frame id: frames are list positions.
  offset = FRAMES[0] if name == 'mmpose_predictions' else 0
  np.testing.assert_array_equal(sequence.frame + offset, reference.frame)


def test_detect_format_npz(tmp_path):
  assert keypoint_io.detect_format(_write_npz(tmp_path)) == 'npz'


def test_single_openpose_file_and_format_override(tmp_path):
  folder = _write_openpose(tmp_path)
  file = sorted(folder.iterdir())[1]
  sequence = keypoint_io.read_keypoints(file, format='openpose', image_size='1920,1080')
  np.testing.assert_array_equal(sequence.frame, [11, 11])
  np.testing.assert_array_equal(sequence.track, [0, 1])


def test_track_ids_false_numbers_detections_within_frames(tmp_path):
  sequence = keypoint_io.read_keypoints(_write_halpe(tmp_path), image_size=IMAGE_SIZE,
                                        track_ids=False)
  # Without ids, the person listed first in a frame is track 0: the middle frame swaps.
  np.testing.assert_array_equal(sequence.track, [0, 0, 0, 1, 1, 1])
  xy, _ = _in_layout(skeleton.HALPE26)
  np.testing.assert_allclose(sequence.keypoints[1, 0], xy[1, 1, 19], atol=1e-4)  # Pelvis.


def test_real_track_ids_are_kept(tmp_path):
  path = _write_halpe(tmp_path)
  data = json.loads(path.read_text())
  for record in data:
    record['idx'] = 40 + record['idx'][0]
  sequence = keypoint_io.read_keypoints(_write_json(path, data), image_size=IMAGE_SIZE)
  np.testing.assert_array_equal(sequence.track, [40, 40, 40, 41, 41, 41])


@pytest.mark.parametrize('layout', ['xyc', 'single_pose', 'npy'])
def test_npz_layout_variants(tmp_path, reference, layout):
  xyc = np.concatenate([reference.keypoints, reference.confidence[..., None]], -1)
  if layout == 'xyc':
    np.savez(tmp_path / 'x.npz', keypoints=xyc, image_size=np.tile(IMAGE_SIZE, (6, 1)))
    path, expected = tmp_path / 'x.npz', slice(None)
  elif layout == 'single_pose':
    np.savez(tmp_path / 'x.npz', keypoints=xyc[2], image_size=np.array(IMAGE_SIZE))
    path, expected = tmp_path / 'x.npz', slice(2, 3)
  else:
    np.save(tmp_path / 'x.npy', xyc)
    path, expected = tmp_path / 'x.npy', slice(None)
  sequence = keypoint_io.read_keypoints(path, image_size=IMAGE_SIZE)
  np.testing.assert_allclose(sequence.keypoints, reference.keypoints[expected], atol=1e-6)
  np.testing.assert_allclose(sequence.confidence, reference.confidence[expected])
  np.testing.assert_array_equal(sequence.frame, np.arange(len(sequence)))
  np.testing.assert_array_equal(sequence.track, np.zeros(len(sequence)))


def test_coco_visibility_flags_and_score_clipping(tmp_path):
  xy, _ = _in_layout(skeleton.COCO17)
  flags = np.full(17, 2.0)
  flags[[3, 4]] = [1.0, 0.0]  # Left ear visible-occluded (1), right ear unlabelled (0).
  flagged = _write_json(tmp_path / 'gt.json', [dict(image_id=1, keypoints=_flat(xy[0, 0],
                                                                                 flags))])
  sequence = keypoint_io.read_keypoints(flagged, image_size=IMAGE_SIZE)
  head = skeleton.H36M_JOINT_NAMES.index('head')
  assert sequence.confidence[0, head] == 0  # Head uses the ears: missing.
  assert np.all(np.delete(sequence.confidence[0], head) == 1.0)
  scores = np.full(17, 1.3)  # SimCC-style scores above 1 are scores, clipped to 1.
  scores[0] = 0.25
  scored = _write_json(tmp_path / 'res.json', [dict(image_id=1, keypoints=_flat(xy[0, 0],
                                                                                scores))])
  sequence = keypoint_io.read_keypoints(scored, image_size=IMAGE_SIZE)
  assert sequence.confidence[0, skeleton.H36M_JOINT_NAMES.index('neck_nose')] == 0.25
  assert sequence.confidence.max() == 1.0


def test_coco_annotation_file_gives_image_sizes(tmp_path):
  xy, scores = _in_layout(skeleton.COCO17)
  data = dict(images=[dict(id=7, width=1920, height=1080), dict(id=8, width=1280,
                                                                height=720)],
              annotations=[dict(image_id=i, keypoints=_flat(xy[0, 0] * 0.5, scores[0, 0] > 0),
                                num_keypoints=17) for i in (8, 7)])
  sequence = keypoint_io.read_keypoints(_write_json(tmp_path / 'person_keypoints.json', data))
  np.testing.assert_array_equal(sequence.frame, [7, 8])
  np.testing.assert_array_equal(sequence.image_size, [[1920, 1080], [1280, 720]])


def test_frame_numbers_from_names(tmp_path):
  xy, scores = _in_layout(skeleton.HALPE26)
  flat = _flat(xy[0, 0], scores[0, 0])
  numbered = ['img_2.jpg', 'img_10.jpg', 'img_1.jpg']  # Last number in the name.
  unnumbered = ['walk_b.png', 'walk_a.png', 'walk_c.png']  # Rank in natural order.
  for names, expected in ((numbered, [1, 2, 10]), (unnumbered, [0, 1, 2])):
    path = _write_json(tmp_path / 'r.json', [dict(image_id=n, keypoints=flat) for n in names])
    sequence = keypoint_io.read_keypoints(path, image_size=(1920, 1080))
    np.testing.assert_array_equal(sequence.frame, expected)


@pytest.mark.parametrize('argument', ['1920,1080', '1920x1080', ' 1920 , 1080 ', (1920, 1080),
                                      np.array([1920, 1080])])
def test_image_size_argument_forms(tmp_path, argument):
  sequence = keypoint_io.read_keypoints(_write_coco(tmp_path), image_size=argument)
  np.testing.assert_array_equal(sequence.image_size, np.tile(IMAGE_SIZE, (6, 1)))
