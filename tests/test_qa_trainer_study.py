"""Training recipe mechanics: epochs per section, section order, and the one-pass + augmentation
baseline on the same token budget as section-wise (tiny model)."""

import chex
import numpy as np
import pytest

from penrose_jax.data import demo_corpus, ingest
from penrose_jax.io import model_registry
from penrose_jax.qa import generate_rules, study_material, train_data
from penrose_jax.qa import trainer
from penrose_jax.qa.curriculum_config import CurriculumConfig


def test_section_steps_cover_the_requested_epochs():
  sizes = [3, 9, 1]
  steps = train_data.section_steps(sizes, 4, 2.0, batch_size=4, replay_fraction=0.25,
                                   general_fraction=0.125, has_general=True)
  ids, kinds = train_data.sectionwise_plan(sizes, 5, steps, 4, 0.25, 0.125, seed=0)
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  ends = np.cumsum(steps)
  for j, size in enumerate(sizes):
    rows = slice(ends[j] - steps[j], ends[j])
    current = ids[rows][kinds[rows] == train_data.CURRENT]
    assert np.all((current >= offsets[j]) & (current < offsets[j + 1]))
    # At least two passes, and one update fewer would not be enough.
    assert len(current) >= 2 * size
    assert len(current) - 4 < 2 * size
    counts = np.bincount(current - offsets[j], minlength=size)
    assert counts.min() >= 2
  assert train_data.section_steps(sizes, 4, 0.0, 4, 0.25, 0.125, True) == [4, 4, 4]
  with pytest.raises(ValueError):
    train_data.section_steps(sizes, 4, 1.0, 4, 0.5, 0.5, True)


@pytest.mark.parametrize("order", ["text_then_qa", "qa_then_text"])
def test_section_order_puts_text_before_or_after_qa(order):
  sizes, text_counts = [6, 5], [2, 3]  # section j: ids < text_counts[j] (local) are text
  ids, kinds = train_data.sectionwise_plan(sizes, 0, 3, 2, 0.0, 0.0, seed=1,
                                           text_counts=text_counts, order=order)
  offsets = [0, 6]
  for j in range(2):
    local = ids[j * 3:(j + 1) * 3].ravel()[:sizes[j]] - offsets[j]  # the first pass
    is_text = (local < text_counts[j]).tolist()
    expected = sorted(is_text, reverse=(order == "text_then_qa"))
    assert is_text == expected, (order, local)
  mixed, _ = train_data.sectionwise_plan(sizes, 0, 3, 2, 0.0, 0.0, seed=1)
  plain, _ = train_data.sectionwise_plan(sizes, 0, 3, 2, 0.0, 0.0, seed=1, text_counts=text_counts,
                                         order="mixed")
  np.testing.assert_array_equal(mixed, plain)  # 'mixed' is the old plan
  with pytest.raises(ValueError):
    train_data.sectionwise_plan(sizes, 0, 3, 2, 0.0, 0.0, seed=1, order="qa_first")


def test_shuffled_plan_keeps_the_rows_and_drops_the_section_order():
  ids, kinds = train_data.sectionwise_plan([4, 4, 4], 3, 4, 4, 0.25, 0.25, seed=0)
  shuffled, new_kinds = train_data.shuffled_plan(ids, kinds, seed=0)
  assert shuffled.shape == ids.shape
  assert sorted(shuffled.ravel().tolist()) == sorted(ids.ravel().tolist())
  assert np.sum(new_kinds == train_data.GENERAL) == np.sum(kinds == train_data.GENERAL)
  assert not np.any(new_kinds == train_data.REPLAY)
  first = shuffled[:4].ravel()  # the first updates already mix sections
  assert len({int(i) // 4 for i in first if i < 12}) > 1


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
  return model_registry.load(str(tiny_model_dir))


def _corpus():
  documents, _ = ingest.load_corpus(demo_corpus.demo_corpus_dir())
  doc = [d for d in documents if d.doc_id == "solid_oxide_fuel_cells"][0]
  doc = ingest.Document(doc.doc_id, doc.title, doc.sections[:2], doc.source_path)
  material = study_material.generate_document_study(doc, variants=2)
  pairs = generate_rules.generate_document_qa(doc, max_facts_per_kind=1) + material.pairs
  return [doc], pairs, material.texts


CFG = CurriculumConfig(steps_per_section=2, epochs_per_section=0.5, batch_size=2,
                               seq_len=32, replay_fraction=0.25, general_replay_fraction=0.25,
                               lora_rank=2, learning_rate=1e-2, trace_questions=1,
                               trace_max_new_tokens=2, max_section_windows=2, max_traces=1,
                               section_order="qa_then_text")


def test_onepass_augmented_trains_on_the_sectionwise_tokens(tiny, tmp_path):
  documents, pairs, texts = _corpus()
  general = ["The market opened early on Saturday and the baker sold out of bread."]
  args = (tiny.config, tiny.params, tiny.tokenizer, documents, pairs, general)
  runs = {}
  for mode in ("sectionwise", "onepass_augmented", "onepass"):
    chex.clear_trace_counter()
    cfg = CurriculumConfig(**{**CFG.__dict__, "mode": mode})
    runs[mode] = trainer.train(*args, cfg, tmp_path / mode, study_texts=texts)
  section, augmented, onepass = runs["sectionwise"], runs["onepass_augmented"], runs["onepass"]
  # epochs_per_section sizes the sections; every mode spends the same updates and tokens.
  assert section.section_steps == augmented.section_steps == onepass.section_steps
  assert section.steps == sum(section.section_steps) > len(section.section_steps) * 2
  assert section.train_tokens == augmented.train_tokens == onepass.train_tokens
  # The augmented baseline sees exactly the section-wise rows: same real and loss tokens.
  assert section.input_tokens == augmented.input_tokens
  assert section.loss_tokens == augmented.loss_tokens
  assert augmented.row_counts["general"] == section.row_counts["general"]
  assert augmented.row_counts["replay"] == 0 and section.row_counts["replay"] > 0
  assert (tmp_path / "sectionwise" / "traces.jsonl").exists()
  assert not (tmp_path / "onepass_augmented" / "traces.jsonl").exists()
  # Study texts are rows of their sections: without them the sections are shorter.
  chex.clear_trace_counter()
  bare = trainer.train(*args, CFG, tmp_path / "no_texts")
  assert sum(bare.section_steps) < sum(section.section_steps)
