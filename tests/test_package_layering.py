"""The library's layering, read from the source (ast) of every module under penrose_jax/.

- Only penrose_jax/jobs imports penrose_jax.jobs: the library packages know no workdirs,
  flags or report files (ARCHITECTURE.md, "jobs/").
- penrose_jax/data imports nothing from penrose_jax.qa: data paths, text sources and documents
  sit below the Q&A code that uses them.
- penrose_jax/evaluation imports nothing from penrose_jax.qa: closed-book scoring uses the chat
  format of models/chat_format.py, not qa's training code.
- The packages form one order (PACKAGE_ORDER, ARCHITECTURE.md "Packages"): a package imports
  only packages before it, so no import runs back up (evaluation never imports qa's training
  code, models never imports io).
Function-local imports count too (a local import is still a dependency).
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "penrose_jax"
# (importing package folder, imported module prefix) pairs that must not occur.
FORBIDDEN = [(None, "penrose_jax.jobs"), ("data", "penrose_jax.qa"),
             ("evaluation", "penrose_jax.qa")]
# Lowest first; each package may import those before it (reporting: from every package).
PACKAGE_ORDER = ("reporting", "parallel", "data", "models", "io", "compression", "training",
                 "alignment", "evaluation", "qa", "run_reports", "jobs")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
  """Every module a file imports (absolute names; `from X import y` gives X and X.y).

  Args:
    source: the file's text.
    package: the package the file is in (resolves relative imports).

  Returns:
    The dotted names.
  """
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative import: resolve against the importing package
        anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)
  return names


def _file_imports(path: pathlib.Path) -> set[str]:
  name = _module_name(path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  return imported_modules(path.read_text(encoding="utf-8"), package)


def _violations(folder_name, prefix):
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    folder = path.relative_to(PACKAGE).parts[0]
    if prefix == "penrose_jax.jobs" and folder == "jobs":
      continue
    if folder_name is not None and folder != folder_name:
      continue
    bad = sorted(m for m in _file_imports(path) if m == prefix or m.startswith(prefix + "."))
    if bad:
      found.append(f"{path.relative_to(PACKAGE.parent)} imports {bad}")
  return found


@pytest.mark.parametrize("folder_name,prefix", FORBIDDEN)
def test_no_forbidden_imports(folder_name, prefix):
  assert _violations(folder_name, prefix) == []


def upward_imports() -> list[str]:
  """Imports of a package that comes later in PACKAGE_ORDER (or of an unlisted package)."""
  rank = {name: index for index, name in enumerate(PACKAGE_ORDER)}
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE).parts
    if len(parts) < 2:
      continue
    for module in sorted(_file_imports(path)):
      names = module.split(".")
      if names[0] != "penrose_jax" or len(names) < 2 or names[1] == parts[0]:
        continue
      if not (PACKAGE / names[1]).is_dir():
        continue
      if rank.get(names[1], len(rank)) > rank.get(parts[0], -1):
        found.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
  return found


def test_packages_import_only_lower_packages():
  assert sorted(p.name for p in PACKAGE.iterdir()
                if p.is_dir() and (p / "__init__.py").exists()) == sorted(PACKAGE_ORDER)
  assert upward_imports() == []


def test_the_walk_sees_imports():
  # The walker must find what it guards against, or the test above proves nothing.
  assert "penrose_jax.io.model_registry" in _file_imports(PACKAGE / "jobs" / "evaluate.py")
  sample = ("def f():\n  from penrose_jax.jobs import workdir\n"
            "import penrose_jax.data.ingest as ingest\nfrom ..qa import records\n")
  found = imported_modules(sample, "penrose_jax.data")
  assert {"penrose_jax.jobs", "penrose_jax.jobs.workdir", "penrose_jax.data.ingest",
          "penrose_jax.qa.records"} <= found
