"""Training and inference under faults: killed processes, a full disk, corrupt
checkpoints, late and deadlocked devices in CPU collectives, a folder of 10 000 frames.

Training runs tests/test_train.py's toy stage through the real loop (docs/RELIABILITY.md
lists the cases). Processes that must die run as subprocesses of `subprocess_main`.
"""

import errno
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import keypoint_files
import pipeline_fixture
import suite_xla_flags
import test_train
from hipart_jax import checkpoint_checksums
from hipart_jax import checkpoints
from hipart_jax import input_pipeline
from hipart_jax import keypoint_io
from hipart_jax import skeleton
from hipart_jax.training import loop
from hipart_jax.training import stages
from hipart_jax.training import trainer
from launch import evaluate
from launch import infer

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 10
SAVE_DELAY_S = 0.3  # How long each save's commit is held in the killed runs.


def fault_config(**overrides):
  """A checkpoint every step, so that kills often land in a save."""
  config = test_train.make_config(num_train_steps=NUM_STEPS, checkpoint_every_steps=1,
                                  eval_every_steps=5, log_every_steps=1)
  config.optimizer.decay_steps = NUM_STEPS
  config.update(overrides)
  return config


def hold_commits(seconds):
  """Makes every checkpoint commit wait `seconds` in its background thread, after the
  files are written to the temporary directory and before it is renamed."""
  finalize = ocp.CompositeCheckpointHandler.finalize

  def slow_finalize(self, directory):
    time.sleep(seconds)
    return finalize(self, directory)
  ocp.CompositeCheckpointHandler.finalize = slow_finalize


def subprocess_main(workdir, save_delay_s):
  """Entry point of the runs killed below."""
  hold_commits(float(save_delay_s))
  test_train.run(fault_config(), workdir)


def start_training(workdir, save_delay_s=SAVE_DELAY_S):
  code = (f'import sys; sys.path.insert(0, {str(REPO / "tests")!r}); '
          'import test_training_faults as t; '
          f't.subprocess_main({str(workdir)!r}, {save_delay_s!r})')
  # The test session's compilation cache (tests/conftest.py) spares each run a compile.
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or '',
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5')
  env['XLA_FLAGS'] = suite_xla_flags.suite_flags()  # None of this process's additions.
  return subprocess.Popen([sys.executable, '-c', code], cwd=REPO, env=env, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(condition, process, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return
    if process.poll() is not None:
      raise AssertionError(f'the run ended first:\n{process.communicate()[1][-3000:]}')
    time.sleep(0.005)
  raise AssertionError('timed out')


def _entries(workdir):
  folder = checkpoints.checkpoint_dir(workdir)
  return list(folder.iterdir()) if folder.is_dir() else []


def step_dirs(workdir):
  return sorted(int(p.name) for p in _entries(workdir) if p.name.isdigit())


def tmp_dirs(workdir):
  return [p.name for p in _entries(workdir) if 'orbax-checkpoint-tmp' in p.name]


def final_params(workdir):
  variables, _ = checkpoints.restore_params(workdir, expected_stage='toy')
  return jax.tree.map(np.asarray, variables)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The uninterrupted run's workdir."""
  workdir = tmp_path_factory.mktemp('reference')
  test_train.run(fault_config(), workdir)
  return workdir


def test_kill_9_anywhere_resumes_bit_identical(reference, tmp_path, caplog):
  """SIGKILL while a checkpoint is being committed, then at a seeded random moment;
  the rerun resumes from the last complete step and ends bit-identical."""
  moments = random.Random(0)
  killed_at = []
  for kill in range(2):
    process = start_training(tmp_path)
    if kill == 0:  # In a save: its temporary directory exists, the step does not yet.
      wait_for(lambda: tmp_dirs(tmp_path), process)
    else:  # Once the rerun has completed a step of its own.
      before = max(step_dirs(tmp_path), default=0)
      wait_for(lambda: max(step_dirs(tmp_path), default=0) > before, process)
      time.sleep(moments.uniform(0.0, 3 * SAVE_DELAY_S))
    assert process.poll() is None, 'finished before the kill'
    killed_at.append((tmp_dirs(tmp_path), step_dirs(tmp_path)))
    if kill == 0:  # The commit is held before orbax finalizes: no checksums yet.
      folder = checkpoints.checkpoint_dir(tmp_path)
      assert not [name for name in killed_at[0][0]
                  if (folder / name / checkpoint_checksums.CHECKSUMS_FILE).exists()]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
  assert killed_at[0][0], 'the first kill did not land in a save'
  last_complete = max(step_dirs(tmp_path))
  assert last_complete < NUM_STEPS
  caplog.set_level('INFO')
  state, _ = test_train.run(fault_config(), tmp_path)
  assert f'Restored checkpoint of step {last_complete}' in caplog.text
  assert int(state.step) == NUM_STEPS
  resumed, uninterrupted = final_params(tmp_path), final_params(reference)
  for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted)):
    np.testing.assert_array_equal(got, want)  # Bit-identical, not close.
  assert not tmp_dirs(tmp_path)  # Leftovers of the killed saves were removed.
  for step in step_dirs(tmp_path):  # Each kept step's manifest lists all its files.
    step_dir = checkpoints.checkpoint_dir(tmp_path) / str(step)
    listed = checkpoint_checksums.read_checksums(step_dir)
    checkpoint_checksums.verify_checksums(step_dir, listed)
    assert sorted(listed) == sorted(p.relative_to(step_dir).as_posix()
                                    for item in ('state', 'meta')
                                    for p in (step_dir / item).rglob('*') if p.is_file())


