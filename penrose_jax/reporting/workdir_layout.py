"""Where each job writes the files that reports read, relative to the job's workdir.

The jobs write these paths and the readers (the pipeline report, `sweep_report`,
benchmarks/align_curve.py) open them through the same names, so a renamed file breaks no
reader silently. It sits in reporting/ (the lowest package) so that the library code that
writes some of these files (the Q&A trainer's traces and curve) and every reader can name them.
"""

# align: the resumable training loop runs in this subfolder (orbax checkpoints + metrics).
ALIGN_TRAIN_DIR = "train"
ALIGN_METRICS = f"{ALIGN_TRAIN_DIR}/metrics.jsonl"

# qa_tune: the Q&A trainer runs in the workdir itself.
QA_METRICS = "metrics.jsonl"
QA_TRACES = "traces.jsonl"  # one line per section: answers and losses before / after
QA_CURVE = "curve.jsonl"  # learning-curve points inside the run
QA_HELDOUT_ANSWERS = "heldout_answers.json"  # greedy held-out answers before / after

# compress: the layer-by-layer stream's resume state.
COMPRESS_STREAM_DIR = "stream"
COMPRESS_STREAM_STATE = f"{COMPRESS_STREAM_DIR}/state.json"

# The training metrics file of each job that trains (sweep and pipeline loss curves).
METRICS_BY_JOB = {"align": ALIGN_METRICS, "qa_tune": QA_METRICS}
