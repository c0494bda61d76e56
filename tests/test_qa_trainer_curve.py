"""Trainer options of the injection recipe: answer-only completions, no loss traces, curve."""

import json

import chex
import jax
import numpy as np
import pytest

from penrose_jax.data import demo_corpus, ingest
from penrose_jax.io import model_registry
from penrose_jax.models import chat_format
from penrose_jax.qa import generate_rules, records, run_control, train_data, trainer
from penrose_jax.qa.curriculum_config import CurriculumConfig


def test_curve_steps_are_evenly_spaced_or_snapped_to_section_ends():
  assert run_control.curve_steps(12, 4) == [3, 6, 9]
  assert run_control.curve_steps(12, 4, section_ends=[2, 5, 8, 12]) == [5, 8]  # 9 -> 12 = the end
  assert run_control.curve_steps(12, 1) == [] and run_control.curve_steps(12, 0) == []
  assert run_control.curve_steps(3, 8) == [1, 2]  # distinct steps only


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
  return model_registry.load(str(tiny_model_dir))


def _corpus():
  documents, _ = ingest.load_corpus(demo_corpus.demo_corpus_dir())
  doc = documents[0]
  doc = ingest.Document(doc.doc_id, doc.title, doc.sections[:3], doc.source_path)
  return [doc], generate_rules.generate_document_qa(doc, max_facts_per_kind=1)


CFG = CurriculumConfig(steps_per_section=2, batch_size=2, seq_len=32,
                               replay_fraction=0.25, general_replay_fraction=0.25,
                               lora_rank=2, learning_rate=1e-2, trace_questions=0,
                               max_section_windows=3, max_traces=1)


@pytest.mark.parametrize("mode", ["sectionwise", "onepass"])
def test_curve_points_score_inside_the_run_without_changing_it(tiny, tmp_path, mode):
  documents, pairs = _corpus()
  general = ["The market opened early on Saturday and the baker sold out of bread."]
  plain = CurriculumConfig(**{**CFG.__dict__, "mode": mode})
  curved = CurriculumConfig(**{**plain.__dict__, "curve_points": 3})
  args = (tiny.config, tiny.params, tiny.tokenizer, documents, pairs, general)
  chex.clear_trace_counter()
  reference = trainer.train(*args, plain, tmp_path / "plain")
  seen = []

  def evaluate(params):
    seen.append(params)
    return {"exam_accuracy_sum": float(len(seen))}

  chex.clear_trace_counter()
  run = trainer.train(*args, curved, tmp_path / "curved", evaluate=evaluate)
  # 6 updates (3 sections x 2), 3 points: inner steps 2 and 4 (section ends in sectionwise).
  curve = [json.loads(line) for line in (tmp_path / "curved" / "curve.jsonl").open()]
  assert [p["step"] for p in curve] == [2, 4]
  assert [p["exam_accuracy_sum"] for p in curve] == [1.0, 2.0]
  assert curve[0]["train_tokens"] == 2 * CFG.batch_size * CFG.seq_len
  # The evaluated params moved between points, and scoring them left training unchanged.
  leaves = [jax.tree_util.tree_leaves(p) for p in seen]
  assert any(not np.array_equal(a, b) for a, b in zip(*leaves))
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(reference.params),
                         jax.device_get(run.params))
  assert run.final_loss == reference.final_loss


def test_answer_only_completion_and_no_loss_traces(tiny, tmp_path):
  tok = tiny.tokenizer
  ex = train_data.encode_qa_example(tok, "What is the band gap?", "1.12 eV", "", 96)
  assert tok.decode(ex.tokens[ex.mask > 0].tolist()) == "1.12 eV" + chat_format.end_of_turn(tok)
  documents, pairs = _corpus()
  cfg = CurriculumConfig(**{**CFG.__dict__, "completion": "answer",
                                    "trace_losses": False, "trace_questions": 1,
                                    "trace_max_new_tokens": 2})
  chex.clear_trace_counter()
  short = trainer.train(tiny.config, tiny.params, tok, documents, pairs, [], cfg, tmp_path / "a")
  chex.clear_trace_counter()
  full = trainer.train(tiny.config, tiny.params, tok, documents, pairs, [],
                       CurriculumConfig(**{**cfg.__dict__,
                                                   "completion": "answer_reasoning"}),
                       tmp_path / "r")
  # Same rows and budget; the answer-only rows train on fewer target tokens.
  assert short.train_tokens == full.train_tokens and short.loss_tokens < full.loss_tokens
  traces = [json.loads(line) for line in (tmp_path / "a" / "traces.jsonl").open()]
  assert len(traces) == 3 and any(t["questions"] for t in traces)
  assert all(t["qa_loss_before"] is None and t["text_loss_after"] is None for t in traces)
  bad = CurriculumConfig(**{**CFG.__dict__, "completion": "reasoning_only"})
  with pytest.raises(ValueError, match="completion must be one of"):
    trainer.train(tiny.config, tiny.params, tok, documents, pairs, [], bad, tmp_path / "b")


