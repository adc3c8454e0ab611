"""Every test that touches CUDA carries the ``cuda`` marker, so that ``python -m pytest -m cuda`` selects all of them.

A test counts as touching CUDA when its body moves something to the GPU (``.cuda()``, ``device="cuda"``,
``torch.device("cuda")`` outside a default argument), autocasts on ``"cuda"`` or asks ``torch.cuda`` about devices.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_cuda_mark(node: ast.expr) -> bool:
    """``pytest.mark.cuda`` (also inside a list of marks)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_cuda_mark(e) for e in node.elts)
    return isinstance(node, ast.Attribute) and node.attr == "cuda" and ast.unparse(node) == "pytest.mark.cuda"


def _touches_cuda(function: ast.FunctionDef) -> bool:
    defaults = {id(d) for n in ast.walk(function) if isinstance(n, ast.arguments) for d in n.defaults + n.kw_defaults}
    skipped: set[int] = set()
    for node in ast.walk(function):
        if id(node) in defaults:
            skipped |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(function):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Attribute) and ast.unparse(node).startswith("torch.cuda."):
            return True
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "cuda":
                return True
            if any(k.arg == "device" and ast.unparse(k.value).strip("'\"").startswith("cuda") for k in node.keywords):
                return True
            first = ast.unparse(node.args[0]).strip("'\"") if node.args else ""
            if first.startswith("cuda") and ast.unparse(node.func) in ("torch.device", "torch.autocast"):
                return True
    return False


def _unmarked_cuda_tests(source: str) -> list[str]:
    tree = ast.parse(source)
    module_marked = any(
        isinstance(n, ast.Assign)
        and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
        and _is_cuda_mark(n.value)
        for n in tree.body
    )
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            marked = module_marked or any(_is_cuda_mark(d) for d in node.decorator_list)
            if _touches_cuda(node) and not marked:
                found.append(node.name)
    return found


def test_the_detector_finds_an_unmarked_cuda_test() -> None:
    unmarked = (
        '@pytest.mark.skipif(not torch.cuda.is_available(), reason="")\ndef test_x():\n    torch.ones(1).cuda()\n'
    )
    assert _unmarked_cuda_tests(unmarked) == ["test_x"]
    assert _unmarked_cuda_tests("@pytest.mark.cuda\n" + unmarked) == []
    assert _unmarked_cuda_tests("pytestmark = pytest.mark.cuda\n" + unmarked) == []
    nnunet_signature = 'def test_y():\n    def f(device=torch.device("cuda")):\n        pass\n'
    assert _unmarked_cuda_tests(nnunet_signature) == []


def test_every_cuda_test_carries_the_cuda_marker() -> None:
    unmarked = {
        p.name: names for p in sorted(TESTS.glob("test_*.py")) if (names := _unmarked_cuda_tests(p.read_text()))
    }
    assert unmarked == {}
