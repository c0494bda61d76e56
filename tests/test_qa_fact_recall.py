"""Recall material (qa/fact_recall.py): restatements, short answers, held-out wordings, packing."""

import re

import pytest

from penrose_jax.data import ingest, jsonl_files
from penrose_jax.data.injection_benchmark import corpus_dir
from penrose_jax.evaluation import answer_rank
from penrose_jax.io import model_registry
from penrose_jax.models import chat_format
from penrose_jax.qa import fact_recall, filtering, model_generate, records, run_control, train_data
from penrose_jax.qa.curriculum_config import CurriculumConfig

MARKDOWN = """# Veltrane-7: A Self-Healing Oxide Ceramic

## Sintering

Densification is done by spark plasma sintering. The standard schedule holds the die at
1,485 °C for 14 minutes under a uniaxial pressure of 62 MPa. The finished discs reach 99.1 % of
theoretical density.
"""

LATEX = r"""\title{Gadolinium-doped ceria thin films grown by pulsed laser deposition on sapphire}
\begin{document}
\section{Growth}
The GDC films were deposited at a substrate temperature of 650 \si{\celsius} in an oxygen
pressure of 2 Pa. The GDC films have a thickness of 120 nm. GDC conducts oxide ions well.
\end{document}
"""

PLAIN = """Quillon cell notes

The Quillon cell stores 312 Wh/kg at the pack level. The Quillon cell was cycled at a
temperature of 60 °C for 400 hours.
"""


