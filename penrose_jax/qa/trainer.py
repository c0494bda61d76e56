"""Section-wise curriculum Q&A fine-tuning, its one-pass baseline, traces and resume.

Mode 'sectionwise': for each document in order, for each section in order, `steps_per_section`
updates on that section's text windows and Q&A examples (chat template, loss on answer +
reasoning only), mixed with exact fractions of replayed earlier sections and general text
(`train_data.sectionwise_plan`). Around every section `traces.jsonl` gets one line: the
section's questions with the model's greedy answers before and after, the masked loss on the
section's Q&A and text before and after, and the last train loss.

Mode 'onepass': the same number of updates x batch_size x seq_len tokens (the same token
budget) of plain next-token loss on the concatenated documents in reading order, with the same
general-text share; no sections, no Q&A.

Mode 'onepass_augmented': the rows of the section-wise plan (section text, study texts, Q&A,
replay and general rows) permuted over all updates (`train_data.shuffled_plan`): the same
material and the same tokens as 'sectionwise', without section order, so comparing the two
separates the effect of the curriculum from that of the material.

Study texts (`study_material.StudyText`: restatements, entity notes) are plain-text rows of
their section, like its text windows. `epochs_per_section` sizes each section's updates by
passes over its examples instead of a fixed `steps_per_section` (every mode spends the same
total); `section_order` puts a section's text rows before or after its Q&A rows.

Training goes through `training.run_training` (one call per section) with a single jitted,
guarded step, fixed (batch_size, seq_len) batches, orbax checkpoints at every section end and
metrics.jsonl. A killed run restarted with the same arguments restores the latest checkpoint
(a section boundary), drops traces of sections after it, and ends with the same params and
metrics as an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.compression.packing import pack_compressed, unpack_compressed
from penrose_jax.data.ingest import Document, Section
from penrose_jax.evaluation.closed_book import greedy_answers
from penrose_jax.models import chat_format, llama
from penrose_jax.models.config import ModelConfig
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.models.token_loss import masked_nll
from penrose_jax.parallel.placement import place_batch
from penrose_jax.qa import records, train_data
from penrose_jax.qa.curriculum_config import (COMPLETIONS, MODES, CurriculumConfig, TrainOutcome,
                                              prepare_trainable)
from penrose_jax.qa.records import QAPair
from penrose_jax.qa.run_control import (curve_steps, group_exposures, plateaued,
                                        resolved_learning_rate)
from penrose_jax.reporting import workdir_layout
from penrose_jax.training import (MetricsLog, OptimizerConfig, TrainCheckpoints,
                                  describe_trainable, init_train_state, make_optimizer,
                                  make_schedule, make_train_step, run_training, trainable_mask)

TRACE_SOURCE_ORDER = {"curated": 0, "model": 1, "rule": 2, "study": 3}


def masked_lm_loss(params: Any, batch: dict, model_config: ModelConfig
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean next-token NLL over mask[:, 1:] targets.

  Args:
    params: params pytree.
    batch: {'tokens': (B, T) int32, 'mask': (B, T) float32}.
    model_config: the architecture.

  Returns:
    (loss, {'loss_tokens': number of targets}).
  """
  tokens = batch["tokens"]
  logits = llama.forward(params, tokens[:, :-1], model_config).logits
  mask = batch["mask"][:, 1:]
  return masked_nll(logits, tokens[:, 1:], mask), {"loss_tokens": jnp.sum(mask)}


@functools.partial(jax.jit, static_argnames=("model_config",))
def _eval_sums(params, batch, model_config):
  loss, aux = masked_lm_loss(params, batch, model_config)
  return loss * aux["loss_tokens"], aux["loss_tokens"]


