"""Every command of docs/PROTOCOLS.md runs on dummy or synthetic data; MPI-INF-3DHP pinned.

The commands are parsed from the document's protocol table, pointed at the session's tiny
hierarchical lifter and at a data dir where each protocol's builder config was built once
from its `dummy_data` (synthetic_poses needs no files), and run through
launch/evaluate.py's flag parsing and `main` in-process. All runs share one batch size,
so the lifter compiles once.
"""

import contextlib
import importlib
import json
import math
import pathlib
import re
import shlex

from absl import flags
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hipart_jax import checkpoints
from hipart_jax import evaluation
from hipart_jax import input_pipeline
from hipart_jax import protocols
from hipart_jax.models import hipart
from launch import evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
PROGRAM = ['python', '-m', 'launch.evaluate']
TABLE = re.compile(r'<!-- BEGIN PROTOCOLS TABLE.*?-->(.*?)<!-- END PROTOCOLS TABLE -->',
                   re.DOTALL)
COMMAND = re.compile(r'`(python -m launch\.evaluate [^`]*)`')
# Builder configs whose own clip lists the dummy data does not hold (`multi_subject` names
# 73 real files): {tfds name: clip lists to build from instead}. TFDS refuses a custom
# config of a registered name, so the registered one is changed for the build and put back.
DUMMY_CLIPS = {'cmu_mocap/multi_subject': dict(
    train_clips=('01_01', 'bvh:02_01', 'bvh:10_04', 'bvh:131_01'),
    validation_clips=('01_02',), test_clips=('bvh:06_01', 'bvh:09_01', 'bvh:13_11'))}


@contextlib.contextmanager
def _registered_config_with(name, fields):
  builder = tfds.builder_cls(name.split('/')[0])
  config = builder.builder_configs[name.split('/')[1]] if fields else None
  saved = {key: getattr(config, key) for key in fields}
  for key, value in fields.items():
    setattr(config, key, value)
  try:
    yield
  finally:
    for key, value in saved.items():
      setattr(config, key, value)


# Test subjects the dummy data lacks (tfds_builders/human36m/make_dummy_data.py: S9 only).
DUMMY_MISSING = {'human36m_p1': ['S11'], 'human36m_p2': ['S11']}
# MPI-INF-3DHP, written out by hand: scene of each test sequence, and the valid finite
# frames per sequence of the dummy data (tfds_builders/mpi_inf_3dhp/make_dummy_data.py).
MPI_SCENES = {'TS1': 'studio_green_screen', 'TS2': 'studio_green_screen',
              'TS3': 'studio_no_green_screen', 'TS4': 'studio_no_green_screen',
              'TS5': 'outdoor', 'TS6': 'outdoor'}
MPI_FRAMES = {'TS1': 5, 'TS2': 2, 'TS3': 4, 'TS4': 2, 'TS5': 3, 'TS6': 2}
PCK_MM, AUC_STEP_MM = 150.0, 5.0
PELVIS = 0


def _table_commands():
  """{protocol: command} of every row of the document's protocol table."""
  text = (REPO / 'docs' / 'PROTOCOLS.md').read_text()
  match = TABLE.search(text)
  assert match, 'docs/PROTOCOLS.md has no protocol table'
  commands = {}
  for line in match.group(1).splitlines():
    if line.startswith('| `'):
      found = COMMAND.findall(line)
      assert len(found) == 1, line
      commands[line.split('`')[1]] = found[0]
  return commands


COMMANDS = _table_commands()


def test_the_table_has_a_command_per_protocol():
  assert sorted(COMMANDS) == sorted(protocols.PROTOCOLS)
  for name, command in COMMANDS.items():
    assert f'--protocol={name}' in shlex.split(command)


@pytest.fixture(scope='module')
def prepare(tmp_path_factory):
  """protocol name -> a TFDS data dir holding its builder config, built from dummy data.

  Each builder config is built once per module, when a test first needs it.
  """
  root = tmp_path_factory.mktemp('protocol_tfds')
  built = set()

  def data_dir(protocol):
    name = protocols.PROTOCOLS[protocol].tfds_name
    if name not in built:
      dataset = name.split('/')[0]
      module = importlib.import_module(  # Registers the builder.
          f'tfds_builders.{dataset}.{dataset}_dataset_builder')
      dummy = pathlib.Path(module.__file__).parent / 'dummy_data'
      with _registered_config_with(name, DUMMY_CLIPS.get(name, {})):
        tfds.builder(name, data_dir=str(root)).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(dummy)))
      built.add(name)
    return root
  return data_dir


