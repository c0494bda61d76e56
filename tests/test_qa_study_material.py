"""Study material: several questions per fact on Markdown, LaTeX and plain text, support and
duplicate filters, restatements / notes, and the 'study' source in build_qa_pairs."""

import pytest

from penrose_jax.data import ingest
from penrose_jax.qa import filtering, model_generate, study_facts, study_material

MARKDOWN = """# Cathode Study

## Fabrication

The **LSCF cathode** was sintered at 1100 °C for 2 h. Gadolinium-doped ceria (GDC) is used as
a barrier layer. The cell has a peak power density of 1.2 W cm−2 at 750 °C.

1. The powder was calcined at 900 °C for 4 h.
2. The pellets were pressed at 200 MPa.

The LSCF cathode was sintered at 1100 °C for 2 h.
"""
LATEX = r"""\documentclass{article}
\title{Anode Films}
\begin{document}
\maketitle
\section{Deposition}
The NiO--YSZ anode film was deposited by spray pyrolysis at $450\,^\circ$C. % a comment
The film thickness was \SI{12}{\micro\metre} after \textbf{three} passes.
Nickel provides electronic conduction in the anode.
\end{document}
"""
PLAIN = """Electrolyte Study

Introduction
The electrolyte is yttria-stabilised zirconia (YSZ) doped with 8 mol% Y2O3. The ionic
conductivity of YSZ is 0.1 S cm−1 at 1000 °C. Superconductivity was discovered in 1911 by
Heike Kamerlingh Onnes.
"""
# (document, a numeric value of it with its subject) per format.
CASES = {
    "markdown": (lambda: ingest.read_markdown(MARKDOWN, "md"), "1100 °C", "The LSCF cathode"),
    "latex": (lambda: ingest.read_latex(LATEX, "tex"), "450 °C", "The NiO–YSZ anode film"),
    "plain": (lambda: ingest.read_plain_text(PLAIN, "txt", min_section_words=5), "1911",
              "Superconductivity"),
}


def _section(fmt):
  document = CASES[fmt][0]()
  section = [s for s in document.sections if CASES[fmt][1] in study_facts.clean_markup(s.text)]
  return document, section[0]


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_numeric_fact_gets_several_distinct_questions(fmt):
  document, section = _section(fmt)
  _, value, subject = CASES[fmt]
  material = study_material.generate_section_study(section, document.title, variants=4)
  about = [p for p in material.pairs if value in p.answer or value in p.reasoning]
  questions = {filtering.question_key(p.question) for p in about}
  assert len(questions) >= 4, [p.question for p in about]
  # Different wordings and word orders: a cloze, a wh-question, the reversed direction.
  assert any(p.question.startswith("Fill in the blank") for p in about)
  assert any(p.question.split()[0] in ("At", "In", "What", "Which", "For") and BLANK_FREE(p)
             for p in about)
  assert any(value in p.question and BLANK_FREE(p) and subject.lower() not in p.question.lower()
             and subject in p.answer for p in about), "no reversed (value -> subject) question"
  # Short and sentence-form answers.
  assert any(p.answer == value for p in about)
  assert any(p.answer.endswith(".") and value in p.answer for p in about)
  assert all(p.source == "study" and p.section_order == section.order for p in material.pairs)


def BLANK_FREE(pair):  # pylint: disable=invalid-name
  return study_material.BLANK not in pair.question


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_every_answer_is_in_the_section_and_markup_is_gone(fmt):
  document, section = _section(fmt)
  material = study_material.generate_section_study(section, document.title)
  clean = study_facts.clean_markup(section.text)
  assert material.pairs and material.texts
  for pair in material.pairs:
    if pair.answer.endswith("."):  # sentence form: supported, and it holds a supported span
      assert filtering.answer_supported(pair.answer, clean), pair
    else:
      assert study_facts.span_supported(pair.answer, section.text), pair
    for text in (pair.question, pair.answer, pair.reasoning):
      assert not any(mark in text for mark in ("**", "\\", "$", "%%")), text
  for record in material.texts:
    assert filtering.numbers_in(record.text) <= filtering.numbers_in(clean), record.text


def test_duplicates_and_unsupported_answers_are_filtered(monkeypatch):
  document, section = _section("markdown")
  material = study_material.generate_section_study(section, document.title)
  # The repeated sentence yields the same questions again: they are dropped and counted.
  keys = [filtering.question_key(p.question) for p in material.pairs]
  assert len(keys) == len(set(keys)) and material.rejected_duplicate > 0
  texts = [study_facts.norm(t.text) for t in material.texts]
  assert len(texts) == len(set(texts))
  # An answer the section does not contain is rejected, never kept.
  monkeypatch.setattr(study_material, "fact_questions", lambda fact, s, d: [
      ("How heavy is it?", "42 kg"), ("Which value?", "1100 °C"), ("Which value?", "1100 °C")])
  forced = study_material.generate_section_study(section, document.title, variants=4)
  assert forced.rejected_unsupported >= forced.facts and forced.rejected_duplicate >= 1
  assert all(p.answer != "42 kg" for p in forced.pairs)
  assert not any(study_material.BLANK in p.answer for p in forced.pairs)


def test_restatements_and_entity_notes():
  document, section = _section("markdown")
  texts = [t.text for t in study_material.generate_section_study(section, document.title).texts]
  assert "The sintering temperature of the LSCF cathode is 1100 °C." in texts
  assert "GDC stands for Gadolinium-doped ceria." in texts
  assert "At 1100 °C for 2 h, the LSCF cathode was sintered." in texts  # reordered clause
  notes = [t for t in texts if t.startswith("Notes on GDC")]
  assert notes and "Gadolinium-doped ceria (GDC) is used as a barrier layer." in notes[0]
  document, section = _section("plain")
  texts = [t.text for t in study_material.generate_section_study(section, document.title).texts]
  assert "Heike Kamerlingh Onnes discovered superconductivity in 1911." in texts  # active voice


def test_study_source_streams_pairs_and_texts(tmp_path):
  documents = [CASES[f][0]() for f in sorted(CASES)]
  out = tmp_path / "qa_pairs.jsonl"
  info = model_generate.build_qa_pairs(documents, out, ["rule", "study"], study_variants=3)
  pairs, _ = model_generate.read_all_pairs(out)
  texts = study_material.read_study_texts([study_material.texts_path(out)])
  assert info["documents_written"] == 3
  assert sum(p.source == "study" for p in pairs) > sum(p.source == "rule" for p in pairs)
  assert {t.doc_id for t in texts} == {d.doc_id for d in documents}
  stats = study_material.study_statistics(documents, variants=3)
  assert stats["facts"] > 0 and 2 <= stats["pairs_per_fact_mean"] <= 3
  assert stats["pairs_per_section_mean"] == stats["pairs"] / stats["sections"]
  again = model_generate.build_qa_pairs(documents, out, ["rule", "study"], study_variants=3)
  assert again["documents_skipped"] == 3
  assert len(study_material.read_study_texts([study_material.texts_path(out)])) == len(texts)
