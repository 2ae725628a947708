"""Reliability (issue 15): a notebook run twice, or two notebooks one after the other, in ONE kernel
gives the same checked outputs -- no hidden state, no leaked hooks, seeds restored.

Each sequence below runs in one fresh kernel, started as nbval starts its kernels (this Python,
working directory ``notebooks/``, the environment of the test process, where ``conftest.py`` has
set ``VGG_CIFAR10_DIR`` when the local copy exists) with ``VGG_FAST=1``. Between the notebooks a
probe cell (run in the kernel, not written into any notebook) records the kernel's global state.
The test asserts, for every notebook of the sequence:

1. each ``# NBVAL_CHECK_OUTPUT`` cell prints what the committed notebook shows, compared as
   nbval compares (streams coalesced, the same output keys skipped; the committed notebooks are
   executed in the default size, and checked cells print the same in both sizes);
2. torch's global settings (threads, default dtype, grad/inference/anomaly mode, deterministic
   flags, autocast, matmul precision), the torch function/dispatch mode stacks, the global
   module hooks, matplotlib's rcParams, pandas' display and NumPy's print options and the
   ``VGG_``/``TORCH``/thread environment variables are as in the fresh kernel;
3. no module left in the notebook's namespace carries a hook (freeze()'s documented pre-hook
   that holds frozen batch norms in eval mode, notebook 06, excepted);
4. a notebook run a second time ends with Python's, NumPy's and torch's random generators in
   the same state as the first time (it seeds what it uses; what ran before does not leak in).

The sequences are chosen by what they share and what CI can afford (about 90 s of the 20-minute
budget): 07 twice (feature maps, Grad-CAM and guided backprop register hooks on the same course
model), 06 before 07 (freeze() hooks and requires_grad changes, training, then the hooks of 07),
and 01 then 02 (full-size VGG16 on the CPU, meta-device builds, saved-tensor hooks, then
float64 kernels and gradients through linearised nets).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient (installed with nbval) runs the notebooks")
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager  # noqa: E402
from nbval.plugin import coalesce_streams, transform_streams_for_comparison  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

SEQUENCES = {
    "07 twice, after 06": ["06_transfer_learning.ipynb", "07_interpretability.ipynb", "07_interpretability.ipynb"],
    "01 then 02": ["01_architecture.ipynb", "02_receptive_fields.ipynb"],
}

#: nbval's ``skip_compare`` without ``--nbdime``: these output keys are never compared.
SKIP_COMPARE = {"metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg"}  # fmt: skip
PROBE_MARK = "@@kernel-state@@"


def is_checked(cell) -> bool:
    """nbval's rule: a ``# NBVAL_CHECK_OUTPUT`` comment line, or the ``nbval-check-output`` tag."""
    if cell.cell_type != "code":
        return False
    comments = [line.strip().lstrip("#").strip() for line in cell.source.splitlines() if line.strip().startswith("#")]
    return "NBVAL_CHECK_OUTPUT" in comments or "nbval-check-output" in cell.metadata.get("tags", [])


def comparable(outputs) -> dict[str, list]:
    """The outputs as nbval compares them: streams of one name coalesced (``\\r`` and ``\\b``
    applied), then every key but ``SKIP_COMPARE`` flattened (``data`` by MIME type)."""
    keyed = defaultdict(list)
    for out in transform_streams_for_comparison(coalesce_streams(copy.deepcopy(list(outputs)))):
        for key, value in out.items():
            if key == "data":
                for mime, text in value.items():
                    if mime not in SKIP_COMPARE:
                        keyed[mime].append(text)
            elif key not in SKIP_COMPARE:
                keyed[key].append(value)
    return dict(keyed)


def kernel_state(namespace: dict) -> dict:
    """Run inside the kernel (its source is sent as a probe cell): what a notebook could leave
    behind. Self-contained: imports its own modules."""
    import hashlib
    import os
    import random

    import matplotlib
    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.modules.module as module_mod

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    seen, modules = set(), []

    def visit(obj, depth: int) -> None:  # modules in the namespace, in containers and course models
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            modules.extend(obj.named_modules())
        elif isinstance(obj, dict):
            for value in list(obj.values()):
                visit(value, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value, depth + 1)
        elif type(obj).__module__.startswith("vgg_utils") and hasattr(obj, "__dict__"):
            visit(vars(obj), depth + 1)

    for name, value in list(namespace.items()):
        if not name.startswith("_"):
            visit(value, 0)
    hooks = []
    for path, module in modules:
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            for hook in getattr(module, kind, {}).values():
                name = getattr(hook, "__name__", type(hook).__name__)
                if name != "_hold_eval_hook":  # freeze(): holds frozen batch norms in eval mode, by design
                    hooks.append(f"{type(module).__name__} {path or '(root)'}: {kind} {name}")
    return {
        "settings": {
            "threads": torch.get_num_threads(),
            "interop threads": torch.get_num_interop_threads(),
            "default dtype": str(torch.get_default_dtype()),
            "grad enabled": torch.is_grad_enabled(),
            "inference mode": torch.is_inference_mode_enabled(),
            "anomaly detection": torch.is_anomaly_enabled(),
            "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
            "cpu autocast": torch.is_autocast_enabled("cpu"),
            "float32 matmul precision": torch.get_float32_matmul_precision(),
            "cudnn benchmark/deterministic": [torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic],
            "torch function modes": torch._C._len_torch_function_stack(),
            "torch dispatch modes": torch._C._len_torch_dispatch_stack(),
            "global module hooks": {k: len(v) for k, v in vars(module_mod).items()
                                    if k.startswith("_global_") and isinstance(v, dict)},
            # backend and interactive: set by the kernel's backend when pyplot is first imported
            "rcParams": {k: repr(v) for k, v in matplotlib.rcParams.items() if k not in ("backend", "interactive")},
            "pandas display options": {k: repr(pd.get_option(f"display.{k}")) for k in
                                       ("width", "max_columns", "max_rows", "precision", "float_format")},
            "numpy print options": {k: repr(v) for k, v in np.get_printoptions().items()},
            # what the course reads or torch obeys (torch itself adds TORCHINDUCTOR_CACHE_DIR on first use)
            "environment": {k: v for k, v in os.environ.items() if k.startswith(
                ("VGG_", "TORCH_HOME", "OMP_", "MKL_", "KMP_", "CUDA_", "PYTORCH_", "MPLBACKEND"))},
        },
        "hooks": sorted(hooks),
        "generators": {
            "torch": digest(torch.get_rng_state().numpy().tobytes()),
            "numpy": digest(np.random.get_state()[1].tobytes()),
            "python": digest(repr(random.getstate()).encode()),
        },
    }