def _run(command, checkpoint, workdir, data_dir):
  """Runs a documented command with its placeholders filled; returns metrics.json."""
  words = shlex.split(command.replace('<lifter workdir>', str(checkpoint))
                      .replace('<out dir>', str(workdir)))
  assert words[:len(PROGRAM)] == PROGRAM and '<' not in ' '.join(words), command
  flag_values = flags.FlagValues()
  evaluate.define_flags(flag_values)
  flag_values(['evaluate'] + words[len(PROGRAM):] + [f'--data_dir={data_dir}'])
  evaluate.main(['evaluate'], flag_values)
  return json.loads((pathlib.Path(workdir) / 'metrics.json').read_text())


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_documented_command_runs(tiny_pipeline, prepare, tmp_path, capsys, name):
  spec = protocols.PROTOCOLS[name]
  data_dir = prepare(name)
  capsys.readouterr()  # Drops what building the dataset printed.
  written = _run(COMMANDS[name], tiny_pipeline['lifter_hierarchical'], tmp_path / 'out',
                 data_dir)
  assert written['protocol'] == name and written['settings']['dataset'] == spec.tfds_name
  assert written['settings']['lifter_mode'] == 'hierarchical'
  assert list(written['headline']) == list(spec.metrics)
  for metric, value in written['headline'].items():
    assert value == written[metric] and math.isfinite(value) and value > 0, (metric, value)
  split = tfds.builder(spec.tfds_name, data_dir=str(data_dir)).info.splits[spec.split]
  assert written['num_examples'] == split.num_examples > 0  # Every example, once.
  assert written['missing_subjects'] == DUMMY_MISSING.get(name, [])
  assert set(written['per_group']) == {group for _, group in spec.groups}
  printed = capsys.readouterr().out  # The table of the headline metrics.
  headers = dict(evaluation.TABLE_COLUMNS)
  assert printed.startswith(f'{name}: {spec.tfds_name} {spec.split}'), printed[:200]
  assert all(headers[metric] in printed for metric in spec.metrics), printed[:400]


def _hand_metrics(pred, target):
  """(PCK@150 mm, AUC over 0, 5, ..., 150 mm, MPJPE mm) of one example, numpy by hand."""
  pred = pred - pred[PELVIS]
  target = target - target[PELVIS]
  errors = np.sqrt(((pred.astype(np.float64) - target) ** 2).sum(-1)) * 1000.0
  thresholds = np.arange(0.0, PCK_MM + AUC_STEP_MM / 2, AUC_STEP_MM)
  assert len(thresholds) == 31
  return (np.mean(errors < PCK_MM), np.mean([np.mean(errors < t) for t in thresholds]),
          np.mean(errors))


def test_mpi_inf_3dhp_metrics_by_hand(tiny_pipeline, prepare, tmp_path):
  """PCK, AUC and MPJPE of metrics.json, overall and per scene, recomputed in numpy."""
  checkpoint = tiny_pipeline['lifter_hierarchical']
  data_dir = prepare('mpi_inf_3dhp')
  written = _run(COMMANDS['mpi_inf_3dhp'], checkpoint, tmp_path / 'out', data_dir)
  # The predictions evaluate scored: the same evaluation again, with its arrays.
  spec = protocols.PROTOCOLS['mpi_inf_3dhp']
  model, variables, meta = checkpoints.load_hipart(str(checkpoint))
  config = evaluate.data_config_for(spec, meta, str(data_dir))
  source, hierarchy, _ = input_pipeline.load_source(config, spec.split)
  settings = written['settings']
  predictions = evaluation.evaluate(
      model, variables, source, hierarchy, config, batch_size=settings['batch_size'],
      seed=settings['seed'], protocol=spec, progress=False,
      return_predictions=True)['predictions']
  examples = [source[int(i)] for i in predictions['index']]
  # They are what the user-facing lifter gives for the examples' pixel keypoints...
  keypoints = np.stack([e['keypoints_2d']['gt'] for e in examples])
  lifted = evaluation.predict_in_batches(
      model, variables, keypoints[..., :2], keypoints[..., 2],
      np.stack([e['image_size'] for e in examples]), jax.random.key(0),
      batch_size=settings['batch_size'], progress=False)
  np.testing.assert_allclose(lifted['pose_3d'], predictions['pose_3d'], atol=1e-5)
  # ... scored against the dataset's univ_annot3 joints.
  targets = np.stack([e['sparse_3d'] for e in examples])
  np.testing.assert_allclose(predictions['target_3d'] - predictions['target_3d'][:, :1],
                             targets - targets[:, :1], atol=1e-7)
  per_example = np.array([_hand_metrics(p, t)
                          for p, t in zip(predictions['pose_3d'], targets)])
  scenes = np.array([MPI_SCENES[e['subject'].decode()] for e in examples])
  expected = {'all': (per_example, len(examples))}
  for scene in set(MPI_SCENES.values()):
    frames = sum(n for s, n in MPI_FRAMES.items() if MPI_SCENES[s] == scene)
    expected[scene] = (per_example[scenes == scene], frames)
  assert len(examples) == sum(MPI_FRAMES.values())
  assert set(written['per_group']) == set(expected) - {'all'}
  for scene, (values, count) in expected.items():
    reported = written if scene == 'all' else written['per_group'][scene]
    assert reported['num_examples'] == count == len(values), scene
    # PCK and AUC are fractions; MPJPE (mm) comes from float32 poses: relative 1e-6.
    for k, (key, atol, rtol) in enumerate((('pck150', 1e-6, 0.0), ('auc', 1e-6, 0.0),
                                            ('mpjpe_mm', 0.0, 1e-6))):
      np.testing.assert_allclose(reported[key], values[:, k].mean(), rtol=rtol, atol=atol,
                                 err_msg=f'{scene} {key}')
  assert written['headline'] == {key: written[key] for key in ('pck150', 'auc', 'mpjpe_mm')}
