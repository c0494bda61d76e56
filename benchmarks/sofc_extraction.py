"""SOFC-Exp extraction on the dev split: majority / zero-shot / k-shot / supervised / one-pass.

Command (from the repo root, inside .venv; the README table's run, see docs/sofc_extraction.md
for its planned ~35 min on the shared 2-core machine and a longer adaptation):
  nice -n 10 python benchmarks/sofc_extraction.py --out=workdirs/sofc_extraction
  python benchmarks/sofc_extraction.py --quick --model=DIR/tiny --data_root=ROOT --out=/tmp/x

Methods (`--methods`), each one row of DIR/results.csv:
  majority   always 'no' / no mentions, on the detection draw (read off the zero-shot run)
  zero_shot  the model as it is
  k_shot     --k_shot solved train-split sentences in every prompt
  adapted    zero-shot after `qa_tune` on the `sofc_tasks` source of the train articles
             (configs/qa_tune.py:sofc_tasks, LoRA; --adapted=DIR reuses a finished qa_tune
             workdir or model folder instead of training into DIR/train/adapted). Mode
             onepass_augmented by default: the section-wise rows (task pairs + section text)
             shuffled, without sectionwise's per-section loss passes, which doubled the time
             of a 1-update-per-section run; --adapt_mode=sectionwise for the curriculum.
  onepass    zero-shot after qa_tune --config.mode=onepass on the same articles: next-token
             loss over their texts with the same token budget (--onepass=DIR reuses one)
--compressed=MODEL_DIR adds rows for a compressed model folder ('compressed_' prefix;
--compressed_methods, default --methods; its training runs update the stored blocks at
--compressed_learning_rate, as the pipeline's Q&A stage does).
Every row is scored on the same sentences: --max_sentences experiment sentences for entities
and slots and --detection_sentences sentences for detection, each shared out over all dev
articles with a seeded draw (evaluation/extraction.spread_sentences). Each scored row is kept
in DIR/rows/<name>.json with the settings it was measured with; a rerun skips rows whose
settings match and qa_tune resumes its own runs (DIR/train/<row>_<config hash>/), so an
interrupted run continues and a run with other training flags trains anew beside it.
Writes DIR/results.csv, DIR/results.json, DIR/report.md and DIR/extraction_scores.png.
The rows are measured by the library job `penrose_jax/jobs/sofc_extraction.py`; this file is
its command line.
"""

from __future__ import annotations

import pathlib
import sys
import time
from typing import Any

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from any folder: configs/ and penrose_jax/

from configs import qa_tune as qa_tune_config  # noqa: E402
from penrose_jax.jobs import sofc_extraction  # noqa: E402
from penrose_jax.reporting.extraction_table import extraction_table  # noqa: E402

METHODS = sofc_extraction.METHODS
FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "output folder (rerun to continue)", required=True)
flags.DEFINE_string("model", "default", "model spec (io/model_registry.load)")
flags.DEFINE_string("data_root", "../shared/data/sofc_exp", "SOFC-Exp root (a config path)")
flags.DEFINE_string("split", "dev", "evaluated split")
flags.DEFINE_list("methods", list(METHODS), "rows to measure")
flags.DEFINE_integer("max_sentences", 10, "experiment sentences for entities / slots (0 = all)")
flags.DEFINE_integer("detection_sentences", 48, "sentences for detection (0 = all)")
flags.DEFINE_integer("k_shot", 4, "solved examples in the k_shot row's prompts")
flags.DEFINE_integer("seed", 0, "sentence draw, k-shot examples and training seed")
flags.DEFINE_integer("max_new_tokens", 64, "answer budget of entities / slots")
flags.DEFINE_string("adapted", "", "finished qa_tune workdir or model folder to reuse")
flags.DEFINE_string("onepass", "", "finished one-pass qa_tune workdir or model folder to reuse")
flags.DEFINE_integer("adapt_articles", 1, "train articles to train on, evenly spaced (0 = all)")
flags.DEFINE_integer("adapt_steps_per_section", 1,
                     "updates per section: a run makes sections x this many updates")
flags.DEFINE_string("adapt_mode", "onepass_augmented",
                    "qa_tune mode of the adapted row ('onepass_augmented' or 'sectionwise')")
flags.DEFINE_float("adapt_replay_fraction", 0.0, "qa_tune replay_fraction")
flags.DEFINE_float("adapt_general_fraction", 0.0, "qa_tune general_replay_fraction")
flags.DEFINE_integer("adapt_max_per_document", 40, "sentences per task and article")
flags.DEFINE_string("adapt_tasks", "detection,entities,slots", "tasks trained as Q&A pairs")
flags.DEFINE_integer("adapt_batch_size", 4, "rows per update")
flags.DEFINE_integer("adapt_seq_len", 384, "tokens per row (prompts are ~300 tokens)")
flags.DEFINE_float("learning_rate", 1e-3, "qa_tune learning rate (LoRA)")
flags.DEFINE_string("compressed", "", "compressed model folder: rows for it too")
flags.DEFINE_list("compressed_methods", None, "rows of the compressed model (default: --methods)")
flags.DEFINE_float("compressed_learning_rate", 3e-5,
                   "learning rate when training a compressed model's stored blocks")
flags.DEFINE_bool("quick", False, "tiny sizes for tests (pass --model and --data_root)")


def driver_args() -> dict[str, Any]:
  """The flags as a dict; --quick shrinks the sizes for a test run."""
  args = {name: FLAGS[name].value for name in (
      "model", "data_root", "split", "methods", "max_sentences", "detection_sentences", "k_shot",
      "seed", "max_new_tokens", "adapted", "onepass", "adapt_articles",
      "adapt_steps_per_section", "adapt_mode", "adapt_replay_fraction",
      "adapt_general_fraction", "adapt_max_per_document", "adapt_tasks", "adapt_batch_size",
      "adapt_seq_len", "learning_rate", "compressed", "compressed_methods",
      "compressed_learning_rate", "quick")}
  for name in ("methods", "compressed_methods"):
    args[name] = [m.strip() for m in args[name] or [] if m.strip()]
  if args["quick"]:
    args.update(max_sentences=2, detection_sentences=4, k_shot=1, max_new_tokens=8,
                adapt_max_per_document=4, adapt_batch_size=2, adapt_seq_len=128)
  return args


def main(argv: list[str]) -> None:
  del argv
  start = time.time()
  args = driver_args()
  out = pathlib.Path(FLAGS.out)
  rows = sofc_extraction.run(args, out, qa_tune_config.get_config("sofc_tasks"))
  print(extraction_table([(r["name"], r["scores"]) for r in rows]))
  print(f"wrote {out / 'report.md'} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
  app.run(main)
