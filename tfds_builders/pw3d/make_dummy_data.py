r"""Writes `dummy_data/`: fake 3DPW sequence files, SMPL models and joint regressor.

Nothing here comes from 3DPW or SMPL: a made-up 24-joint body (48 vertices, two per
joint) is posed with random SMPL-style rotations by `smpl.smpl_forward`; its joints are
`jointPositions`; a handheld camera looks at it (per-frame 4x4 world → camera
`cam_poses`, 3x3 `cam_intrinsics` for a 1080x1920 portrait image); `poses2d` are
OpenPose COCO-18 projections with noise, random confidences and some missing keypoints.
Sequence files are Python 2 style protocol-2 pickles (byte strings, `numpy.core`
module names), as the real ones, so they must be read with encoding='latin1'.

Run from the repository root:  python -m tfds_builders.pw3d.make_dummy_data
"""

from __future__ import annotations

import io
import pathlib
import pickle
import struct
import types

from absl import app
import numpy as np

from tfds_builders.pw3d import smpl

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / 'dummy_data'
SEED = 3
# split folder → sequence → (frames, genders of the actors, {actor: invalid frames}).
SEQUENCES = {
    'train': {'courtyard_backpack_00': (6, ('m', 'f'), {1: (2, 3)}),
              'courtyard_arguing_00': (5, ('f',), {0: (4,)})},
    'validation': {'courtyard_drinking_00': (4, ('m',), {})},
    'test': {'outdoors_fencing_01': (5, ('m',), {}),
             'downtown_walking_00': (3, ('f',), {})},
}
INTRINSICS = np.array([[1961.0, 0.0, 540.0], [0.0, 1969.0, 960.0], [0.0, 0.0, 1.0]])
# Rest joints of the fake body (meters, y up, +x the body's left), SMPL joint order.
REST_JOINTS = np.array([
    (0, 0, 0), (0.06, -0.09, 0), (-0.06, -0.09, 0), (0, 0.11, 0), (0.1, -0.47, 0),
    (-0.1, -0.47, 0), (0, 0.24, 0.01), (0.09, -0.87, -0.04), (-0.09, -0.87, -0.04),
    (0, 0.30, 0.02), (0.12, -0.92, 0.08), (-0.12, -0.92, 0.08), (0, 0.51, -0.02),
    (0.08, 0.42, 0), (-0.08, 0.42, 0), (0, 0.6, 0.03), (0.18, 0.45, -0.02),
    (-0.18, 0.45, -0.02), (0.44, 0.43, -0.04), (-0.44, 0.43, -0.04), (0.69, 0.44, -0.04),
    (-0.69, 0.44, -0.04), (0.77, 0.43, -0.05), (-0.77, 0.43, -0.05)])
FEMALE_SCALE = 0.93
VERTEX_OFFSET = 0.02
POSED_VERTICES = 6
POSE_SCALE = 0.2
# OpenPose COCO-18 keypoint → (SMPL joint, offset in meters) used to fake detections.
COCO18_FROM_SMPL = (
    ('nose', 15, (0, 0, 0.1)), ('neck', 12, (0, 0, 0)), ('r_shoulder', 17, (0, 0, 0)),
    ('r_elbow', 19, (0, 0, 0)), ('r_wrist', 21, (0, 0, 0)), ('l_shoulder', 16, (0, 0, 0)),
    ('l_elbow', 18, (0, 0, 0)), ('l_wrist', 20, (0, 0, 0)), ('r_hip', 2, (0, 0, 0)),
    ('r_knee', 5, (0, 0, 0)), ('r_ankle', 8, (0, 0, 0)), ('l_hip', 1, (0, 0, 0)),
    ('l_knee', 4, (0, 0, 0)), ('l_ankle', 7, (0, 0, 0)), ('r_eye', 15, (-0.03, 0.03, 0.08)),
    ('l_eye', 15, (0.03, 0.03, 0.08)), ('r_ear', 15, (-0.07, 0, 0)),
    ('l_ear', 15, (0.07, 0, 0)))
DETECTION_NOISE_PIXELS = 3.0
CAMERA_TURN = 0.1  # radians