def mean_masked_loss(params: Any, model_config: ModelConfig,
                     examples: Sequence[train_data.Example], batch_size: int) -> Optional[float]:
  """Token-weighted masked loss of examples (fixed-shape batches, one compile).

  Args:
    params: params pytree.
    model_config: the architecture.
    examples: rows.
    batch_size: rows per forward.

  Returns:
    The mean loss, or None without examples.
  """
  if not examples:
    return None
  total = count = 0.0
  for batch in train_data.padded_batches(examples, batch_size):
    s, c = _eval_sums(params, place_batch(batch), model_config)
    total, count = total + float(s), count + float(c)
  return total / max(count, 1.0)


def _section_pairs(pairs: Sequence[QAPair]) -> dict[tuple[str, int], list[QAPair]]:
  out: dict[tuple[str, int], list[QAPair]] = {}
  for pair in pairs:
    out.setdefault((pair.doc_id, pair.section_order), []).append(pair)
  return out


def _section_text(section: Section) -> str:
  return f"{section.title}\n\n{section.text}"


def _lines_until(path: pathlib.Path, keep_until_step: int, step_key: str = "end_step"
                 ) -> list[dict]:
  """Existing JSONL lines (traces, curve points) whose step_key is at or before the restored
  step; unreadable lines are dropped."""
  if not path.exists():
    return []
  kept = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if int(record.get(step_key, 1 << 62)) <= keep_until_step:
      kept.append(record)
  return kept


def _save_section_checkpoint(directory: pathlib.Path, step: int, state: Any) -> None:
  """Saves the train state at a section's end, as `run_training` would (2 kept)."""
  checkpoints = TrainCheckpoints(str(directory), max_to_keep=2, async_save=False)
  try:
    checkpoints.save(step, state, meta={"data_position": step})
    checkpoints.wait()
  finally:
    checkpoints.close()


