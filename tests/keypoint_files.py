"""One known pose set written as keypoint files of every format keypoint_io reads.

The set: two people over three frames (`FRAMES`), COCO-17 pixels in a 1920x1080 image,
one missing keypoint (person 1's left wrist in the middle frame). `write_npz` writes its
Human3.6M-17 conversion; each writer of `WRITERS` writes the same poses in one detector
format, so every file reads back as the npz's sequence (tests/test_keypoint_io.py) and
lifts to the same 3D poses (tests/test_infer_formats.py).
"""

import json

import numpy as np

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


def coco_pose_set():
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


def in_layout(layout):
  """([P, T, K, 2], [P, T, K]) of the pose set in `layout`'s keypoint order."""
  names = _named_points(*coco_pose_set())
  xy = np.stack([names[k][0] for k in layout.keypoint_names], axis=-2)
  return xy, np.stack([names[k][1] for k in layout.keypoint_names], axis=-1)


def flat(xy, scores):
  """[K, 2] and [K] -> the K * 3 numbers (x, y, score) of COCO-style keypoint lists."""
  return np.concatenate([xy, scores[..., None]], -1).reshape(-1).tolist()


def write_json(path, data):
  path.write_text(json.dumps(data))
  return path


def write_npz(directory, coco_order=False):
  """The pose set in Human3.6M-17 (or COCO-17) order, with frames, tracks, image size."""
  xy, scores = coco_pose_set()
  if not coco_order:
    xy, scores = skeleton.COCO17.convert(xy, scores)
  path = directory / ('poses_coco.npz' if coco_order else 'poses.npz')
  frame = np.broadcast_to(np.array(FRAMES), (PEOPLE, len(FRAMES)))
  track = np.broadcast_to(np.arange(PEOPLE)[:, None], (PEOPLE, len(FRAMES)))
  np.savez(path, keypoints=xy.reshape(-1, 17, 2), scores=scores.reshape(-1, 17),
           image_size=np.array(IMAGE_SIZE), frame=frame.reshape(-1), track=track.reshape(-1))
  return path


def _results(directory, layout, name, image_id, track=None):
  """COCO/AlphaPose results list; in the middle frame person 1 is listed first."""
  xy, scores = in_layout(layout)
  records = []
  for t, frame in enumerate(FRAMES):
    for p in ((1, 0) if t == 1 and track else (0, 1)):
      record = dict(image_id=image_id(frame), category_id=1, score=0.9,
                    keypoints=flat(xy[p, t], scores[p, t]))
      if track:
        record['idx'] = track(p)
      records.append(record)
  return write_json(directory / name, records)


def write_coco(directory):
  return _results(directory, skeleton.COCO17, 'coco.json', lambda f: f)


def write_coco_annotations(directory):
  """A COCO person_keypoints file with the images' sizes; `v` holds the pose set's scores
  (real files hold flags 0/1/2, which read as 0 and 1) so the file reads as the npz."""
  xy, scores = in_layout(skeleton.COCO17)
  annotations = [dict(id=len(FRAMES) * p + t, image_id=frame, category_id=1, iscrowd=0,
                      num_keypoints=int((scores[p, t] > 0).sum()),
                      keypoints=flat(xy[p, t], scores[p, t]))
                 for t, frame in enumerate(FRAMES) for p in range(PEOPLE)]
  images = [dict(id=frame, file_name=f'{frame:012d}.jpg', width=IMAGE_SIZE[0],
                 height=IMAGE_SIZE[1]) for frame in FRAMES]
  return write_json(directory / 'person_keypoints.json',
                    dict(images=images, annotations=annotations,
                         categories=[dict(id=1, name='person')]))


def write_halpe(directory):
  return _results(directory, skeleton.HALPE26, 'alphapose-results.json',
                  lambda f: f'frame_{f:04d}.jpg', track=lambda p: [float(p)])


def write_openpose(directory, layout=skeleton.OPENPOSE_BODY25, person_ids=False):
  """A folder of OpenPose frames `clip_<frame>_keypoints.json`."""
  folder = directory / 'openpose'
  folder.mkdir()
  xy, scores = in_layout(layout)
  for t, frame in enumerate(FRAMES):
    people = [dict(person_id=[p if person_ids else -1],
                   pose_keypoints_2d=flat(xy[p, t], scores[p, t]), face_keypoints_2d=[])
              for p in range(PEOPLE)]
    write_json(folder / f'clip_{frame:012d}_keypoints.json', dict(version=1.3, people=people))
  return folder


def _mmpose_instance(xy, scores, track=None):
  instance = dict(keypoints=xy.tolist(), keypoint_scores=scores.tolist(), bbox=[[0, 0, 1, 1]],
                  bbox_score=0.9)
  if track is not None:
    instance['track_id'] = track
  return instance


def write_mmpose(directory, layout=skeleton.COCO17):
  """MMPose `instance_info` predictions with frame and track ids."""
  xy, scores = in_layout(layout)
  info = [dict(frame_id=frame, instances=[_mmpose_instance(xy[p, t], scores[p, t], track=p)
                                          for p in ((1, 0) if t == 1 else (0, 1))])
          for t, frame in enumerate(FRAMES)]
  return write_json(directory / 'results_clip.json',
                    dict(meta_info=dict(dataset_name='coco'), instance_info=info))


def write_mmpose_predictions(directory):
  """MMPose inferencer `predictions`: one list per frame, no frame or track ids."""
  xy, scores = in_layout(skeleton.COCO17)
  predictions = [[_mmpose_instance(xy[p, t], scores[p, t]) for p in range(PEOPLE)]
                 for t in range(len(FRAMES))]
  return write_json(directory / 'predictions.json', dict(predictions=predictions))


# Writer name -> (directory -> path of the file or folder written).
WRITERS = {
    'coco': write_coco,
    'halpe': write_halpe,
    'openpose_body25': write_openpose,
    'openpose_coco18': lambda d: write_openpose(d, skeleton.OPENPOSE_COCO18),
    'openpose_ids': lambda d: write_openpose(d, person_ids=True),
    'openpose_body25b': lambda d: write_openpose(d, keypoint_io.OPENPOSE_BODY25B),
    'npz_coco17': lambda d: write_npz(d, coco_order=True),
    'coco_annotations': write_coco_annotations,
    'mmpose_coco17': write_mmpose,
    'mmpose_halpe26': lambda d: write_mmpose(d, skeleton.HALPE26),
    'mmpose_predictions': write_mmpose_predictions,
}
FORMAT_OF = {'coco': 'coco', 'halpe': 'halpe', 'openpose_body25': 'openpose',
             'openpose_coco18': 'openpose', 'openpose_ids': 'openpose',
             'openpose_body25b': 'openpose_body25b', 'npz_coco17': 'npz_coco17',
             'coco_annotations': 'coco_annotations', 'mmpose_coco17': 'mmpose',
             'mmpose_halpe26': 'mmpose', 'mmpose_predictions': 'mmpose'}
# Formats that share a keypoint count with another are detected as that one, and read
# right only when requested (the anatomy check refuses them otherwise).
DETECTED_AS = {'openpose_body25b': 'openpose', 'npz_coco17': 'npz'}
# MMPose `predictions` lists carry no frame id: their frames are list positions, the
# others' frames are FRAMES. Frame of a writer's row = reference frame - FRAME_OFFSET.
FRAME_OFFSET = {name: FRAMES[0] if name == 'mmpose_predictions' else 0 for name in WRITERS}
