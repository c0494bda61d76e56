"""A user's exam: strict JSONL readers, scoring on the tiny model, evaluate / generate jobs."""

import json

import numpy as np
import pytest

from configs import evaluate as evaluate_config
from configs import generate as generate_config
from penrose_jax.evaluation import closed_book, exam_files, multiple_choice
from penrose_jax.io import model_registry
from penrose_jax.jobs import evaluate, generate
from penrose_jax.models import chat_format


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


GOOD = {"question": "Which metal?", "choices": ["iron", "gold", "tin", "lead"], "gold": 2,
        "doc_id": "a"}


def test_choice_exam_reads_index_string_and_heldout_gold(tmp_path):
  path = _write(tmp_path / "mc.jsonl", [
      GOOD, "",
      {"question": "Which gas?", "choices": ["argon", "neon"], "gold": "neon"},
      # The demo corpus's held-out format: `answer` names the choice, extra fields ignored.
      {"doc_id": "b", "section": "S", "question": "How many?", "answer": "14",
       "choices": ["7", "14", "32", "230"], "reasoning": "r"}])
  questions = exam_files.read_choice_exam(path, doc_ids={"a", "b"})
  assert [q.gold for q in questions] == [2, 1, 1]
  assert [q.doc_id for q in questions] == ["a", "", "b"]
  assert questions[1].where == f"{path}:3"


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"choices": ["a", "b"], "gold": 0}, "missing field 'question'"),
    ({"question": "q", "gold": 0}, "missing field 'choices'"),
    ({"question": "q", "choices": [], "gold": 0}, "at least 2"),
    ({"question": "q", "choices": ["a", ""], "gold": 0}, "non-empty string"),
    ({"question": "q", "choices": ["a", "a"], "gold": 0}, "distinct"),
    ({"question": "q", "choices": ["a", "b"]}, "missing field 'gold'"),
    ({"question": "q", "choices": ["a", "b"], "gold": 2}, "gold=2 outside 0..1"),
    ({"question": "q", "choices": ["a", "b"], "gold": -1}, "outside"),
    ({"question": "q", "choices": ["a", "b"], "gold": True}, "choice index or the answer"),
    ({"question": "q", "choices": ["a", "b"], "gold": "c"}, "not one of the choices"),
    ({"question": "q", "choices": ["a", "b"], "gold": 0, "doc_id": "zzz"}, "names no document"),
    ({"question": " ", "choices": ["a", "b"], "gold": 0}, "non-empty string"),
])
def test_choice_exam_errors_name_file_and_line(tmp_path, line, message):
  path = _write(tmp_path / "mc.jsonl", [GOOD, line])
  with pytest.raises(exam_files.ExamError, match=message) as info:
    exam_files.read_choice_exam(path, doc_ids={"a"})
  assert f"{path}:2:" in str(info.value)


def test_doc_ids_are_only_checked_against_a_given_corpus(tmp_path):
  path = _write(tmp_path / "mc.jsonl", [dict(GOOD, doc_id="anything")])
  assert exam_files.read_choice_exam(path)[0].doc_id == "anything"
  with pytest.raises(exam_files.ExamError, match=":1: doc_id 'anything'"):
    exam_files.read_choice_exam(path, doc_ids=set())


def test_open_exam_reader(tmp_path):
  path = _write(tmp_path / "open.jsonl", [
      {"question": "q1", "answer": "860 °C", "doc_id": "a"},
      {"question": "q2", "answer": ["860 °C", "860 degrees"]}])
  questions = exam_files.read_open_exam(path, {"a"})
  assert questions[1].answers == ("860 °C", "860 degrees") and questions[1].doc_id == ""
  for bad, message in (({"question": "q"}, "missing field 'answer'"),
                       ({"question": "q", "answer": ""}, "non-empty string"),
                       ({"question": "q", "answer": []}, "non-empty string"),
                       ({"answer": "a"}, "missing field 'question'")):
    with pytest.raises(exam_files.ExamError, match=message):
      exam_files.read_open_exam(_write(tmp_path / "bad.jsonl", [bad]))
  with pytest.raises(exam_files.ExamError, match="not found"):
    exam_files.read_open_exam(tmp_path / "missing.jsonl")
  with pytest.raises(exam_files.ExamError, match="no questions"):
    exam_files.read_open_exam(_write(tmp_path / "empty.jsonl", [""]))