def _append_jsonl(path: pathlib.Path, record: dict) -> None:
  with open(path, "a", encoding="utf-8") as handle:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def train(model_config: ModelConfig, params: Any, tokenizer: Any, documents: Sequence[Document],
          qa_pairs: Sequence[QAPair], general_texts: Sequence[str], cfg: CurriculumConfig,
          workdir: str | pathlib.Path,
          on_section_end: Optional[Callable[[int, dict], None]] = None,
          progress: bool = False, study_texts: Sequence[Any] = (),
          evaluate: Optional[Callable[[Any], dict]] = None) -> TrainOutcome:
  """Trains in the configured mode; resumable from `workdir` (module docstring).

  Args:
    model_config: the architecture.
    params: starting params (not modified).
    tokenizer: a TextTokenizer with a chat template.
    documents: documents in reading order.
    qa_pairs: training Q&A (any sources), matched to sections by (doc_id, section_order).
    general_texts: general texts for replay (empty disables general replay).
    cfg: CurriculumConfig.
    workdir: where checkpoints/, metrics.jsonl and traces.jsonl go.
    on_section_end: callback(section_index, trace_record) after a section's checkpoint and
      trace are written (tests use it to simulate a kill).
    progress: tqdm bars.
    study_texts: plain-text study records (`study_material.StudyText`: doc_id, section_order,
      text), trained as text rows of their section.
    evaluate: callback(params) -> dict of scalars, scored at `curve_steps` when
      cfg.curve_points > 1; one line per point in workdir/curve.jsonl (step, train_tokens and
      the dict), kept across a resume.

  Returns:
    TrainOutcome.
  """
  if cfg.mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
  if cfg.completion not in COMPLETIONS:
    raise ValueError(f"completion must be one of {COMPLETIONS}, got {cfg.completion!r}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  notes: list[str] = []
  train_params, selector = prepare_trainable(params, cfg)
  mask = trainable_mask(train_params, selector)
  summary = {k: v for k, v in describe_trainable(train_params, mask).items()
             if k != "trainable_paths"}
  summary["selector"] = selector
  # Compressed leaves train as one flat vector each (compile time; see compression/packing.py).
  train_params, mask = pack_compressed(train_params, mask)
  if cfg.mode == "none":
    return TrainOutcome(unpack_compressed(train_params), 0, 0, 0, 0.0, None, 0, {}, summary,
                        ["mode none: no training"])

  eot = chat_format.end_of_turn(tokenizer)
  max_windows = cfg.max_section_windows or None
  # curriculum_passes > 1: the whole section sequence again (spaced repetition); each
  # occurrence of a section gets its own updates and trace line.
  sections = [s for d in documents for s in d.sections] * max(cfg.curriculum_passes, 1)
  by_section = _section_pairs(qa_pairs)
  texts_by_section: dict[tuple[str, int], list[tuple[str, str]]] = {}
  for record in study_texts:
    texts_by_section.setdefault((record.doc_id, record.section_order), []).append(
        (record.text, getattr(record, "group", "")))
  general = [ex for text in general_texts
             for ex in train_data.text_windows(tokenizer, text, cfg.seq_len, "general")]
  if cfg.general_replay_fraction > 0 and not general:
    notes.append("general replay skipped: no general text")
  section_examples: list[list[train_data.Example]] = []
  section_qa: list[list[tuple[QAPair, train_data.Example]]] = []
  reasoning = lambda pair: pair.reasoning if cfg.completion == "answer_reasoning" else ""
  for section in sections:
    windows = train_data.text_windows(tokenizer, _section_text(section), cfg.seq_len, "section",
                                      max_windows)
    pairs = sorted(by_section.get((section.doc_id, section.order), []),
                   key=lambda p: TRACE_SOURCE_ORDER.get(p.source, 9))
    qa = [(p, train_data.encode_qa_example(tokenizer, p.question, p.answer, reasoning(p),
                                           cfg.seq_len, eot)) for p in pairs]
    # Study texts are short: joined per section and cut into full windows, not one per row;
    # restatements of facts (a group each) packed whole, never two of one fact in a row.
    texts = texts_by_section.get((section.doc_id, section.order), [])
    if any(group for _, group in texts):
      study = train_data.pack_distinct_texts(tokenizer, texts, cfg.seq_len,
                                             seed=cfg.seed * 100_003 + len(section_examples))
    else:
      study = train_data.text_windows(tokenizer, "\n\n".join(t for t, _ in texts),
                                      cfg.seq_len, "study")
    section_qa.append(qa)
    qa_rows = [ex for _, ex in qa]
    if cfg.pack_qa and pairs:  # multi-turn rows of several pairs (seeded order per section)
      order = np.random.default_rng([cfg.seed, len(section_examples)]).permutation(len(pairs))
      qa_rows = train_data.pack_qa_examples(
          tokenizer, [(pairs[i].question, chat_format.qa_completion(pairs[i].answer,
                                                                    reasoning(pairs[i])))
                      for i in order], cfg.seq_len, eot)
    section_examples.append(windows + study + qa_rows)
  sizes = [len(exs) for exs in section_examples]
  steps = train_data.section_steps(sizes, cfg.steps_per_section, cfg.epochs_per_section,
                                   cfg.batch_size, cfg.replay_fraction,
                                   cfg.general_replay_fraction, bool(general))
  ends = np.cumsum(steps).tolist()
  num_steps = int(ends[-1]) if ends else 0
  if cfg.mode in ("sectionwise", "onepass_augmented"):
    table = [ex for exs in section_examples for ex in exs] + general
    plan, kinds = train_data.sectionwise_plan(
        sizes, len(general), steps, cfg.batch_size, cfg.replay_fraction,
        cfg.general_replay_fraction, cfg.seed,
        text_counts=[sum(ex.kind != "qa" for ex in exs) for exs in section_examples],
        order=cfg.section_order)
    if cfg.mode == "onepass_augmented":
      plan, kinds = train_data.shuffled_plan(plan, kinds, cfg.seed)
  else:
    text = "\n\n".join(f"{d.title}\n\n" + "\n\n".join(_section_text(s) for s in d.sections)
                       for d in documents)
    doc_windows = train_data.text_windows(tokenizer, text, cfg.seq_len, "document")
    table = doc_windows + general
    plan, kinds = train_data.onepass_plan(len(doc_windows), len(general), num_steps,
                                          cfg.batch_size, cfg.general_replay_fraction, cfg.seed)
  row_counts = {name: int(np.sum(kinds == k)) for k, name in enumerate(train_data.ROW_KINDS)}
  loss_tokens = int(sum(float(np.sum(table[int(i)].mask)) for i in plan.reshape(-1)))
  pad_id = chat_format.pad_id(tokenizer)
  input_tokens = int(sum(int(np.sum(table[int(i)].tokens != pad_id)) for i in plan.reshape(-1)))

  exposures = group_exposures(table, plan)
  early_stop = cfg.patience > 0 or cfg.max_train_s > 0
  if early_stop and cfg.mode == "sectionwise":
    notes.append("patience / max_train_s ignored: an early stop needs a shuffled mode; "
                 "'sectionwise' trains every section in turn")
  opt_config = OptimizerConfig(learning_rate=resolved_learning_rate(cfg), warmup_steps=cfg.warmup_steps,
                               total_steps=num_steps, weight_decay=cfg.weight_decay,
                               clip_norm=cfg.clip_norm, end_lr_fraction=0.1)
  optimizer = make_optimizer(opt_config)
  loss_fn = lambda p, batch, rng, constants: masked_lm_loss(p, batch, model_config)
  step_fn = make_train_step(loss_fn, optimizer, mask, make_schedule(opt_config),
                            max_traces=cfg.max_traces)
  state = init_train_state(train_params, optimizer, mask, seed=cfg.seed)
  checkpoint_dir = workdir / "checkpoints"
  restored_step = 0
  if checkpoint_dir.exists():
    checkpoints = TrainCheckpoints(str(checkpoint_dir), async_save=False)
    restored = checkpoints.restore_latest(state)  # falls back when the latest is corrupt
    if restored is not None:
      state = restored[1]
      restored_step = int(state.step)
    checkpoints.close()
  batch_fn = lambda i: place_batch(train_data.stack_batch(table, plan[i]))
  # A run killed after its last update resumes with no steps left: the loss it reports is the
  # one logged at the restored step, so the report equals an uninterrupted run's.
  total_tokens, total_seconds = 0, 0.0
  logged = MetricsLog(str(workdir / workdir_layout.QA_METRICS)).logged_at(restored_step)
  final_loss = logged.get("loss") if logged and restored_step > 0 else None
  common = dict(log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every_steps,
                max_to_keep=2, resume=False,
                progress=progress, async_checkpoints=False)

  curve_path = workdir / workdir_layout.QA_CURVE
  points = []
  curve: list[dict] = []
  if evaluate is not None and cfg.curve_points > 1:
    points = curve_steps(num_steps, cfg.curve_points,
                         ends if cfg.mode == "sectionwise" else ())
    curve = _lines_until(curve_path, restored_step, "step")
    records.write_jsonl_atomic(curve_path, curve)
  shuffled = cfg.mode != "sectionwise"
  watch = lambda: shuffled and plateaued([p.get(cfg.plateau_key) for p in curve], cfg.patience,
                                         cfg.plateau_min_delta)
  # A resumed run that had stopped at a plateau stays stopped (the curve decides, as before).
  stopped_at = restored_step if curve and watch() else None

  def run_until(end: int, checkpoint: bool = True):
    nonlocal state, total_tokens, total_seconds, final_loss, stopped_at
    for stop in [p for p in points if int(state.step) < p < end] + [end]:
      if stopped_at is not None:
        return
      result = run_training(state, step_fn, batch_fn, stop, str(workdir),
                            checkpoint_at_end=checkpoint and stop == end, **common)
      state = result.state
      total_tokens += result.train_tokens
      total_seconds += result.train_tokens / max(result.tokens_per_s, 1e-9)
      final_loss = result.last_metrics.get("loss", final_loss)
      if stop in points:  # a learning-curve point inside the run
        curve.append({"step": stop, "train_tokens": stop * cfg.batch_size * cfg.seq_len,
                      **evaluate(unpack_compressed(state.params))})
        _append_jsonl(curve_path, curve[-1])
        over = shuffled and 0 < cfg.max_train_s < total_seconds
        if stop < end and (watch() or over):  # a plateau or the time budget: stop here
          stopped_at = stop
          notes.append(f"stopped at step {stop} of {num_steps}: " + (
              f"{cfg.plateau_key} did not rise for {cfg.patience} curve points" if watch()
              else f"{total_seconds:.0f} s of training > max_train_s {cfg.max_train_s:.0f}"))
          _save_section_checkpoint(checkpoint_dir, stop, state)

  def outcome(sections: int) -> TrainOutcome:
    done = num_steps if stopped_at is None else stopped_at
    return TrainOutcome(
        params=unpack_compressed(state.params), steps=done,
        train_tokens=done * cfg.batch_size * cfg.seq_len, loss_tokens=loss_tokens,
        tokens_per_s=total_tokens / max(total_seconds, 1e-9), final_loss=final_loss,
        sections=sections, row_counts=row_counts, trainable=summary, notes=notes,
        input_tokens=input_tokens, section_steps=steps, fact_exposures=exposures,
        planned_steps=num_steps)

  if cfg.mode in ("onepass", "onepass_augmented"):
    if restored_step < num_steps:
      run_until(num_steps)
    return outcome(sections=0)

  traces_path = workdir / workdir_layout.QA_TRACES
  kept = _lines_until(traces_path, restored_step)
  records.write_jsonl_atomic(traces_path, kept)
  # The section traces score values only: each state's dense equivalent is materialized once
  # (one compiled program) and shared by its losses and answers, instead of every loss batch
  # materializing the stored blocks again inside the compressed forward. A section's "after"
  # values are the next section's "before" values.
  values = None
  losses = lambda p, examples: (mean_masked_loss(p, model_config, examples, cfg.batch_size)
                                if cfg.trace_losses else None)
  for j, section in enumerate(sections):
    start, end = int(ends[j]) - steps[j], int(ends[j])
    if end <= restored_step:
      continue
    qa = section_qa[j]
    traced = qa[:cfg.trace_questions]
    qa_examples = [ex for _, ex in qa]
    text_examples = [ex for ex in section_examples[j] if ex.kind == "section"]
    answers = lambda p: greedy_answers(p, model_config, tokenizer, [q.question for q, _ in traced],
                                       cfg.trace_max_new_tokens)
    if values is None:
      values = dense_equivalent(unpack_compressed(state.params))
    before = answers(values)
    qa_before, text_before = losses(values, qa_examples), losses(values, text_examples)
    t0 = time.time()
    run_until(end, checkpoint=False)
    values = dense_equivalent(unpack_compressed(state.params))
    record = {
        "section_index": j, "doc_id": section.doc_id, "section": section.title,
        "section_order": section.order, "start_step": start, "end_step": end,
        "qa_pairs": len(qa), "text_windows": len(text_examples),
        "questions": [{"question": pair.question, "gold": pair.answer, "source": pair.source,
                       "before": b, "after": a}
                      for (pair, _), b, a in zip(traced, before, answers(values))],
        "qa_loss_before": qa_before,
        "qa_loss_after": losses(values, qa_examples),
        "text_loss_before": text_before, "text_loss_after": losses(values, text_examples),
        "train_loss_last": final_loss, "train_s": time.time() - t0}
    _append_jsonl(traces_path, record)
    # Checkpoints are full train states (params + Adam moments: ~0.75 GB for SmolLM2); one
    # every few sections is a fair trade against redoing those sections after a kill. The
    # checkpoint comes after the section's trace: a kill between the two redoes the section
    # (resume drops its trace line), where the other order could restore past a section whose
    # trace was never written.
    if (j + 1) % max(cfg.checkpoint_every_sections, 1) == 0 or j == len(sections) - 1:
      _save_section_checkpoint(checkpoint_dir, end, state)
    if on_section_end is not None:
      on_section_end(j, record)
  return outcome(sections=len(sections))
