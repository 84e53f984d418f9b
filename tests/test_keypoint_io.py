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
import keypoint_files

IMAGE_SIZE = keypoint_files.IMAGE_SIZE
FRAMES = keypoint_files.FRAMES


@pytest.fixture(name='reference')
def _reference(tmp_path):
  return keypoint_io.read_keypoints(keypoint_files.write_npz(tmp_path))


def test_npz_reference_is_the_converted_pose_set(reference):
  xy, scores = keypoint_files.coco_pose_set()
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


@pytest.mark.parametrize('name', sorted(keypoint_files.WRITERS))
def test_every_format_reads_as_the_npz(tmp_path, reference, name):
  path = keypoint_files.WRITERS[name](tmp_path)
  fmt = keypoint_files.FORMAT_OF[name]
  assert keypoint_io.detect_format(path) == keypoint_files.DETECTED_AS.get(name, fmt)
  requested = fmt if name in keypoint_files.DETECTED_AS else None
  sequence = keypoint_io.read_keypoints(path, image_size=IMAGE_SIZE, format=requested)
  assert sequence.format == fmt and sequence.source == str(path)
  np.testing.assert_allclose(sequence.keypoints, reference.keypoints, atol=1e-4)
  np.testing.assert_allclose(sequence.confidence, reference.confidence, atol=1e-6)
  np.testing.assert_array_equal(sequence.track, reference.track)
  np.testing.assert_array_equal(sequence.image_size, reference.image_size)
  # MMPose `predictions` lists carry no frame id: frames are list positions.
  np.testing.assert_array_equal(sequence.frame + keypoint_files.FRAME_OFFSET[name],
                                reference.frame)


def test_detect_format_npz(tmp_path):
  assert keypoint_io.detect_format(keypoint_files.write_npz(tmp_path)) == 'npz'


def test_single_openpose_file_and_format_override(tmp_path):
  folder = keypoint_files.write_openpose(tmp_path)
  file = sorted(folder.iterdir())[1]
  sequence = keypoint_io.read_keypoints(file, format='openpose', image_size='1920,1080')
  np.testing.assert_array_equal(sequence.frame, [11, 11])
  np.testing.assert_array_equal(sequence.track, [0, 1])


def test_track_ids_false_numbers_detections_within_frames(tmp_path):
  sequence = keypoint_io.read_keypoints(keypoint_files.write_halpe(tmp_path),
                                        image_size=IMAGE_SIZE,
                                        track_ids=False)
  # Without ids, the person listed first in a frame is track 0: the middle frame swaps.
  np.testing.assert_array_equal(sequence.track, [0, 0, 0, 1, 1, 1])
  xy, _ = keypoint_files.in_layout(skeleton.HALPE26)
  np.testing.assert_allclose(sequence.keypoints[1, 0], xy[1, 1, 19], atol=1e-4)  # Pelvis.


def test_real_track_ids_are_kept(tmp_path):
  path = keypoint_files.write_halpe(tmp_path)
  data = json.loads(path.read_text())
  for record in data:
    record['idx'] = 40 + record['idx'][0]
  sequence = keypoint_io.read_keypoints(keypoint_files.write_json(path, data),
                                        image_size=IMAGE_SIZE)
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
  xy, _ = keypoint_files.in_layout(skeleton.COCO17)
  flags = np.full(17, 2.0)
  flags[[3, 4]] = [1.0, 0.0]  # Left ear visible-occluded (1), right ear unlabelled (0).
  flagged = keypoint_files.write_json(
      tmp_path / 'gt.json', [dict(image_id=1, keypoints=keypoint_files.flat(xy[0, 0], flags))])
  sequence = keypoint_io.read_keypoints(flagged, image_size=IMAGE_SIZE)
  head = skeleton.H36M_JOINT_NAMES.index('head')
  assert sequence.confidence[0, head] == 0  # Head uses the ears: missing.
  assert np.all(np.delete(sequence.confidence[0], head) == 1.0)
  scores = np.full(17, 1.3)  # SimCC-style scores above 1 are scores, clipped to 1.
  scores[0] = 0.25
  scored = keypoint_files.write_json(
      tmp_path / 'res.json', [dict(image_id=1, keypoints=keypoint_files.flat(xy[0, 0], scores))])
  sequence = keypoint_io.read_keypoints(scored, image_size=IMAGE_SIZE)
  assert sequence.confidence[0, skeleton.H36M_JOINT_NAMES.index('neck_nose')] == 0.25
  assert sequence.confidence.max() == 1.0


