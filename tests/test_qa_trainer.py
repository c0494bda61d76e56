"""Section-wise Q&A trainer: exact replay plan, loss masks, resume, one compile, budgets."""

import json

import chex
import jax
import numpy as np
import pytest

from penrose_jax.data import demo_corpus, ingest
from penrose_jax.io import model_registry
from penrose_jax.models import chat_format
from penrose_jax.qa import generate_rules, train_data, trainer
from penrose_jax.qa.curriculum_config import CurriculumConfig, check_trainable
from penrose_jax.training import read_metrics


def test_sectionwise_plan_ratios_are_exact_and_deterministic():
  sizes, num_general, k, batch = [3, 5, 2, 4], 7, 4, 4
  ids, kinds = train_data.sectionwise_plan(sizes, num_general, k, batch, 0.25, 0.125, seed=3)
  assert ids.shape == kinds.shape == (len(sizes) * k, batch)
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  for j in range(len(sizes)):
    rows_ids, rows_kinds = ids[j * k:(j + 1) * k].ravel(), kinds[j * k:(j + 1) * k].ravel()
    n_rows = k * batch
    assert np.sum(rows_kinds == train_data.GENERAL) == round(n_rows * 0.125)
    assert np.sum(rows_kinds == train_data.REPLAY) == (round(n_rows * 0.25) if j else 0)
    current = rows_ids[rows_kinds == train_data.CURRENT]
    assert np.all((current >= offsets[j]) & (current < offsets[j + 1]))
    # Every example of the section is seen before any repeats.
    assert len(set(current.tolist())) == min(len(current), sizes[j])
    assert np.all(rows_ids[rows_kinds == train_data.REPLAY] < offsets[j])
    assert np.all(rows_ids[rows_kinds == train_data.GENERAL] >= offsets[-1])
  again = train_data.sectionwise_plan(sizes, num_general, k, batch, 0.25, 0.125, seed=3)
  np.testing.assert_array_equal(again[0], ids)
  other = train_data.sectionwise_plan(sizes, num_general, k, batch, 0.25, 0.125, seed=4)
  assert not np.array_equal(other[0], ids)
  # No general text: no general rows; fractions above 1 are refused.
  _, kinds0 = train_data.sectionwise_plan(sizes, 0, k, batch, 0.25, 0.125, seed=3)
  assert not np.any(kinds0 == train_data.GENERAL)
  with pytest.raises(ValueError):
    train_data.sectionwise_plan(sizes, 1, k, batch, 0.7, 0.5, seed=0)


def test_onepass_plan_same_budget_in_reading_order():
  ids, kinds = train_data.onepass_plan(5, 3, num_steps=16, batch_size=4, general_fraction=0.125,
                                       seed=0)
  assert ids.shape == (16, 4)
  assert np.sum(kinds == train_data.GENERAL) == 8
  docs = ids.ravel()[kinds.ravel() == train_data.CURRENT]
  np.testing.assert_array_equal(docs, np.arange(len(docs)) % 5)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
  return model_registry.load(str(tiny_model_dir))


def test_qa_example_loss_mask_covers_completion_only(tiny):
  tok = tiny.tokenizer
  ex = train_data.encode_qa_example(tok, "What is the band gap?", "1.12 eV", "It says so.", 96)
  prompt_ids = tok.encode(chat_format.qa_prompt(tok, "What is the band gap?"))
  n_prompt = len(prompt_ids)
  np.testing.assert_array_equal(ex.tokens[:n_prompt], prompt_ids)
  assert not ex.mask[:n_prompt].any()
  target_text = tok.decode(ex.tokens[ex.mask > 0].tolist())
  assert target_text == "1.12 eV\nReasoning: It says so." + chat_format.end_of_turn(tok)
  assert ex.mask[n_prompt:].sum() == (ex.mask > 0).sum()


def _corpus():
  documents, _ = ingest.load_corpus(demo_corpus.demo_corpus_dir())
  doc = documents[0]
  doc = ingest.Document(doc.doc_id, doc.title, doc.sections[:3], doc.source_path)
  pairs = generate_rules.generate_document_qa(doc, max_facts_per_kind=1)
  return [doc], pairs


CFG = CurriculumConfig(steps_per_section=2, batch_size=2, seq_len=32,
                               replay_fraction=0.25, general_replay_fraction=0.25,
                               lora_rank=2, learning_rate=1e-2, trace_questions=1,
                               trace_max_new_tokens=2, max_section_windows=3, max_traces=1)