def fail_saves(monkeypatch, where):
  """Saves fail as on a full disk: at their start ('start') or while their files are
  committed in the background ('commit')."""
  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  if where == 'start':
    monkeypatch.setattr(ocp.CheckpointManager, 'save', full)
  else:
    monkeypatch.setattr(ocp.CompositeCheckpointHandler, 'finalize', full)


@pytest.mark.parametrize('where', ['start', 'commit'])
def test_full_disk_names_the_workdir_and_keeps_the_last_checkpoint(reference, tmp_path,
                                                                   monkeypatch, where):
  test_train.run(fault_config(num_train_steps=4), tmp_path)
  kept = final_params(tmp_path)
  with monkeypatch.context() as patch:
    fail_saves(patch, where)
    with pytest.raises(checkpoints.CheckpointSaveError) as info:
      test_train.run(fault_config(), tmp_path)
  message = str(info.value)
  assert f'workdir {tmp_path}' in message and 'no space left on the device' in message
  assert 'the checkpoint of step 4 is kept' in message and '\n' not in message
  assert max(step_dirs(tmp_path)) == 4
  for got, want in zip(jax.tree.leaves(final_params(tmp_path)), jax.tree.leaves(kept)):
    np.testing.assert_array_equal(got, want)
  # Space returns: the rerun resumes from step 4 and ends as the uninterrupted run.
  state, _ = test_train.run(fault_config(), tmp_path)
  assert int(state.step) == NUM_STEPS and not tmp_dirs(tmp_path)
  for got, want in zip(jax.tree.leaves(final_params(tmp_path)),
                       jax.tree.leaves(final_params(reference))):
    np.testing.assert_array_equal(got, want)


