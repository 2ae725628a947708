"""docs/glossary.md, the bilingual (English / 中文) glossary: complete rows, no duplicates, and every
term really is in the notebooks it names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]  # this test reads files only
GLOSSARY = REPO_ROOT / "docs" / "glossary.md"
HEADER = ["English", "中文", "meaning", "notebooks"]
HAN = re.compile(r"[\u4e00-\u9fff]")


def parse(text: str) -> list[dict[str, str]]:
    """The glossary's table rows as dicts keyed by HEADER (the header and its rule left out)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if not lines:
        raise ValueError("no table in the glossary")
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    if header != HEADER:
        raise ValueError(f"the table's columns must be {HEADER}; got {header}")
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != len(HEADER):
            raise ValueError(f"row has {len(cells)} cells, not {len(HEADER)}: {line}")
        rows.append(dict(zip(HEADER, cells, strict=True)))
    return rows


def variants(english: str) -> list[str]:
    return [v.strip() for v in english.split(" / ") if v.strip()]


def notebook_texts(folder: Path = REPO_ROOT / "notebooks") -> dict[str, str]:
    """Notebook number ("01") -> its markdown and code, lower-cased."""
    texts = {}
    for path in sorted(folder.glob("0*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts[path.name[:2]] = "\n".join("".join(cell["source"]) for cell in cells).lower()
    return texts


def problems(rows: list[dict[str, str]], texts: dict[str, str]) -> list[str]:
    found = []
    seen: dict[str, str] = {}
    for row in rows:
        name = row["English"] or "<empty>"
        for column in HEADER:
            if not row[column]:
                found.append(f"{name}: the {column} column is empty")
        if row["中文"] and not HAN.search(row["中文"]):
            found.append(f"{name}: the 中文 column has no Chinese: {row['中文']!r}")
        for term in variants(row["English"]):
            if term.lower() in seen:
                found.append(f"{term!r} appears twice (rows {seen[term.lower()]!r} and {name!r})")
            seen[term.lower()] = name
        numbers = [n.strip() for n in row["notebooks"].split(",") if n.strip()]
        for number in numbers:
            if number not in texts:
                found.append(f"{name}: no notebook {number!r} (notebooks: {', '.join(texts)})")
            elif not any(term.lower() in texts[number] for term in variants(row["English"])):
                found.append(f"{name}: notebook {number} never mentions {' or '.join(map(repr, variants(row['English'])))}")
    return found


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return parse(GLOSSARY.read_text(encoding="utf-8"))


def test_glossary_rows_are_complete_unique_and_taught_where_they_say(rows) -> None:
    assert len(rows) >= 40, f"only {len(rows)} terms"
    texts = notebook_texts()
    assert len(texts) == 7, sorted(texts)
    found = problems(rows, texts)
    assert not found, "\n".join(found)
    # Every notebook teaches some of the terms.
    taught = {n.strip() for row in rows for n in row["notebooks"].split(",")}
    assert taught == set(texts), f"notebooks without a glossary term: {sorted(set(texts) - taught)}"


def test_glossary_has_the_terms_the_course_was_asked_for(rows) -> None:
    chinese = " ".join(row["中文"] for row in rows)
    for term in ("感受野", "有效感受野", "迁移学习", "全卷积", "数据增强", "尺度抖动", "微调", "冻结", "密集评估",
                 "多裁剪", "显著图", "类激活图", "遮挡", "参数量", "乘加运算", "批归一化", "局部响应归一化",
                 "池化", "全连接层"):  # fmt: skip
        assert term in chinese, f"{term} is missing from the glossary"


def test_the_readme_links_the_glossary() -> None:
    assert "(docs/glossary.md)" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_the_check_catches_planted_mistakes(rows) -> None:
    texts = notebook_texts()
    assert not problems(rows, texts)
    receptive = next(row for row in rows if row["English"] == "receptive field")
    empty = {**receptive, "中文": ""}
    english_only = {**receptive, "中文": "receptive field"}
    wrong_notebook = {**receptive, "English": "saliency map", "notebooks": "02"}
    missing = {**receptive, "notebooks": "09"}
    assert problems([empty], texts) == ["receptive field: the 中文 column is empty"]
    assert problems([english_only], texts) == ["receptive field: the 中文 column has no Chinese: 'receptive field'"]
    assert problems([receptive, receptive], texts) == ["'receptive field' appears twice (rows 'receptive field' and 'receptive field')"]
    assert problems([wrong_notebook], texts) == ["saliency map: notebook 02 never mentions 'saliency map'"]
    assert problems([missing], texts)[0].startswith("receptive field: no notebook '09'")
    with pytest.raises(ValueError, match="columns"):
        parse("| English | Chinese | meaning | notebooks |\n|---|---|---|---|\n")
    with pytest.raises(ValueError, match="3 cells"):
        parse("| English | 中文 | meaning | notebooks |\n|---|---|---|---|\n| a | 感受野 | b |\n")
