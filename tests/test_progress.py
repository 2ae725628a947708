"""Progress bars in a saved notebook (GitHub, nbconvert) show where they ended, not "0%"."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

CELL = """\
from vgg_utils.runtime import progress_bar
bar = progress_bar(40, True, "demo", unit="batch", delay={delay})
for _ in range(40):
    bar.update(1)
    {pause}
bar.close()
"""


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_a_saved_notebook_shows_the_final_state_of_a_progress_bar(delay):
    pause = "__import__('time').sleep(0.005)" if delay else "pass"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL.format(delay=delay, pause=pause))])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    texts = [
        "".join(out["data"]["text/plain"]) for out in notebook.cells[0].outputs if out["output_type"] == "display_data"
    ]
    assert len(texts) == 1, notebook.cells[0].outputs  # one bar, no duplicate from tqdm's own display
    assert "40/40" in texts[0] and "100%" in texts[0] and " 0%" not in texts[0], texts[0]
