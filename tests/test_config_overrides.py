"""Every list / tuple field of every shipped config can be overridden from the command line.

The configs are walked, so a list field added later is covered without touching this test.
Parsing runs in process through ml_collections with the parsers experiments/cli.py registers
(what every experiments/* main uses); test_experiments_cli.py runs the mains themselves.
"""

import ast
import pathlib
import re

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from experiments import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Job configs: every file of configs/ but the package and the shared data paths (common.py).
CONFIG_FILES = sorted(p for p in (ROOT / "configs").glob("*.py")
                      if p.name not in ("__init__.py", "common.py"))


def _variants(path: pathlib.Path) -> list[str]:
  """The variants a config file accepts: the strings its get_config compares `arg` with
  (plus ''), kept when get_config takes them."""
  source = path.read_text()
  named = set(re.findall(r'arg\s*[!=]=\s*"(\w*)"', source))
  for group in re.findall(r"arg\s+(?:not\s+)?in\s+\(([^)]*)\)", source):
    named |= set(re.findall(r'"(\w*)"', group))
  module = _load(path)
  accepted = []
  for variant in sorted(named | {""}):
    try:
      module.get_config(variant)
    except ValueError:
      continue
    accepted.append(variant)
  return accepted


def _load(path: pathlib.Path):
  import importlib
  return importlib.import_module(f"configs.{path.stem}")


CASES = [(path.name, variant) for path in CONFIG_FILES for variant in _variants(path)]


def _sequence_fields(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
  """dotted path -> value of every list / tuple field (ConfigDicts are walked)."""
  found = {}
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      found.update(_sequence_fields(value, path + "."))
    elif isinstance(value, (list, tuple)):
      found[path] = value
  return found


def _changed(value):
  """A different value of the same kind: the items reversed plus the first again, or two ints
  for an empty field (a length change makes the override visible whatever the items)."""
  items = list(value)
  new = items[::-1] + items[:1] if items else [1, 2]
  return type(value)(new)


def _parse(config_arg: str, overrides: list[str]) -> ml_collections.ConfigDict:
  argv = ["prog", f"--config={config_arg}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=flag_values,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def _config_arg(name: str, variant: str) -> str:
  return f"{ROOT / 'configs' / name}" + (f":{variant}" if variant else "")


def test_every_config_file_has_a_case():
  assert {name for name, _ in CASES} == {p.name for p in CONFIG_FILES}
  assert ("pipeline.py", "demo") in CASES and ("qa_tune.py", "sofc_qa") in CASES


@pytest.mark.parametrize("name,variant", CASES)
def test_every_list_field_takes_a_literal_override(name, variant):
  default = _parse(_config_arg(name, variant), [])
  fields = _sequence_fields(default)
  if not fields:
    pytest.skip(f"{name}:{variant} has no list / tuple field")
  wanted = {path: _changed(value) for path, value in fields.items()}
  parsed = _parse(_config_arg(name, variant),
                  [f"--config.{path}={value!r}" for path, value in wanted.items()])
  got = _sequence_fields(parsed)
  for path, value in wanted.items():
    assert got[path] == value and type(got[path]) is type(value), path


@pytest.mark.parametrize("name,variant", CASES)
def test_flat_string_list_fields_take_a_comma_list(name, variant):
  fields = {path: value for path, value in _sequence_fields(
      _parse(_config_arg(name, variant), [])).items()
            if value and all(isinstance(v, str) and v and "," not in v for v in value)}
  if not fields:
    pytest.skip(f"{name}:{variant} has no flat string list field")
  wanted = {path: _changed(value) for path, value in fields.items()}
  parsed = _parse(_config_arg(name, variant),
                  [f"--config.{path}={','.join(value)}" for path, value in wanted.items()])
  got = _sequence_fields(parsed)
  for path, value in wanted.items():
    assert got[path] == value and type(got[path]) is type(value), path


def test_comma_list_reaches_calibration_sources_as_strings():
  parsed = _parse(_config_arg("compress.py", "quick"), [
      "--config.calibration.sources=../shared/data/sofc_exp/texts@train, package:demo_corpus",
      "--config.parallel.data_axes=", "--config.eval.skip_text_sets=lambada"])
  assert parsed.calibration.sources == ["../shared/data/sofc_exp/texts@train",
                                        "package:demo_corpus"]
  assert parsed.parallel.data_axes == []
  assert parsed.eval.skip_text_sets == "lambada"


def test_repeated_tuple_flag_appends():
  parsed = _parse(_config_arg("align.py", "quick"),
                  ["--config.objective.layers=0", "--config.objective.layers=1"])
  assert parsed.objective.layers == (0, 1)


@pytest.mark.parametrize("text,items", [
    ("a,b", ["a", "b"]), (" a , b ", ["a", "b"]), ("", []), ("[]", []), ("x", ["x"]),
    ('["a", "b"]', ["a", "b"]), ("(1, 2)", [1, 2]), ("1,2", [1, 2]), ("[true, null]", [True, None]),
    ("../shared/x@dev", ["../shared/x@dev"]), ("package:demo_corpus", ["package:demo_corpus"])])
def test_parse_sequence(text, items):
  assert cli.parse_sequence(text) == items


@pytest.mark.parametrize("text", ["[a, b", '["a", b]', "(1, 2"])
def test_parse_sequence_rejects_broken_literals(text):
  with pytest.raises(ValueError, match="not a valid list literal"):
    cli.parse_sequence(text)


def test_bad_list_value_is_one_named_error():
  with pytest.raises(flags.IllegalFlagValueError,
                     match=r"--config.calibration.sources=\[a,b: .*not a valid list literal"):
    _parse(_config_arg("compress.py", ""), ["--config.calibration.sources=[a,b"])


def test_changed_values_are_literals():
  # The literal test writes repr(value): it must read back for every shipped list field.
  for name, variant in CASES:
    for value in _sequence_fields(_parse(_config_arg(name, variant), [])).values():
      assert ast.literal_eval(repr(_changed(value))) == _changed(value), (name, variant)
