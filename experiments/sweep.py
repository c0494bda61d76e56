"""Entrypoint: python -m experiments.sweep --config=configs/sweep_X.py[:quick] --workdir=DIR."""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import sweep

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Path to a configs/sweep_*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (rerun to continue).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  report = sweep.run(_CONFIG.value, _WORKDIR.value)
  for best in report["best"]:
    print(f"best {best['metric']}: {best['run']} ({best['value']:.4g})")
  print(f"runs {report['status']}  wall_s {report['wall_s']}")


if __name__ == "__main__":
  cli.run(main)
