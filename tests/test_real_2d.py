"""launch.infer on real detector files written by other tools (../shared/data/real_2d/).

The folder (its README lists the files and their sources) lives beside the checkout and
is never copied into it; every test here skips without it. Each file goes through
`infer.run` with the session's tiny hierarchical lifter, and its joint mapping must pass
anatomical sanity in 2D: the pelvis between the hips, the thorax between the shoulders,
each wrist attached to its own elbow. Reading a file with the wrong keypoint map fails
the same checks, so they can fail. BODY_25 and BODY_25B folders built from the real
AlphaPose clip test the anatomy check on real motion.
"""

import json
import os
import pathlib

import numpy as np
import pytest

from conftest import SHARED_DATA
from hipart_jax import keypoint_io
from hipart_jax import skeleton
from launch import infer

REAL_2D = pathlib.Path(os.environ.get('HIPART_REAL_2D_DIR', SHARED_DATA / 'real_2d'))
OPENPOSE = 'openpose_body25/spin_im1010_openpose.json'
ALPHAPOSE = 'alphapose_halpe26/motionbert_pr146_example1_alphapose-results.json'
COCO_ANNOTATIONS = 'coco_annotations/mmpose_test_coco.json'
COCO_DETECTIONS = 'coco_annotations/mmpose_test_coco_det_AP_H_56.json'
# Image sizes of the files that carry none: the LSP image is about 150 x 190 px (README);
# the AlphaPose clip's keypoints span x <= 1100, y <= 900 of a video of unknown size.
IMAGE_SIZE = {OPENPOSE: '150,190', ALPHAPOSE: '1920,1080'}
BATCH = 16  # Every run pads to whole batches of one size: one compile for the module.
# Sanity bounds on the median over a file's detections (ratios of 2D distances). The
# real files give pelvis <= 0.1, thorax <= 0.3, forearm / upper arm 0.75-0.91 and own /
# other elbow 0.48-0.53; wrong maps give forearm / upper arm 0.16 or own / other ~1.
BETWEEN = 0.5  # Joint to the pair's midpoint, over the pair's distance.
FOREARM_TO_UPPER_ARM = (0.5, 1.6)
OWN_TO_OTHER_ELBOW = 0.8
# The anatomy scores of right and wrong readings of these files (keypoint_io).
RIGHT_SCORE, WRONG_SCORE = 0.25, 0.3


@pytest.fixture(scope='module', name='real_2d')
def _real_2d():
  if not (REAL_2D / OPENPOSE).is_file():
    pytest.skip(f'real detector files not found at {REAL_2D}')
  return REAL_2D


@pytest.fixture(scope='module')
def checkpoint(tiny_pipeline):
  return str(tiny_pipeline['lifter_hierarchical'])


def _joint(sequence, name):
  return sequence.keypoints[:, skeleton.H36M_JOINT_NAMES.index(name)].astype(np.float64)


def _seen(sequence, *names):
  return np.all([sequence.confidence[:, skeleton.H36M_JOINT_NAMES.index(n)] > 0
                 for n in names], axis=0)


def _distance(sequence, a, b):
  return np.linalg.norm(_joint(sequence, a) - _joint(sequence, b), axis=-1)


def sanity(sequence) -> dict[str, float]:
  """Median ratios over the detections that show the joints each one needs."""
  with np.errstate(divide='ignore', invalid='ignore'):  # Rows without the joints: unused.
    return _sanity(sequence)


def _sanity(sequence) -> dict[str, float]:
  ratios = {}
  for joint, (a, b) in (('pelvis', ('l_hip', 'r_hip')),
                        ('thorax', ('l_shoulder', 'r_shoulder'))):
    rows = _seen(sequence, joint, a, b)
    if rows.any():
      offset = np.linalg.norm(_joint(sequence, joint) - (_joint(sequence, a)
                                                         + _joint(sequence, b)) / 2, axis=-1)
      ratios[f'{joint} between'] = float(np.median((offset / _distance(sequence, a, b))[rows]))
  for side, other in (('l', 'r'), ('r', 'l')):
    wrist, elbow, shoulder = f'{side}_wrist', f'{side}_elbow', f'{side}_shoulder'
    rows = _seen(sequence, wrist, elbow, shoulder)
    if rows.any():
      ratios[f'{side} forearm/upper arm'] = float(np.median(
          (_distance(sequence, wrist, elbow) / _distance(sequence, elbow, shoulder))[rows]))
    rows = _seen(sequence, wrist, elbow, f'{other}_elbow')
    if rows.any():
      ratios[f'{side} own/other elbow'] = float(np.median(
          (_distance(sequence, wrist, elbow) / _distance(sequence, wrist, f'{other}_elbow'))
          [rows]))
  return ratios


