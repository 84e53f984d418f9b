"""The public BVH conversions of the CMU database, as data: one name map per dialect.

A BVH segment j runs from parent(j) to joint j (fraction 1 is joint j itself; End Sites
are '<parent>_end'); a fraction beyond 1 stays on the same rigid segment. Each dialect
gives, per Human3.6M joint, (segment, fraction, segment driving the bone parent → joint),
per `h36m_map.EXTRA_POINTS` name a (segment, fraction), and optional virtual End Sites
for points the file has no joint for: name → (parent joint, rest-pose offset in units of
the rest leg length, thigh + shin), added before forward kinematics, and how many
leading MOTION frames are the rest pose rather than motion ('lead_in_frames').

The CMU-unit conversions drop the ASF `thorax` bone (the neck and clavicles start where
the second back bone ends, at zero offset), which puts the neck, head and arms one back
bone (about 11.6 cm) low. 'restore' regrows it when asked: each named joint takes the
offset of the back bone below it (the ASF back bones are near equal), and the spine and
thorax points move to where the ASF has them (half-way up the second back bone, at the
regrown neck base).

Dialects are told apart by their joint names (`h36m_map.detect_bvh_dialect`); lengths
carry no unit, so `h36m_map.infer_meters_per_unit` reads it off the leg length.
"""

from __future__ import annotations

# 3ds-Max-friendly (checked on 131_01): arms hang down in the rest pose; the back has two
# bones (lowerback → Chest → Chest2) where the ASF has three. Its 'joints' are those of
# the `shared_clips` examples (no restore).
THREE_DS_MAX = {
    'joints': {
        'pelvis': ('Hips', 1.0, 'Hips'),
        'r_hip': ('RightHip', 1.0, 'RightHip'),
        'r_knee': ('RightKnee', 1.0, 'RightKnee'),
        'r_ankle': ('RightAnkle', 1.0, 'RightAnkle'),
        'l_hip': ('LeftHip', 1.0, 'LeftHip'),
        'l_knee': ('LeftKnee', 1.0, 'LeftKnee'),
        'l_ankle': ('LeftAnkle', 1.0, 'LeftAnkle'),
        'spine': ('Chest', 1.0, 'Chest'),
        'thorax': ('Chest2', 1.0, 'Chest2'),
        'neck_nose': ('Head', 1.0, 'Neck'),
        'head': ('Head_end', 1.0, 'Head_end'),
        'l_shoulder': ('LeftShoulder', 1.0, 'LeftShoulder'),
        'l_elbow': ('LeftElbow', 1.0, 'LeftElbow'),
        'l_wrist': ('LeftWrist', 1.0, 'LeftWrist'),
        'r_shoulder': ('RightShoulder', 1.0, 'RightShoulder'),
        'r_elbow': ('RightElbow', 1.0, 'RightElbow'),
        'r_wrist': ('RightWrist', 1.0, 'RightWrist'),
    },
    'extra_points': {
        'l_toe_base': ('LeftToe', 1.0), 'l_toe_tip': ('LeftToe_end', 1.0),
        'l_hand': ('LFingers', 1.0), 'l_finger_tip': ('LFingers_end', 1.0),
        'l_thumb_tip': ('LThumb_end', 1.0),
        'r_toe_base': ('RightToe', 1.0), 'r_toe_tip': ('RightToe_end', 1.0),
        'r_hand': ('RFingers', 1.0), 'r_finger_tip': ('RFingers_end', 1.0),
        'r_thumb_tip': ('RThumb_end', 1.0),
        'neck': ('Neck', 1.0),
    },
    'sites': {},
    'lead_in_frames': 0,
    'restore': {
        'offsets': {'lowerneck': 'Chest2', 'LeftCollar': 'Chest2', 'RightCollar': 'Chest2'},
        'joints': {'spine': ('Chest2', 0.5, 'Chest'), 'thorax': ('lowerneck', 1.0, 'Chest2')},
    },
}

