"""Exercise checks the learner calls, and the instructors' worked solutions.

``check("01.1", params_C)`` prints ``correct: ...`` or ``not yet: <hint>`` (``verdict`` returns the
same as ``(ok, message)``); it never raises on a wrong answer, so a notebook with blank answers
still runs.
The reference is computed by the check from the library and is printed only once the answer is
right. Worked solutions live outside the notebooks, in the repository's ``solutions/`` folder (one
file per notebook, one ``# %% <id>`` block per exercise); :func:`show_solution` prints one. Used by
the exercises of every notebook, 01-07.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .exercise_checks import Exercise
from .exercise_checks_05_07 import REGISTRY  # every notebook's checks: 01-04 registered, then 05-07
from .runtime import REPO_ROOT

SOLUTIONS_DIR = REPO_ROOT / "solutions"
PLACEHOLDER_NOTE = "not answered yet: replace the ... in {names} with your {answer}, then run this cell again"


def _lookup(exercise_id: str) -> Exercise:
    if exercise_id not in REGISTRY:
        raise ValueError(f"unknown exercise {exercise_id!r}; the exercises with a check are: {', '.join(REGISTRY)}")
    return REGISTRY[exercise_id]


def _unanswered(value: Any) -> bool:
    """The learner's cell still holds the placeholder ``...`` (alone or inside a tuple/list)."""
    if value is Ellipsis:
        return True
    return isinstance(value, tuple | list) and any(_unanswered(v) for v in value)


def _bind(exercise: Exercise, answers: tuple, named: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    usage = (f"check({exercise.id!r}, {', '.join(exercise.answers)}"
             + "".join(f", {name}={name}" for name in exercise.context) + ")")
    if len(answers) > len(exercise.answers):
        raise TypeError(f"exercise {exercise.id} takes {len(exercise.answers)} answer(s); call it as {usage}")
    values = dict(zip(exercise.answers, answers, strict=False))
    unknown = sorted(set(named) - set(exercise.answers) - set(exercise.context))
    twice = sorted(set(named) & set(values))
    values |= {k: v for k, v in named.items() if k in exercise.answers}
    context = {k: v for k, v in named.items() if k in exercise.context}
    missing = [n for n in (*exercise.answers, *exercise.context) if n not in values and n not in context]
    if unknown or twice or missing:
        problem = (f"unknown {unknown}" if unknown else f"{twice} given twice" if twice else f"missing {missing}")
        raise TypeError(f"exercise {exercise.id}: {problem}; call it as {usage}")
    return values, context


def verdict(exercise_id: str, *answers: Any, **named: Any) -> tuple[bool, str]:
    """What :func:`check` prints, without printing it: ``(True, "correct: <why>")``,
    ``(False, "not yet: <hint>")`` or, while an answer is still ``...``, ``(False, "not answered
    yet: ...")``. A wrong answer, of any type, never raises; an unknown exercise id or a call with
    the wrong arguments does, naming the valid ones."""
    exercise = _lookup(exercise_id)
    values, context = _bind(exercise, answers, named)
    blank = [name for name, value in values.items() if _unanswered(value)]
    if blank:
        names = " and ".join([", ".join(blank[:-1]), blank[-1]] if len(blank) > 1 else blank)
        return False, PLACEHOLDER_NOTE.format(names=names, answer="answers" if len(blank) > 1 else "answer")
    try:
        ok, message = exercise.judge(**values, **context)
    except Exception as error:  # noqa: BLE001 - an answer of the wrong kind must not stop the notebook
        ok, message = False, (f"your answer could not be compared ({type(error).__name__}); "
                              "check its type: a number, a tuple or a tensor as the question asks")
    return bool(ok), ("correct: " if ok else "not yet: ") + message


def check(exercise_id: str, *answers: Any, **named: Any) -> None:
    """Check the answer(s) to exercise ``exercise_id`` (e.g. ``"01.1"``; :func:`exercises` lists
    them) and print ``correct: <why>``, ``not yet: <hint>`` (never the answer) or, while an answer
    is still the placeholder ``...``, ``not answered yet: ...``.

    Answers come positionally in the order the exercise names them (or by name); exercises about
    the notebook's own model or results also take those objects by keyword, as the notebook's
    check cell shows. Returns nothing, so that a notebook shows only the message (use
    :func:`verdict` for the True/False). A wrong answer never raises. Used by the exercises of
    every notebook, 01-07.
    """
    print(verdict(exercise_id, *answers, **named)[1])


def exercises(notebook: str | None = None) -> pd.DataFrame:
    """The exercises that have a check: ``id``, ``notebook``, ``question`` (a summary), ``answers``
    (the names ``check`` takes). ``notebook``: ``"01"`` or a file stem to keep one notebook's."""
    rows = [{"id": e.id, "notebook": e.notebook, "question": e.question, "answers": ", ".join(e.answers)}
            for e in REGISTRY.values()]
    table = pd.DataFrame(rows)
    if notebook is not None:
        table = table[(table["id"].str[:2] == notebook[:2]) | (table["notebook"] == notebook)]
        if table.empty:
            raise ValueError(f"no checked exercises for notebook {notebook!r}; "
                             f"valid: {sorted(set(e.notebook for e in REGISTRY.values()))}")
    return table.reset_index(drop=True)


def solution_source(exercise_id: str) -> str:
    """The worked solution of one exercise: its ``# %% <id>`` block of ``solutions/<notebook>.py``
    in the course repository. Raises FileNotFoundError, saying where to get them, when the
    solutions are not there (a pip install ships the package only)."""
    exercise = _lookup(exercise_id)
    path = SOLUTIONS_DIR / f"{exercise.notebook}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"no instructor solutions here ({path} does not exist): they are in the course repository's "
            "solutions/ folder, not in the pip package; clone https://github.com/vgg-course/vgg-close-reading")
    block: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("# %%"):
            if block is not None:
                break
            block = [] if line.split()[2:3] == [exercise_id] else None
        elif block is not None:
            block.append(line)
    if block is None:
        raise ValueError(f"{path.name} has no '# %% {exercise_id}' block")
    return "\n".join(block).strip() + "\n"


def show_solution(exercise_id: str) -> None:
    """Print the worked solution of one exercise (for instructors; see ``solutions/README.md``)."""
    print(solution_source(exercise_id), end="")
