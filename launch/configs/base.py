"""Defaults shared by every stage; stage configs import `get_config()` and override it.

A stage config looks like:

  from launch.configs import base

  def get_config():
    config = base.get_config()
    config.stage = 'msst'
    config.model = ml_collections.ConfigDict(dict(...))
    return config
"""

import ml_collections

from hipart_jax import input_pipeline


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = ''  # 'msst', 'hiarm' or 'lifter': set by each stage config.
  config.seed = 0
  # Call jax.distributed.initialize() (also done when JAX_COORDINATOR_ADDRESS is set).
  config.multihost = False
  # How steps are mapped over local devices (train.parallelize): 'auto' (vmap on a
  # single device, pmap otherwise), 'pmap', 'shard_map' or 'vmap'.
  config.parallelism = 'auto'
  # XLA devices JAX makes of a CPU host (launch/cpu_devices.py; 1: JAX's default, 0: one
  # per core). With several, 'auto' maps each batch over them with pmap, as on
  # accelerators. The synthetic HiARM and HiPART lifter configs take one per core: their
  # train steps ran 1.3-1.5x faster on 2 cores, the MSST and sparse lifter ones 0.83-0.92x
  # (BENCHMARKS.md, change 12). No effect on GPU/TPU hosts.
  config.cpu_devices = 1
  config.tensorboard = True  # Also needs the `tensorboard` package.
  # XLA options of the train step, per backend (the process's default backend picks its
  # entry; not applied under pmap, which takes none). On CPU, XLA hands reductions to
  # YNNPACK fusions by default; in our train steps (the backward pass's bias, LayerNorm
  # and softmax reductions over [batch * points, 64-128 channels]) those run slower than
  # XLA's own loops. Keeping YNNPACK for the matrix products only made train steps
  # 1.14x (MSST), 1.01x (HiARM), 1.06x (HiPART lifter) and 1.6x (sparse lifter) faster,
  # side by side on 2 cores; inference gained nothing, so it keeps XLA's defaults
  # (BENCHMARKS.md, "Training"). XLA's default (jaxlib 0.10) is
  # 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'.
  config.train_step_compiler_options = ml_collections.ConfigDict(dict(
      cpu=dict(xla_cpu_experimental_ynn_fusion_type='LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT')))

  # Examples per microbatch of the train step, per backend like the XLA options
  # (train.make_train_step: the per-device batch is evaluated that many examples at a
  # time and the gradients are averaged, the same update); no entry: the whole batch at
  # once, as does 0. The synthetic MSST, HiARM and HiPART lifter configs set one on
  # CPU, where a microbatch's activations stay in the caches (BENCHMARKS.md, change 11).
  # GPU/TPU want the whole batch at once.
  config.train_step_microbatch_size = ml_collections.ConfigDict(dict(cpu=0, gpu=0, tpu=0))

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