def _load(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  documents, problems = ingest.load_corpus(tmp_path)
  assert not problems
  return documents[0]


@pytest.mark.parametrize("name,text,entity", [
    ("veltrane.md", MARKDOWN, "Veltrane-7"),
    ("gdc.tex", LATEX, "GDC"),
    ("quillon.txt", PLAIN, None)])
def test_every_fact_is_restated_ten_times_under_the_entity_both_ways(tmp_path, name, text,
                                                                     entity):
  document = _load(tmp_path, name, text)
  found = fact_recall.document_entity(document)
  if entity is not None:
    assert found == entity
  material = fact_recall.generate_document_recall(document)
  assert material.facts >= 2
  by_group = {}
  for record in material.texts:
    by_group.setdefault(record.group, []).append(record.text)
  assert len(by_group) == material.facts
  heldout = {q.fact: q for q in material.selftest if q.split == "heldout"}
  for group, texts in by_group.items():
    value = heldout[group].answer
    assert len(texts) >= fact_recall.RECALL_TEXTS, texts
    assert all(found in t and value.lower() in t.lower() for t in texts), texts
    assert any(t.startswith(fact_recall.cap(value)) for t in texts)  # value -> entity
    assert any(t.rstrip(".").endswith(value) for t in texts)  # entity -> value
  # Numbers only from the section's text and titles (a plain-text reader's 'Part 1' included).
  section_numbers = filtering.numbers_in(" ".join(f"{s.title} {s.text}" for s in
                                                  document.sections) + " " + document.title)
  assert all(filtering.numbers_in(r.text) <= section_numbers for r in material.texts)


def test_short_answers_and_a_heldout_wording_never_trained(tmp_path):
  document = _load(tmp_path, "veltrane.md", MARKDOWN)
  material = fact_recall.generate_document_recall(document)
  values = {q.answer for q in material.selftest}
  entity = fact_recall.document_entity(document)
  assert "1,485 °C" in values and "62 MPa" in values
  # The answer is the value itself (or the entity, for the reverse question), not a sentence.
  assert all(p.answer in values | {entity} for p in material.pairs)
  assert any(p.answer == entity for p in material.pairs)
  trained = {filtering.question_key(p.question) for p in material.pairs}
  for q in material.selftest:
    assert (filtering.question_key(q.question) in trained) == (q.split == "trained")
    assert fact_recall.norm(q.answer) not in fact_recall.norm(q.question)


def test_build_qa_pairs_writes_selftest_and_drops_heldout_wordings_of_every_source(tmp_path):
  document = _load(tmp_path / "corpus" if (tmp_path / "corpus").mkdir() is None else tmp_path,
                   "veltrane.md", MARKDOWN)
  out = tmp_path / "out" / "qa_pairs.jsonl"
  model_generate.build_qa_pairs([document], out, ["study", "recall"])
  pairs = records.read_qa_jsonl([out])
  selftest = fact_recall.read_selftest([fact_recall.selftest_path(out)])
  heldout = {filtering.question_key(q.question) for q in selftest if q.split == "heldout"}
  assert heldout and {p.source for p in pairs} == {"study", "recall"}
  assert not heldout & {filtering.question_key(p.question) for p in pairs}
  texts = [t for t in jsonl_files.read_jsonl(out.with_name("qa_pairs.study.jsonl"))
           if t["source"] == "recall"]
  assert texts and all(t["group"] for t in texts)


def test_pick_selftest_spreads_the_cap_over_each_document():
  qs = [fact_recall.SelfTestQuestion(d, "s", f"{d}/0/{i}", f"q{d}{i}", "1 K", split)
        for d in ("a", "b") for i in range(6) for split in fact_recall.SPLITS]
  picked = fact_recall.pick_selftest(qs, "heldout", per_doc=3)
  assert [q.fact for q in picked] == ["a/0/0", "a/0/2", "a/0/4", "b/0/0", "b/0/2", "b/0/4"]
  assert len(fact_recall.pick_selftest(qs, "trained")) == 12
  with pytest.raises(ValueError, match="split"):
    fact_recall.pick_selftest(qs, "train")
  assert fact_recall.recalled_summary({"a": {"questions": 4, "contains": 0.75}}) == {
      "a": "3 of 4 facts recalled"}


def test_packaged_benchmark_material_covers_every_document():
  documents, _ = ingest.load_corpus(corpus_dir())
  entities = [fact_recall.document_entity(d) for d in documents]
  assert "Veltrane-7" in entities and "Quillon Sodium-Sulfur Pouch Cell" in entities
  for document in documents:
    material = fact_recall.generate_document_recall(document)
    assert material.facts >= 10, document.doc_id


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
  return model_registry.load(str(tiny_model_dir)).tokenizer


def test_pack_distinct_texts_never_puts_two_paraphrases_of_a_fact_in_one_row(tokenizer):
  texts = [(f"Fact {g} is stated in wording number {k}.", f"g{g}") for g in range(5)
           for k in range(6)] + [("A text of no fact.", "")] * 3
  rows = train_data.pack_distinct_texts(tokenizer, texts, seq_len=48, seed=0)
  pad = chat_format.pad_id(tokenizer)
  for row in rows:
    assert len(set(row.groups)) == len(row.groups)
    decoded = tokenizer.decode([int(t) for t in row.tokens if t != pad])
    assert len({m for m in re.findall(r"Fact (\d)", decoded)}) == len(row.groups)
  assert sorted(g for row in rows for g in row.groups) == sorted(g for _, g in texts if g)
  assert len(rows) < len(texts)  # packed, not one text per row
  again = train_data.pack_distinct_texts(tokenizer, texts, seq_len=48, seed=0)
  assert [r.tokens.tolist() for r in again] == [r.tokens.tolist() for r in rows]


def test_plateau_and_learning_rate_by_trainable():
  assert not run_control.plateaued([0.1, 0.2, 0.3], patience=2)
  assert run_control.plateaued([0.1, 0.4, 0.3, 0.4], patience=2)
  assert not run_control.plateaued([0.1, 0.4, 0.3, 0.45], patience=2)
  assert run_control.plateaued([0.1, 0.4, 0.3, 0.45], patience=2, min_delta=0.1)
  assert not run_control.plateaued([0.0, 0.0], patience=2)  # not enough points yet
  assert not run_control.plateaued([0.0, 0.0, 0.0], patience=0)
  assert run_control.plateaued([None, 0.2, None, 0.1, 0.2], patience=2)
  cfg = lambda **kw: CurriculumConfig(**{"learning_rate": 0.0, **kw})
  assert run_control.resolved_learning_rate(cfg(trainable="lora")) == 3e-3
  assert run_control.resolved_learning_rate(cfg(trainable="compressed")) == 1e-4
  assert run_control.resolved_learning_rate(cfg(trainable="all")) == 1e-4
  assert run_control.resolved_learning_rate(cfg(trainable="all", learning_rate=5e-4)) == 5e-4
  with pytest.raises(ValueError, match="trainable"):
    run_control.resolved_learning_rate(cfg(trainable="adapters"))


def test_answer_rank_is_one_for_the_greedy_token_and_logprob_adds_up(tiny_model_dir):
  import jax.numpy as jnp
  from penrose_jax.models import llama
  loaded = model_registry.load(str(tiny_model_dir))
  tok, question = loaded.tokenizer, "What is the band gap of silicon?"
  prompt = tok.encode(chat_format.qa_prompt(tok, question))
  logits = llama.forward(loaded.params, jnp.asarray([prompt]), loaded.config).logits[0, -1]
  greedy = tok.decode([int(jnp.argmax(logits))])
  worst = tok.decode([int(jnp.argmin(logits))])
  rows = answer_rank.answer_ranks(loaded.params, loaded.config, tok,
                                  [(question, greedy), (question, worst)])
  if tok.encode(greedy) == [int(jnp.argmax(logits))]:  # the decoded token encodes back to itself
    assert rows[0]["rank"] == 1
  assert rows[0]["logprob"] > rows[1]["logprob"] and rows[1]["rank"] > rows[0]["rank"]
  summary = answer_rank.rank_summary(rows)
  assert summary["top10"] >= 0.5 and answer_rank.rank_summary([]) is None


def test_names_and_unusual_units_in_mid_sentence_become_facts():
  sentence = ("Veltrane-7 was first reported in 2031 by the Harrowgate Institute for Applied "
              "Ceramics, and the cells reach a specific energy of 312 Wh/kg and cost 47 USD per kWh.")
  names = fact_recall.name_facts(sentence, "Veltrane-7")
  assert [(f.span, dict(f.fields)["what"]) for f in names] == [
      ("Harrowgate Institute for Applied Ceramics", "organisation")]
  units = fact_recall.unit_value_facts(sentence)
  assert [(f.span, dict(f.fields)["quantity"]) for f in units] == [
      ("312 Wh/kg", "specific energy"), ("47 USD per kWh", "value")]
  # The sentence's topic and the document's own entity are no values.
  assert not fact_recall.name_facts("Aubrel Hospital is following forty patients.", "Orrin-4")
  assert not fact_recall.name_facts("It was made by Orrin Metals for Orrin-4 tests.", "Orrin Metals")
  # A value another rule took is not repeated.
  assert not fact_recall.unit_value_facts(sentence, ["312 Wh/kg", "47 USD per kWh"])


def test_recall_facts_cover_the_names_and_values_of_the_packaged_documents():
  documents, problems = ingest.load_corpus(corpus_dir())
  assert not problems
  spans = {f.span for d in documents for s in d.sections
           for f in fact_recall.recall_facts(s, fact_recall.document_entity(d))}
  for value in ("Harrowgate Institute for Applied Ceramics", "Corvane Aerospace",
                "Tessaly Energy Lab", "312 Wh/kg", "14.6 L/(m2·h·bar)", "480 m3"):
    assert value in spans


def test_recall_coverage_benchmark_counts_spans_and_exam_answers(tmp_path):
  import json
  import os
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  out = tmp_path / "coverage.json"
  env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, str(root / "benchmarks" / "recall_coverage.py"),
       "--corpus=package:injection_corpus", "--open_exam=package:injection_open_exam",
       "--show=3", f"--out={out}"], cwd=root, env=env, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count("missed ") == 3
  counts = json.loads(out.read_text())
  covered, total = counts["names"]
  assert total > 30 and covered / total > 0.6  # 16 of 43 before the name rule
  hits, questions = counts["exam_answers_in_facts"]
  assert questions == 56 and hits > 40
