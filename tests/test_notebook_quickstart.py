"""notebooks/quickstart.ipynb runs headlessly (nbclient) and writes the pipeline's report.md."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
KERNEL = "python3"

pytestmark = pytest.mark.slow


def _ensure_kernel() -> None:
  """Installs the ipykernel kernelspec into this interpreter's prefix when none is found."""
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
  if KERNEL not in KernelSpecManager().find_kernel_specs():
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                    "--name", KERNEL], check=True, capture_output=True)


def test_quickstart_notebook_writes_report(tmp_path, monkeypatch):
  nbclient = pytest.importorskip("nbclient")
  nbformat = pytest.importorskip("nbformat")
  _ensure_kernel()
  workdir = tmp_path / "quickstart"
  monkeypatch.setenv("PENROSE_QUICKSTART_WORKDIR", str(workdir))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name=KERNEL,
                                   resources={"metadata": {"path": str(ROOT)}})
  client.execute()  # raises CellExecutionError with the failing cell's traceback
  assert (workdir / "report.md").is_file()
  assert "Wall time" in (workdir / "report.md").read_text()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert any("image/png" in o.get("data", {}) for o in outputs), "no plot displayed"
  assert any("text/markdown" in o.get("data", {}) for o in outputs), "report.md not displayed"
