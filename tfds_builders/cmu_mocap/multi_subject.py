"""Clips, subject-disjoint splits and coarse action labels of the `multi_subject` config.

Every clip is listed by id, so a missing file is an error rather than a smaller split.
Subject 01 enters as its 12 ASF/AMC clips; bvh:01_01 is the same take and is left out.
Labels are coarse classes read off CMU's descriptions (the shared data's README).
"""

from __future__ import annotations

ACTIONS = ('walk', 'run', 'jump', 'dance', 'sports', 'martial_arts', 'everyday',
           'playground')

_ASF_01 = {f'01_{trial:02d}': 'playground' for trial in range(1, 13)}
# bvh clip id (without the 'bvh:' prefix) → coarse action.
_BVH = {
    # 02: various expressions and human behaviors.
    '02_01': 'walk', '02_02': 'walk', '02_03': 'run', '02_04': 'jump',
    '02_05': 'martial_arts', '02_06': 'everyday', '02_07': 'martial_arts',
    '02_08': 'martial_arts', '02_09': 'martial_arts', '02_10': 'everyday',
    # 03: walk on uneven terrain.
    '03_01': 'walk', '03_02': 'walk',
    # 05: modern dance (05_01 is a walk).
    '05_01': 'walk', '05_02': 'dance', '05_03': 'dance', '05_04': 'dance',
    '05_05': 'dance', '05_06': 'dance', '05_08': 'dance', '05_11': 'dance',
    '05_13': 'dance', '05_16': 'dance',
    # 06: dribble, shoot basketball (06_01 is a walk).
    '06_01': 'walk', '06_02': 'sports', '06_03': 'sports', '06_06': 'sports',
    '06_08': 'sports', '06_10': 'sports', '06_14': 'sports', '06_15': 'sports',
    # 07, 08: walk. 09: run.
    **{f'07_{t}': 'walk' for t in ('01', '02', '03', '04', '06', '08', '10', '12')},
    **{f'08_{t}': 'walk' for t in ('01', '02', '03', '04', '05', '07', '11')},
    **{f'09_{t}': 'run' for t in ('01', '02', '03', '04', '05', '06', '12')},
    # 10, 11: kick soccer ball.
    '10_04': 'sports', '11_01': 'sports',
    # 12: tai chi, walk.
    '12_01': 'walk', '12_02': 'walk',  # Both travel about 4 m in a line.
    # 13, 14: various everyday behaviors.
    '13_11': 'everyday', '13_13': 'everyday', '13_39': 'everyday', '14_07': 'everyday',
    # 131: start walk stop (Michael-Jackson-styled motions).
    '131_01': 'walk',
}

TRAIN_SUBJECTS = ('01', '02', '03', '05', '07', '10', '11', '12', '131')
VALIDATION_SUBJECTS = ('08', '14')
TEST_SUBJECTS = ('06', '09', '13')


def _clips(subjects: tuple[str, ...]) -> tuple[str, ...]:
  """The listed clip ids of `subjects`: ASF/AMC ids for subject 01, 'bvh:' ids else."""
  asf = [clip for clip in _ASF_01 if clip.split('_')[0] in subjects]
  bvh = [f'bvh:{clip}' for clip in _BVH if clip.split('_')[0] in subjects]
  return tuple(asf + bvh)


TRAIN_CLIPS = _clips(TRAIN_SUBJECTS)
VALIDATION_CLIPS = _clips(VALIDATION_SUBJECTS)
TEST_CLIPS = _clips(TEST_SUBJECTS)
CLIP_ACTIONS = {**_ASF_01, **{f'bvh:{clip}': action for clip, action in _BVH.items()
                              if clip != '01_01'}}
