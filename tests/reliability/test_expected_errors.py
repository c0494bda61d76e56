"""Expected errors are one named line, checked before the long stages (issue 32).

In-process: out-of-range config values, windows longer than the model's context, a prompt that
does not fit, an exam path that is a folder, a truncated model.json, evaluate with nothing to
measure, a NaN weight (a named error, never `ppl nan` in a report), a workdir that is a file,
`overwrite=True` moving a changed run aside. Subprocess (the absl mains): such an error prints
one line to stderr and exits 2; `--verbose` / PENROSE_VERBOSE=1 adds the traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from configs import align as align_config
from configs import compress as compress_config
from configs import evaluate as evaluate_config
from configs import generate as generate_config
from configs import qa_tune as qa_tune_config
from penrose_jax import io as pio
from penrose_jax.io import model_registry
from penrose_jax.jobs import align, compress, evaluate, generate, qa_tune
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.reporting import report_json
from penrose_jax.run_reports import pipeline_report
from tests.reliability.conftest import REPO, entrypoint_command, subprocess_env

RUNNERS = {"compress": compress.run, "align": align.run, "qa_tune": qa_tune.run,
           "evaluate": evaluate.run, "generate": generate.run}
CONFIGS = {"compress": compress_config, "align": align_config, "qa_tune": qa_tune_config,
           "evaluate": evaluate_config, "generate": generate_config}


# evaluate quick cut to the packaged demo corpus, 2 windows (also as command-line overrides).
EVALUATE_CHEAP = {"skip_text_sets": "sofc_all", "benchmarks": "", "max_windows": 2,
                  "extraction.enabled": False}


def _config(job: str, model: pathlib.Path, **overrides) -> ml_collections.ConfigDict:
  """The job's quick config on `model`, with dotted-key overrides."""
  config = CONFIGS[job].get_config("quick")
  if job == "align":
    config.student = config.teacher = str(model)
    config.trainable = "all"
  else:
    config.model = str(model)
  if job == "evaluate":
    overrides = {**EVALUATE_CHEAP, **overrides}
  for key, value in overrides.items():
    *sections, field = key.split(".")
    node = config
    for section in sections:
      node = node[section]
    node[field] = value
  return config


# (job, override, the message expected): each must fail before the model is even loaded, or
# (the context cases) right after, and leave no report.
OUT_OF_RANGE = [
    ("generate", {"max_new_tokens": -5}, r"max_new_tokens=-5 is out of range: expected an "
                                         r"integer >= 1"),
    ("generate", {"temperature": -1.0}, r"temperature=-1.0 is out of range"),
    ("generate", {"top_p": 0.0}, r"top_p=0.0 is out of range"),
    ("qa_tune", {"batch_size": 0}, r"config batch_size=0 is out of range"),
    ("compress", {"calibration.num_windows": 0}, r"calibration\.num_windows=0 is out of range"),
    ("evaluate", {"batch_size": 0}, r"batch_size=0 is out of range"),
    ("align", {"objective.temperature": 0.0}, r"objective\.temperature=0.0 is out of range: "
                                              r"expected a number > 0"),
    ("align", {"optimizer.learning_rate": -1.0},
     r"optimizer\.learning_rate=-1.0 is out of range"),
    ("evaluate", {"window": 4096}, r"window=4096 is longer than the context .*\(512 tokens\)"),
    ("compress", {"calibration.window": 4096}, r"calibration\.window=4096 is longer than the "
                                               r"context"),
    ("align", {"eval.window": 4096}, r"eval\.window=4096 is longer than the context"),
    ("qa_tune", {"seq_len": 4096}, r"seq_len=4096 is longer than the context"),
]


@pytest.mark.parametrize("job, overrides, message", OUT_OF_RANGE,
                         ids=[f"{j}-{'-'.join(o)}" for j, o, _ in OUT_OF_RANGE])
def test_out_of_range_values_are_named_before_any_work(tmp_path, tiny_model_dir, job, overrides,
                                                       message):
  with pytest.raises(ValueError, match=message):
    RUNNERS[job](_config(job, tiny_model_dir, **overrides), tmp_path / "run")
  assert not (tmp_path / "run" / "report.json").exists()
  assert not (tmp_path / "run" / "model").exists()


def test_prompt_longer_than_the_context_is_named(tmp_path, tiny_model_dir):
  config = _config("generate", tiny_model_dir, prompt="word " * 600)
  with pytest.raises(ValueError, match=r"config\.prompt: prompt 1 is \d+ tokens; with "
                                       r"max_new_tokens=8 it exceeds the context"):
    generate.run(config, tmp_path)


