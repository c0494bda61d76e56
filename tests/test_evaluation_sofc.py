"""SOFC-Exp annotations reader, extraction task parsers / scores, the sofc_tasks Q&A source and
the evaluate job's extraction section, on hand-made annotation files."""

import pathlib

import pytest

from configs import evaluate as evaluate_config
from penrose_jax.data import ingest
from penrose_jax.evaluation import extraction, sofc_annotations, sofc_tasks
from penrose_jax.jobs import evaluate
from penrose_jax.qa import model_generate, records, sofc_source

# (token, entity tag, slot tag) per token; offsets are computed by `_write_article`.
TRAIN_EXP = [("Anode-supported", "O", "O"), ("cells", "B-DEVICE", "B-device"),
             ("with", "O", "O"), ("Ni-YSZ", "B-MATERIAL", "B-anode_material"),
             ("anodes", "O", "O"), ("were", "O", "O"),
             ("tested", "B-EXPERIMENT", "B-experiment_evoking_word"), ("at", "O", "O"),
             ("800", "B-VALUE", "B-working_temperature"),
             ("°C", "I-VALUE", "I-working_temperature"), (".", "O", "O")]
DEV_EXP = [("The", "O", "O"), ("LSCF", "B-MATERIAL", "B-cathode_material"),
           ("cathode", "O", "O"), ("reached", "B-EXPERIMENT", "B-experiment_evoking_word"),
           ("1.2", "B-VALUE", "B-power_density"), ("W", "I-VALUE", "I-power_density"),
           ("cm-2", "I-VALUE", "I-power_density"), (".", "O", "O")]
BACKGROUND = "Fuel cells convert chemical energy into electricity."


def _sentence_text(tokens):
  return " ".join(t for t, _, _ in tokens).replace(" .", ".")


