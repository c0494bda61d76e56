"""Entrypoint: python -m experiments.sofc_tagging --config=configs/sofc_tagging.py[:quick]
--workdir=DIR."""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import sofc_tagging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint save at INFO
  report = sofc_tagging.run(_CONFIG.value, _WORKDIR.value)
  if "row" not in report:
    print(f"skipped: {report.get('skipped')}")
    return
  row = report["row"]
  for key, value in row["scores"].items():
    print(f"{key}: {value:.4f}")
  print(f"best_epoch: {report['best_epoch']}  train_s: {row['train_s']}  eval_s: {row['eval_s']}"
        f"  wall_s: {report['wall_s']}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
