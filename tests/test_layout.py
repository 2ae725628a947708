"""Where things live in vgg_utils (README, "The `vgg_utils` package"): the rule, checked.

1. No import cycles among vgg_utils modules. Imports inside functions count: a lazy import
   still makes one module depend on the other, and hiding a cycle in a function only moves the
   failure from import time to the moment a learner calls it. (A module importing the package
   root, ``from vgg_utils import x`` or ``from . import x``, depends on ``__init__``, which
   imports everything: that is a cycle too. A submodule's implicit import of its parent package
   is not an edge.)
2. No module over ``MAX_LINES`` lines unless ``LONG_MODULES`` below gives the reason.
3. Figures live in ``<concept>_plots.py``: every top-level ``plot_*`` function is defined in a
   ``*_plots`` module, and only those import matplotlib (at any level), unless ``MATPLOTLIB_ELSEWHERE``
   gives the reason.
4. The flat public API: ``vgg_utils.__all__`` names only what the package has, every public name
   ``__init__`` imports is in ``__all__``, every ``plot_*`` is exported, and the names this layout
   moved to new modules (``MOVED``) still import from ``vgg_utils``.

Each check is a function of the source files, so ``test_the_checks_catch_planted_violations``
plants one violation of each kind in a copy of the package and shows that it is reported.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import vgg_utils

PACKAGE = Path(vgg_utils.__file__).resolve().parent

MAX_LINES = 400

#: Modules allowed over MAX_LINES, each with the reason (path relative to the package).
LONG_MODULES: dict[str, str] = {
    "__init__.py": "the flat public API: one import line and one __all__ line per public name, nothing else",
}

#: Modules other than *_plots that may import matplotlib, each with the reason.
MATPLOTLIB_ELSEWHERE: dict[str, str] = {}

#: Names whose home moved when the package got its layout rule (name -> module now holding it).
#: Each must still import from vgg_utils (notebooks use the flat API) and live where it says.
MOVED: dict[str, str] = {
    "plot_history": "training_plots",
    "plot_confusion_matrix": "training_plots",
    "CheckpointError": "training_checkpoints",
    "load_checkpoint": "training_checkpoints",
    "linearise": "receptive_measured",
    "EmpiricalRF": "receptive_measured",
    "empirical_receptive_field": "receptive_measured",
    "EffectiveRF": "receptive_measured",
    "effective_receptive_fields": "receptive_measured",
    "plot_rf_by_layer": "receptive_plots",
    "plot_erf_maps": "receptive_plots",
    "ImageTensors": "image_tensors",
    "to_float": "image_tensors",
    "plot_experiment": "ablations_plots",
    "plot_score_maps": "dense_plots",
    "plot_transferability": "transfer_plots",
    "plot_image_grid": "augment_plots",
    "plot_ilsvrc": "architecture_plots",
    "plot_vgg_diagram": "architecture_plots",
    "per_class_split": "transfer_data",
}


# --- reading the package -------------------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    """``vgg_utils.training`` for training.py, ``vgg_utils.course_models`` for its __init__.py."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([root.name, *parts])


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def _imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules one import statement names (at any nesting level)."""
    top = here.split(".")[0]
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".") if is_package else here.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        # `from pkg import sub` names the submodule when there is one, else the package itself.
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
    else:
        return set()
    found = set()
    for name in names:
        while name and name not in known:  # `import vgg_utils.x.y` -> the deepest known module
            name = name.rpartition(".")[0]
        if name and name.split(".")[0] == top:
            found.add(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, including imports inside functions."""
    mods = modules(root)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(tree):
            deps |= _imported(node, name, is_package, known)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def cycle_problems(root: Path) -> list[str]:
    graph = import_graph(root)
    problems = []
    for component in cycles(graph):
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
        problems.append("import cycle among " + ", ".join(component) + ": " + "; ".join(edges))
    return problems


def long_module_problems(root: Path, allowed: dict[str, str] = LONG_MODULES) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in allowed:
            problems.append(
                f"{rel} has {n} lines (> {MAX_LINES}): split it by concept, or add it to "
                "LONG_MODULES in tests/test_layout.py with the reason"
            )
    return problems


def figure_problems(root: Path, allowed: dict[str, str] = MATPLOTLIB_ELSEWHERE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        is_plots = path.stem.endswith("_plots")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("plot_") and not is_plots:
                problems.append(f"{rel} defines {node.name}: figures live in a <concept>_plots.py module")
        if is_plots or rel in allowed:
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == "matplotlib" or n.startswith("matplotlib.") for n in names):
                problems.append(
                    f"{rel}:{node.lineno} imports matplotlib: only <concept>_plots.py modules do "
                    "(or list the module in MATPLOTLIB_ELSEWHERE with the reason)"
                )
    return problems


def public_plot_functions(root: Path) -> set[str]:
    names = set()
    for path in root.rglob("*_plots.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("plot_")}
    return names


def init_imports(root: Path) -> set[str]:
    """The public names ``__init__.py`` imports from its submodules."""
    tree = ast.parse((root / "__init__.py").read_text(encoding="utf-8"))
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
        if not (alias.asname or alias.name).startswith("_")
    }


# --- the rule on the package as it is ------------------------------------------------------------