class _Killed(Exception):
  pass


def test_resume_matches_uninterrupted_and_onepass_budget(tiny, tmp_path):
  documents, pairs = _corpus()
  general = ["The market opened early on Saturday and the baker sold out of bread."]
  args = (tiny.config, tiny.params, tiny.tokenizer, documents, pairs, general, CFG)
  # max_traces=1: each train() call compiles its step once across all sections (chex counts
  # traces per definition site, so the counter is reset between calls).
  chex.clear_trace_counter()
  full = trainer.train(*args, tmp_path / "full")

  def kill(index, record):
    if index == 1:
      raise _Killed()

  chex.clear_trace_counter()
  with pytest.raises(_Killed):
    trainer.train(*args, tmp_path / "resumed", on_section_end=kill)
  chex.clear_trace_counter()
  resumed = trainer.train(*args, tmp_path / "resumed")
  assert full.steps == resumed.steps == 3 * CFG.steps_per_section
  assert read_metrics(tmp_path / "full" / "metrics.jsonl", drop_timing=True) == read_metrics(
      tmp_path / "resumed" / "metrics.jsonl", drop_timing=True)
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(full.params),
                         jax.device_get(resumed.params))
  traces = [json.loads(line) for line in (tmp_path / "resumed" / "traces.jsonl").open()]
  assert [t["section_index"] for t in traces] == [0, 1, 2]
  assert {"questions", "qa_loss_before", "qa_loss_after", "train_loss_last"} <= set(traces[1])
  assert full.row_counts["replay"] == 2 * 1 and full.row_counts["general"] == 3 * 1
  # Only the LoRA adapters were trained.
  assert full.trainable["selector"].endswith("(a|b)$")

  # Checkpointing every 2 sections: killed after section 0 (not saved: the rerun redoes it)
  # and again after section 1 (saved), it still ends where the uninterrupted run ends.
  sparse = CurriculumConfig(**{**CFG.__dict__, "checkpoint_every_sections": 2})
  sparse_args = args[:-1] + (sparse,)
  for stop_after in (0, 1):
    chex.clear_trace_counter()
    with pytest.raises(_Killed):
      trainer.train(*sparse_args, tmp_path / "sparse",
                    on_section_end=lambda i, r, k=stop_after: (_ for _ in ()).throw(_Killed())
                    if i == k else None)
  assert sorted(p.name for p in (tmp_path / "sparse" / "checkpoints").iterdir()
                if p.name.isdigit()) == [str(2 * CFG.steps_per_section)]
  assert [json.loads(line)["section_index"]
          for line in (tmp_path / "sparse" / "traces.jsonl").open()] == [0, 1]
  chex.clear_trace_counter()
  sparse_run = trainer.train(*sparse_args, tmp_path / "sparse")
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(full.params),
                         jax.device_get(sparse_run.params))
  assert sparse_run.final_loss == full.final_loss
  assert [json.loads(line)["section_index"]
          for line in (tmp_path / "sparse" / "traces.jsonl").open()] == [0, 1, 2]

  chex.clear_trace_counter()
  onepass = trainer.train(*args[:-1], CurriculumConfig(
      **{**CFG.__dict__, "mode": "onepass"}), tmp_path / "onepass")
  assert onepass.train_tokens == full.train_tokens == 6 * 2 * 32
  assert sum(onepass.row_counts.values()) == sum(full.row_counts.values())
  assert onepass.row_counts["general"] == full.row_counts["general"]
  assert not (tmp_path / "onepass" / "traces.jsonl").exists()


def test_trainable_choice_is_checked_against_the_model(tiny):
  from penrose_jax.compression import transform
  compressed, _ = transform.compress(tiny.params, {"tiling": "single", "budget_scope": "matrix",
                                                   "param_ratio": 0.5})
  with pytest.raises(ValueError, match="trainable='compressed'"):
    check_trainable(compressed, CurriculumConfig(trainable="lora"))
  check_trainable(compressed, CurriculumConfig(trainable="compressed"))
  check_trainable(tiny.params, CurriculumConfig(trainable="lora"))
  with pytest.raises(ValueError, match="no compressed leaves"):
    check_trainable(tiny.params, CurriculumConfig(trainable="compressed"))
  with pytest.raises(ValueError, match="trainable must be one of"):
    check_trainable(tiny.params, CurriculumConfig(trainable="adapters"))