# MotionBuilder-friendly (01_01, 02_*..09_*): T-pose rest like the ASF, same bone
# vectors as the ASF except that the ASF `thorax` bone is dropped (Spine1 → Neck has
# zero length); restored, 01_01 matches its ASF/AMC take within 6 mm.
MOTIONBUILDER = {
    'joints': {
        'pelvis': ('Hips', 1.0, 'Hips'),
        'r_hip': ('RightUpLeg', 1.0, 'RightUpLeg'),
        'r_knee': ('RightLeg', 1.0, 'RightLeg'),
        'r_ankle': ('RightFoot', 1.0, 'RightFoot'),
        'l_hip': ('LeftUpLeg', 1.0, 'LeftUpLeg'),
        'l_knee': ('LeftLeg', 1.0, 'LeftLeg'),
        'l_ankle': ('LeftFoot', 1.0, 'LeftFoot'),
        'spine': ('Spine', 1.0, 'Spine'),
        'thorax': ('Spine1', 1.0, 'Spine1'),
        'neck_nose': ('Head', 1.0, 'Neck1'),
        'head': ('Head_end', 1.0, 'Head_end'),
        'l_shoulder': ('LeftArm', 1.0, 'LeftArm'),
        'l_elbow': ('LeftForeArm', 1.0, 'LeftForeArm'),
        'l_wrist': ('LeftHand', 1.0, 'LeftHand'),
        'r_shoulder': ('RightArm', 1.0, 'RightArm'),
        'r_elbow': ('RightForeArm', 1.0, 'RightForeArm'),
        'r_wrist': ('RightHand', 1.0, 'RightHand'),
    },
    'extra_points': {
        'l_toe_base': ('LeftToeBase', 1.0), 'l_toe_tip': ('LeftToeBase_end', 1.0),
        'l_hand': ('LeftHandIndex1', 1.0), 'l_finger_tip': ('LeftHandIndex1_end', 1.0),
        'l_thumb_tip': ('LThumb_end', 1.0),
        'r_toe_base': ('RightToeBase', 1.0), 'r_toe_tip': ('RightToeBase_end', 1.0),
        'r_hand': ('RightHandIndex1', 1.0), 'r_finger_tip': ('RightHandIndex1_end', 1.0),
        'r_thumb_tip': ('RThumb_end', 1.0),
        'neck': ('Neck1', 1.0),
    },
    'sites': {},
    # Frame 0 is the T-pose; frame 1 is the ASF/AMC take's first frame.
    'lead_in_frames': 1,
    'restore': {
        'offsets': {'Neck': 'Spine1', 'LeftShoulder': 'Spine1', 'RightShoulder': 'Spine1'},
        'joints': {'spine': ('Spine1', 0.5, 'Spine'), 'thorax': ('Neck', 1.0, 'Spine1')},
    },
}

# Daz-friendly (10_04, 11_01, 12_*, 13_*, 14_07): one retargeted figure in centimetres,
# T-pose rest, channels Z X Y. Its root 'hip' sits just below the hip joints and its
# head joint at the skull base, so the pelvis, thorax, neck and head are placed where the
# ASF skeleton has them, in proportion: pelvis 0.12 leg lengths above the hip line
# (6/10 of hip → abdomen), thorax at the clavicle roots (the ASF thorax end), spine
# half-way (the chest joint), and two head sites 0.12 and 0.24 leg lengths above the
# skull base (the ASF head bone's start and end over the thorax).
DAZ = {
    'joints': {
        'pelvis': ('abdomen', 0.6, 'hip'),
        'r_hip': ('rThigh', 1.0, 'rThigh'),
        'r_knee': ('rShin', 1.0, 'rShin'),
        'r_ankle': ('rFoot', 1.0, 'rFoot'),
        'l_hip': ('lThigh', 1.0, 'lThigh'),
        'l_knee': ('lShin', 1.0, 'lShin'),
        'l_ankle': ('lFoot', 1.0, 'lFoot'),
        'spine': ('chest', 1.0, 'chest'),
        'thorax': ('neck', 0.87, 'neck'),
        'neck_nose': ('head_nose', 1.0, 'head'),
        'head': ('head_top', 1.0, 'head_top'),
        'l_shoulder': ('lShldr', 1.0, 'lShldr'),
        'l_elbow': ('lForeArm', 1.0, 'lForeArm'),
        'l_wrist': ('lHand', 1.0, 'lHand'),
        'r_shoulder': ('rShldr', 1.0, 'rShldr'),
        'r_elbow': ('rForeArm', 1.0, 'rForeArm'),
        'r_wrist': ('rHand', 1.0, 'rHand'),
    },
    # The foot's End Site is the ball of the foot; the toe tip lies half as far again.
    'extra_points': {
        'l_toe_base': ('lFoot_end', 1.0), 'l_toe_tip': ('lFoot_end', 1.5),
        'l_hand': ('lMid1', 1.0), 'l_finger_tip': ('lMid2_end', 1.0),
        'l_thumb_tip': ('lThumb2_end', 1.0),
        'r_toe_base': ('rFoot_end', 1.0), 'r_toe_tip': ('rFoot_end', 1.5),
        'r_hand': ('rMid1', 1.0), 'r_finger_tip': ('rMid2_end', 1.0),
        'r_thumb_tip': ('rThumb2_end', 1.0),
        'neck': ('head', 1.0),
    },
    'sites': {
        'head_nose': ('head', (0.0, 0.12, 0.0)),
        'head_top': ('head', (0.0, 0.24, 0.0)),
    },
    'lead_in_frames': 0,
    'restore': {'offsets': {}, 'joints': {}},
}

DIALECTS = {'3ds_max': THREE_DS_MAX, 'motionbuilder': MOTIONBUILDER, 'daz': DAZ}

# Meters per file unit in circulation: CMU's 1/0.45 inch, inch, centimetre, metre.
UNITS = {'cmu': 0.0254 / 0.45, 'inch': 0.0254, 'cm': 0.01, 'm': 1.0}
# A human's rest thigh + shin length (m) lies in this range; its middle picks the unit.
LEG_LENGTH_RANGE = (0.6, 1.2)
