"""Defaults shared by every stage, and the blocks the stage configs are built from.

A stage config is `stage_config(...)` with a dataset, a model block, a loss block and a
schedule; the blocks are defined once here:

  model blocks   `msst_model`, `hiarm_model`, `lifter_model` at a scale: 'paper' (the
                 paper's sizes, Human3.6M and CMU), 'small' (the embedded synthetic
                 dataset, minutes on a CPU) or 'tiny' (tests and smoke runs);
  loss blocks    `msst_loss`, `hiarm_loss`, `lifter_loss`;
  schedules      `SCHEDULES[name]`: batch sizes, steps, learning rate, log/eval cadence.

Every stage config takes the variant `tiny` (e.g. `synthetic_hiarm.py:raster,tiny`):
the same config at test size (`make_tiny`).
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

from hipart_jax import input_pipeline

TINY = 'tiny'


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = ''  # 'msst', 'hiarm' or 'lifter': set by each stage config.
  config.seed = 0
  # Call jax.distributed.initialize() (also done when JAX_COORDINATOR_ADDRESS is set).
  config.multihost = False
  config.tensorboard = True  # Also needs the `tensorboard` package.
  # How steps run on a CPU host (hipart_jax/execution.py; no other backend reads it):
  # XLA devices (0: one per core), examples per gradient evaluation (0: the whole
  # batch) and XLA options. YNNPACK fusions are kept for matrix products only, since its
  # reduction fusions run our backward passes' small reductions slower than XLA's loops.
  config.execution = ml_collections.ConfigDict(dict(cpu=dict(
      devices=1, microbatch_size=0, predict_chunk_size=0,
      compiler_options=dict(
          xla_cpu_experimental_ynn_fusion_type='LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'))))

  # Data: the input pipeline's block (TFDS name, splits, input source, augmentation).
  config.dataset = input_pipeline.default_data_config()

  config.batch_size = 256  # Global, over all devices and processes.
  config.eval_batch_size = 512
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000  # Evaluated steps are saved as well.
  config.keep_checkpoints = 3  # The latest K, plus the best by `best_metric`.
  config.best_metric = 'eval/loss'
  config.best_mode = 'min'

  config.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3,
      warmup_steps=1_000,
      # Schedule length including warmup; None: num_train_steps.
      decay_steps=ml_collections.config_dict.placeholder(int),
      end_lr_factor=0.01,
      weight_decay=1e-4,
      decay_matrices_only=True,  # No weight decay on biases and norm scales.
      clip_norm=1.0,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
  ))

  config.model = ml_collections.ConfigDict()  # Stage-specific.
  config.loss = ml_collections.ConfigDict()  # Stage-specific.
  # Workdirs (or checkpoint dirs) of earlier stages, e.g. init_from.msst = '/runs/msst'.
  config.init_from = ml_collections.ConfigDict()
  return config


# Model blocks. Paper scale: MSST about 0.85 M parameters (2 x 512 codes of 64 dims),
# HiARM about 1.26 M, lifter about 0.55 M (tests/test_configs.py counts them).
_MSST = dict(
    paper=dict(width=128, num_blocks=2, token_hidden=64, channel_hidden=256, member_dim=32,
               sparse_codebook_size=512, dense_codebook_size=512, code_dim=64,
               ema_decay=0.99, dead_after_steps=200, action_token_dim=8),
    small=dict(width=64, num_blocks=2, token_hidden=64, channel_hidden=128, member_dim=16,
               sparse_codebook_size=128, dense_codebook_size=128, code_dim=32,
               ema_decay=0.95, dead_after_steps=50, action_token_dim=4),
    tiny=dict(width=16, num_blocks=1, token_hidden=16, channel_hidden=16, member_dim=4,
              sparse_codebook_size=16, dense_codebook_size=16, code_dim=8, ema_decay=0.95,
              dead_after_steps=50, action_token_dim=4))
_HIARM = dict(
    paper=dict(width=128, num_lsab=2, num_gcsab=3, num_heads=8, mlp_ratio=4, dropout=0.1),
    small=dict(width=64, num_lsab=1, num_gcsab=2, num_heads=4, mlp_ratio=2, dropout=0.0),
    tiny=dict(width=16, num_lsab=1, num_gcsab=1, num_heads=2, mlp_ratio=2, dropout=0.0))
_LIFTER = dict(
    paper=dict(width=128, depth=4, num_heads=8, mlp_ratio=2, dropout=0.1),
    small=dict(width=64, depth=3, num_heads=4, mlp_ratio=2, dropout=0.0),
    tiny=dict(width=16, depth=1, num_heads=2, mlp_ratio=2, dropout=0.0))


def inference_execution() -> ml_collections.ConfigDict:
  """How inference (launch.infer, launch.evaluate, the demo) runs on a CPU host
  (`execution.Execution`; other backends run plainly): one device per core, 16 poses per
  chunk, the transformer lifter's attention one example at a time."""
  return ml_collections.ConfigDict(dict(cpu=dict(
      devices=0, predict_chunk_size=16, lifter_attention='per_example')))


def msst_model(scale: str, num_actions: int) -> ml_collections.ConfigDict:
  """The tokenizer at `scale`, with a global-alignment head over `num_actions` classes."""
  return ml_collections.ConfigDict(dict(
      vq_epsilon=1e-5, codebook_init_stddev=1.0, dropout=0.0, num_actions=num_actions,
      **_MSST[scale]))


