"""The packaged knowledge-injection benchmark: shape, answers stated, no exam text in training."""

import ast
import fnmatch
import json
import pathlib
import re

import pytest

from penrose_jax.data import paths
from penrose_jax.data import ingest, injection_benchmark
from penrose_jax.evaluation import exam_files
from penrose_jax.qa import generate_rules, model_generate

NGRAM = 8  # a run of this many exam-question words must not occur in any training source


def _words(text):
  return re.findall(r"[a-z0-9µ°³²]+", text.lower())


def _ngrams(words, n):
  return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def corpus():
  documents, problems = ingest.load_corpus(paths.resolve_data_path("package:injection_corpus"))
  assert problems == []
  return documents


@pytest.fixture(scope="module")
def questions(corpus):
  doc_ids = {d.doc_id for d in corpus}
  choice = exam_files.read_choice_exam(paths.resolve_data_path("package:injection_exam"), doc_ids)
  open_ = exam_files.read_open_exam(paths.resolve_data_path("package:injection_open_exam"), doc_ids)
  return choice, open_


def test_corpus_shape(corpus):
  assert len(corpus) >= 8
  for document in corpus:
    assert len(document.sections) >= 4, document.doc_id
    for section in document.sections:
      assert 120 <= len(section.text.split()) <= 320, (document.doc_id, section.title)
  # The exam files sit beside the documents but are never read as documents.
  assert {p.suffix for p in injection_benchmark.corpus_dir().iterdir()} == {".md", ".jsonl"}


def test_exam_shape_and_every_gold_answer_is_stated_in_its_document(corpus, questions):
  choice, open_ = questions
  assert len(choice) >= 40 and len(open_) == len(choice)
  texts = {d.doc_id: " ".join(" ".join(s.text for s in d.sections).split()) for d in corpus}
  per_doc = {doc_id: 0 for doc_id in texts}
  for q in choice:
    assert len(q.choices) == 4 and q.doc_id in texts
    per_doc[q.doc_id] += 1
    assert q.choices[q.gold] in texts[q.doc_id], q.where
    # A distractor that also answers is not a distractor: none may be the gold string itself.
    assert sum(c == q.choices[q.gold] for c in q.choices) == 1
  assert min(per_doc.values()) >= 5, per_doc
  for q in open_:
    assert any(a in texts[q.doc_id] for a in q.answers), q.where
  # The open exam asks about the same facts.
  assert sorted(q.choices[q.gold] for q in choice) == sorted(q.answers[0] for q in open_)


def _training_sources(corpus):
  """Every text the package trains on for this corpus, one string per record."""
  texts = []
  for document in corpus:
    texts.append(document.title)
    texts += [s.text for s in document.sections]
    pairs = generate_rules.generate_document_qa(document, max_facts_per_kind=1000)
    texts += [f"{p.question}\n{p.answer}\n{p.reasoning}" for p in pairs]
  # The curated source: the packaged curated file adds nothing for this corpus.
  by_doc, _ = model_generate.load_curated_for(paths.resolve_data_path("package:curated_qa"),
                                             corpus)
  texts += [f"{p.question}\n{p.answer}\n{p.reasoning}" for ps in by_doc.values() for p in ps]
  return texts


def _study_sources(corpus):
  study_material = pytest.importorskip("penrose_jax.qa.study_material")
  texts = []
  for document in corpus:
    material = study_material.generate_document_study(document)
    texts += [f"{p.question}\n{p.answer}\n{p.reasoning}" for p in material.pairs]
    texts += [t.text for t in material.texts]
  return texts


def _assert_no_exam_text(texts, questions):
  choice, open_ = questions
  source_grams = {n: set() for n in range(1, NGRAM + 1)}
  for text in texts:
    words = _words(text)
    for n in source_grams:
      source_grams[n] |= _ngrams(words, n)
  for q in list(choice) + list(open_):
    words = _words(q.question)
    n = min(NGRAM, len(words))  # a short question must not occur whole
    leaked = _ngrams(words, n) & source_grams[n]
    assert not leaked, f"{q.where}: {' '.join(sorted(leaked)[0])!r} occurs in training text"


