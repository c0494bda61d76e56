"""jobs/sweep_merge.py: committed tables merge by run name and their plots are redrawn."""

import pytest

from configs import sweep_bytes
from penrose_jax.jobs import sweep_merge
from penrose_jax.jobs.sweep import results_csv_text


def _write(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(results_csv_text(rows), encoding="utf-8")


def _row(run, method, size, ppl, lambada):
  return {"run": run, "compression.method": method, "bytes_dense": 1000, "bytes_compressed": size,
          "ppl_dense": 10.0, "ppl_compressed": ppl, "ppl_dense_by_set.lambada": 20.0,
          "ppl_compressed_by_set.sofc_dev": ppl, "ppl_compressed_by_set.lambada": lambada}


def test_merge_appends_new_runs_compares_repeats_and_redraws(tmp_path):
  _write(tmp_path / "results.csv", [_row("rtn_int8", "rtn", 260, 10.1, 20.2),
                                    _row("rtn_int4", "rtn", 130, 13.5, 27.0)])
  _write(tmp_path / "new" / "results.csv", [_row("rtn_int4", "rtn", 130, 13.5, 27.0),
                                            _row("gptq_int4", "gptq", 130, 11.0, 22.0)])
  out = sweep_merge.run(sweep_bytes.get_config(), tmp_path, [tmp_path / "new" / "results.csv"])
  assert out["runs"] == ["rtn_int8", "rtn_int4", "gptq_int4"]
  assert out["added"] == ["gptq_int4"]
  assert all(a == b for a, b in out["duplicates"]["rtn_int4"].values())
  rows = sweep_merge.read_rows(tmp_path / "results.csv")
  assert rows[2]["bytes_compressed"] == 130 and rows[2]["ppl_compressed"] == 11.0
  assert {p.rsplit("/", 1)[-1] for p in out["plots"]} == {
      "bytes_compressed_vs_ppl_compressed.png",
      "bytes_compressed_vs_ppl_compressed_by_set.lambada.png"}


def test_parse_cell_and_bad_inputs(tmp_path):
  assert [sweep_merge.parse_cell(c) for c in ("", "3", "2.5", "True", "rtn")] == [
      None, 3, 2.5, True, "rtn"]
  with pytest.raises(FileNotFoundError, match="results.csv not found"):
    sweep_merge.run(sweep_bytes.get_config(), tmp_path / "missing")
  _write(tmp_path / "results.csv", [_row("a", "rtn", 1, 1.0, 1.0)])
  with pytest.raises(ValueError, match="num_layers >= 1"):
    sweep_merge.run(sweep_bytes.get_config(), tmp_path, source_model="default")
  assert len(sweep_merge.projection_paths(2)) == 14