def test_load_exams_reads_comma_lists_and_packaged_names(tmp_path):
  a = _write(tmp_path / "a.jsonl", [GOOD])
  b = _write(tmp_path / "b.jsonl", [GOOD, GOOD])
  choice, open_ = exam_files.load_exams(f"{a}, {b}", "", None)
  assert len(choice) == 3 and open_ == []
  choice, open_ = exam_files.load_exams("package:injection_exam", "package:injection_open_exam",
                                        exam_files.corpus_doc_ids("package:injection_corpus"))
  assert len(choice) >= 40 and len(open_) == len(choice)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
  return model_registry.load(str(tiny_model_dir))


def test_scores_match_the_multiple_choice_scorer_and_group_by_document(tiny):
  questions = [
      exam_files.ChoiceQuestion("What colour is the sky?", ("blue", "green", "a long red answer"),
                                0, "a"),
      exam_files.ChoiceQuestion("Which metal rusts?", ("iron", "gold"), 1, "b"),
      exam_files.ChoiceQuestion("Which gas is inert?",
                                ("argon", "oxygen", "chlorine", "fluorine"), 0, "a")]
  result = closed_book.score_choice_exam(tiny.params, tiny.config, tiny.tokenizer, questions, 4)
  # The same numbers as the shared scorer with the chat prompt as context.
  items = [multiple_choice.ScoringItem(
      tuple((chat_format.qa_prompt(tiny.tokenizer, q.question), c) for c in q.choices), q.gold)
      for q in questions]
  reference = multiple_choice.score_items(tiny.params, tiny.config, tiny.tokenizer, items, 4)
  assert result["accuracy_sum"] == reference["accuracy"]
  assert result["accuracy_mean"] == reference["accuracy_norm"]
  rows = result["answers"]
  assert [r["correct_sum"] for r in rows] == [
      float(np.argmax(r["logprob_sum"]) == q.gold) for r, q in zip(rows, questions)]
  for row, q in zip(rows, questions):
    lengths = [len(tiny.tokenizer.encode(c)) for c in q.choices]
    np.testing.assert_allclose(row["logprob_mean"], np.array(row["logprob_sum"]) / lengths,
                               rtol=1e-5)
    assert row["pred_mean"] == q.choices[int(np.argmax(row["logprob_mean"]))]
  assert set(result["by_doc"]) == {"a", "b"} and result["by_doc"]["a"]["questions"] == 2
  assert result["by_doc"]["b"]["accuracy_sum"] == rows[1]["correct_sum"]
  expected_a = (rows[0]["correct_mean"] + rows[2]["correct_mean"]) / 2
  assert result["by_doc"]["a"]["accuracy_mean"] == expected_a


def test_open_scores_and_the_combined_report_keys(tiny):
  open_questions = [exam_files.OpenQuestion("Name a metal.", ("iron",), "a"),
                    exam_files.OpenQuestion("Name a gas.", ("argon", "neon"))]
  result = closed_book.evaluate_exam(tiny.params, tiny.config, tiny.tokenizer,
                                     [exam_files.ChoiceQuestion("Which?", ("x", "y"), 0, "a")],
                                     open_questions, batch_size=4, max_new_tokens=4)
  assert result["exam_questions"] == 1 and result["open_exam_questions"] == 2
  answers = result["exam_answers"]["open"]
  assert [a["gold"] for a in answers] == [["iron"], ["argon", "neon"]]
  assert result["exam_em"] == np.mean([a["em"] for a in answers])
  assert result["exam_by_doc"][closed_book.NO_DOC] == {
      "open_questions": 1, "em": answers[1]["em"], "f1": answers[1]["f1"],
      "contains": answers[1]["contains"]}
  assert result["exam_by_doc"]["a"]["mc_questions"] == 1


