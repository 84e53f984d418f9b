"""launch/export.py and hipart_jax/bundle.py on the session's tiny trained lifter."""

import json
import shutil
import subprocess
import sys
import textwrap

from absl import flags
import jax
import numpy as np
import pytest

import keypoint_files
import pipeline_fixture
from hipart_jax import bundle
from hipart_jax import checkpoints
from hipart_jax import keypoint_io
from hipart_jax import skeleton
from hipart_jax.models import hipart
from launch import export
from launch import infer

BATCH = 4  # keypoint_files' 6 rows: a full batch and a padded one.
NUM_POSES = 3  # Poses the exported function lifts: one padding row.


@pytest.fixture(scope='module')
def exported(tiny_pipeline, tmp_path_factory):
  """(bundle dir, manifest) of the tiny hierarchical lifter, written by the CLI."""
  output = tmp_path_factory.mktemp('export') / 'bundle'
  flag_values = flags.FlagValues()
  export.define_flags(flag_values)
  flag_values(['export', f'--checkpoint={tiny_pipeline["lifter_hierarchical"]}',
               f'--output={output}', f'--batch_size={BATCH}'])
  export.main(['export'], flag_values)
  return output, json.loads((output / bundle.MANIFEST).read_text())


def test_manifest_names_every_stage_and_checksums_every_file(exported, tiny_pipeline):
  output, manifest = exported
  pipeline_fixture.assert_identity(manifest['model'], tiny_pipeline, 'lifter_hierarchical',
                                   'lifter')
  step, frozen = pipeline_fixture.expected_steps(tiny_pipeline, 'lifter_hierarchical')
  assert {name: s['step'] for name, s in manifest['stages'].items()} == dict(
      frozen, lifter=step)
  _, variables, meta = checkpoints.load_hipart(str(tiny_pipeline['lifter_hierarchical']))
  assert manifest['stages']['msst']['model'] == meta['frozen_models']['msst']
  assert manifest['input_source'] == 'gt'  # The fixture's lifters train on gt 2D.
  assert manifest['joint_format']['joint_names'] == list(skeleton.H36M_JOINT_NAMES)
  assert skeleton.Hierarchy.from_json(
      manifest['joint_format']['hierarchy']) == pipeline_fixture.HIERARCHY
  assert sorted(manifest['files']) == sorted(
      [bundle.PREDICT_FILE] + [f'{key}.msgpack' for key in variables])
  for name, digest in manifest['files'].items():
    assert bundle.sha256_file(output / name) == digest
  assert manifest['bundle_sha256'] == bundle.bundle_sha256(manifest['files'])
  convention = manifest['predict']
  assert convention['batch_size'] == BATCH and 'padded' in convention['padding']
  assert [i['shape'] for i in convention['inputs']] == [[BATCH, 17, 2], [BATCH, 17], [BATCH, 2]]
  assert convention['outputs']['pose_3d']['shape'] == [BATCH, 17, 3]
  # Parameters and statistics only: the same leaves as the checkpoint's variables.
  _, loaded, _ = bundle.read(output)
  assert jax.tree.structure(loaded) == jax.tree.structure(jax.device_get(variables))
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)


def test_exported_predict_runs_without_the_project(exported, tiny_pipeline, tmp_path):
  """A process that imports only jax and numpy reproduces `hipart.predict`."""
  output, _ = exported
  model, variables, _ = checkpoints.load_hipart(str(tiny_pipeline['lifter_hierarchical']))
  sequence = keypoint_io.read_keypoints(str(keypoint_files.write_npz(tmp_path)))
  keypoints, confidence, image_size = (
      np.asarray(x[:NUM_POSES], np.float32)
      for x in (sequence.keypoints, sequence.confidence, sequence.image_size))
  expected = hipart.predict(model, variables, keypoints, confidence, image_size,
                            jax.random.key(0))
  pad = lambda x: np.concatenate([x, np.repeat(x[-1:], BATCH - NUM_POSES, 0)])
  np.savez(tmp_path / 'inputs.npz', keypoints=pad(keypoints), confidence=pad(confidence),
           image_size=pad(image_size))
  script = textwrap.dedent(f"""
      import sys
      import jax
      import numpy as np
      inputs = np.load({str(tmp_path / 'inputs.npz')!r})
      with open({str(output / bundle.PREDICT_FILE)!r}, 'rb') as f:
        function = jax.export.deserialize(bytearray(f.read()))
      out = function.call(inputs['keypoints'], inputs['confidence'], inputs['image_size'])
      np.savez({str(tmp_path / 'outputs.npz')!r}, **jax.device_get(out))
      assert not any(name.startswith('hipart_jax') for name in sys.modules), sorted(
          name for name in sys.modules if name.startswith('hipart_jax'))
      """)
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=120, check=False, cwd=str(tmp_path),
                          env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'})
  assert result.returncode == 0, result.stderr[-2000:]
  with np.load(tmp_path / 'outputs.npz') as out:
    assert sorted(out) == ['dense_2d', 'fine_2d', 'pose_3d', 'sparse_2d']
    np.testing.assert_allclose(out['pose_3d'][:NUM_POSES], expected['pose_3d'], atol=1e-5)
    np.testing.assert_allclose(out['fine_2d'][:NUM_POSES], expected['fine_2d'][:, 0],
                               atol=1e-3)  # Pixels near 1000.
    assert np.ptp(out['pose_3d'][:NUM_POSES]) > 0


