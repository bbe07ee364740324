"""notebooks/colab.ipynb executed headless in test mode: no Colab, nothing downloaded, a tiny real dataset."""

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "colab.ipynb"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def executed(tiny_lgg, tmp_path_factory, monkeypatch_module):
    """Run every cell with BRAINTUMOR_NOTEBOOK_TEST=1; returns (executed notebook, output folder)."""
    output = tmp_path_factory.mktemp("notebook_outputs")
    # The kernel inherits this process's environment, and the notebook's jobs inherit the kernel's.
    monkeypatch_module.setenv("BRAINTUMOR_NOTEBOOK_TEST", "1")
    monkeypatch_module.setenv("BRAINTUMOR_PROJECT", str(REPO_ROOT))
    monkeypatch_module.setenv("BRAINTUMOR_DATA", str(tiny_lgg))
    monkeypatch_module.setenv("BRAINTUMOR_OUTPUT", str(output))
    monkeypatch_module.delenv("RAY_ADDRESS", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    client = nbclient.NotebookClient(notebook, timeout=400, kernel_name="python3", resources={"metadata": {"path": str(output)}})
    client.execute()
    return notebook, output


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _outputs_of_type(notebook, output_type: str) -> list:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs if output.output_type == output_type]


def test_notebook_runs_without_errors(executed):
    notebook, _ = executed

    assert _outputs_of_type(notebook, "error") == []


def test_notebook_writes_model_and_metrics(executed):
    _, output = executed
    run = output / "runs" / "colab-segment"

    assert (output / "split.json").is_file()
    assert (run / "model" / "model.keras").is_file()
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics


def test_notebook_shows_overlays_inline(executed):
    notebook, output = executed
    images = [output for output in _outputs_of_type(notebook, "display_data") if "image/png" in output.data]

    assert (output / "runs" / "colab-segment" / "evaluation" / "overlays.png").is_file()
    assert len(images) >= 2


def test_notebook_test_mode_skips_colab_steps():
    # The cells that install, mount or download must all sit behind the TESTING flag.
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")

    for step in ("drive.mount(", "pip\", \"install", "\"kaggle\", \"datasets\"", "\"git\", \"clone\""):
        assert step in source, step
    for cell in notebook.cells:
        if cell.cell_type == "code" and any(step in cell.source for step in ("drive.mount(", "pip\", \"install", "\"kaggle\", \"datasets\"")):
            assert "TESTING" in cell.source, cell.source[:200]