class Python2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Protocol-2 pickles as Python 2 wrote them: every str/bytes as a byte string
  (SHORT_BINSTRING/BINSTRING), numpy under its Python 2 module path `numpy.core`."""

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def save_byte_string(self, obj):
    data = obj.encode('latin1') if isinstance(obj, str) else bytes(obj)
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
    self.memoize(obj)

  def save_global(self, obj, name=None):
    name = name or obj.__qualname__
    module = pickle.whichmodule(obj, name).replace('numpy._core', 'numpy.core')
    self.write(pickle.GLOBAL + f'{module}\n{name}\n'.encode('ascii'))
    self.memoize(obj)

  dispatch[str] = save_byte_string
  dispatch[bytes] = save_byte_string
  dispatch[types.FunctionType] = save_global


def python2_pickle(value) -> bytes:
  buffer = io.BytesIO()
  Python2Pickler(buffer, protocol=2).dump(value)
  return buffer.getvalue()


def fake_smpl_arrays(rng: np.random.Generator, scale: float) -> dict[str, np.ndarray]:
  """A 48-vertex SMPL-format model: two vertices beside each joint."""
  joints = REST_JOINTS * scale
  num_joints = len(joints)
  vertices = np.concatenate([joints + [VERTEX_OFFSET, 0, 0], joints - [VERTEX_OFFSET, 0, 0]])
  owner = np.tile(np.arange(num_joints), 2)
  weights = np.zeros((len(vertices), num_joints))
  weights[np.arange(len(vertices)), owner] = 0.8
  parents = np.asarray(smpl.SMPL_PARENTS)
  weights[np.arange(len(vertices)), np.where(parents[owner] < 0, owner, parents[owner])] += 0.2
  regressor = np.zeros((num_joints, len(vertices)))
  regressor[owner, np.arange(len(vertices))] = 0.5
  kintree = np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(num_joints)])
  # Pose blend shapes on a few vertices only (keeps the compressed file small).
  posedirs = np.zeros((len(vertices), 3, 9 * (num_joints - 1)))
  posedirs[:POSED_VERTICES] = rng.normal(0, 0.001, posedirs[:POSED_VERTICES].shape)
  return dict(
      v_template=vertices, shapedirs=rng.normal(0, 0.01, (len(vertices), 3, 10)),
      posedirs=posedirs,
      J_regressor=regressor, weights=weights, kintree_table=kintree.astype(np.uint32),
      f=np.zeros((0, 3), np.uint32))


def camera_poses(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """[N, 4, 4] world → camera: a camera 4 m in front of the body, turning slightly."""
  out = np.zeros((num_frames, 4, 4))
  for i in range(num_frames):
    # Camera y down, looking along -z, then turned a little about every axis (a
    # non-symmetric rotation, so R and its transpose differ).
    rotation = np.diag([1.0, -1.0, -1.0]) @ smpl.rodrigues(rng.normal(0, CAMERA_TURN, 3))
    position = np.array([0.0, 0.2, 4.0]) + rng.normal(0, 0.05, 3)
    out[i, :3, :3] = rotation
    out[i, :3, 3] = -rotation @ position
    out[i, 3, 3] = 1
  return out


def fake_detections(rng: np.random.Generator, joints: np.ndarray, extrinsics: np.ndarray
                    ) -> np.ndarray:
  """[N, 3, 18] OpenPose COCO-18 rows (x, y, confidence), some keypoints missing."""
  points = np.stack([joints[:, j] + offset for _, j, offset in COCO18_FROM_SMPL], axis=1)
  cam = np.einsum('nij,nkj->nki', extrinsics[:, :3, :3], points) + extrinsics[:, None, :3, 3]
  pixels = np.einsum('ij,nkj->nki', INTRINSICS, cam)
  pixels = pixels[..., :2] / pixels[..., 2:]
  pixels += rng.normal(0, DETECTION_NOISE_PIXELS, pixels.shape)
  confidence = rng.uniform(0.3, 1.0, pixels.shape[:2])
  missing = rng.random(confidence.shape) < 0.1
  pixels[missing], confidence[missing] = 0.0, 0.0
  return np.concatenate([pixels, confidence[..., None]], -1).transpose(0, 2, 1)


def main(argv):
  del argv
  rng = np.random.default_rng(SEED)
  models = {'m': fake_smpl_arrays(rng, 1.0), 'f': fake_smpl_arrays(rng, FEMALE_SCALE)}
  (DUMMY_DIR / 'smpl').mkdir(parents=True, exist_ok=True)
  np.savez_compressed(DUMMY_DIR / 'smpl' / 'SMPL_MALE.npz', **models['m'])
  np.savez_compressed(DUMMY_DIR / 'smpl' / 'SMPL_FEMALE.npz', **models['f'])
  # Fake Human3.6M regressor: the table mapping applied to the joint regressor.
  np.save(DUMMY_DIR / 'J_regressor_h36m.npy',
          smpl.smpl_to_h36m_matrix() @ models['m']['J_regressor'])
  for split, sequences in SEQUENCES.items():
    folder = DUMMY_DIR / 'sequenceFiles' / split
    folder.mkdir(parents=True, exist_ok=True)
    for name, (num_frames, genders, invalid) in sequences.items():
      extrinsics = camera_poses(rng, num_frames)
      data = {key: [] for key in ('betas', 'poses', 'trans', 'jointPositions', 'poses2d',
                                  'campose_valid', 'v_template_clothed', 'betas_clothed',
                                  'poses_60Hz', 'trans_60Hz')}
      for actor, gender in enumerate(genders):
        model = smpl.SmplModel.from_arrays(models[gender])
        betas = rng.normal(0, 1, 10)
        poses = rng.normal(0, POSE_SCALE, (num_frames, 72))
        poses[:, :3] = rng.normal(0, 0.05, (num_frames, 3))  # stays upright (y up)
        trans = np.array([0.4 * actor - 0.2, 0.0, 0.0]) + np.linspace(
            0, 0.1, num_frames)[:, None]
        _, joints = smpl.smpl_forward(model, betas, poses, trans)
        valid = np.ones(num_frames, bool)
        valid[list(invalid.get(actor, ()))] = False
        data['betas'].append(betas)
        data['poses'].append(poses)
        data['trans'].append(trans)
        data['jointPositions'].append(joints.reshape(num_frames, 72))
        data['poses2d'].append(fake_detections(rng, joints, extrinsics))
        data['campose_valid'].append(valid)
        data['v_template_clothed'].append(models[gender]['v_template'])
        data['betas_clothed'].append(betas)
        data['poses_60Hz'].append(np.repeat(poses, 2, axis=0))
        data['trans_60Hz'].append(np.repeat(trans, 2, axis=0))
      data.update(sequence=name, genders=list(genders), cam_poses=extrinsics,
                  cam_intrinsics=INTRINSICS, img_frame_ids=np.arange(num_frames))
      (folder / f'{name}.pkl').write_bytes(python2_pickle(data))
  print(f'wrote dummy 3DPW files under {DUMMY_DIR}')


if __name__ == '__main__':
  app.run(main)