def test_infer_from_the_bundle_matches_the_checkpoint(exported, tiny_pipeline, tmp_path):
  output, manifest = exported
  path = keypoint_files.write_npz(tmp_path)
  common = dict(input_path=str(path), batch_size=BATCH)
  from_checkpoint = infer.run(checkpoint=str(tiny_pipeline['lifter_hierarchical']),
                              output=str(tmp_path / 'a.npz'), **common)
  from_bundle = infer.run(model_dir=str(output), output=str(tmp_path / 'b.json'), **common)
  for key in ('pose_3d', 'sparse_2d', 'dense_2d', 'fine_2d'):
    np.testing.assert_allclose(from_bundle[key], from_checkpoint[key], atol=1e-6, err_msg=key)
  identity = json.loads(from_bundle['model'].item())
  assert identity.pop('bundle') == str(output.absolute())
  assert identity.pop('bundle_sha256') == manifest['bundle_sha256']
  assert identity == json.loads(from_checkpoint['model'].item())
  document = json.loads((tmp_path / 'b.json').read_text())
  assert document['meta']['model']['bundle_sha256'] == manifest['bundle_sha256']


@pytest.mark.parametrize('given', ['both', 'none'])
def test_infer_needs_exactly_one_model(exported, tiny_pipeline, tmp_path, given):
  output, _ = exported
  models = (dict(checkpoint=str(tiny_pipeline['lifter_hierarchical']), model_dir=str(output))
            if given == 'both' else {})
  with pytest.raises(SystemExit, match='exactly one of --checkpoint .* and --model'):
    infer.run(input_path=str(keypoint_files.write_npz(tmp_path)),
              output=str(tmp_path / 'out.npz'), **models)
  assert not (tmp_path / 'out.npz').exists()


def test_export_of_another_stage_says_which(tiny_pipeline, tmp_path):
  with pytest.raises(SystemExit) as info:
    export.run(checkpoint=str(tiny_pipeline['msst']), output=str(tmp_path / 'bundle'))
  text = str(info.value.code)
  assert text.startswith('export: error: --checkpoint: ') and '\n' not in text
  assert "holds stage 'msst', expected stage 'lifter'" in text
  assert not (tmp_path / 'bundle').exists()


def _missing(bundle_dir):
  (bundle_dir / 'frozen_hiarm.msgpack').unlink()
  return 'frozen_hiarm.msgpack: corrupted bundle: the file is missing'


def _garbled_manifest(bundle_dir):
  path = bundle_dir / bundle.MANIFEST
  path.write_text(path.read_text()[:-40])
  return 'manifest.json: corrupted bundle: the manifest is not valid JSON'


def _changed_params(bundle_dir):
  path = bundle_dir / 'params.msgpack'
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  return 'params.msgpack: checksum mismatch: sha256 '


@pytest.mark.parametrize('damage', [_missing, _garbled_manifest, _changed_params])
def test_damaged_bundle_says_what_is_wrong(exported, tmp_path, damage):
  output, _ = exported
  copy = tmp_path / 'bundle'
  shutil.copytree(output, copy)
  message = damage(copy)
  with pytest.raises(bundle.BundleError, match=message):
    bundle.read(copy)
  with pytest.raises(SystemExit) as info:
    infer.run(model_dir=str(copy), input_path=str(keypoint_files.write_npz(tmp_path)),
              output=str(tmp_path / 'out.npz'))
  text = str(info.value.code)
  assert text.startswith(f'infer: error: --model: {copy}/') and message in text
  assert '\n' not in text and not (tmp_path / 'out.npz').exists()