def insane(ratios: dict[str, float]) -> list[str]:
  """The sanity checks `ratios` fails."""
  failed = [k for k, v in ratios.items() if k.endswith('between') and not v < BETWEEN]
  failed += [k for k, v in ratios.items() if k.endswith('upper arm')
             and not FOREARM_TO_UPPER_ARM[0] <= v <= FOREARM_TO_UPPER_ARM[1]]
  failed += [k for k, v in ratios.items() if k.endswith('elbow') and not v < OWN_TO_OTHER_ELBOW]
  return failed


def _read(path, **kwargs):
  return keypoint_io.read_keypoints(path, **kwargs)


@pytest.mark.parametrize('name,fmt,layout,rows', [
    (OPENPOSE, 'openpose', 'openpose_body25', 1),
    (ALPHAPOSE, 'halpe', 'halpe26', 44),
    (COCO_ANNOTATIONS, 'coco_annotations', 'coco17', 14)])
def test_infer_on_real_files(real_2d, checkpoint, tmp_path, name, fmt, layout, rows):
  path = real_2d / name
  arrays = infer.run(checkpoint=checkpoint, input_path=str(path),
                     output=str(tmp_path / 'out.npz'), image_size=IMAGE_SIZE.get(name),
                     batch_size=BATCH)
  assert arrays['pose_3d'].shape == (rows, skeleton.NUM_JOINTS, 3)
  assert np.isfinite(arrays['pose_3d']).all()
  np.testing.assert_array_equal(arrays['pose_3d'][:, skeleton.ROOT], 0.0)
  assert (arrays['input_format'].item(), arrays['input_layout'].item()) == (fmt, layout)
  assert arrays['input_file'].item() == str(path.absolute())
  sequence = _read(path, image_size=IMAGE_SIZE.get(name))
  np.testing.assert_array_equal(arrays['keypoints_2d'], sequence.keypoints)
  ratios = sanity(sequence)
  assert {'pelvis between', 'thorax between'} <= ratios.keys()
  assert any(k.endswith('upper arm') for k in ratios)
  assert not insane(ratios), ratios
  assert sequence.anatomy_score < RIGHT_SCORE


def test_alphapose_track_ids_are_kept(real_2d):
  sequence = _read(real_2d / ALPHAPOSE, image_size=IMAGE_SIZE[ALPHAPOSE])
  records = json.loads((real_2d / ALPHAPOSE).read_text())
  assert sorted(set(sequence.track.tolist())) == sorted({int(r['idx'][0]) for r in records})
  # Image ids '0.jpg' ... '43.jpg' give frames 0 ... 43, one row each.
  np.testing.assert_array_equal(np.sort(sequence.frame), np.arange(len(records)))


def test_coco_annotation_sizes_come_from_each_image(real_2d):
  path = real_2d / COCO_ANNOTATIONS
  data = json.loads(path.read_text())
  size_of = {image['id']: [image['width'], image['height']] for image in data['images']}
  sequence = _read(path)
  assert len(sequence) == len(data['annotations'])
  assert len({tuple(size_of[i]) for i in size_of}) > 1  # The images differ in size.
  np.testing.assert_array_equal(sequence.image_size, [size_of[f] for f in sequence.frame])
  # Annotations without labelled keypoints are kept, marked by no confident joint.
  unlabelled = sum(a['num_keypoints'] == 0 for a in data['annotations'])
  assert unlabelled and (sequence.confidence.max(-1) == 0).sum() == unlabelled
  with pytest.raises(keypoint_io.KeypointFileError, match='the file says .* but the '
                     'image_size argument says'):
    _read(path, image_size='1920,1080')


