"""Config data paths: 'package:' names, ../shared (and hiding it), split metadata, and text sets
a run leaves out.

Marked shared_data: `make test` runs this file again with PENROSE_SHARED_DIR pointing at a
missing folder, as a clone without ../shared sees the data.
"""

import json
import os
import pathlib

import ml_collections
import pytest

from configs import compress as compress_config
from configs import evaluate as evaluate_config
from penrose_jax.data import paths, text_sources
from penrose_jax.jobs import align, evaluate

pytestmark = pytest.mark.shared_data


def test_packaged_names_resolve_to_shipped_files():
  corpus = paths.resolve_data_path("package:demo_corpus")
  assert corpus.is_dir() and list(corpus.glob("*.md"))
  assert paths.resolve_data_path("package:curated_qa").is_file()
  assert paths.resolve_data_path("package:heldout_questions").is_file()
  with pytest.raises(ValueError, match="package:demo_corpus"):
    paths.resolve_data_path("package:no_such_data")


def test_shared_paths_follow_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv(paths.SHARED_DIR_ENV, raising=False)
  assert paths.resolve_data_path("../shared/data/x.jsonl") == pathlib.Path("../shared/data/x.jsonl")
  assert paths.resolve_data_path(tmp_path / "a") == tmp_path / "a"
  monkeypatch.setenv(paths.SHARED_DIR_ENV, str(tmp_path / "elsewhere"))
  assert paths.resolve_data_path("../shared/data/x.jsonl") == tmp_path / "elsewhere/data/x.jsonl"
  assert text_sources.source_path("../shared/data/t@dev") == tmp_path / "elsewhere/data/t"
  assert paths.resolve_data_path("../shared_not/x") == pathlib.Path("../shared_not/x")


def test_hidden_shared_folder_leaves_only_packaged_sources(monkeypatch, tmp_path):
  # What a clone without ../shared sees: every ../shared source is skipped, not fatal.
  monkeypatch.setenv(paths.SHARED_DIR_ENV, str(tmp_path / "missing"))
  sources = compress_config.get_config("quick").calibration.sources
  used, skipped = text_sources.available_sources(sources)
  assert used == ["package:demo_corpus"]
  assert len(skipped) == len(sources) - 1 and all("not found" in s for s in skipped)


def test_shared_folder_state_is_what_the_tests_assume():
  # Under `make test`'s second run the folder is hidden; otherwise it is ../shared as is.
  hidden = os.environ.get(paths.SHARED_DIR_ENV)
  root = paths.resolve_data_path("../shared/data")
  if hidden:
    assert not root.exists() and str(root).startswith(hidden)
  else:
    assert root == pathlib.Path("../shared/data")


def test_read_split_metadata(tmp_path):
  path = tmp_path / "metadata.tsv"
  path.write_text("name\tset\ttitle\nPMC1\ttrain\tA\nPMC2\tdev\tB\n")
  meta = text_sources.read_split_metadata(path)
  assert {k: v["set"] for k, v in meta.items()} == {"PMC1": "train", "PMC2": "dev"}
  bad = tmp_path / "bad.tsv"
  bad.write_text("id\tsplit\n")
  with pytest.raises(ValueError, match="bad.tsv: header needs name and set"):
    text_sources.read_split_metadata(bad)


def test_split_filter_reads_metadata_beside_the_folder(tmp_path):
  texts = tmp_path / "texts"
  texts.mkdir()
  for name in ("a", "b", "c"):
    (texts / f"{name}.txt").write_text(f"text of {name}")
  (tmp_path / "metadata.tsv").write_text("name\tset\na\ttrain\nb\tdev\nc\ttrain\n")
  assert [n for n, _ in text_sources.read_source(f"{texts}@train")] == ["a", "c"]
  assert [n for n, _ in text_sources.read_source(f"{texts}@dev")] == ["b"]


def test_selected_text_sets():
  sets = {"sofc_dev": "x@dev", "lambada": "l.jsonl", "demo_corpus": "package:demo_corpus"}
  assert text_sources.selected_text_sets(sets) == sets
  assert list(text_sources.selected_text_sets(sets, "lambada, sofc_dev")) == ["demo_corpus"]
  with pytest.raises(ValueError, match=r"\['lambda'\].*'demo_corpus', 'lambada', 'sofc_dev'"):
    text_sources.selected_text_sets(sets, "lambda")


def test_evaluate_leaves_out_skipped_text_sets(tmp_path, tiny_model_dir):
  config = evaluate_config.get_config("quick")
  config.model = str(tiny_model_dir)
  config.benchmarks = ""
  config.text_sets = {"demo_corpus": "package:demo_corpus", "again": "package:demo_corpus"}
  config.skip_text_sets = "again"
  report = evaluate.run(config, tmp_path)
  assert list(report["ppl"]) == ["demo_corpus"]
  assert report["config"]["skip_text_sets"] == "again"
  config.skip_text_sets = "agian"
  with pytest.raises(ValueError, match="agian"):
    evaluate.run(config, tmp_path / "typo")


def test_align_reuses_only_the_sets_it_keeps(tmp_path):
  sets = {"demo_corpus": "package:demo_corpus", "lambada": "l.jsonl"}
  report = {"config": {"model": "tiny", "eval": {"window": 64, "max_windows": 4,
                                                 "text_sets": sets}},
            "checkpoint": str(tmp_path / "model"),
            "ppl_compressed_by_set": {"demo_corpus": 5.0, "lambada": 6.0},
            "ppl_dense_by_set": {"demo_corpus": 3.0, "lambada": 4.0}}
  path = tmp_path / "report.json"
  path.write_text(json.dumps(report))
  eval_config = ml_collections.ConfigDict(
      {"text_sets": sets, "window": 64, "max_windows": 4, "skip_text_sets": ""})
  reuse = lambda: align.measured_by_compress(str(path), eval_config, str(tmp_path / "model"),
                                             "tiny")
  assert reuse() == ({"demo_corpus": 5.0, "lambada": 6.0}, {"demo_corpus": 3.0, "lambada": 4.0})
  eval_config.skip_text_sets = "lambada"
  assert reuse() == ({"demo_corpus": 5.0}, {"demo_corpus": 3.0})