def test_coco_annotation_file_gives_image_sizes(tmp_path):
  xy, scores = keypoint_files.in_layout(skeleton.COCO17)
  data = dict(images=[dict(id=7, width=1920, height=1080), dict(id=8, width=1280,
                                                                height=720)],
              annotations=[dict(image_id=i,
                                keypoints=keypoint_files.flat(xy[0, 0] * 0.5, scores[0, 0] > 0),
                                num_keypoints=17) for i in (8, 7)])
  path = keypoint_files.write_json(tmp_path / 'person_keypoints.json', data)
  sequence = keypoint_io.read_keypoints(path)
  np.testing.assert_array_equal(sequence.frame, [7, 8])
  np.testing.assert_array_equal(sequence.image_size, [[1920, 1080], [1280, 720]])


def test_frame_numbers_from_names(tmp_path):
  xy, scores = keypoint_files.in_layout(skeleton.HALPE26)
  flat = keypoint_files.flat(xy[0, 0], scores[0, 0])
  numbered = ['img_2.jpg', 'img_10.jpg', 'img_1.jpg']  # Last number in the name.
  unnumbered = ['walk_b.png', 'walk_a.png', 'walk_c.png']  # Rank in natural order.
  for names, expected in ((numbered, [1, 2, 10]), (unnumbered, [0, 1, 2])):
    path = keypoint_files.write_json(tmp_path / 'r.json',
                                     [dict(image_id=n, keypoints=flat) for n in names])
    sequence = keypoint_io.read_keypoints(path, image_size=(1920, 1080))
    np.testing.assert_array_equal(sequence.frame, expected)


@pytest.mark.parametrize('argument', ['1920,1080', '1920x1080', ' 1920 , 1080 ', (1920, 1080),
                                      np.array([1920, 1080])])
def test_image_size_argument_forms(tmp_path, argument):
  sequence = keypoint_io.read_keypoints(keypoint_files.write_coco(tmp_path), image_size=argument)
  np.testing.assert_array_equal(sequence.image_size, np.tile(IMAGE_SIZE, (6, 1)))


def test_coco_annotation_format_is_its_own(tmp_path):
  path = keypoint_files.write_coco_annotations(tmp_path)
  assert keypoint_io.detect_format(path) == 'coco_annotations'
  sequence = keypoint_io.read_keypoints(path)  # The sizes come from `images`.
  assert sequence.format == 'coco_annotations' and sequence.layout == 'coco17'
  np.testing.assert_array_equal(sequence.image_size, np.tile(IMAGE_SIZE, (6, 1)))


# ---- Formats with equal keypoint counts: told apart by anatomy, never guessed.

# Writer of a file in the rival layout -> (format detected by count, format to request).
EQUAL_COUNT = {'openpose_body25b': ('openpose', 'openpose_body25b'),
               'npz_coco17': ('npz', 'npz_coco17')}


@pytest.mark.parametrize('name', sorted(EQUAL_COUNT))
def test_rival_layout_is_refused_without_the_flag(tmp_path, reference, name):
  detected, requested = EQUAL_COUNT[name]
  path = keypoint_files.WRITERS[name](tmp_path)
  with pytest.raises(keypoint_io.KeypointFileError) as info:
    keypoint_io.read_keypoints(path, image_size=IMAGE_SIZE)
  message = str(info.value)
  assert message.startswith(f'{path}: keypoint layout: ')
  assert f'--format={requested} ' in message and f'--format={detected} ' in message
  assert 'detected by keypoint count' in message
  sequence = keypoint_io.read_keypoints(path, image_size=IMAGE_SIZE, format=requested)
  np.testing.assert_allclose(sequence.keypoints, reference.keypoints, atol=1e-4)
  assert sequence.anatomy_score < 0.2


