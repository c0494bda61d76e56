"""Entrypoint: python -m experiments.align --config=configs/align.py[:quick] --workdir=DIR."""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import align

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (rerun to resume).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  report = align.run(_CONFIG.value, _WORKDIR.value)
  print(f"logit_kl {report['logit_kl_before']:.4f} -> {report['logit_kl_after']:.4f}  "
        f"hidden_kl {report['hidden_kl_before']:.4f} -> {report['hidden_kl_after']:.4f}  "
        f"ppl {report['ppl_before']} -> {report['ppl_after']}  wall_s {report['wall_s']}")


if __name__ == "__main__":
  cli.run(main)