def test_evaluate_job_reports_the_exam_and_fails_on_a_bad_line(tmp_path, tiny_model_dir):
  config = evaluate_config.get_config("quick")
  config.model = str(tiny_model_dir)
  config.text_sets = {}
  config.benchmarks = ""
  config.extraction.enabled = False
  config.exam_path = "package:injection_exam"
  config.open_exam_path = str(_write(tmp_path / "open.jsonl", [
      {"question": "Where was Veltrane-7 reported?", "answer": "Harrowgate",
       "doc_id": "veltrane_ceramic"}]))
  config.exam_corpus = "package:injection_corpus"
  config.exam_max_new_tokens = 4
  report = evaluate.run(config, tmp_path / "run")
  assert report["exam_questions"] >= 40 and report["open_exam_questions"] == 1
  for key in ("exam_accuracy_sum", "exam_accuracy_mean", "exam_em", "exam_f1"):
    assert 0.0 <= report[key] <= 1.0, key
  assert len(report["exam_by_doc"]) == 8 and "exam_answers" not in report
  answers = json.loads((tmp_path / "run" / "exam_answers.json").read_text())
  assert len(answers["choice"]) == report["exam_questions"] and len(answers["open"]) == 1
  # A doc_id naming no document of the corpus stops the job with file and line.
  bad = _write(tmp_path / "bad.jsonl", [dict(GOOD, doc_id="veltrane_ceramic"),
                                        dict(GOOD, doc_id="no_such_doc")])
  config.exam_path, config.open_exam_path = str(bad), ""
  with pytest.raises(exam_files.ExamError, match=f"{bad}:2: doc_id 'no_such_doc'"):
    evaluate.run(config, tmp_path / "bad_run")


def test_generate_reads_a_prompts_file_and_loads_once(tmp_path, tiny_model_dir, monkeypatch):
  loads = []
  real_load = model_registry.load
  monkeypatch.setattr(model_registry, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
  config = generate_config.get_config("quick")
  config.model = str(tiny_model_dir)
  config.max_new_tokens = 3
  config.prompts_path = str(_write(tmp_path / "prompts.jsonl", [
      {"prompt": "Hello there", "id": 7}, {"question": "What is steel?", "answer": "an alloy"}]))
  report = generate.run(config, tmp_path / "run")
  assert len(loads) == 1 and report["prompts"] == 2
  lines = [json.loads(l) for l in (tmp_path / "run" / "generations.jsonl").open()]
  assert [l["prompt"] for l in lines] == ["Hello there", "What is steel?"]
  assert lines[0]["id"] == 7 and lines[1]["answer"] == "an alloy"
  assert all(isinstance(l["completion"], str) for l in lines)
  # Plain text: one prompt per line; bad lines and a missing workdir are errors.
  text = tmp_path / "prompts.txt"
  text.write_text("first prompt\n\nsecond prompt\n")
  assert [r["prompt"] for r in generate.read_prompts(text)] == ["first prompt", "second prompt"]
  with pytest.raises(ValueError, match="prompts.jsonl:2: needs a non-empty 'prompt'"):
    generate.read_prompts(_write(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, {"x": 1}]))
  with pytest.raises(ValueError, match="needs --workdir"):
    generate.run(config, None)


def test_one_unit_in_two_code_points_is_one_answer():
  # The micro sign (U+00B5) and the Greek mu (U+03BC), superscript three and '3'.
  assert closed_book.exact_match("310 \u03bcm", "310 \u00b5m") == 1.0
  assert closed_book.exact_match("1.84 g/cm3", "1.84 g/cm\u00b3") == 1.0
  assert closed_book.exact_match("11.3 MPa", "11.3 MPa\u00b7m^1/2") == 0.0
