"""raylite.util.progress inside a real Jupyter kernel: a widget bar, and the values.

Runs a one-cell notebook with nbclient on an ipykernel of this interpreter; the cell
starts raylite, waits on ten tasks through `progress`, and prints what it returned.
In a notebook tqdm.auto draws an ipywidgets bar (a widget view in the cell's output),
in a terminal a text bar (test_state_cli.py covers that one).
"""

from __future__ import annotations

import pytest

from tests._engine import raylite_only

pytestmark = [raylite_only, pytest.mark.timeout(180)]

CELL = """\
import raylite as ray, time
ray.init(num_cpus=2, log_to_driver=False)

@ray.remote
def f(i):
    time.sleep(0.05)
    return i * i

values = ray.util.progress([f.remote(i) for i in range(10)], desc="squares")
print("VALUES", values)
ray.shutdown()
"""


def test_progress_draws_a_widget_in_jupyter_and_returns_the_values(no_engine):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert widgets, f"no widget bar in the cell's output: {outputs}"
    assert "VALUES [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in text