def _write_article(root: pathlib.Path, doc_id: str, sentences) -> None:
  """sentences: list of (text, is_experiment, tokens or None)."""
  for sub in ("texts", "annotations/sentences", "annotations/entity_types_and_slots",
              "annotations/frames"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  text = "\n".join(s for s, _, _ in sentences) + "\n"
  (root / "texts" / f"{doc_id}.txt").write_text(text, encoding="utf-8")
  sent_rows, tag_rows, frame_rows, offset, span_id = [], [], [], 0, 0
  for sid, (sentence, is_exp, tokens) in enumerate(sentences, 1):
    sent_rows.append(f"{sid}\t{int(is_exp)}\t{offset}\t{offset + len(sentence)}")
    offset += len(sentence) + 1
    cursor = 0
    for tid, (token, ent, slot) in enumerate(tokens or [], 1):
      begin = sentence.index(token, cursor)
      cursor = begin + len(token)
      tag_rows.append(f"{sid}\t{tid}\t{begin}\t{cursor}\t{ent}\t{slot}")
      if ent.startswith("B-"):
        span_id += 1
        frame_rows.append(f"SPAN\t{span_id}\t{ent[2:]}\t{sid}\t{begin}\t{cursor}")
  if span_id:
    frame_rows += ["EXPERIMENT\t1\t3", "\tdevice\t1", "\tanode_material\t2", "LINK\tx\t1\t2"]
  ann = root / "annotations"
  (ann / "sentences" / f"{doc_id}.csv").write_text("\n".join(sent_rows) + "\n")
  (ann / "entity_types_and_slots" / f"{doc_id}.csv").write_text(
      "\n".join(tag_rows) + "\n", encoding="utf-8")
  (ann / "frames" / f"{doc_id}.csv").write_text("\n".join(frame_rows) + "\n")


@pytest.fixture()
def sofc_root(tmp_path) -> pathlib.Path:
  """A two-article SOFC-Exp root: PMC1 (train) and PMC2 (dev)."""
  root = tmp_path / "sofc_exp"
  _write_article(root, "PMC1", [(BACKGROUND, False, None),
                                (_sentence_text(TRAIN_EXP), True, TRAIN_EXP)])
  _write_article(root, "PMC2", [(_sentence_text(DEV_EXP), True, DEV_EXP),
                                (BACKGROUND, False, None)])
  (root / "metadata.tsv").write_text("name\tset\tlicense\nPMC1\ttrain\tCC BY\n"
                                     "PMC2\tdev\tCC BY\n")
  return root


def test_spans_read_back_to_exact_substrings(sofc_root):
  train, = sofc_annotations.load_articles(sofc_root, "train")
  text = (sofc_root / "texts" / "PMC1.txt").read_text(encoding="utf-8")
  assert train.doc_id == "PMC1" and train.split == "train"
  background, exp = train.sentences
  assert text[exp.start:exp.end] == exp.text == _sentence_text(TRAIN_EXP)
  assert not background.is_experiment and background.entities == ()
  assert exp.is_experiment
  assert [(m.label, m.text) for m in exp.entities] == [
      ("DEVICE", "cells"), ("MATERIAL", "Ni-YSZ"), ("EXPERIMENT", "tested"),
      ("VALUE", "800 °C")]
  for m in exp.entities + exp.slots:
    assert exp.text[m.start:m.end] == m.text
  # The evoking word is the EXPERIMENT entity, not a slot.
  assert [(m.label, m.text) for m in exp.slots] == [
      ("device", "cells"), ("anode_material", "Ni-YSZ"), ("working_temperature", "800 °C")]
  assert train.frames[0].evoking == "tested"
  assert train.frames[0].slots == (("device", "cells"), ("anode_material", "Ni-YSZ"))
  assert [a.doc_id for a in sofc_annotations.load_articles(sofc_root, "dev")] == ["PMC2"]


@pytest.mark.parametrize("sub, line, bad", [
    ("sentences", 2, "2\t1\t10"),
    ("sentences", 1, "1\tyes\t0\t5"),
    ("entity_types_and_slots", 3, "2\t3\t16\t20\tX-MATERIAL\tO"),
    ("entity_types_and_slots", 1, "2\t1\t0\t999\tO\tO"),
])
def test_malformed_row_names_file_and_line(sofc_root, sub, line, bad):
  path = sofc_root / "annotations" / sub / "PMC1.csv"
  lines = path.read_text(encoding="utf-8").splitlines()
  lines[line - 1] = bad
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(ValueError, match=rf"{sub}/PMC1\.csv:{line}:"):
    sofc_annotations.read_article(sofc_root, "PMC1")


def test_metadata_quoted_newline_and_unknown_split(sofc_root):
  # The real file has a quoted publisher name spanning two lines; line numbers stay physical.
  (sofc_root / "metadata.tsv").write_text(
      'name\tset\tpublisher\nPMC1\ttrain\t"American Chemical\nSociety"\nPMC2\tdev\tX\n')
  assert sofc_annotations.read_splits(sofc_root) == {"PMC1": "train", "PMC2": "dev"}
  (sofc_root / "metadata.tsv").write_text(
      'name\tset\tpublisher\nPMC1\ttrain\t"A\nB"\nPMC2\ttest\tX\n')
  with pytest.raises(ValueError, match=r"metadata\.tsv:4: split 'test'"):
    sofc_annotations.read_splits(sofc_root)


def test_parser_is_deterministic_on_messy_replies():
  reply = ("Sure! Here are the mentions:\n**MATERIAL:** Ni-YSZ; 'GDC'\n- value: 800 °C; none\n"
           "Device : n/a\nnoise: ignored\nMATERIAL: GDC; LSM.\nEXPERIMENT:")
  expected = {"MATERIAL": ["Ni-YSZ", "GDC", "LSM."], "VALUE": ["800 °C"]}
  for _ in range(3):
    assert sofc_tasks.parse_labelled_lines(reply, sofc_tasks.ENTITY_TYPES) == expected
  slots = sofc_tasks.parse_labelled_lines("working temperature: 800 °C\nfoo_bar: x\nnone",
                                          sofc_tasks.SLOT_TYPES)
  assert slots == {"working_temperature": ["800 °C"]}
  # Every occurrence of a listed string is a predicted span; a missing one is unlocated.
  spans = sofc_tasks.predicted_spans("cell A and cell B", {"DEVICE": ["cell", "stack"]})
  assert spans == [("DEVICE", 0, 4), ("DEVICE", 11, 15), ("DEVICE", None, None)]


def test_span_f1_matches_hand_computation():
  text = "Ni-YSZ and GDC at 800 °C and 700 °C"
  gold = [sofc_annotations.Mention(label, text.index(s), text.index(s) + len(s), s)
          for label, s in [("MATERIAL", "Ni-YSZ"), ("MATERIAL", "GDC"), ("VALUE", "800 °C"),
                           ("VALUE", "700 °C")]]
  reply = "MATERIAL: Ni-YSZ; YSZ; LSM\nVALUE: 800 °C; 700\nDEVICE: none"
  pred = sofc_tasks.predicted_spans(text, sofc_tasks.parse_labelled_lines(
      reply, sofc_tasks.ENTITY_TYPES))
  scores = sofc_tasks.span_scores([gold], [pred], sofc_tasks.ENTITY_TYPES)
  exact, overlap = scores["exact"], scores["overlap"]
  # Exact: MATERIAL 1 of 3 predicted / 2 gold, VALUE 1 of 2 / 2 -> micro 2 / 5 / 4.
  assert exact["per_label"]["MATERIAL"]["f1"] == pytest.approx(0.4)
  assert exact["per_label"]["VALUE"]["f1"] == pytest.approx(0.5)
  assert exact["micro"]["precision"] == pytest.approx(0.4)
  assert exact["micro"]["recall"] == pytest.approx(0.5)
  assert exact["micro"]["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
  # Overlap: '700' now matches '700 °C'; 'YSZ' may not reuse the gold span Ni-YSZ already took.
  assert overlap["per_label"]["VALUE"]["f1"] == pytest.approx(1.0)
  assert overlap["per_label"]["MATERIAL"]["matched"] == 1
  assert overlap["micro"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
  assert exact["per_label"]["DEVICE"]["f1"] == 0.0
  detect = sofc_tasks.detection_scores([True, False, True, False], [True, True, False, False])
  assert detect["accuracy"] == 0.5 and detect["f1"] == pytest.approx(0.5)


def test_gold_answer_round_trips_to_perfect_scores(sofc_root):
  exp = sofc_annotations.read_article(sofc_root, "PMC1").sentences[1]
  for task in ("entities", "slots"):
    answer = sofc_tasks.gold_answer(exp, task)
    labels = sofc_tasks.task_labels(task)
    pred = sofc_tasks.predicted_spans(exp.text, sofc_tasks.parse_labelled_lines(answer, labels))
    scores = sofc_tasks.span_scores([sofc_tasks.gold_mentions(exp, task)], [pred], labels)
    assert scores["exact"]["micro"]["f1"] == 1.0, answer
  assert sofc_tasks.gold_answer(exp, "entities").startswith("MATERIAL: Ni-YSZ\nVALUE: 800 °C")
  prompt = sofc_tasks.build_prompt("X.", "entities", [exp])
  assert prompt.index(exp.text) < prompt.index("X.") < prompt.index("List the entity")
  base = type("BaseTokenizer", (), {"chat_template": None})()
  assert sofc_tasks.chat_prompt(base, "Q?") == "Q?\n\nAnswer:\n"


def test_sofc_tasks_source_uses_train_articles_only(sofc_root, tmp_path):
  documents, problems = ingest.load_corpus(sofc_root / "texts")
  assert sorted(d.doc_id for d in documents) == ["PMC1", "PMC2"] and not problems
  settings = sofc_source.SofcTaskSettings(data_root=str(sofc_root))
  pairs, notes = sofc_source.sofc_task_pairs(documents, settings)
  assert set(pairs) == {"PMC1"}
  assert any("PMC2" in note for note in notes)
  by_task = [p.answer for p in pairs["PMC1"]]
  assert by_task[:2] == ["no", "yes"] and len(by_task) == 4  # 2 detection + entities + slots
  dev_article = sofc_annotations.read_article(sofc_root, "PMC2", "dev")
  with pytest.raises(ValueError, match="only train articles"):
    sofc_source.document_pairs(documents[1], dev_article, settings)
  # Dispatched as a regular Q&A source of qa_tune.
  out = tmp_path / "qa_pairs.jsonl"
  build = model_generate.build_qa_pairs(documents, out, ["sofc_tasks"], sofc=settings,
                                        process_index=0, process_count=1)
  written = records.read_qa_jsonl(out)
  assert {p.doc_id for p in written} == {"PMC1"} and {p.source for p in written} == {"sofc_tasks"}
  assert any("PMC2" in note for note in build["notes"])


def test_sofc_tasks_source_skips_a_missing_root(tmp_path):
  settings = sofc_source.SofcTaskSettings(data_root=str(tmp_path / "nope"))
  pairs, notes = sofc_source.sofc_task_pairs([], settings)
  assert pairs == {} and "not found" in notes[0]


def test_select_sentences_is_seeded_and_ordered():
  items = list(range(50))
  first = extraction.select_sentences(items, 10, seed=3)
  assert first == extraction.select_sentences(items, 10, seed=3) == sorted(first)
  assert len(set(first)) == 10 and extraction.select_sentences(items, 0, seed=3) == items


def _quick_config(model_dir, root):
  config = evaluate_config.get_config("quick")
  config.model = str(model_dir)
  config.text_sets = {}
  config.benchmarks = ""
  config.extraction.data_root = str(root)
  config.extraction.enabled = True  # off by default (configs/evaluate.py)
  return config


def test_evaluate_quick_reports_extraction(tmp_path, tiny_model_dir, sofc_root):
  report = evaluate.run(_quick_config(tiny_model_dir, sofc_root), tmp_path / "out")
  ext = report["extraction"]
  assert ext["articles"] == ["PMC2"] and ext["split"] == "dev"
  assert ext["prompt_format"] == "chat_template"
  assert ext["sentences"] == {"detection": 2, "entities": 1, "slots": 1}
  assert ext["majority"]["detection_accuracy"] == 0.5
  for key in ("detection_f1_0_shot", "entity_micro_f1_0_shot", "slot_micro_f1_1_shot",
              "entity_micro_f1_overlap_1_shot"):
    assert 0.0 <= ext["summary"][key] <= 1.0
  # k-shot examples come from the train article, never from the evaluated one.
  assert ext["1_shot"]["entities"]["examples"] == ["PMC1:2"]
  assert ext["0_shot"]["entities"]["exact"]["micro"]["gold"] == 3


def test_evaluate_skips_missing_extraction_data(tmp_path, tiny_model_dir):
  config = _quick_config(tiny_model_dir, tmp_path / "missing")
  # Something must be measured: a run whose every input is missing is an error (issue 32).
  config.text_sets = {"demo_corpus": "package:demo_corpus"}
  report = evaluate.run(config, tmp_path / "out")
  assert "extraction" not in report
  assert any(s.startswith("extraction:") and "not found" in s for s in report["skipped"])


def test_spread_sentences_shares_out_over_articles():
  groups = [list(range(0, 30)), list(range(100, 103)), [], list(range(200, 250))]
  picked = extraction.spread_sentences(groups, 12, seed=1)
  assert picked == extraction.spread_sentences(groups, 12, seed=1) == sorted(picked)
  per_group = [sum(1 for p in picked if p in g) for g in groups]
  # Equal shares of 12 over the three non-empty articles; none has fewer than it could give.
  assert sum(per_group) == 12 and per_group[2] == 0 and min(per_group[:2] + per_group[3:]) >= 3
  assert extraction.article_quotas([1, 10, 10], 9, seed=0) == [1, 4, 4]
  assert extraction.spread_sentences(groups, 0, seed=1) == [x for g in groups for x in g]


def _fake_extraction(value):
  summary = {f"{k}_0_shot": value for k in ("detection_accuracy", "detection_f1",
                                             "entity_micro_f1", "entity_micro_f1_overlap",
                                             "slot_micro_f1", "slot_micro_f1_overlap")}
  return {"extraction": {"summary": summary, "0_shot": {}, "sentences": {"detection": 4},
                         "articles": ["PMC2"], "majority": {"detection_accuracy": 0.75}}}


def test_pipeline_extraction_table_and_plot(tmp_path):
  from penrose_jax.reporting import extraction_table
  from penrose_jax.run_reports import pipeline_report
  stages = {f"extraction_{key}": _fake_extraction(v) for key, v in
            (("dense", 0.1), ("compressed", 0.2), ("aligned", 0.3), ("qa_tuned", 0.4))}
  rows = pipeline_report.extraction_rows(stages)
  assert [name for name, _ in rows] == ["majority 'no'", "dense 0-shot", "compressed 0-shot",
                                        "aligned 0-shot", "Q&A-tuned 0-shot"]
  assert rows[0][1]["detection_accuracy"] == 0.75 and rows[0][1]["slot_micro_f1_overlap"] == 0.0
  assert rows[4][1]["entity_micro_f1"] == 0.4
  table = extraction_table.extraction_table(rows)
  assert "| Q&A-tuned 0-shot | 0.4 |" in table and "entity F1 exact" in table
  plot = pipeline_report._extraction_plot(stages, tmp_path)
  assert plot[0][0].stat().st_size > 0
  assert pipeline_report.extraction_rows({"dense": {}}) == []


def test_extraction_benchmark_quick_end_to_end(tmp_path, tiny_model_dir, sofc_root):
  import json
  import os
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = tmp_path / "bench"
  command = [sys.executable, str(root / "benchmarks" / "sofc_extraction.py"), "--quick",
             f"--model={tiny_model_dir}", f"--data_root={sofc_root}", f"--out={out}",
             # The compressed-model rows' code path on a model folder; no training on it.
             f"--compressed={tiny_model_dir}", "--compressed_methods=majority,zero_shot"]
  proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads((out / "results.json").read_text())
  names = [r["name"] for r in result["rows"]]
  assert names == ["majority", "zero_shot", "k_shot", "adapted", "onepass", "compressed_majority",
                   "compressed_zero_shot"]
  zero = result["rows"][1]
  assert zero["sentences"] == {"detection": 2, "entities": 1, "slots": 1}
  assert result["rows"][0]["scores"]["detection_accuracy"] == 0.5
  for row in result["rows"]:
    assert all(v is None or 0.0 <= v <= 1.0 for v in row["scores"].values()), row
  assert result["rows"][3]["training"]["train_steps"] >= 1
  assert len(list((out / "train").glob("onepass_*/model/model.json"))) == 1
  csv_lines = (out / "results.csv").read_text().splitlines()
  assert csv_lines[0].startswith("name,model,detection_accuracy") and len(csv_lines) == 8
  assert "entity F1 exact" in (out / "report.md").read_text()
  assert (out / "extraction_scores.png").stat().st_size > 0
  # A rerun measures nothing again: every row (and both training runs) is reused.
  proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert proc.stdout.count("already measured") == 5 and "scoring" not in proc.stdout
