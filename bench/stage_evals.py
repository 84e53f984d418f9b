"""Stage evaluations for the accuracy benchmarks: per occlusion level, and diagnoses.

  Strided               every k-th example of a source (a fixed, evenly spread subset);
  evaluate_levels       a stage's `eval_metrics` over a source per occlusion level, through
                        the trainer's eval step (`trainer.make_eval_step`);
  evaluate_msst         the trained tokenizer, ground truth in each occluded input's frame;
  evaluate_hiarm        teacher-forced and greedily generated tokens, the decoded
                        hierarchy's error per level, and the generation time of a batch;
  diagnose_lifters      MPJPE of the HiPART and oracle lifters fed each kind of hierarchy
                        (generated, tokenized ground truth, ground truth): where the
                        error of the generated hierarchy goes;
  hidden_joint_imputation
                        where each model puts the hidden joints in the image: HiARM's
                        generation against each lifter's own 3D estimate mapped into the
                        image (`fit_to_image`), i.e. whether generation tells a lifter
                        anything about the hidden joints that it does not already know.
"""

from __future__ import annotations

import collections
import collections.abc
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import logging
import chex
import jax
import jax.numpy as jnp
import ml_collections

from hipart_jax import checkpoints
from hipart_jax import input_pipeline
from hipart_jax import losses
from hipart_jax import metrics
from hipart_jax import execution
from hipart_jax import skeleton
from hipart_jax.models import decoding
from hipart_jax.models import hipart
from hipart_jax.training import stages
from hipart_jax.training import trainer



