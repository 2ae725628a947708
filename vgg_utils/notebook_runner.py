"""``vgg-course run``: execute the course's notebooks headless, in order, each in a fresh kernel.

For each notebook: its wall time, the peak memory of its kernel process (the kernel reports its
own peak resident set size once the last cell has run), the fallback lines it printed ("ImageNet
weights unavailable ...", "because CIFAR-10 is unavailable ..."), and on failure the cell, its
source and the traceback, after which nothing later runs. Optionally each executed notebook as
HTML with an index page (a browsable copy of the course), the executed notebooks saved back, and
one CSV row per notebook for the record. ``offline=True`` rehearses a workshop without network:
the kernels cannot resolve any host but this machine. Used in the README's command-line section
and by ``tests/test_course_offline.py``; no notebook teaches it.
"""

from __future__ import annotations

import csv
import datetime
import html
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .provenance import git_commit
from .runtime import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: The kernel name meaning "this Python" (the interpreter running ``vgg-course``).
CURRENT_PYTHON = "current-python"

#: How a notebook says it fell back, one pattern per source (``run`` lists what matched).
FALLBACK_PATTERNS: dict[str, str] = {
    "ImageNet weights": r"(pretrained|ImageNet) weights\b.*\b(unavailable|not cached)",
    "CIFAR-10": r"CIFAR-10\b.*\b(unavailable|not cached)",
    "Oxford Flowers": r"(Flowers\b.*\b(unavailable|not cached)|online section skipped)",
    "course model": r"course model\b.*\b(not built|unavailable)",
}