PROBE = f"{inspect.getsource(kernel_state)}\nprint({PROBE_MARK!r} + __import__('json').dumps(kernel_state(globals())))\n"


def run_in_one_kernel(names: list[str]) -> tuple[dict, list[tuple[str, list, dict]]]:
    """Execute the notebooks one after the other in one kernel. Returns the fresh kernel's state
    and, per notebook, ``(name, [(index, committed cell, executed cell)], state after it)``."""
    merged = nbformat.v4.new_notebook(metadata=nbformat.read(NOTEBOOKS / names[0], as_version=4).metadata)
    merged.cells.append(nbformat.v4.new_code_cell(PROBE))
    spans = []
    for name in names:
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        start = len(merged.cells)
        for cell in committed.cells:
            fresh = copy.deepcopy(cell)
            if fresh.cell_type == "code":
                fresh.outputs, fresh.execution_count = [], None
            merged.cells.append(fresh)
        spans.append((name, committed, start))
        merged.cells.append(nbformat.v4.new_code_cell(PROBE))
    km = AsyncKernelManager(kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager())
    client = nbclient.NotebookClient(merged, km=km, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env={**os.environ, "VGG_FAST": "1"})

    def state(cell) -> dict:
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        return json.JSONDecoder().raw_decode(text.split(PROBE_MARK, 1)[1])[0]

    runs = []
    for name, committed, start in spans:
        pairs = [(i, cell, merged.cells[start + i]) for i, cell in enumerate(committed.cells)]
        runs.append((name, pairs, state(merged.cells[start + len(committed.cells)])))
    return state(merged.cells[0]), runs


@pytest.mark.parametrize("names", list(SEQUENCES.values()), ids=list(SEQUENCES))
def test_notebooks_in_one_kernel_give_the_same_checked_outputs(names):
    fresh, runs = run_in_one_kernel(names)
    problems, generators = [], defaultdict(list)
    for position, (name, pairs, state) in enumerate(runs, start=1):
        where = f"{name} (notebook {position} of {len(runs)} in one kernel)"
        n_checked = 0
        for index, committed, executed in pairs:
            if not is_checked(committed):
                continue
            n_checked += 1
            if committed.execution_count is None:  # as nbval: an unrun reference is not compared
                if committed.outputs:
                    problems.append(f"{where}, cell {index}: unrun reference cell has outputs")
            elif comparable(executed.outputs) != comparable(committed.outputs):
                problems.append(f"{where}, cell {index}: checked output differs\n  committed: "
                                f"{comparable(committed.outputs)}\n  this run:  {comparable(executed.outputs)}")
        if n_checked == 0:
            problems.append(f"{where}: no # NBVAL_CHECK_OUTPUT cell found, nothing compared")
        for key, after in state["settings"].items():
            before = fresh["settings"][key]
            if isinstance(before, dict) and after != before:  # name only the entries that differ
                diff = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
                problems.append(f"after {where}: global state '{key}' changed, (fresh kernel, now): {diff}")
            elif after != before:
                problems.append(f"after {where}: global state '{key}' changed from {before} to {after}")
        if state["hooks"]:
            problems.append(f"after {where}: hooks left on modules: {state['hooks']}")
        generators[name].append(state["generators"])
    for name, states in generators.items():
        differ = [g for g in states[0] if any(s[g] != states[0][g] for s in states)]
        if differ:
            problems.append(f"{name}: run again in the same kernel, it ends with {', '.join(differ)}'s random "
                            "generator in another state: it draws from a generator it did not seed, or what ran "
                            "before it changes how much it draws")
    assert not problems, "\n".join(problems)


def test_is_checked_and_comparable_follow_nbval():
    cell = nbformat.v4.new_code_cell("x = 1\n# NBVAL_CHECK_OUTPUT\nprint(x)")
    assert is_checked(cell) and not is_checked(nbformat.v4.new_code_cell("print('# NBVAL_CHECK_OUTPUT')"))
    split = [nbformat.v4.new_output("stream", name="stdout", text="a\n"),
             nbformat.v4.new_output("stream", name="stdout", text="b\rc\n")]  # fmt: skip
    assert comparable(split) == comparable([nbformat.v4.new_output("stream", name="stdout", text="a\nc\n")])
    shown = nbformat.v4.new_output("execute_result", data={"text/plain": "1", "image/png": "AAA"}, execution_count=3)
    assert comparable([shown]) == {"text/plain": ["1"]}
    assert comparable(split) != comparable([nbformat.v4.new_output("stream", name="stdout", text="a\nb\n")])