def test_coco_detection_boxes_are_refused(real_2d, checkpoint, tmp_path):
  path = real_2d / COCO_DETECTIONS
  with pytest.raises(SystemExit) as info:
    infer.run(checkpoint=checkpoint, input_path=str(path), output=str(tmp_path / 'out.npz'),
              image_size='640,480', batch_size=BATCH)
  assert str(info.value.code) == (
      f'infer: error: {path}: detection 0: has a bbox but no keypoints: this is a COCO '
      'detection results list (person boxes); run a 2D pose estimator on these boxes and '
      'pass its keypoint results')
  assert not (tmp_path / 'out.npz').exists()


def test_coco_keypoint_results_from_the_annotations(real_2d, tmp_path):
  """The annotations' keypoints written as a detector's results list (with the boxes
  file's image ids) read as the same joints."""
  annotations = json.loads((real_2d / COCO_ANNOTATIONS).read_text())['annotations']
  boxes = json.loads((real_2d / COCO_DETECTIONS).read_text())
  assert {a['image_id'] for a in annotations} == {b['image_id'] for b in boxes}
  results = [dict(image_id=a['image_id'], category_id=1, keypoints=a['keypoints'],
                  score=1.0) for a in annotations]
  (tmp_path / 'results.json').write_text(json.dumps(results))
  sequence = _read(tmp_path / 'results.json', image_size='640,480')
  reference = _read(real_2d / COCO_ANNOTATIONS)
  assert sequence.format == 'coco'
  np.testing.assert_array_equal(sequence.keypoints, reference.keypoints)
  np.testing.assert_array_equal(sequence.confidence, reference.confidence)


def test_the_wrong_map_fails_the_sanity_checks(real_2d):
  """The real BODY_25 file forced through the BODY_25B map: the checks see it."""
  path = real_2d / OPENPOSE
  wrong = _read(path, image_size=IMAGE_SIZE[OPENPOSE], format='openpose_body25b',
                anatomy_check=False)
  assert insane(sanity(wrong))
  assert wrong.anatomy_score > WRONG_SCORE
  with pytest.raises(keypoint_io.KeypointFileError, match='fit openpose_body25 .* better '
                     'than openpose_body25b'):
    _read(path, image_size=IMAGE_SIZE[OPENPOSE], format='openpose_body25b')


def _write_openpose(folder, layout, keypoints, scores, person_ids=None):
  """One OpenPose file per frame, `layout` order, from Halpe-named points."""
  folder.mkdir()
  names = dict(zip(skeleton.HALPE26.keypoint_names, range(26)))
  names['mid_hip'] = names['hip']  # BODY_25's mid-hip is Halpe's hip centre.
  order = [names[k] for k in layout.keypoint_names]
  for frame, (xy, score) in enumerate(zip(keypoints[:, order], scores[:, order])):
    person = dict(pose_keypoints_2d=np.concatenate([xy, score[:, None]], -1).ravel().tolist())
    if person_ids is not None:
      person['person_id'] = [int(person_ids[frame])]
    (folder / f'clip_{frame:012d}_keypoints.json').write_text(
        json.dumps(dict(version=1.3, people=[person])))
  return folder


@pytest.fixture(name='alphapose_points')
def _alphapose_points(real_2d):
  records = json.loads((real_2d / ALPHAPOSE).read_text())
  values = np.asarray([r['keypoints'] for r in records], np.float64).reshape(len(records),
                                                                             26, 3)
  return values[..., :2], values[..., 2]