def test_no_import_cycles() -> None:
    graph = import_graph(PACKAGE)
    assert "vgg_utils.training" in graph and "vgg_utils.course_models.build" in graph, sorted(graph)
    assert "vgg_utils.image_tensors" in graph["vgg_utils.data"]  # the edges are really read
    assert "vgg_utils.course_models" in graph["vgg_utils.transfer"]  # ... also inside functions
    problems = cycle_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_no_module_is_too_long_without_a_reason() -> None:
    problems = long_module_problems(PACKAGE)
    assert not problems, "\n".join(problems)
    for rel, reason in LONG_MODULES.items():
        assert (PACKAGE / rel).is_file(), f"LONG_MODULES names {rel}, which no longer exists"
        assert len(reason) > 20, f"LONG_MODULES[{rel!r}] needs a reason"


def test_figures_live_in_plots_modules_and_only_they_import_matplotlib() -> None:
    problems = figure_problems(PACKAGE)
    assert not problems, "\n".join(problems)
    assert public_plot_functions(PACKAGE) >= {"plot_history", "plot_erf_maps", "plot_ilsvrc"}


def test_the_flat_public_api_exports_every_public_name() -> None:
    exported = vgg_utils.__all__
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    missing = [name for name in exported if not hasattr(vgg_utils, name)]
    assert not missing, f"__all__ names what vgg_utils lacks: {missing}"
    unexported = sorted(init_imports(PACKAGE) - set(exported))
    assert not unexported, f"__init__ imports these public names but __all__ leaves them out: {unexported}"
    plots = sorted(public_plot_functions(PACKAGE) - set(exported))
    assert not plots, f"figures missing from vgg_utils.__all__: {plots}"
    for name, home in MOVED.items():
        assert name in exported, f"{name} (moved to {home}) must stay in vgg_utils.__all__"
        assert getattr(vgg_utils, name).__module__ == f"vgg_utils.{home}", name


# --- each check fails on a planted violation -----------------------------------------------------


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "vgg_utils"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def _new(check, copy: Path, plant) -> list[str]:
    """The problems ``check`` reports after ``plant()`` that it did not report before (so a
    planted test shows what the check catches, whatever state the rest of the package is in)."""
    before = check(copy)
    plant()
    return [p for p in check(copy) if p not in before]


def test_a_planted_cycle_is_found_even_inside_a_function(package_copy: Path) -> None:
    # The old data <-> shapes cycle: shapes imports ImageTensors from data, data.default_dataset
    # imports ShapesDataset lazily.
    shapes = package_copy / "shapes.py"
    problems = _new(cycle_problems, package_copy, lambda: _append(shapes, "\n\ndef _planted():\n    from .data import load_cifar10\n"))
    assert len(problems) == 1 and "vgg_utils.data, vgg_utils.shapes" in problems[0], problems
    assert "vgg_utils.shapes -> vgg_utils.data" in problems[0]


@pytest.mark.parametrize(
    "where, line",
    [
        ("runtime.py", "from . import training\n"),  # runtime -> training -> runtime
        ("models.py", "from vgg_utils import build_vgg\n"),  # through the package root
        ("course_models/__init__.py", "from ..transfer import freeze\n"),  # transfer -> course_models
    ],
)
def test_planted_cycles_of_every_import_form_are_found(package_copy: Path, where: str, line: str) -> None:
    planted = _new(cycle_problems, package_copy, lambda: _append(package_copy / where, "\n\ndef _planted():\n    " + line))
    assert planted, f"{line.strip()} in {where} makes a cycle"


def test_a_planted_long_module_is_found(package_copy: Path) -> None:
    path = package_copy / "latency.py"
    plant = lambda: _append(path, "\n" * (MAX_LINES + 1 - len(path.read_text().splitlines())))  # noqa: E731
    problems = _new(long_module_problems, package_copy, plant)
    assert len(problems) == 1 and problems[0].startswith("latency.py has 401 lines"), problems
    assert not any(p.startswith("latency.py") for p in long_module_problems(package_copy, {**LONG_MODULES, "latency.py": "planted"}))


def test_planted_figures_outside_a_plots_module_are_found(package_copy: Path) -> None:
    def plant() -> None:
        _append(package_copy / "training.py", "\n\ndef plot_planted():\n    import matplotlib.pyplot as plt\n")
        _append(package_copy / "zoo.py", "\nfrom matplotlib.figure import Figure  # noqa\n")

    problems = _new(figure_problems, package_copy, plant)
    assert any("training.py defines plot_planted" in p for p in problems), problems
    assert any(p.startswith("training.py:") and "imports matplotlib" in p for p in problems), problems
    assert any(p.startswith("zoo.py:") for p in problems), problems
    assert len(problems) == 3, problems


def test_a_planted_unexported_name_is_found(package_copy: Path) -> None:
    init = package_copy / "__init__.py"
    before = init_imports(package_copy) - set(_all(init))
    text = init.read_text()
    assert '    "plot_history",\n' in text
    init.write_text(text.replace('    "plot_history",\n', ""))
    assert sorted(init_imports(package_copy) - set(_all(init)) - before) == ["plot_history"]


def _all(init: Path) -> list[str]:
    tree = ast.parse(init.read_text())
    return next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__"
    )  # fmt: skip