def test_requested_format_that_fits_worse_is_refused(tmp_path):
  """A BODY_25 folder requested as BODY_25B (the reverse mistake) is refused too, unless
  the check is switched off."""
  folder = keypoint_files.write_openpose(tmp_path)
  with pytest.raises(keypoint_io.KeypointFileError, match=(
      r'fit openpose_body25 \(format openpose: .*\) better than openpose_body25b '
      r'\(format openpose_body25b, requested')):
    keypoint_io.read_keypoints(folder, image_size=IMAGE_SIZE, format='openpose_body25b')
  forced = keypoint_io.read_keypoints(folder, image_size=IMAGE_SIZE, format='openpose_body25b',
                                      anatomy_check=False)
  right = keypoint_io.read_keypoints(folder, image_size=IMAGE_SIZE)
  assert forced.layout == 'openpose_body25b' and right.layout == 'openpose_body25'
  assert forced.anatomy_score > right.anatomy_score + keypoint_io.ANATOMY_MARGIN


@pytest.mark.parametrize('layout', [skeleton.OPENPOSE_BODY25, keypoint_io.OPENPOSE_BODY25B,
                                    skeleton.COCO17, keypoint_io.H36M17])
def test_anatomy_score_prefers_the_right_reading(layout):
  if layout is keypoint_io.H36M17:
    xy, scores = skeleton.COCO17.convert(*keypoint_files.coco_pose_set())
  else:
    xy, scores = keypoint_files.in_layout(layout)
  xy, scores = xy.reshape(-1, layout.num_keypoints, 2), scores.reshape(-1, layout.num_keypoints)
  rivals = [other for other in (skeleton.OPENPOSE_BODY25, keypoint_io.OPENPOSE_BODY25B,
                                skeleton.COCO17, keypoint_io.H36M17)
            if other.num_keypoints == layout.num_keypoints and other != layout]
  right, scored = keypoint_io.anatomy_score(layout, xy, scores)
  assert scored == len(xy) and right < 0.2
  for rival in rivals:
    assert keypoint_io.anatomy_score(rival, xy, scores)[0] > right + 0.15, rival.name


def test_anatomy_score_is_scale_free_and_needs_joints():
  xy, scores = keypoint_files.in_layout(skeleton.COCO17)
  xy, scores = xy.reshape(-1, 17, 2), scores.reshape(-1, 17)
  score, _ = keypoint_io.anatomy_score(skeleton.COCO17, xy, scores)
  assert keypoint_io.anatomy_score(skeleton.COCO17, 3.0 * xy + 7.0, scores)[0] == (
      pytest.approx(score))
  few = np.zeros_like(scores)
  few[:, :7] = 1.0  # Face, shoulders and one elbow: one bone only.
  assert keypoint_io.anatomy_score(skeleton.COCO17, xy, few) == (pytest.approx(np.nan,
                                                                               nan_ok=True), 0)


def test_too_few_joints_to_judge_reads_by_count(tmp_path):
  """Only the face is confident: no reading can be scored, the count decides."""
  xy, scores = keypoint_files.in_layout(keypoint_io.OPENPOSE_BODY25B)
  scores = scores.copy()
  scores[..., 5:] = 0.0
  folder = tmp_path / 'op'
  folder.mkdir()
  keypoint_files.write_json(folder / 'a_0_keypoints.json', dict(people=[dict(
      pose_keypoints_2d=keypoint_files.flat(xy[0, 0], scores[0, 0]))]))
  sequence = keypoint_io.read_keypoints(folder, image_size=IMAGE_SIZE)
  assert sequence.layout == 'openpose_body25' and np.isnan(sequence.anatomy_score)
