r"""Trains one stage.

  python -m launch.train --config=launch/configs/<name>.py --workdir=DIR

Override any config key on the command line, e.g. `--config.batch_size=64`. Rerunning
with the same workdir resumes from its latest checkpoint.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from hipart_jax import execution
from hipart_jax.training import loop
from launch import console

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and summaries.')
flags.mark_flags_as_required(['config', 'workdir'])
console.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.install(flags.FLAGS.progress)
  plan = execution.Execution.for_backend(_CONFIG.value.get('execution'), backend='cpu')
  execution.configure_cpu_devices(plan.devices)  # Before JAX starts; CPU platform only.
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
