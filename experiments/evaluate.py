"""Entrypoint: python -m experiments.evaluate --config=configs/evaluate.py[:quick] --workdir=DIR."""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  report = evaluate.run(_CONFIG.value, _WORKDIR.value)
  print(f"ppl: {report['ppl']}  accuracy: {report['accuracy']}  wall_s: {report['wall_s']}")
  if "exam_questions" in report:
    print(f"exam: {report['exam_questions']} multiple choice, accuracy sum / mean "
          f"{report['exam_accuracy_sum']} / {report['exam_accuracy_mean']}; "
          f"{report['open_exam_questions']} open, EM {report['exam_em']} F1 {report['exam_f1']}")


if __name__ == "__main__":
  cli.run(main)