# Peak resident set size of the kernel process in MB, evaluated inside the kernel. Linux: VmHWM
# (kB) of /proc/self/status, not getrusage's ru_maxrss, which a process started by fork + exec
# inherits from its parent (here the runner, torch and all). Elsewhere ru_maxrss (macOS: bytes);
# no `resource` module (Windows): the expression fails and the peak is n/a.
_PEAK_EXPR = (
    "(lambda hwm: int(hwm[0].split()[1]) * 1024 / 1e6 if hwm else __import__('resource').getrusage("
    "__import__('resource').RUSAGE_SELF).ru_maxrss / (1e6 if __import__('sys').platform == 'darwin' else 1e3 / 1.024))"
    "([line for line in (open('/proc/self/status').read().splitlines() if __import__('os').path.isfile("
    "'/proc/self/status') else []) if line.startswith('VmHWM:')])"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Loaded first by every kernel in offline mode: name lookups for any host but this machine fail
# as they do without network; any sitecustomize that was there before still runs afterwards.
_OFFLINE_SITECUSTOMIZE = '''\
import importlib.machinery, importlib.util, os, socket, sys
_lookup = socket.getaddrinfo
def _offline_getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "", "localhost", "::1") and not str(name).startswith("127."):
        raise socket.gaierror(socket.EAI_NONAME, f"{name}: no network (vgg-course run --offline)")
    return _lookup(host, *args, **kwargs)
socket.getaddrinfo = _offline_getaddrinfo
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
'''


class NotebookRunError(RuntimeError):
    """A notebook name that matches nothing, or a notebook that failed (see :class:`NotebookRun`)."""


@dataclass
class NotebookRun:
    """What running one notebook gave: ``status`` ``"ok"`` or ``"failed"``; ``peak_mb`` ``None``
    where the platform cannot tell; on failure ``failed_cell`` (index into the notebook's cells)
    and ``error`` (cell source head and traceback)."""

    path: Path
    status: str
    seconds: float
    peak_mb: float | None
    fallbacks: list[str] = field(default_factory=list)
    failed_cell: int | None = None
    error: str | None = None
    html: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> str:
        peak = f"{self.peak_mb:,.0f} MB" if self.peak_mb is not None else "n/a"
        line = f"{self.name}: {self.status}, {self.seconds:.1f} s, peak memory {peak}"
        return line + "".join(f"\n    fallback: {f}" for f in self.fallbacks)


def course_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The course's notebooks (``NN_name.ipynb``) in order."""
    return sorted(Path(folder or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


def resolve(names: Sequence[str], folder: str | os.PathLike | None = None) -> list[Path]:
    """Notebook names as given on the command line (``01``, ``01_architecture``, a path) to paths;
    no names: the whole course."""
    known = course_notebooks(folder)
    if not names:
        if not known:
            raise NotebookRunError(f"no notebooks (NN_name.ipynb) in {folder or NOTEBOOK_DIR}")
        return known
    paths = []
    for name in names:
        as_path = Path(name)
        if as_path.suffix == ".ipynb" or as_path.is_file():
            if not as_path.is_file():
                raise NotebookRunError(f"no notebook at {name}")
            paths.append(as_path)
            continue
        match = [p for p in known if p.stem == name or p.stem.startswith(f"{name}_")]
        if len(match) != 1:
            choices = ", ".join(p.stem for p in known) or "none"
            raise NotebookRunError(f"{name!r} names {'no' if not match else 'more than one'} notebook; "
                                   f"give a number, a name or a path (course notebooks: {choices})")  # fmt: skip
        paths.append(match[0])
    return paths


def fallback_lines(nb) -> list[str]:
    """The printed lines of an executed notebook that say it fell back (:data:`FALLBACK_PATTERNS`)."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text") if output.get("output_type") == "stream" else output.get("data", {}).get("text/plain")
            for line in (text or "").splitlines():
                if any(re.search(p, line) for p in FALLBACK_PATTERNS.values()):
                    found.append(line.strip())
    return found


def _kernel_manager_class():
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class CurrentPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name == CURRENT_PYTHON:  # this interpreter, whatever kernels are installed
                # --matplotlib=inline: figures reach the outputs with every ipykernel version
                # (older ones do not act on MPLBACKEND alone)
                argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--matplotlib=inline"]
                return KernelSpec(argv=argv, display_name="Python (vgg-course run)", language="python")
            return super().get_kernel_spec(kernel_name)

    class Manager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _specs(self) -> KernelSpecManager:
            return CurrentPythonSpecs(data_dir=self.data_dir)

    return Manager


async def _execute(client, env: dict[str, str], stderr) -> tuple[float | None, Exception | None]:
    """Run every cell in one fresh kernel; ask the kernel for its peak memory at the end (also
    after a failure). Returns ``(peak_mb, error)``."""
    failure = None
    peak = None
    async with client.async_setup_kernel(env=env, stderr=stderr):
        info = await client.async_wait_for_reply(await _maybe_await(client.kc.kernel_info()))
        if info is not None:
            client.nb.metadata["language_info"] = info["content"].get("language_info", {})
        try:
            for index, cell in enumerate(client.nb.cells):
                await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        except Exception as err:  # CellExecutionError, a cell timeout, a dead kernel
            failure = err
        try:
            reply = await client.kc.execute_interactive("", silent=True, store_history=False,
                                                        user_expressions={"peak": _PEAK_EXPR}, timeout=60)  # fmt: skip
            value = reply["content"].get("user_expressions", {}).get("peak", {})
            if value.get("status") == "ok":
                peak = float(value["data"]["text/plain"])
        except Exception:  # noqa: BLE001 - a dead kernel or no `resource` module: n/a
            peak = None
        client.set_widgets_metadata()
    return peak, failure


async def _maybe_await(value):
    return await value if hasattr(value, "__await__") else value


def _describe_failure(nb, err: Exception, kernel_log: str) -> tuple[int | None, str]:
    """The failing cell's index and a report: its first source lines, the traceback, and what
    the kernel wrote to stderr (a crash says why there)."""
    errors = {i: o for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"}  # fmt: skip
    if errors:
        index = min(errors)
        message = "\n".join(errors[index].get("traceback", [])) or f"{errors[index].ename}: {errors[index].evalue}"
    else:  # a timeout or a dead kernel: the first code cell that did not finish
        index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None), None)
        message = f"{type(err).__name__}: {err}"
    lines = []
    if index is not None:
        source = nb.cells[index].source.splitlines()
        lines.append(f"cell {index}:")
        lines += [f"    {line}" for line in source[:6]] + (["    ..."] if len(source) > 6 else [])
    lines += _ANSI.sub("", message).strip().splitlines()[-40:]
    log = [line for line in kernel_log.splitlines() if line.strip() and "without encryption" not in line]
    if log:
        lines += ["kernel stderr (last lines):", *(f"    {line}" for line in log[-15:])]
    return index, "\n".join(lines)


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def run_notebook(
    path: str | os.PathLike,
    *,
    fast: bool = False,
    timeout: float = 1800,
    kernel: str = CURRENT_PYTHON,
    offline: bool = False,
    env: dict[str, str] | None = None,
):
    """Execute one notebook top to bottom in a fresh kernel (working directory: its folder).

    ``fast``: ``VGG_FAST=1`` in the kernel's environment (otherwise the caller's environment
    decides). ``timeout``: seconds per cell. ``kernel``: a kernel name, default this Python.
    ``offline``: no host but this machine resolves inside the kernel. Returns
    ``(NotebookRun, executed notebook)``; a failing cell gives ``status="failed"``.
    """
    import nbformat
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    kernel_env = dict(os.environ if env is None else env)
    if fast:
        kernel_env["VGG_FAST"] = "1"
    # Figures must reach the saved notebook and its HTML: the inline backend, whatever the caller
    # uses (CI exports MPLBACKEND=Agg, under which a kernel displays no figure at all).
    kernel_env["MPLBACKEND"] = INLINE_BACKEND
    kernel_env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # no debugger warning in outputs
    with tempfile.TemporaryDirectory(prefix="vgg-course-offline-") as site_dir:
        if offline:
            Path(site_dir, "sitecustomize.py").write_text(_OFFLINE_SITECUSTOMIZE)
            kernel_env["PYTHONPATH"] = os.pathsep.join(p for p in (site_dir, kernel_env.get("PYTHONPATH")) if p)
        client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, kernel_manager_class=_kernel_manager_class(),
                                resources={"metadata": {"path": str(path.parent.resolve())}})  # fmt: skip
        log_path = Path(site_dir, "kernel-stderr.log")  # kept out of the terminal, shown on failure
        with open(log_path, "w") as stderr:
            start = time.perf_counter()
            peak, failure = run_sync(_execute)(client, kernel_env, stderr)
            seconds = time.perf_counter() - start
        run = NotebookRun(path, "ok" if failure is None else "failed", seconds, peak, fallback_lines(nb))
        if failure is not None:
            run.failed_cell, run.error = _describe_failure(nb, failure, log_path.read_text(errors="replace"))
    return run, nb


def write_html(nb, dest: Path) -> Path:
    """The executed notebook as one self-contained HTML page (nbconvert, figures embedded)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(body, encoding="utf-8")
    return dest


def write_index(runs: Sequence[NotebookRun], folder: Path, context: dict[str, str]) -> Path:
    """``index.html``: a table linking every page with its status, time, peak memory, fallbacks."""
    esc = html.escape
    rows = []
    for run in runs:
        name = (f'<a href="{esc(run.html.name)}">{esc(run.path.stem)}</a> (<a href="{esc(run.path.stem)}.ipynb">'
                "ipynb</a>)" if run.html else esc(run.path.stem))  # fmt: skip
        peak = f"{run.peak_mb:,.0f} MB" if run.peak_mb is not None else "n/a"
        status = run.status if run.failed_cell is None else f"failed at cell {run.failed_cell}"
        rows.append(f"<tr><td>{name}</td><td>{esc(status)}</td><td>{run.seconds:.1f} s</td><td>{peak}</td>"
                    f"<td>{'<br>'.join(esc(f) for f in run.fallbacks) or '-'}</td></tr>")  # fmt: skip
    about = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in context.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>VGG, read closely: the course</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.3em .8em;text-align:left;vertical-align:top}}
tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Very Deep Convolutional Networks, read closely</h1>
<p>Every notebook executed top to bottom by <code>vgg-course run</code>.</p><ul>{about}</ul>
<table><tr><th>notebook</th><th>status</th><th>time</th><th>peak memory</th><th>fallbacks</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


RECORD_COLUMNS = ("notebook", "size", "status", "seconds", "peak_mb", "device", "cpu_threads", "torch",
                  "python", "git_commit", "date", "network", "fallbacks", "command")  # fmt: skip


def run_context(fast: bool, offline: bool, command: str) -> dict[str, str]:
    """Where and how the notebooks ran (the record's provenance columns, the index page's list)."""
    import platform

    import torch

    from .runtime import get_device, is_fast

    device = get_device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpuinfo = Path("/proc/cpuinfo")
        models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
                  if line.startswith("model name")]  # fmt: skip
        name = f"{models[0] if models else platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return {
        "size": "fast" if fast or is_fast() else "default",
        "device": f"{device.type} ({name})",
        "cpu_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(short=True, mark_dirty=True),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "network": "offline (--offline)" if offline else "as this machine has it",
        "command": command,
    }


def append_record(csv_path: Path, run: NotebookRun, context: dict[str, str]) -> None:
    """Append one row to ``csv_path`` (header written when the file is new)."""
    row = dict(context, notebook=run.path.stem, status=run.status if run.failed_cell is None else f"failed at cell {run.failed_cell}",
               seconds=f"{run.seconds:.1f}", peak_mb="" if run.peak_mb is None else f"{run.peak_mb:.0f}",
               fallbacks=" | ".join(run.fallbacks))  # fmt: skip
    new = not csv_path.is_file() or csv_path.stat().st_size == 0
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RECORD_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_notebooks(
    paths: Sequence[Path],
    *,
    fast: bool = False,
    html_dir: str | os.PathLike | None = None,
    inplace: bool = False,
    record: str | os.PathLike | None = None,
    timeout: float = 1800,
    kernel: str = CURRENT_PYTHON,
    offline: bool = False,
    command: str = "vgg-course run",
    out: Callable[[str], None] = print,
) -> list[NotebookRun]:
    """Run ``paths`` in order (see :func:`run_notebook`), stopping at the first failure.

    ``html_dir``: each notebook as HTML (and the executed ``.ipynb``) plus ``index.html``. ``inplace``: save each notebook
    that ran to the end back to its file (never a half-run one). ``record``: append a CSV row
    per notebook. Prints one summary per notebook and the failing cell's error. Returns the runs
    (the last one failed if anything did).
    """
    import nbformat

    context = run_context(fast, offline, command)
    out(f"running {len(paths)} notebook(s), size {context['size']}, {context['device']}, torch {context['torch']}"
        + (", offline" if offline else ""))  # fmt: skip
    runs: list[NotebookRun] = []
    folder = Path(html_dir) if html_dir is not None else None
    for path in paths:
        out(f"{path.name} ...")
        run, nb = run_notebook(path, fast=fast, timeout=timeout, kernel=kernel, offline=offline)
        if folder is not None:  # the page, and the executed notebook beside it (to download, to grep)
            run.html = write_html(nb, folder / f"{path.stem}.html")
            nbformat.write(nb, folder / f"{path.stem}.ipynb")
        if inplace and run.status == "ok":
            nbformat.write(nb, path)
        if record is not None:
            append_record(Path(record), run, context)
        runs.append(run)
        out(run.summary())
        if run.status != "ok":
            out(f"{run.name} failed at {run.error}")
            skipped = [p.name for p in paths[len(runs):]]
            if skipped:
                out(f"not run: {', '.join(skipped)}")
            break
    if folder is not None:
        index = write_index(runs, folder, {k: context[k] for k in ("size", "device", "torch", "git_commit", "date", "network")})
        out(f"HTML: {index}")
    return runs
