"""A workdir belongs to one config, one set of inputs and one process (issue 32, bugs 1 and 2).

Bug 1: qa_tune and align reran on a workdir written with another config (learning rate, mode)
and exited 0 with a report of the new config over the old run's model; an edited corpus document
under the same name kept its old Q&A pairs. Bug 2: two processes on one workdir corrupted it.
Each case here reruns on a finished (or held) workdir and expects one error naming what changed
(or who holds it) before any work, and the earlier outputs untouched.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from configs import align as align_config
from configs import qa_tune as qa_tune_config
from penrose_jax.data import paths
from penrose_jax.jobs import align, qa_tune
from tests.reliability.conftest import REPO, entrypoint_command, subprocess_env


def _qa_config(model: pathlib.Path, corpus: pathlib.Path):
  """qa_tune quick shrunk to one document, rule Q&A, no evaluation or traces (the cheapest run
  that trains and checkpoints)."""
  config = qa_tune_config.get_config("quick")
  config.model, config.corpus = str(model), str(corpus)
  config.max_documents = 1
  config.qa_sources = "rule"
  config.trace_questions = 0
  config.general_replay_fraction = 0.0
  config.eval.enabled = False
  return config


def _align_config(model: pathlib.Path):
  """align quick with the tiny dense model as student and teacher (no compress stage)."""
  config = align_config.get_config("quick")
  config.student = config.teacher = str(model)
  config.trainable = "all"  # a dense student has no compressed factors
  config.num_steps, config.eval_every, config.checkpoint_every = 2, 2, 2
  config.num_train_windows = config.num_val_windows = 2
  config.eval.max_windows = 2
  return config


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_model_dir):
  """(workdir, corpus copy, report.json bytes) of one finished qa_tune run (the same-config
  rerun test rewrites the report: the others compare with the bytes they found)."""
  root = tmp_path_factory.mktemp("qa_owned")
  corpus = root / "corpus"
  shutil.copytree(paths.resolve_data_path("package:demo_corpus"), corpus)
  workdir = root / "run"
  qa_tune.run(_qa_config(tiny_model_dir, corpus), workdir)
  return workdir, corpus, (workdir / "report.json").read_bytes()


@pytest.fixture(scope="module")
def align_run(tmp_path_factory, tiny_model_dir):
  """(workdir, report.json bytes) of one finished align run."""
  workdir = tmp_path_factory.mktemp("align_owned") / "run"
  align.run(_align_config(tiny_model_dir), workdir)
  return workdir, (workdir / "report.json").read_bytes()


@pytest.mark.parametrize("key, value", [("learning_rate", 0.05), ("mode", "onepass")])
def test_qa_tune_rerun_with_another_config_is_refused(qa_run, tiny_model_dir, key, value):
  workdir, corpus, _ = qa_run
  report = (workdir / "report.json").read_bytes()
  config = _qa_config(tiny_model_dir, corpus)
  config[key] = value
  with pytest.raises(ValueError, match=rf"{workdir}.*changed.*\b{key}\b.*overwrite=True"):
    qa_tune.run(config, workdir)
  assert (workdir / "report.json").read_bytes() == report


def test_qa_tune_rerun_with_the_same_config_reuses_the_run(qa_run, tiny_model_dir):
  workdir, corpus, report = qa_run
  again = qa_tune.run(_qa_config(tiny_model_dir, corpus), workdir)
  assert again["config"]["learning_rate"] == _qa_config(tiny_model_dir, corpus).learning_rate


def test_qa_tune_rerun_after_a_document_was_edited_is_refused(qa_run, tiny_model_dir):
  workdir, corpus, _ = qa_run
  report = (workdir / "report.json").read_bytes()
  document = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix == ".md")[0]
  original = document.read_bytes()
  try:
    document.write_bytes(original.replace(b"the", b"a", 1) + b"\nAn added sentence.\n")
    with pytest.raises(ValueError, match=rf"changed.*{document.name}"):
      qa_tune.run(_qa_config(tiny_model_dir, corpus), workdir)
  finally:
    document.write_bytes(original)
  assert (workdir / "report.json").read_bytes() == report


def test_align_rerun_with_another_learning_rate_is_refused(align_run, tiny_model_dir):
  workdir, report = align_run
  config = _align_config(tiny_model_dir)
  config.optimizer.learning_rate = 0.05
  with pytest.raises(ValueError, match=r"changed.*optimizer\.learning_rate"):
    align.run(config, workdir)
  assert (workdir / "report.json").read_bytes() == report


def _hold_lock(workdir: pathlib.Path):
  """Takes DIR/.lock as a running job would (flock, pid inside); returns the open file."""
  workdir.mkdir(parents=True, exist_ok=True)
  handle = open(workdir / ".lock", "a+")
  fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  handle.seek(0)
  handle.truncate()
  handle.write(f"{os.getpid()}\n")
  handle.flush()
  return handle


def test_second_process_on_a_locked_workdir_stops_naming_the_holder(tmp_path, tiny_model_dir):
  workdir = tmp_path / "held"
  handle = _hold_lock(workdir)
  try:
    cmd = entrypoint_command("qa_tune", workdir, overrides={
        "model": tiny_model_dir, "max_documents": 1, "eval.enabled": False})
    start = time.time()
    done = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    took = time.time() - start
  finally:
    handle.close()
  assert done.returncode == 2, done.stderr[-2000:]
  assert f"process {os.getpid()}" in done.stderr
  assert "Traceback" not in done.stderr
  assert not (workdir / "qa_pairs.jsonl").exists()
  assert took < 60, took  # at start-up, not after the job's work


def test_locked_workdir_is_refused_in_process(tmp_path, tiny_model_dir):
  workdir = tmp_path / "held"
  handle = _hold_lock(workdir)
  try:
    with pytest.raises(ValueError, match=rf"{workdir}.*in use by process {os.getpid()}"):
      align.run(_align_config(tiny_model_dir), workdir)
  finally:
    handle.close()
  assert sorted(os.listdir(workdir)) == [".lock"]