class Strided(collections.abc.Sequence):
  """Every `stride`-th example of a random-access source: an evenly spread subset."""

  def __init__(self, source: Sequence[Any], stride: int):
    if stride < 1:
      raise ValueError(f'stride must be >= 1, got {stride}')
    self._source, self._stride = source, stride

  def __len__(self) -> int:
    return -(-len(self._source) // self._stride)

  def __getitem__(self, index: int) -> Any:
    if not -len(self) <= index < len(self):
      raise IndexError(index)
    return self._source[(index % len(self)) * self._stride]

  def __getitems__(self, indices: Sequence[int]) -> list[Any]:
    return input_pipeline.read_examples(self._source, [int(i) * self._stride
                                                       for i in indices])


EvalState = collections.namedtuple('EvalState', ['params', 'collections'])


def sum_over_hidden(values: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
  """[B, 17] per-joint values → [] their sum over the joints the input hides, per valid
  example. Over a split, its ratio to the same sum of ones is the mean per hidden joint."""
  hidden = (~batch['visible']) & batch['valid'][:, None]
  return jnp.sum(jnp.where(hidden, values, 0.0)) / jnp.maximum(jnp.sum(batch['valid']), 1)


def image_px(points_2d: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
  """[B, 17] px between model-frame points [B, 17, 2] and the true input joints."""
  pixels_per_unit = batch['norm_scale'] * batch['image_size'][:, 0] / 2  # [B]
  return (jnp.linalg.norm(points_2d - batch['sparse_2d'], axis=-1)
          * pixels_per_unit[:, None])


class HiARMEval:
  """HiARM evaluation with one greedy generation per batch.

  The stage's own evaluation (`HiARMStage.evaluate_greedy`: teacher-forced
  cross-entropy and token accuracy, the error of the decoded generation per level), plus
  the generated tokens' accuracy against the tokenizer's tokens of the ground truth and
  the generated joints where the input hides them.
  """

  def __init__(self, stage: stages.HiARMStage):
    self.stage = stage

  def eval_metrics(self, variables, batch):
    stage = self.stage
    out, generated, recon = stage.evaluate_greedy(variables, batch)
    sparse_ids, dense_ids = generated['sparse_ids'], generated['dense_ids']
    for level, ids, target in zip(('sparse', 'dense'), (sparse_ids, dense_ids),
                                  stage.targets(variables, batch)):
      correct = (ids == target).mean(-1)  # [B]
      out[f'generated_{level}_token_accuracy'] = losses.masked_mean(correct, batch['valid'])
    # The generated sparse joints where the input hid them: how well HiARM imagines
    # what the lifter cannot see. Both are per valid example, so that their ratio over
    # a split (`hidden_sparse_px`) is the mean over its hidden joints.
    out['hidden_sparse_px_per_example'] = sum_over_hidden(image_px(recon['sparse'], batch),
                                                          batch)
    out['hidden_joints_per_example'] = sum_over_hidden(
        jnp.ones_like(batch['visible'], jnp.float32), batch)
    return out


def evaluate_levels(stage: Any, variables: Mapping[str, Any], source: Sequence[Any],
                    hierarchy: Any, config: ml_collections.ConfigDict,
                    levels: Sequence[str], *, seed: int) -> dict[str, dict[str, float]]:
  """{occlusion level: `stage.eval_metrics` averaged over the source}, via the trainer's
  eval step. Occlusion hides input joints and so also moves the model frame, which
  every ground-truth level shares (`input_pipeline.eval_batches`)."""
  state = EvalState(variables['params'],
                    {k: v for k, v in variables.items() if k != 'params'})
  eval_step = execution.map_step(trainer.make_eval_step(stage))
  out = {}
  for level in levels:
    batches = input_pipeline.eval_batches(
        source, hierarchy, config.dataset, global_batch_size=config.eval_batch_size,
        num_local_devices=1, occlusion=level, seed=seed)
    out[level] = trainer.finalize_eval(eval_step(state, batch) for batch in batches)
    logging.info('occlusion %s: %s', level, out[level])
  return out


def evaluate_msst(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                  source: Sequence[Any], hierarchy: Any, levels: Sequence[str], *,
                  seed: int) -> dict[str, dict[str, float]]:
  """{occlusion level: MSST metrics} of the trained tokenizer, ground truth in the frame
  of the (occluded) input: the frames HiARM's targets are tokenized in."""
  variables, _ = checkpoints.restore_params(workdir, expected_stage='msst')
  return evaluate_levels(stages.MSSTStage(config, hierarchy), variables, source, hierarchy,
                         config, levels, seed=seed)


def evaluate_hiarm(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                   source: Sequence[Any], hierarchy: Any, levels: Sequence[str], *,
                   seed: int, timing_calls: int) -> dict[str, Any]:
  """{occlusion level: metrics} of one trained HiARM, its 'decoding_steps' and, when
  timing_calls > 0, 'generation_s_per_batch' (mean of that many calls after a warm-up)
  and 'generation_batch_size'."""
  stage = stages.HiARMStage(config, hierarchy)
  variables, _ = checkpoints.restore_params(workdir, expected_stage='hiarm')
  out = evaluate_levels(HiARMEval(stage), variables, source, hierarchy, config, levels,
                        seed=seed)
  for level in levels:
    m = out[level]
    m['hidden_sparse_px'] = (m['hidden_sparse_px_per_example'] / m['hidden_joints_per_example']
                             if m['hidden_joints_per_example'] > 0 else None)
  out['decoding_steps'] = len(stage.model.decoding_order.groups)
  if timing_calls > 0:  # Greedy generation of one evaluation batch, compiled, then timed.
    first = next(input_pipeline.eval_batches(
        source, hierarchy, config.dataset, global_batch_size=config.eval_batch_size,
        num_local_devices=1))
    inputs = [jax.numpy.asarray(first[key][0]) for key in ('inputs_2d', 'inputs_confidence')]
    generate = lambda: decoding.generate(stage.model, variables['params'], *inputs,
                                         jax.random.key(0))
    jax.block_until_ready(generate())
    start = time.perf_counter()
    for _ in range(timing_calls):
      jax.block_until_ready(generate())
    out['generation_s_per_batch'] = (time.perf_counter() - start) / timing_calls
    out['generation_batch_size'] = int(inputs[0].shape[0])
  return out


# Hierarchies a lifter can be fed: the HiARM generation it is trained on, the tokenizer's
# reconstruction of the ground truth (tokenization error only), the ground truth.
FEEDS = ('generated', 'tokenized_truth', 'truth')


class LifterFeeds:
  """MPJPE (mm) of the HiPART lifter and of the oracle lifter fed each of `FEEDS`.

  `eval_metrics(variables, batch)` takes the HiPART lifter's variables ({'params',
  'frozen_msst', 'frozen_hiarm'}); the oracle lifter's parameters are fixed here.
  """

  def __init__(self, model: hipart.HiPART, oracle: hipart.HiPART,
               oracle_params: Any):
    self.model, self.oracle, self.oracle_params = model, oracle, oracle_params

  def eval_metrics(self, variables, batch):
    model = self.model
    inputs, confidence = batch['inputs_2d'], batch['inputs_confidence']
    truth = {level: batch[f'{level}_2d'] for level in skeleton.LEVELS}
    hierarchies = dict(
        generated=jax.tree.map(lambda x: x[:, 0], hipart.generate_hierarchy(
            model.msst, model.hiarm, variables, inputs, confidence, jax.random.key(0))),
        tokenized_truth=hipart.tokenized_hierarchy(model.msst, variables['frozen_msst'],
                                                   truth),
        truth=truth)
    lifters = dict(hipart=(model.lifter, variables['params']),
                   oracle=(self.oracle.lifter, self.oracle_params))
    out = {}
    for lifter_name, (lifter, params) in lifters.items():
      for feed, hierarchy_2d in hierarchies.items():
        pred = lifter.apply({'params': params}, inputs, confidence, hierarchy_2d)
        out[f'{lifter_name}_lifter/{feed}'] = losses.masked_mean(
            metrics.mpjpe(pred, batch['sparse_3d']), batch['valid'])
    return out


def diagnose_lifters(hipart_workdir: pathlib.Path, oracle_workdir: pathlib.Path,
                     config: ml_collections.ConfigDict, source: Sequence[Any],
                     hierarchy: Any, levels: Sequence[str], *,
                     seed: int) -> dict[str, dict[str, float]]:
  """{occlusion level: {'<hipart|oracle>_lifter/<feed>': MPJPE mm}} (see `LifterFeeds`)."""
  model, variables, _ = checkpoints.load_hipart(str(hipart_workdir))
  oracle, oracle_variables, _ = checkpoints.load_hipart(str(oracle_workdir))
  feeds = LifterFeeds(model, oracle, oracle_variables['params'])
  return evaluate_levels(feeds, variables, source, hierarchy, config, levels, seed=seed)


def fit_to_image(pose_3d: jax.Array, points_2d: jax.Array, weights: jax.Array
                 ) -> jax.Array:
  """Each pose's (x, y) mapped onto 2D points by the affine map that fits them best.

  An affine map stands in for the unknown camera: it absorbs the model frame's scale,
  offset and axis signs, and leaves a small floor from perspective (measured by fitting
  the ground-truth 3D).

  Args:
    pose_3d: [B, J, 3]; points_2d: [B, J, 2]; weights: [B, J], the joints the least
      squares fit reads (at least 3 per pose, not collinear; hidden joints get 0).
  Returns:
    [B, J, 2]: every joint of each pose, mapped.
  """
  batch, joints = pose_3d.shape[:2]
  chex.assert_shape(points_2d, (batch, joints, 2))
  chex.assert_shape(weights, (batch, joints))
  xy1 = jnp.concatenate([pose_3d[..., :2], jnp.ones_like(pose_3d[..., :1])], axis=-1)
  weighted = xy1 * weights[..., None]
  normal = jnp.einsum('bji,bjk->bik', weighted, xy1) + 1e-9 * jnp.eye(3)  # [B, 3, 3]
  affine = jnp.linalg.solve(normal, jnp.einsum('bji,bjk->bik', weighted, points_2d))
  return jnp.einsum('bji,bik->bjk', xy1, affine)


class HiddenJointImputation:
  """Pixel error at the hidden input joints: HiARM's generated sparse level, the
  tokenizer's reconstruction of the truth (what a perfect HiARM would generate), and each
  lifter's 3D estimate mapped into the image by `fit_to_image` over the visible joints.

  `eval_metrics(variables, batch)` takes the HiPART lifter's variables; the other
  lifters ({name: (HiPART model, params)}) are fixed here. Every value is a sum over the
  hidden joints divided by the batch's valid examples, so that over a split
  value / `hidden_joints` is the mean per hidden joint.
  """

  def __init__(self, model: hipart.HiPART, baselines: Mapping[str, tuple[Any, Any]]):
    self.model, self.baselines = model, dict(baselines)

  def eval_metrics(self, variables, batch):
    model = self.model
    inputs, confidence = batch['inputs_2d'], batch['inputs_confidence']
    generated = jax.tree.map(lambda x: x[:, 0], hipart.generate_hierarchy(
        model.msst, model.hiarm, variables, inputs, confidence, jax.random.key(0)))
    hidden_px = lambda points_2d: sum_over_hidden(image_px(points_2d, batch), batch)
    # The fit reads the visible joints where the models read them: the input.
    fit = lambda pose: fit_to_image(pose, inputs, (confidence > 0).astype(jnp.float32))
    tokenized = hipart.tokenized_hierarchy(
        model.msst, variables['frozen_msst'],
        {level: batch[f'{level}_2d'] for level in skeleton.LEVELS})
    out = {'hidden_joints': sum_over_hidden(jnp.ones_like(batch['visible'], jnp.float32),
                                            batch),
           'hiarm_generated': hidden_px(generated['sparse']),
           'tokenized_truth': hidden_px(tokenized['sparse']),
           'fit_of_the_true_3d': hidden_px(fit(batch['sparse_3d']))}
    lifters = dict(hipart=(model, variables['params']), **self.baselines)
    for name, (lifter_model, params) in lifters.items():
      pose = lifter_model.lifter.apply({'params': params}, inputs, confidence, generated)
      out[f'{name}_lifter'] = hidden_px(fit(pose))
    return out


def hidden_joint_imputation(hipart_workdir: pathlib.Path,
                            baseline_workdirs: Mapping[str, pathlib.Path],
                            config: ml_collections.ConfigDict, source: Sequence[Any],
                            hierarchy: Any, levels: Sequence[str], *,
                            seed: int) -> dict[str, dict[str, float]]:
  """{occluded level: {'hiarm_generated' | 'tokenized_truth' | 'fit_of_the_true_3d' |
  '<lifter>_lifter': mean px per hidden joint}} (see `HiddenJointImputation`); levels that hide no joint are
  skipped."""
  model, variables, _ = checkpoints.load_hipart(str(hipart_workdir))
  baselines = {}
  for name, workdir in baseline_workdirs.items():
    baseline, baseline_variables, _ = checkpoints.load_hipart(str(workdir))
    baselines[name] = (baseline, baseline_variables['params'])
  sums = evaluate_levels(HiddenJointImputation(model, baselines), variables, source,
                         hierarchy, config, levels, seed=seed)
  out = {}
  for level, m in sums.items():
    hidden = m.pop('hidden_joints')
    if hidden > 0:
      out[level] = {name: value / hidden for name, value in m.items()}
  return out