def _biggest_file(directory):
  return max((p for p in directory.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def invert_bytes(path, count):
  """Inverts `count` bytes in the middle of a file; its length stays the same."""
  data = bytearray(path.read_bytes())
  middle = (len(data) - count) // 2
  data[middle:middle + count] = bytes(255 - b for b in data[middle:middle + count])
  path.write_bytes(bytes(data))


def change_a_digit(path):
  """Changes the first digit after the middle of a JSON file: still valid JSON of the
  same length, with another value."""
  text = path.read_text()
  at = next(i for i in range(len(text) // 2, len(text)) if text[i].isdigit())
  changed = text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:]
  json.loads(changed)
  path.write_text(changed)


# Damage to a step directory -> what the refusal says (a regular expression).
CORRUPTIONS = {
    'state_deleted': (lambda step: shutil.rmtree(step / 'state'), "'state' item is missing"),
    'metadata_deleted': (lambda step: (step / 'state' / '_METADATA').unlink(),
                         'state/_METADATA is missing'),
    'data_truncated': (lambda step: os.truncate(_biggest_file(step / 'state'),
                                                _biggest_file(step / 'state').stat().st_size
                                                // 2),
                       r'state/\S+ has \d+ bytes, \d+ when saved \(truncated or rewritten\)'),
    'data_deleted': (lambda step: _biggest_file(step / 'state').unlink(),
                     r'state/\S+ is missing \(checksums.json lists it\)'),
    'manifest_emptied': (lambda step: os.truncate(step / 'state' / 'manifest.ocdbt', 0),
                         r'state/manifest.ocdbt is empty \(truncated\)'),
    'meta_truncated': (lambda step: os.truncate(step / 'meta' / 'metadata', 100),
                       r'meta/metadata has 100 bytes, \d+ when saved'),
    # Same-length changes: only the checksums of the save tell them apart.
    'data_bytes_inverted': (lambda step: invert_bytes(_biggest_file(step / 'state'), 100),
                            r'state/\S+ does not match its SHA-256 in checksums.json'),
    'meta_digit_changed': (lambda step: change_a_digit(step / 'meta' / 'metadata'),
                           r'meta/metadata does not match its SHA-256 in checksums.json'),
}


@pytest.mark.parametrize('case', sorted(CORRUPTIONS))
def test_corrupt_latest_step_falls_back_in_training(tmp_path, case, caplog):
  corrupt, message = CORRUPTIONS[case]
  test_train.run(fault_config(num_train_steps=4, keep_checkpoints=3), tmp_path)
  corrupt(checkpoints.checkpoint_dir(tmp_path) / '4')
  with pytest.raises(checkpoints.CorruptCheckpointError, match='checkpoints/4: ') as info:
    checkpoints.restore_params(tmp_path)
  assert re.search(message, str(info.value)), info.value
  caplog.set_level('INFO')
  state, _ = test_train.run(fault_config(num_train_steps=6, keep_checkpoints=3), tmp_path)
  assert 'Checkpoint step 4 of' in caplog.text and 'does not restore' in caplog.text
  assert re.search(message, caplog.text), caplog.text
  assert 'Restored checkpoint of step 3' in caplog.text
  assert int(state.step) == 6 and max(step_dirs(tmp_path)) == 6
  assert (checkpoints.checkpoint_dir(tmp_path) / 'corrupt-4').is_dir()
  assert int(final_params(tmp_path)['stats']['updates']) == 6


@pytest.fixture(scope='module')
def corrupt_lifters(tmp_path_factory):
  """Checkpoints whose meta says 'lifter' (the toy stage trained under that name: the
  tools refuse them before building a model), the latest step damaged as each case says."""
  root = tmp_path_factory.mktemp('corrupt_lifters')
  source = root / 'source'
  test_train.run(fault_config(num_train_steps=2, stage='lifter'), source)
  dirs = {}
  for case, (corrupt, _) in CORRUPTIONS.items():
    dirs[case] = root / case
    shutil.copytree(source, dirs[case])
    corrupt(checkpoints.checkpoint_dir(dirs[case]) / str(max(step_dirs(dirs[case]))))
  return dirs


@pytest.mark.parametrize('case', sorted(CORRUPTIONS))
def test_evaluate_and_infer_refuse_a_corrupt_checkpoint(corrupt_lifters, tmp_path, case):
  _, message = CORRUPTIONS[case]
  checkpoint = corrupt_lifters[case]
  step = max(step_dirs(checkpoint))
  inputs = keypoint_files.write_npz(tmp_path)
  for tool, call in (
      ('evaluate', lambda: evaluate.run(checkpoint=str(checkpoint),
                                        workdir=str(tmp_path / 'eval'))),
      ('infer', lambda: infer.run(checkpoint=str(checkpoint), input_path=str(inputs),
                                  output=str(tmp_path / 'out.npz')))):
    with pytest.raises(SystemExit) as info:
      call()
    text = str(info.value.code)
    assert text.startswith(f'{tool}: error: --checkpoint: checkpoint '
                           f'{checkpoints.checkpoint_dir(checkpoint) / str(step)}: ')
    assert '\n' not in text and 'Traceback' not in text
    assert re.search(message, text), text
  assert not (tmp_path / 'out.npz').exists() and not (tmp_path / 'eval').exists()


def late_collective(delay_s):
  """A `psum` over the CPU devices in which device 1 arrives `delay_s` late; returns the
  sum (the device count)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def arrive(index):
    if int(index) == 1:
      time.sleep(delay_s)
    return np.float32(1)

  def step(_):
    one = jax.pure_callback(arrive, jax.ShapeDtypeStruct((), jnp.float32),
                            jax.lax.axis_index('devices'))
    return jax.lax.psum(one, 'devices')
  return float(jax.pmap(step, axis_name='devices')(jnp.zeros(jax.local_device_count()))[0])


def dispatch_ahead(steps):
  """`steps` two-device steps of a matrix product and a `pmean`, each launched on the
  last one's output without waiting (as the training loop launches its steps), until
  the host is far more than XLA's 32 computations in flight per device ahead; returns
  the final per-device states [2, N, N]."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  size = 128
  step = jax.pmap(lambda x: jax.lax.pmean(jnp.tanh(x @ x) * 0.5, 'devices'),
                  axis_name='devices')
  state = jnp.full((2, size, size), 1.0 / size)
  for _ in range(steps):
    state = step(state)
  return jax.block_until_ready(state)


def devices_main(mode):
  """Entry point of the multi-device CPU runs below."""
  from hipart_jax import execution  # pylint: disable=g-import-not-at-top
  if mode == 'short_timeout':
    execution.configure_cpu_devices(2, collective_timeout_s=1)
    late_collective(3.0)
    return
  if mode == 'xla_threads':  # XLA's own client threads, PJRT_NPROC of the caller.
    jax.config.update('jax_num_cpu_devices', 2)
    dispatch_ahead(STRESS_STEPS)
    return
  execution.configure_cpu_devices(2)
  result = dict(xla_flags=os.environ['XLA_FLAGS'], devices=jax.local_device_count(),
                client_threads=os.environ.get(execution.CLIENT_THREADS_ENV),
                late_sum=late_collective(2.0))
  start = time.perf_counter()
  state = dispatch_ahead(STRESS_STEPS)
  result.update(seconds=time.perf_counter() - start, finite=bool(np.all(np.isfinite(state))))
  print('RESULT ' + json.dumps(result), flush=True)


# Steps dispatched ahead: launches of later steps block client threads again and again.
STRESS_STEPS = 300
DEADLOCK_TRIES = 4  # Runs on XLA's own thread sizing, until one deadlocks.
# Short collective timeouts (kept by `configure_cpu_devices`): a deadlock aborts in 5 s.
SHORT_TIMEOUTS = ('--xla_cpu_collective_call_warn_stuck_timeout_seconds=1 '
                  '--xla_cpu_collective_call_terminate_timeout_seconds=4')


def run_devices(mode, timeout=120, **environ):
  code = (f'import sys; sys.path.insert(0, {str(REPO / "tests")!r}); '
          f'import test_training_faults as t; t.devices_main({mode!r})')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  for name in ('PJRT_NPROC', 'NPROC'):
    env.pop(name, None)
  # The suite's compile flags (none of this process's additions), then the test's own.
  flags = [suite_xla_flags.suite_flags(), environ.pop('XLA_FLAGS', '')]
  env['XLA_FLAGS'] = ' '.join(f for f in flags if f)
  env.update(environ)
  return subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, text=True,
                        capture_output=True, timeout=timeout, check=False)


def test_a_late_device_aborts_a_collective_with_a_short_timeout():
  """XLA aborts the process when a peer is later than its collective timeout (here a
  1 s timeout and a device 3 s late)."""
  result = run_devices('short_timeout')
  assert result.returncode == -signal.SIGABRT, result.stderr[-2000:]
  assert re.search(r'Termination timeout for `all reduce RendezvousKey.*'
                   r'num_local_participants=2', result.stderr)


def test_two_devices_deadlock_on_xla_client_threads():
  """The reported abort: two CPU devices on the two client threads XLA gives them on a
  2-core host, steps dispatched ahead; a device waits in the all-reduce for a peer whose
  part never gets a thread (both are held by it and a blocked launch) until XLA's
  timeout kills the process."""
  # Whether the host gets 32 steps ahead depends on scheduling, so a run may finish;
  # the mechanism must show within a few (each deadlocked run ends in about 5 s).
  for _ in range(DEADLOCK_TRIES):
    result = run_devices('xla_threads', XLA_FLAGS=SHORT_TIMEOUTS, PJRT_NPROC='2')
    if result.returncode != 0:
      break
  assert result.returncode == -signal.SIGABRT, result.stderr[-2000:]
  assert re.search(r'Termination timeout for `all reduce RendezvousKey.*'
                   r'num_local_participants=2.*only 1 of them arrived', result.stderr)


def test_multi_device_cpu_steps_survive_dispatch_ahead_under_load():
  """`configure_cpu_devices` gives the client two threads per device (4 over a 2-core
  base, NPROC=2): the same steps, a device 2 s late and a busy loop competing for the
  cores all complete under the same short timeouts."""
  busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
  try:
    result = run_devices('stress', XLA_FLAGS=SHORT_TIMEOUTS, NPROC='2')
  finally:
    busy.kill()
    busy.wait()
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.split('RESULT ', 1)[1])
  assert out['xla_flags'].endswith(SHORT_TIMEOUTS)  # The user's timeouts are kept.
  assert out['client_threads'] == '4'
  assert out['devices'] == 2 and out['late_sum'] == 2.0
  assert out['finite']


def write_openpose_folder(directory, count):
  """`count` OpenPose BODY_25 frames of one person (the first pose of
  tests/keypoint_files.py, its right wrist moved by the frame number so rows differ)."""
  xy, scores = keypoint_files.in_layout(skeleton.OPENPOSE_BODY25)
  wrist = skeleton.OPENPOSE_BODY25.keypoint_names.index('r_wrist')
  directory.mkdir()
  for frame in range(count):
    pose = xy[0, 0].copy()
    pose[wrist] += [frame % 50, frame % 30]
    flat = keypoint_files.flat(pose, scores[0, 0])
    (directory / f'clip_{frame:012d}_keypoints.json').write_text(json.dumps(
        dict(version=1.3, people=[dict(person_id=[-1], pose_keypoints_2d=flat)])))
  return directory


def parsing_peak_bytes(folder, monkeypatch):
  """Peak traced memory of reading `folder` up to the checks that follow the parsing."""
  peaks = []
  finish = keypoint_io._finish  # pylint: disable=protected-access

  def record(*args, **kwargs):
    peaks.append(tracemalloc.get_traced_memory()[1])
    return finish(*args, **kwargs)
  monkeypatch.setattr(keypoint_io, '_finish', record)
  tracemalloc.start()
  try:
    keypoint_io.read_keypoints(folder, image_size=keypoint_files.IMAGE_SIZE)
  finally:
    tracemalloc.stop()
  return peaks[0]


def test_openpose_folder_is_read_one_frame_at_a_time(tmp_path, monkeypatch):
  """Parsing 1200 frames holds little more than parsing 200: per extra frame, the rows
  read (a [25, 3] float64 array), the file's path and name (2.2 KB measured), not also
  the parsed JSON (3.3 KB more a frame in Python objects)."""
  small = parsing_peak_bytes(write_openpose_folder(tmp_path / 'small', 200), monkeypatch)
  large = parsing_peak_bytes(write_openpose_folder(tmp_path / 'large', 1200), monkeypatch)
  per_frame = (large - small) / 1000
  assert per_frame < 3000, f'{per_frame:.0f} bytes per frame'


@pytest.fixture(scope='module')
def untrained_sparse_lifter(tmp_path_factory):
  """A checkpoint of the tiny sparse lifter at its initialization (step 0): inference
  needs a lifter, not a trained one, and this spares compiling a train step."""
  config = pipeline_fixture.lifter_config('sparse')
  train_source, _ = pipeline_fixture.sources()
  hierarchy = pipeline_fixture.HIERARCHY
  batches = input_pipeline.TrainBatches(train_source, hierarchy, config.dataset,
                                        global_batch_size=config.batch_size,
                                        num_local_devices=1, seed=0)
  stage = stages.make_stage(config, hierarchy)
  state = trainer.create_train_state(stage, config, jax.random.key(0),
                                     jax.tree.map(lambda x: x[0], batches.batch(0)))
  # Random weights everywhere: the initial output layer may be zero (all poses at 0).
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  state = state.replace(params=jax.tree.unflatten(tree, [
      leaf + 0.1 * jax.random.normal(key, leaf.shape, leaf.dtype)
      for leaf, key in zip(leaves, keys)]))
  workdir = tmp_path_factory.mktemp('untrained_lifter')
  manager = checkpoints.make_manager(workdir, config)
  checkpoints.save(manager, 0, state, loop.make_meta(config, hierarchy, stage))
  checkpoints.wait_until_finished(manager)
  manager.close()
  return workdir


def test_infer_over_10000_openpose_frames_matches_one_npz(untrained_sparse_lifter,
                                                         tmp_path):
  count = 10_000
  folder = write_openpose_folder(tmp_path / 'frames', count)
  checkpoint = str(untrained_sparse_lifter)
  size = ','.join(map(str, keypoint_files.IMAGE_SIZE))
  from_folder = infer.run(checkpoint=checkpoint, input_path=str(folder),
                          output=str(tmp_path / 'folder.npz'), image_size=size,
                          batch_size=1024)
  sequence = keypoint_io.read_keypoints(folder, image_size=size)
  npz = tmp_path / 'one.npz'
  np.savez(npz, keypoints=sequence.keypoints, confidence=sequence.confidence,
           image_size=sequence.image_size, frame=sequence.frame, track=sequence.track)
  from_npz = infer.run(checkpoint=checkpoint, input_path=str(npz),
                       output=str(tmp_path / 'one_batch.npz'), batch_size=count)
  assert from_folder['pose_3d'].shape == (count, skeleton.NUM_JOINTS, 3)
  assert np.ptp(from_folder['pose_3d'][:, 1:], axis=0).max() > 1e-4  # Rows differ.
  np.testing.assert_array_equal(from_folder['frame'], np.arange(count))
  for key in ('pose_3d', 'keypoints_2d', 'confidence', 'frame', 'track'):
    np.testing.assert_allclose(from_folder[key], from_npz[key], atol=1e-5, err_msg=key)
