"""Issue 32's inputs and faults, tried as a user would: each one a command line of a real
entrypoint on the tiny model (quick variants), its exit status, stderr and outputs checked.

  python -m benchmarks.reliability_checks --out=results/reliability

Writes OUT/checks.json (one row per check: what was tried, exit status, the error line, pass /
fail and why) and prints a Markdown table. A check passes when the job did what the issue asks:
an expected error is exactly one `error (...)` line, exit 2, no traceback, nothing silently
wrong (reports / models unchanged where a run was refused); a run that should work exits 0.
Took 6.5 min on the shared 2-core machine (about 40 process starts, each under 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
# qa_tune quick cut to one document, rule Q&A, no evaluation: the cheapest run that trains.
QA_CHEAP = {"max_documents": 1, "qa_sources": "rule", "trace_questions": 0,
            "general_replay_fraction": 0.0, "eval.enabled": False}
EVAL_CHEAP = {"skip_text_sets": "sofc_all", "benchmarks": "", "max_windows": 2,
              "extraction.enabled": False}


def command(job: str, workdir: Any, overrides: dict, variant: str = "quick") -> list[str]:
  """`python -m experiments.<job> --config=configs/<job>.py:<variant> --workdir=DIR ...`."""
  cmd = [sys.executable, "-m", f"experiments.{job}", f"--config=configs/{job}.py:{variant}",
         f"--workdir={workdir}"]
  return cmd + [f"--config.{k}={v}" for k, v in overrides.items()]


def env() -> dict[str, str]:
  out = dict(os.environ)
  out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
  out.setdefault("JAX_PLATFORMS", "cpu")
  out.setdefault("OPENBLAS_NUM_THREADS", "1")
  out.pop("PENROSE_VERBOSE", None)
  return out


def run(cmd: list[str], timeout: float = 600) -> dict[str, Any]:
  """Runs `cmd`; returns rc, seconds, the stderr's `error (` / `interrupted` lines, flags."""
  start = time.time()
  done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True,
                        timeout=timeout)
  return outcome(done.returncode, done.stderr, time.time() - start)


def outcome(rc: int, stderr: str, seconds: float) -> dict[str, Any]:
  lines = [l for l in stderr.splitlines() if l.startswith(("error (", "interrupted:"))]
  return {"rc": rc, "seconds": round(seconds, 1), "error_lines": lines,
          "traceback": "Traceback" in stderr, "segfault": rc == -signal.SIGSEGV,
          "stderr_tail": stderr.strip().splitlines()[-1:] if stderr.strip() else []}


