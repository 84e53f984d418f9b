"""hipart_jax/provenance.py: the model identity names every stage's real step."""

import hashlib
import json
import shutil

import pipeline_fixture
from hipart_jax import checkpoints
from hipart_jax import provenance
from hipart_jax import skeleton


def test_config_hash_ignores_key_order_and_joint_names_follow_the_hierarchy():
  assert provenance.config_sha256({'b': 1, 'a': [2]}) == provenance.config_sha256(
      {'a': [2], 'b': 1}) == hashlib.sha256(b'{"a": [2], "b": 1}').hexdigest()
  assert provenance.config_sha256(None) is None
  h = pipeline_fixture.HIERARCHY
  names = provenance.hierarchy_joint_names(h)
  assert names['sparse'] == list(skeleton.H36M_JOINT_NAMES)
  assert len(names['dense']) == h.num_dense and len(names['fine']) == h.num_fine
  part = skeleton.H36M_JOINT_NAMES[h.dense_part[0]]
  assert names['dense'][0] == f'{part}/dense_0'
  assert names['fine'][0].startswith(names['dense'][h.fine_parent[0]] + '/fine_0')


def test_a_resumed_lifter_keeps_the_frozen_steps_it_embeds(tiny_pipeline, tmp_path):
  """Resumed after its MSST trained on (a later step there), the lifter still names
  the MSST step whose variables its checkpoint holds."""
  lifter, msst = tmp_path / 'lifter', tmp_path / 'msst'
  shutil.copytree(tiny_pipeline['lifter_hierarchical'], lifter)
  shutil.copytree(tiny_pipeline['msst'], msst)
  embedded = pipeline_fixture.saved_step(msst)
  (msst / 'checkpoints' / str(embedded)).rename(msst / 'checkpoints' / str(embedded + 1))
  steps = pipeline_fixture.saved_step(lifter) + 2
  pipeline_fixture.run(pipeline_fixture.lifter_config(
      'hierarchical', msst, tiny_pipeline['hiarm'], steps=steps), lifter)
  _, _, meta = checkpoints.load_hipart(str(lifter))
  identity = provenance.model_identity(lifter, meta)
  assert identity['step'] == steps
  assert identity['frozen']['msst']['step'] == embedded
  assert json.loads(json.dumps(identity)) == identity
