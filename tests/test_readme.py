"""The front door cannot rot: the README's Python code blocks run as pasted, and the docs quick start shows them.

Each ```python block of README.md and of the docs quick start page runs in a fresh namespace, in a temporary working
directory, with the statistics cache in a temporary folder. A block preceded by the HTML comment
``<!-- not runnable -->`` is skipped (none is at present). The quick start page includes the README's blocks by
name (``--8<-- "README.md:<section>"``), so the test also checks that every section it names exists in the README.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.md"
SKIP_MARK = "<!-- not runnable -->"

_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)
_INCLUDE = re.compile(r'^--8<-- "README\.md:(?P<section>[\w-]+)"$', re.MULTILINE)
_SECTION = "<!-- --8<-- [{}:{}] -->"


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """``(id, code)`` of every ```python block of a markdown file that is not marked as not runnable."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        if match.group("before").strip() == SKIP_MARK:
            continue
        line = text.count("\n", 0, match.start("code")) + 1
        blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group("code")))
    return blocks


def readme_section(name: str) -> str:
    """The text between the README's snippet markers ``[start:name]`` and ``[end:name]``."""
    text = README.read_text(encoding="utf-8")
    start, end = _SECTION.format("start", name), _SECTION.format("end", name)
    assert text.count(start) == 1 and text.count(end) == 1, f"README.md has no single section {name!r}"
    return text[text.index(start) + len(start) : text.index(end)]


BLOCKS = python_blocks(README) + python_blocks(QUICKSTART)


def test_the_readme_has_python_blocks() -> None:
    # the two MONAI quick starts; a change that drops them should fail here, not pass with nothing to run
    assert len(python_blocks(README)) >= 2


def test_quickstart_includes_existing_readme_sections() -> None:
    sections = _INCLUDE.findall(QUICKSTART.read_text(encoding="utf-8"))
    assert {"monai-random", "monai-statistics", "nnunet"} <= set(sections)
    for name in sections:
        assert "```" in readme_section(name), f"README section {name!r} holds no code block"


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_python_block_runs(where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MONAI_MIME_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(code, where, "exec"), namespace)  # noqa: S102 -- the point of the test: the README's code runs