def expect_error(result: dict[str, Any], *needles: str) -> tuple[bool, str]:
  """An expected error: exit 2, one error line naming every needle, no traceback."""
  if result["rc"] != 2:
    return False, f"exit {result['rc']}, expected 2"
  if result["traceback"] or len(result["error_lines"]) != 1:
    return False, f"{len(result['error_lines'])} error lines, traceback {result['traceback']}"
  missing = [n for n in needles if n not in result["error_lines"][0]]
  return (not missing), (f"message lacks {missing}" if missing else "one named line, exit 2")


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="results/reliability")
  args = parser.parse_args(argv)
  sys.path.insert(0, str(REPO))
  from penrose_jax.data import paths  # pylint: disable=g-import-not-at-top
  from penrose_jax.io import model_registry  # pylint: disable=g-import-not-at-top
  from penrose_jax.reporting import report_json  # pylint: disable=g-import-not-at-top
  rows: list[dict[str, Any]] = []
  root = pathlib.Path(tempfile.mkdtemp(prefix="penrose reliability "))  # a space on purpose

  def check(name: str, tried: str, fn: Callable[[], tuple[dict, bool, str]]) -> None:
    t0 = time.time()
    try:
      result, ok, why = fn()
    except Exception as err:  # pylint: disable=broad-except
      result, ok, why = {}, False, f"check itself failed: {type(err).__name__}: {err}"
    rows.append({"check": name, "tried": tried, "rc": result.get("rc"),
                 "error_line": (result.get("error_lines") or [""])[0][:300],
                 "pass": bool(ok), "why": why, "seconds": round(time.time() - t0, 1)})
    print(f"{'PASS' if ok else 'FAIL'} {name}: {why}", flush=True)

  tiny = model_registry.build_tiny_model(root / "tiny")
  corpus = root / "corpus"
  shutil.copytree(paths.resolve_data_path("package:demo_corpus"), corpus)
  qa_base = {"model": tiny, "corpus": corpus, **QA_CHEAP}
  qa_dir = root / "qa run"
  first = run(command("qa_tune", qa_dir, qa_base))
  assert first["rc"] == 0, first
  report = lambda d: (d / "report.json").read_bytes()
  model_json = lambda d: (d / "model" / "model.json").read_bytes()

  def refused(job, workdir, overrides, *needles):
    def fn():
      before = (report(workdir), model_json(workdir))
      result = run(command(job, workdir, overrides))
      ok, why = expect_error(result, *needles)
      unchanged = (report(workdir), model_json(workdir)) == before
      return result, ok and unchanged, why + ("" if unchanged else "; outputs changed")
    return fn

  check("qa_tune: rerun with another learning rate", "qa_tune W, then --config.learning_rate=0.05",
        refused("qa_tune", qa_dir, {**qa_base, "learning_rate": 0.05}, "learning_rate",
                "overwrite=True"))
  check("qa_tune: rerun with another mode", "--config.mode=onepass on the same W",
        refused("qa_tune", qa_dir, {**qa_base, "mode": "onepass"}, "mode"))
  check("qa_tune: rerun with another lora_rank", "--config.lora_rank=4 on the same W",
        refused("qa_tune", qa_dir, {**qa_base, "lora_rank": 4}, "lora_rank 8 -> 4"))

  def edited_document():
    doc = sorted(p for p in corpus.rglob("*.md"))[0]
    original = doc.read_bytes()
    doc.write_bytes(original + b"\nAn added sentence.\n")
    try:
      return refused("qa_tune", qa_dir, qa_base, doc.name, "edited")()
    finally:
      doc.write_bytes(original)
  check("qa_tune: a corpus document edited under the same name", "append a line to one .md",
        edited_document)

  def same_config():
    result = run(command("qa_tune", qa_dir, qa_base))
    return result, result["rc"] == 0, f"exit {result['rc']} (resumed the finished run)"
  check("qa_tune: rerun with the same config", "the first command again", same_config)

  def overwrite():
    result = run(command("qa_tune", qa_dir, {**qa_base, "learning_rate": 0.05,
                                             "overwrite": True}))
    aside = [p for p in root.iterdir() if p.name.startswith("qa run.previous_config_")]
    lr = json.loads(report(qa_dir))["config"]["learning_rate"]
    ok = result["rc"] == 0 and len(aside) == 1 and lr == 0.05
    return result, ok, f"exit {result['rc']}, old run moved to {len(aside)} folder, lr {lr}"
  check("qa_tune: --config.overwrite=True with another learning rate",
        "lr 0.05 plus overwrite on the same W", overwrite)

  def concurrent():
    workdir = root / "qa concurrent"
    cmd = command("qa_tune", workdir, qa_base)
    first_proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (workdir / ".lock").exists() and time.time() < deadline:
      time.sleep(0.1)
    time.sleep(0.5)
    second = run(cmd)
    first_err = first_proc.communicate(timeout=600)[1]
    ok, why = expect_error(second, f"in use by process {first_proc.pid}")
    lines = (workdir / "qa_pairs.jsonl").read_text().splitlines()
    unique = len(set(lines)) == len(lines)
    ok = ok and first_proc.returncode == 0 and unique
    return second, ok, (f"{why}; the first run exit {first_proc.returncode}, "
                        f"{len(lines)} Q&A lines, duplicates: {not unique}"
                        + (f" ({first_err[-200:]})" if first_proc.returncode else ""))
  check("qa_tune: two processes on one workdir", "start a second while the first runs",
        concurrent)

  al_dir = root / "align run"
  al_base = {"student": tiny, "teacher": tiny, "trainable": "all", "num_steps": 2,
             "eval_every": 2, "checkpoint_every": 2, "eval.max_windows": 2}
  assert run(command("align", al_dir, al_base))["rc"] == 0
  check("align: rerun on a finished workdir with another learning rate",
        "--config.optimizer.learning_rate=0.05", refused(
            "align", al_dir, {**al_base, "optimizer.learning_rate": 0.05},
            "optimizer.learning_rate"))

  def bad(job, overrides, *needles, workdir=None):
    def fn():
      result = run(command(job, workdir or root / f"bad {len(rows)}", overrides))
      ok, why = expect_error(result, *needles)
      return result, ok, why
    return fn
  ev = {"model": tiny, **EVAL_CHEAP}
  cases = [
      ("compress: calibration.num_windows=0", "compress",
       {"model": tiny, "calibration.num_windows": 0}, ["calibration.num_windows=0"]),
      ("qa_tune: batch_size=0", "qa_tune", {**qa_base, "batch_size": 0}, ["batch_size=0"]),
      ("generate: max_new_tokens=-5", "generate", {"model": tiny, "max_new_tokens": -5},
       ["max_new_tokens=-5"]),
      ("generate: temperature=-1", "generate", {"model": tiny, "temperature": -1.0},
       ["temperature=-1.0"]),
      ("evaluate: window 4096 > context 512", "evaluate", {**ev, "window": 4096},
       ["window=4096", "512 tokens"]),
      ("compress: calibration.window 4096 > context", "compress",
       {"model": tiny, "calibration.window": 4096}, ["calibration.window=4096"]),
      ("generate: prompt longer than the context", "generate",
       {"model": tiny, "prompt": "word " * 600}, ["exceeds the context"]),
      ("evaluate: exam_path is a folder", "evaluate", {**ev, "exam_path": corpus},
       ["is a folder"]),
      ("evaluate: its only text set missing", "evaluate",
       {**ev, "text_sets.demo_corpus": root / "missing texts"}, ["measured nothing"]),
  ]
  for name, job, overrides, needles in cases:
    shown = {k: v for k, v in overrides.items()
             if k not in ("model", "corpus", *QA_CHEAP, *EVAL_CHEAP)}
    check(name, " ".join(f"{k}={str(v)[:30]}" for k, v in shown.items()),
          bad(job, overrides, *needles))

  def unknown_key():  # the flags error predates this round: absl's one FATAL line, exit 2
    result = run(command("compress", root / "x", {"model": tiny, "bogus": 1}))
    ok = result["rc"] == 2 and not result["traceback"]
    return result, ok, f"exit {result['rc']}, traceback {result['traceback']}"
  check("compress: unknown override key", "--config.bogus=1", unknown_key)

  truncated = root / "truncated model"
  shutil.copytree(tiny, truncated)
  text = (truncated / "model.json").read_text()
  (truncated / "model.json").write_text(text[:len(text) // 2])
  check("evaluate: truncated model.json", "model.json cut in half",
        bad("evaluate", {**ev, "model": truncated}, "model.json: truncated or corrupt JSON"))
  text_gguf = root / "notes.gguf"
  text_gguf.write_text("a text file renamed\n")
  check("evaluate: a text file named .gguf", "model=notes.gguf",
        bad("evaluate", {**ev, "model": text_gguf}, "notes.gguf"))
  check("evaluate: missing model path", "model=no_such.gguf",
        bad("evaluate", {**ev, "model": root / "no_such.gguf"}, "no_such.gguf"))

  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  loaded = model_registry.load(str(tiny))
  params = jax.tree_util.tree_map(np.asarray, loaded.params)
  params["final_norm"]["scale"] = np.full_like(params["final_norm"]["scale"], np.nan)
  poisoned = root / "nan model"
  model_registry.save_model_checkpoint(poisoned, loaded.config, params, loaded.tokenizer)
  check("evaluate: a NaN weight", "final_norm/scale all NaN",
        bad("evaluate", {**ev, "model": poisoned}, "non-finite", "ppl.demo_corpus=nan"))
  flipped = root / "bit-flipped model"
  shutil.copytree(tiny, flipped)
  params = jax.tree_util.tree_map(np.asarray, loaded.params)
  kernel = params["layers_0"]["mlp"]["up_proj"]["kernel"]
  kernel.view(np.uint32)[0, 0] |= np.uint32(0x7F800000)  # exponent bits all set: inf / NaN
  shutil.rmtree(flipped)
  model_registry.save_model_checkpoint(flipped, loaded.config, params, loaded.tokenizer)
  check("evaluate: a bit-flipped checkpoint array (inf)", "one kernel entry's exponent set",
        bad("evaluate", {**ev, "model": flipped}, "non-finite"))

  a_file = root / "a file"
  a_file.write_text("x\n")
  check("evaluate: workdir is a file", "--workdir=<a file>",
        bad("evaluate", ev, "the workdir is a file", workdir=a_file))
  check("evaluate: workdir not writable", "--workdir=/sys/penrose_check (EPERM, even as root)",
        bad("evaluate", ev, "/sys/penrose_check", workdir="/sys/penrose_check"))
  check("generate: workdir not writable, before loading", "--workdir=/sys/penrose_check",
        bad("generate", {"model": tiny}, "/sys/penrose_check", workdir="/sys/penrose_check"))

  def ctrl_c(attempt):
    def fn():
      workdir = root / f"sigint {attempt}"
      cmd = command("qa_tune", workdir, {**qa_base, "qa_sources": "rule,study"})
      start = time.time()
      proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
      for line in proc.stdout:
        if "loaded" in line:
          break
      time.sleep(0.5 + 0.5 * attempt)
      os.kill(proc.pid, signal.SIGINT)
      _, stderr = proc.communicate(timeout=300)
      result = outcome(proc.returncode, stderr, time.time() - start)
      rerun = run(cmd)
      ok = (result["rc"] in (130, 0) and not result["segfault"] and not result["traceback"]
            and rerun["rc"] == 0)
      return result, ok, (f"exit {result['rc']} (segfault {result['segfault']}), "
                          f"rerun exit {rerun['rc']}")
    return fn
  for attempt in range(4):
    check(f"qa_tune: Ctrl-C while compiling, try {attempt + 1}",
          f"SIGINT {0.5 + 0.5 * attempt:.1f} s after the model loaded, then rerun",
          ctrl_c(attempt))

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  report_json.write_json_atomic(out / "checks.json", rows)
  print("| check | tried | exit | what the job did | pass |\n|---|---|---|---|---|")
  for row in rows:
    did = row["error_line"].replace("|", "/")[:160] or row["why"]
    print(f"| {row['check']} | {row['tried'][:60]} | {row['rc']} | {did} | "
          f"{'pass' if row['pass'] else 'FAIL: ' + row['why']} |")
  print(f"{sum(r['pass'] for r in rows)} / {len(rows)} pass; workdirs under {root}")


if __name__ == "__main__":
  main()
