"""Shared test settings: few threads (CI machines have two cores), deterministic seeds, the ``cuda`` marker.

Tests marked ``@pytest.mark.cuda`` need a CUDA GPU and are skipped without one; on a GPU machine
``python -m pytest -m cuda`` runs all of them.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