def test_exam_path_that_is_a_folder_is_named(tmp_path, tiny_model_dir):
  config = _config("evaluate", tiny_model_dir, exam_path=str(tmp_path))
  with pytest.raises(ValueError, match=rf"{tmp_path}: is a folder; an exam is a JSONL file"):
    evaluate.run(config, tmp_path / "run")


def test_truncated_model_json_is_named(tmp_path, tiny_model_dir):
  import shutil
  model = tmp_path / "model"
  shutil.copytree(tiny_model_dir, model)
  text = (model / "model.json").read_text()
  (model / "model.json").write_text(text[:len(text) // 2])
  with pytest.raises(pio.CheckpointFormatError, match=r"model\.json: truncated or corrupt JSON"):
    model_registry.load(str(model))


def test_evaluate_with_its_only_text_set_missing_is_an_error(tmp_path, tiny_model_dir):
  config = _config("evaluate", tiny_model_dir)
  config.text_sets = ml_collections.ConfigDict({"gone": str(tmp_path / "no_such_texts")})
  config.skip_text_sets = ""
  with pytest.raises(ValueError, match=r"evaluate measured nothing.*no_such_texts not found"):
    evaluate.run(config, tmp_path / "run")
  assert not (tmp_path / "run" / "report.json").exists()


def test_nan_weight_is_a_named_error_not_ppl_nan(tmp_path, tiny_model_dir):
  import shutil
  model = tmp_path / "model"
  shutil.copytree(tiny_model_dir, model)
  loaded = model_registry.load(str(model))
  params = jax.tree_util.tree_map(np.asarray, loaded.params)
  params["final_norm"]["scale"] = np.full_like(params["final_norm"]["scale"], np.nan)
  poisoned = tmp_path / "poisoned"
  model_registry.save_model_checkpoint(poisoned, loaded.config, params, loaded.tokenizer)
  with pytest.raises(report_json.NonFiniteMetricError,
                     match=r"non-finite values \(ppl\.demo_corpus=nan"):
    evaluate.run(_config("evaluate", poisoned), tmp_path / "run")
  assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("job", ["evaluate", "generate", "qa_tune", "align", "compress"])
def test_workdir_that_is_a_file_is_named_at_start(tmp_path, tiny_model_dir, job):
  workdir = tmp_path / "a_file"
  workdir.write_text("not a folder\n")
  with pytest.raises(workdir_guard.WorkdirError, match=rf"{workdir}: the workdir is a file"):
    RUNNERS[job](_config(job, tiny_model_dir), workdir)


def test_overwrite_moves_a_changed_run_aside(tmp_path, tiny_model_dir):
  workdir = tmp_path / "run"
  first = evaluate.run(_config("evaluate", tiny_model_dir), workdir)
  with pytest.raises(workdir_guard.WorkdirChangedError, match=r"max_windows 2 -> 1"):
    evaluate.run(_config("evaluate", tiny_model_dir, max_windows=1), workdir)
  second = evaluate.run(_config("evaluate", tiny_model_dir, max_windows=1, overwrite=True),
                        workdir)
  aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous_config_")]
  assert len(aside) == 1
  assert json.loads((aside[0] / "report.json").read_text())["ppl"] == first["ppl"]
  assert second["config"]["max_windows"] == 1
  # The new record binds the next run: the first config is now the changed one.
  with pytest.raises(workdir_guard.WorkdirChangedError, match=r"max_windows 1 -> 2"):
    evaluate.run(_config("evaluate", tiny_model_dir), workdir)


def test_result_neutral_keys_and_new_empty_fields_do_not_count_as_changes(tmp_path):
  stored = {"config": {"a": 1, "b": "x"}, "inputs": {}}
  assert workdir_guard.differences(stored, {"a": 1, "b": "x", "new_off": ""}, {}) == []
  assert workdir_guard.differences(stored, {"a": 2, "b": "x"}, {}) == ["a 1 -> 2"]
  assert "overwrite" not in workdir_guard.flat_config({"overwrite": True, "time_budget_s": 5})


def test_edited_input_file_is_named(tmp_path):
  data = tmp_path / "texts"
  data.mkdir()
  (data / "one.txt").write_text("first\n")
  flat = {"sources": [f"{data}@train"]}
  stored = {"config": flat, "inputs": workdir_guard.input_fingerprints(flat)}
  (data / "one.txt").write_text("first, edited\n")
  (data / "two.txt").write_text("new\n")
  changed = workdir_guard.differences(stored, flat, workdir_guard.input_fingerprints(flat))
  assert changed == [f"input sources: {data}: one.txt edited, two.txt added"]


def test_chat_command_in_reports_is_shell_quoted(tmp_path):
  model_dir = tmp_path / "with space" / "qa_tune" / "model"
  command = pipeline_report.chat_command(model_dir, 'Say "hi" & exit')
  args = shlex.split(command)
  assert args[-2] == f"--config.model={model_dir}" or args[-2].endswith("qa_tune/model")
  assert args[-1] == '--prompt=Say "hi" & exit'


# ---- the absl mains: one line, exit 2; the traceback only when asked for ----

def _run_main(cmd: list[str], **env) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=REPO, env={**subprocess_env(), **env}, capture_output=True,
                        text=True, timeout=300)


def _one_line(done: subprocess.CompletedProcess) -> str:
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-2000:]
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error (")]
  assert len(errors) == 1, done.stderr[-2000:]
  return errors[0]


def test_main_prints_one_line_for_a_bad_value(tmp_path):
  cmd = entrypoint_command("generate", tmp_path / "gen", overrides={"max_new_tokens": -5})
  line = _one_line(_run_main(cmd))
  assert "max_new_tokens=-5 is out of range" in line
  assert not (tmp_path / "gen").exists()  # checked before the workdir is even created


@pytest.mark.parametrize("verbose", ["", "1"])
@pytest.mark.parametrize("error, status", [
    (ValueError("config x=1 is out of range"), 2), (FileNotFoundError(2, "gone", "/a/b"), 2),
    (KeyboardInterrupt(), 130)])
def test_one_line_errors_traceback_only_when_verbose(monkeypatch, capsys, error, status,
                                                      verbose):
  from experiments import cli
  monkeypatch.setenv("PENROSE_VERBOSE", verbose)
  monkeypatch.setattr(cli, "hard_exit", sys.exit)  # os._exit would end pytest

  def main(argv):
    raise error

  with pytest.raises(SystemExit) as info:
    cli.one_line_errors(main)(["prog"])
  assert info.value.code == status
  stderr = capsys.readouterr().err
  assert ("Traceback" in stderr) == bool(verbose)
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error (" if status == 2 else "interrupted: rerun")
  if isinstance(error, FileNotFoundError):
    assert "/a/b" in last


def test_unexpected_errors_keep_their_traceback():
  from experiments import cli

  def main(argv):
    raise TypeError("a bug")

  with pytest.raises(TypeError):
    cli.one_line_errors(main)(["prog"])


def test_main_prints_one_line_for_a_changed_workdir(tmp_path, tiny_model_dir):
  workdir = tmp_path / "eval"
  evaluate.run(_config("evaluate", tiny_model_dir), workdir)
  cmd = entrypoint_command("evaluate", workdir, overrides={
      "model": tiny_model_dir, **EVALUATE_CHEAP, "max_windows": 3})
  line = _one_line(_run_main(cmd))
  assert f"{workdir}: holds an earlier evaluate run" in line and "max_windows 2 -> 3" in line
  assert "--config.overwrite=True" in line


def test_main_prints_one_line_for_a_workdir_that_is_a_file(tmp_path):
  workdir = tmp_path / "a file"
  workdir.write_text("x\n")
  line = _one_line(_run_main(entrypoint_command("generate", workdir)))
  assert f"{workdir}: the workdir is a file" in line


def test_ctrl_c_while_compiling_exits_130_without_a_crash(tmp_path, tiny_model_dir):
  """SIGINT a second after qa_tune loaded its model (it is compiling its first programs): one
  line, exit 130; the interpreter's normal shutdown had segfaulted here in 3 of 4 tries."""
  import signal
  import time
  cmd = entrypoint_command("qa_tune", tmp_path / "run", overrides={
      "model": tiny_model_dir, "max_documents": 1, "eval.enabled": False})
  # A shell without job control starts background commands with SIGINT ignored, and Python
  # then installs no KeyboardInterrupt handler: give the child the default disposition.
  proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    for line in proc.stdout:
      if "loaded" in line:
        break
    time.sleep(1.0)
    assert proc.poll() is None, "qa_tune ended before the SIGINT: the test needs a longer run"
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
  assert stderr.strip().splitlines()[-1].startswith("interrupted: rerun the same command")
  assert "Traceback" not in stderr
