"""Point the course at a fork: rewrite the repository URL in pyproject, README and every notebook.

    python -m vgg_utils.fork https://github.com/<you>/<repo>      (or: make fork-url URL=...)

The URL is declared once, as ``[project.urls] Repository`` in ``pyproject.toml``; the Colab badges
and each notebook's setup cell are derived from it, and ``tests/test_setup.py`` checks they agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .runtime import REPO_ROOT

_URL = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+$")


def repository_url(root: Path = REPO_ROOT) -> str:
    """The repository URL declared in ``pyproject.toml``."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^Repository\s*=\s*"([^"]+)"', text, flags=re.M)
    if not match:
        raise ValueError("pyproject.toml has no [project.urls] Repository entry")
    return match.group(1)


def retarget(new_url: str, root: Path = REPO_ROOT) -> list[Path]:
    """Replace the current repository URL (and its Colab form) by ``new_url``; return changed files."""
    new_url = new_url.rstrip("/").removesuffix(".git")
    if not _URL.match(new_url):
        raise ValueError(f"expected https://github.com/<owner>/<repo>; got {new_url!r}")
    old_url = repository_url(root)
    old_path, new_path = old_url.removeprefix("https://github.com/"), new_url.removeprefix(
        "https://github.com/"
    )
    changed = []
    for path in [root / "pyproject.toml", root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]:
        text = path.read_text(encoding="utf-8")
        new = text.replace(old_url, new_url).replace(f"github/{old_path}/", f"github/{new_path}/")
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m vgg_utils.fork https://github.com/<owner>/<repo>")
    for changed_path in retarget(sys.argv[1]):
        print(f"updated {changed_path.relative_to(REPO_ROOT)}")