def test_packed_qa_rows_hold_several_turns_with_the_loss_on_each_answer(tiny, tmp_path):
  tok = tiny.tokenizer
  eot = chat_format.end_of_turn(tok)
  turns = [("What is A?", "1 K"), ("What is B?", "2 nm"), ("Who made C?", "the lab"),
           ("What is D?", "4 s")]
  single = train_data.encode_qa_example(tok, *turns[0], "", 512, eot)
  n_single = int(np.count_nonzero(single.tokens != chat_format.pad_id(tok)))
  rows = train_data.pack_qa_examples(tok, turns, 2 * n_single + 8, eot)
  assert 1 < len(rows) < len(turns)
  # The first turn of a packed row is exactly the single-question row (system prompt and all).
  np.testing.assert_array_equal(rows[0].tokens[:n_single], single.tokens[:n_single])
  targets = [tok.decode(r.tokens[r.mask > 0].tolist()) for r in rows]
  assert "".join(targets) == "".join(a + eot for _, a in turns)
  # Whole rows: a row never ends inside a turn, and a lone pair is the plain row.
  lone = train_data.pack_qa_examples(tok, turns[:1], 512, eot)
  np.testing.assert_array_equal(lone[0].tokens, single.tokens)
  documents, _ = _corpus()
  section = documents[0].sections[0]
  pairs = [records.QAPair(section.doc_id, section.title, section.order, f"What is item {k}?",
                          f"{k} K", "", "rule") for k in range(12)]
  packed = CurriculumConfig(**{**CFG.__dict__, "pack_qa": True, "seq_len": 96,
                                       "completion": "answer", "epochs_per_section": 1.0})
  plain = CurriculumConfig(**{**packed.__dict__, "pack_qa": False})
  chex.clear_trace_counter()
  a = trainer.train(tiny.config, tiny.params, tok, documents, pairs, [], packed, tmp_path / "p")
  chex.clear_trace_counter()
  b = trainer.train(tiny.config, tiny.params, tok, documents, pairs, [], plain, tmp_path / "u")
  # One epoch of packed rows is fewer updates for the same pairs.
  assert a.steps < b.steps


def test_plateau_stops_a_shuffled_run_and_a_resume_stays_stopped(tiny, tmp_path):
  documents, pairs = _corpus()
  cfg = CurriculumConfig(**{**CFG.__dict__, "mode": "onepass_augmented",
                                    "curve_points": 6, "patience": 2,
                                    "plateau_key": "recall"})
  scores = iter([0.1, 0.3, 0.3, 0.2, 0.9])  # best 0.3 at point 2, no rise at points 3 and 4

  def evaluate(params):
    return {"recall": next(scores)}

  args = (tiny.config, tiny.params, tiny.tokenizer, documents, pairs, [])
  chex.clear_trace_counter()
  run = trainer.train(*args, cfg, tmp_path / "run", evaluate=evaluate)
  assert run.planned_steps == 6 and run.steps == 4  # stopped at the 4th inner point
  assert run.train_tokens == 4 * cfg.batch_size * cfg.seq_len
  assert any("stopped at step 4" in note for note in run.notes)
  curve = [json.loads(line) for line in (tmp_path / "run" / "curve.jsonl").open()]
  assert [p["recall"] for p in curve] == [0.1, 0.3, 0.3, 0.2]
  # Restarted on the same workdir: restores step 4, sees the plateau in curve.jsonl, no update.
  chex.clear_trace_counter()
  again = trainer.train(*args, cfg, tmp_path / "run",
                        evaluate=lambda p: pytest.fail("a stopped run scored again"))
  assert again.steps == 4
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(run.params),
                         jax.device_get(again.params))


def test_time_budget_stops_at_the_first_curve_point_past_it(tiny, tmp_path):
  documents, pairs = _corpus()
  cfg = CurriculumConfig(**{**CFG.__dict__, "mode": "onepass_augmented",
                                    "curve_points": 3, "max_train_s": 1e-9})
  chex.clear_trace_counter()
  run = trainer.train(tiny.config, tiny.params, tiny.tokenizer, documents, pairs, [], cfg,
                      tmp_path / "run", evaluate=lambda p: {"recall": 0.0})
  assert run.planned_steps == 6 and run.steps == 2
  assert any("max_train_s" in note for note in run.notes)
  # Section order trains every section in turn: the budget is ignored, and said so.
  chex.clear_trace_counter()
  ordered = trainer.train(tiny.config, tiny.params, tiny.tokenizer, documents, pairs, [],
                          CurriculumConfig(**{**cfg.__dict__, "mode": "sectionwise"}),
                          tmp_path / "other", evaluate=lambda p: {"recall": 0.0})
  assert ordered.steps == ordered.planned_steps == 6
  assert any("ignored" in note for note in ordered.notes)