def test_no_exam_question_text_in_documents_or_rule_and_curated_qa(corpus, questions):
  texts = _training_sources(corpus)
  assert len(texts) > 8 * 4 * 2  # the sources are not empty
  _assert_no_exam_text(texts, questions)


def test_no_exam_question_text_in_study_material(corpus, questions):
  _assert_no_exam_text(_study_sources(corpus), questions)


def test_the_leak_check_can_fail(corpus, questions):
  choice, _ = questions
  copied = [f"Some preamble. {choice[0].question} And more."]
  with pytest.raises(AssertionError, match="occurs in training text"):
    _assert_no_exam_text(copied, ([choice[0]], []))


def test_exam_files_are_valid_jsonl_with_the_documented_fields():
  for spec, fields in (("package:injection_exam", {"question", "choices", "gold", "doc_id"}),
                       ("package:injection_open_exam", {"question", "answer", "doc_id"})):
    for line in paths.resolve_data_path(spec).read_text(encoding="utf-8").splitlines():
      assert set(json.loads(line)) == fields


def test_setup_py_ships_every_benchmark_file():
  setup_py = pathlib.Path(__file__).resolve().parents[1] / "setup.py"
  call = next(n for n in ast.walk(ast.parse(setup_py.read_text()))
              if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
  package_data = ast.literal_eval(next(k.value for k in call.keywords
                                       if k.arg == "package_data"))
  patterns = package_data["penrose_jax.data"]
  root = injection_benchmark.corpus_dir().parent  # penrose_jax/data
  for file in injection_benchmark.corpus_dir().iterdir():
    relative = file.relative_to(root).as_posix()
    assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


@pytest.mark.parametrize("variant", ["", "recipe", "two_docs", "quick"])
def test_sweep_injection_runs_train_on_no_exam_text(variant, corpus, questions, tmp_path):
  """Every run of configs/sweep_injection.py: the Q&A and study texts its qa_tune job builds
  (same sources and settings), the section text and the general replay text hold no exam
  question, and no exam file is a training input."""
  from configs import sweep_injection
  from penrose_jax.jobs import qa_tune, sweep
  from penrose_jax.qa import study_material
  config = sweep_injection.get_config(variant)
  assert 2 <= len(config.runs) <= 6 and config.runs[0][0] == "sectionwise"
  exam_files = {paths.resolve_data_path(s).resolve()
                for s in ("package:injection_exam", "package:injection_open_exam")}
  built = {}
  for name, overrides in config.runs:
    run = sweep.apply_overrides(config.base, overrides)
    assert run.corpus == "package:injection_corpus" and run.heldout_path == ""
    assert run.exam_path == "package:injection_exam"
    sources = tuple(s.strip() for s in run.qa_sources.split(",") if s.strip())
    # Model-generated Q&A would depend on the model's output: the sweep does not train on it.
    assert set(sources) <= {"rule", "study", "curated", "recall"}, (name, sources)
    for spec in (run.curated_path, run.general_text):
      if spec:
        assert paths.resolve_data_path(spec).resolve() not in exam_files, (name, spec)
    documents, _ = qa_tune.load_documents(run)
    key = (sources, tuple(d.doc_id for d in documents), run.study_variants, run.study_max_facts,
           run.curated_path)
    if key in built:
      continue
    out = tmp_path / f"qa_{len(built)}.jsonl"
    model_generate.build_qa_pairs(
        documents, out, sources, curated_path=qa_tune.resolve_path(run.curated_path),
        study_variants=run.study_variants, study_max_facts=run.study_max_facts,
        process_index=0, process_count=1)
    pairs, _ = model_generate.read_all_pairs(out)
    texts = [f"{p.question}\n{p.answer}\n{p.reasoning}" for p in pairs]
    if "study" in sources:
      texts += [t.text for t in study_material.read_study_texts([study_material.texts_path(out)])]
    texts += [d.title for d in documents] + [s.text for d in documents for s in d.sections]
    assert len(pairs) >= len(documents), (name, len(pairs))
    _assert_no_exam_text(texts, questions)
    built[key] = len(texts)
