"""The experiments/* mains: each parses its config, and a mistyped override is one clear line."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAINS = {"align": "align", "compress": "compress", "evaluate": "evaluate", "generate": "generate",
         "pipeline": "pipeline", "qa_tune": "qa_tune", "sweep": "sweep_tiling"}


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("main", sorted(MAINS))
def test_unknown_config_field_is_named_without_a_traceback(main, tmp_path):
  result = _run(f"experiments.{main}", f"--config=configs/{MAINS[main]}.py",
                "--config.no_such_field=1", f"--workdir={tmp_path}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert "--config.no_such_field: the config has no field 'no_such_field'" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.listdir(tmp_path)  # nothing was started


def test_nested_field_and_bad_value_errors():
  nested = _run("experiments.compress", "--config=configs/compress.py",
                "--config.compression.tilling=grid", "--workdir=/nonexistent/never")
  assert nested.returncode == 2
  assert ("--config.compression.tilling: the config has no field 'tilling' (did you mean "
          '"tiling"?)') in nested.stderr
  bad_value = _run("experiments.compress", "--config=configs/compress.py",
                   "--config.compression.param_ratio=abc", "--workdir=/nonexistent/never")
  assert bad_value.returncode != 0 and "param_ratio" in bad_value.stderr
  assert "Traceback" not in bad_value.stderr


def test_list_override_errors_name_the_flag():
  # A list field is accepted by the mains (cli registers the parser) and a broken literal is
  # one line naming the override, not ml_collections' "type list is not supported".
  broken = _run("experiments.compress", "--config=configs/compress.py",
                "--config.calibration.sources=[a,b", "--workdir=/nonexistent/never")
  assert broken.returncode != 0 and "Traceback" not in broken.stderr
  assert "--config.calibration.sources=[a,b: '[a,b' is not a valid list literal" in broken.stderr
  assert "not supported for overriding" not in broken.stderr