def hiarm_model(scale: str, ordering: str) -> ml_collections.ConfigDict:
  # condition_mlp_width 0: the paper's per-joint condition embedding alone.
  # code_temperature 0: the hierarchy decodes the generated codes, as in the paper.
  return ml_collections.ConfigDict(dict(ordering=ordering, embedding_stddev=0.02,
                                        condition_mlp_width=0, condition_mlp_depth=2,
                                        code_temperature=0.0, **_HIARM[scale]))


def lifter_model(scale: str, mode: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(mode=mode, **_LIFTER[scale]))


def simple_baseline_model(mode: str) -> ml_collections.ConfigDict:
  """The SimpleBaseline MLP (Martinez et al. 2017: width 1024, two residual blocks)."""
  return ml_collections.ConfigDict(dict(
      architecture='simple_baseline', mode=mode, width=1024, num_blocks=2, dropout=0.25,
      hierarchy_points='all'))


def msst_loss() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      sparse=1.0, commitment=0.25, local_alignment=0.01, global_alignment=0.01,
      la_temperature=0.1))


def hiarm_loss(label_smoothing: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(dense_weight=1.0, label_smoothing=label_smoothing))


def lifter_loss() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(bone_weight=0.0, generation_temperature=0.0))


# Schedules: (batch_size, eval_batch_size, num_train_steps, lr, warmup_steps,
# log_every_steps, eval_every_steps, checkpoint_every_steps).
_SCHEDULE_KEYS = ('batch_size', 'eval_batch_size', 'num_train_steps', 'lr', 'warmup_steps',
                  'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps')
SCHEDULES = {
    'synthetic_msst': (128, 256, 1_500, 2e-3, 100, 50, 500, 500),
    'synthetic_hiarm': (128, 256, 1_500, 2e-3, 100, 50, 500, 500),
    'synthetic_lifter': (128, 256, 1_500, 1e-3, 100, 50, 500, 500),
    # Human3.6M: about 1.56 M (frame, camera) training examples, 6 100 steps an epoch.
    'h36m_msst': (256, 512, 100_000, 1e-3, 1_000, 200, 10_000, 2_000),
    'h36m': (256, 512, 200_000, 1e-3, 2_000, 200, 20_000, 2_000),
    # CMU clips (multi_subject): 77 108 training examples, 602 steps an epoch.
    'cmu_msst': (128, 256, 20_000, 1e-3, 500, 100, 2_000, 1_000),
    'cmu': (128, 256, 20_000, 1e-3, 500, 100, 4_000, 1_000),
}
# What each stage keeps as its best checkpoint.
BEST_METRIC = {'msst': 'eval/recon_fine_px', 'hiarm': 'eval/loss',
               'lifter': 'eval/mpjpe_mm'}
# Earlier stages each stage loads (config.init_from.<name>: their workdirs, required).
INIT_FROM = {'msst': (), 'hiarm': ('msst',), 'lifter': ('msst', 'hiarm')}


def stage_config(stage: str, *, dataset: str, model: ml_collections.ConfigDict,
                 loss: ml_collections.ConfigDict, schedule: str,
                 input_source: str | None = None) -> ml_collections.ConfigDict:
  """A stage's config: `get_config()` with its dataset, blocks and schedule."""
  config = get_config()
  config.stage = stage
  config.dataset.name = dataset
  if input_source is not None:
    config.dataset.input_source = input_source
  config.model = model
  config.loss = loss
  values = dict(zip(_SCHEDULE_KEYS, SCHEDULES[schedule]))
  config.optimizer.lr = values.pop('lr')
  config.optimizer.warmup_steps = values.pop('warmup_steps')
  config.update(values)
  config.best_metric = BEST_METRIC[stage]
  for name in INIT_FROM[stage]:
    config.init_from[name] = ''
  return config


def parse_variant(arg: str | None, choices: Sequence[str], default: str
                  ) -> tuple[str, bool]:
  """'raster,tiny' → ('raster', True): a config argument's choice and the tiny flag."""
  parts = [part for part in (arg or '').split(',') if part]
  tiny = TINY in parts
  parts = [part for part in parts if part != TINY]
  if len(parts) > 1 or (parts and parts[0] not in choices):
    raise ValueError(f'config argument {arg!r}: expected one of {tuple(choices)}, '
                     f'optionally with ",{TINY}"')
  return (parts[0] if parts else default), tiny


def model_at_scale(config: ml_collections.ConfigDict, scale: str
                   ) -> ml_collections.ConfigDict:
  """`config.model` (of stage `config.stage`) rebuilt at `scale` ('paper', 'small' or
  'tiny'), keeping its lifter mode, HiARM ordering and number of action classes."""
  model = config.model
  builders = {'msst': lambda: msst_model(scale, model.get('num_actions')),
              'hiarm': lambda: hiarm_model(scale, model.get('ordering')),
              'lifter': lambda: lifter_model(scale, model.get('mode'))}
  return builders[config.stage]()


def make_tiny(config: ml_collections.ConfigDict, steps: int = 4
              ) -> ml_collections.ConfigDict:
  """The config at test size: tiny model, batches of 16, `steps` steps, every step
  logged at the end, no TensorBoard, no prefetch thread."""
  if config.model.get('architecture') == 'simple_baseline':
    config.model = ml_collections.ConfigDict(dict(
        simple_baseline_model(config.model.mode).to_dict(), width=16))
  else:
    config.model = model_at_scale(config, TINY)
  config.batch_size = config.eval_batch_size = 16
  config.num_train_steps = steps
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = steps
  config.optimizer.warmup_steps = 2
  config.tensorboard = False
  config.dataset.prefetch_batches = 0
  return config