def test_real_motion_as_body25_and_body25b(alphapose_points, tmp_path, checkpoint):
  """The AlphaPose clip rewritten as BODY_25 and as BODY_25B OpenPose folders: BODY_25 is
  detected; BODY_25B is refused without its flag and read right with it."""
  xy, scores = alphapose_points
  size = IMAGE_SIZE[ALPHAPOSE]
  body25 = _write_openpose(tmp_path / 'body25', skeleton.OPENPOSE_BODY25, xy, scores)
  body25b = _write_openpose(tmp_path / 'body25b', keypoint_io.OPENPOSE_BODY25B, xy, scores)
  right = _read(body25, image_size=size)
  assert right.layout == 'openpose_body25' and not insane(sanity(right))
  with pytest.raises(keypoint_io.KeypointFileError) as info:
    _read(body25b, image_size=size)
  message = str(info.value)
  assert message.startswith(f'{body25b}: keypoint layout: the 25 keypoints per detection '
                            'fit openpose_body25b (format openpose_body25b')
  assert '--format=openpose_body25b' in message and '--format=openpose ' in message
  wrong = _read(body25b, image_size=size, anatomy_check=False)
  assert insane(sanity(wrong)) and wrong.anatomy_score > WRONG_SCORE
  read = _read(body25b, image_size=size, format='openpose_body25b')
  assert not insane(sanity(read)) and read.anatomy_score < RIGHT_SCORE
  halpe = _read(REAL_2D / ALPHAPOSE, image_size=size, track_ids=False)
  # Limbs, hips and shoulders are the same keypoints in all three layouts.
  limbs = [j for j, n in enumerate(skeleton.H36M_JOINT_NAMES)
           if n not in ('pelvis', 'spine', 'thorax', 'neck_nose', 'head')]
  for sequence in (right, read):
    np.testing.assert_allclose(sequence.keypoints[:, limbs], halpe.keypoints[:, limbs],
                               atol=1e-3)
  arrays = infer.run(checkpoint=checkpoint, input_path=str(body25b),
                     output=str(tmp_path / 'out.json'), image_size=size,
                     input_format='openpose_body25b', batch_size=BATCH)
  assert arrays['pose_3d'].shape == (len(xy), skeleton.NUM_JOINTS, 3)


def test_real_single_person_as_body25b(real_2d, tmp_path):
  """The one-person OpenPose file rewritten in BODY_25B order (its head top unknown)."""
  values = np.asarray(json.loads((real_2d / OPENPOSE).read_text())['people'][0][
      'pose_keypoints_2d']).reshape(25, 3)
  by_name = dict(zip(skeleton.OPENPOSE_BODY25.keypoint_names, values))
  by_name['head_top'] = np.zeros(3)
  flat = np.concatenate([by_name[k] for k in keypoint_io.OPENPOSE_BODY25B.keypoint_names])
  path = tmp_path / 'im1010_keypoints.json'
  path.write_text(json.dumps(dict(people=[dict(pose_keypoints_2d=flat.tolist())])))
  with pytest.raises(keypoint_io.KeypointFileError, match='fit openpose_body25b'):
    _read(path, image_size=IMAGE_SIZE[OPENPOSE])
  read = _read(path, image_size=IMAGE_SIZE[OPENPOSE], format='openpose_body25b')
  original = _read(real_2d / OPENPOSE, image_size=IMAGE_SIZE[OPENPOSE])
  pelvis = skeleton.H36M_JOINT_NAMES.index('pelvis')
  np.testing.assert_allclose(read.keypoints[0, pelvis], original.keypoints[0, pelvis], atol=1.0)
  assert not insane(sanity(read))


@pytest.mark.parametrize('name,layout,rival', [
    (COCO_ANNOTATIONS, skeleton.COCO17, keypoint_io.H36M17),
    (OPENPOSE, skeleton.OPENPOSE_BODY25, keypoint_io.OPENPOSE_BODY25B)])
def test_anatomy_scores_of_real_files(real_2d, name, layout, rival):
  """The score ranges ANATOMY_MARGIN is set from: right readings low, wrong ones high."""
  data = json.loads((real_2d / name).read_text())
  flat = ([a['keypoints'] for a in data['annotations']] if 'annotations' in data
          else [p['pose_keypoints_2d'] for p in data['people']])
  values = np.asarray(flat, np.float64).reshape(len(flat), -1, 3)
  right, _ = keypoint_io.anatomy_score(layout, values[..., :2], np.minimum(values[..., 2], 1))
  wrong, _ = keypoint_io.anatomy_score(rival, values[..., :2], np.minimum(values[..., 2], 1))
  assert right < RIGHT_SCORE < WRONG_SCORE < wrong
  assert wrong > right + keypoint_io.ANATOMY_MARGIN and right < keypoint_io.ANATOMY_RATIO * wrong
