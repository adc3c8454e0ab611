"""One vocabulary for every name: each registered loss takes the shared arguments, ``ce`` included."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

from monai_mime import get_loss, list_losses

K = 3
MIME_WEIGHTS = {"a": [6.0, 9.0], "b": [0.3, 0.2]}  # without the background


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, K, 8, 8, generator=g), torch.randint(0, K, (2, 1, 8, 8), generator=g)


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize("compound", [False, True])
def test_every_name_takes_softmax_to_onehot_y_and_include_background(name: str, compound: bool) -> None:
    if compound and name == "ce":
        pytest.skip("'ce' has no '+ce' compound")
    extra: dict[str, Any] = dict(MIME_WEIGHTS) if name.startswith("mime") else {}
    loss = get_loss(name + "+ce" * compound, softmax=True, to_onehot_y=True, include_background=False, **extra)
    logits, labels = _data()
    x = logits.clone().requires_grad_()
    value = loss(x, labels)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and x.grad is not None and x.grad.abs().sum() > 0


def test_ce_takes_one_hot_targets_with_to_onehot_y_false() -> None:
    logits, labels = _data(seed=1)
    one_hot = F.one_hot(labels[:, 0], K).movedim(-1, 1).float()
    expected = F.cross_entropy(logits, labels[:, 0])
    torch.testing.assert_close(get_loss("ce", softmax=True, to_onehot_y=False)(logits, one_hot), expected)
    torch.testing.assert_close(get_loss("ce", softmax=True, to_onehot_y=True)(logits, labels), expected)


def test_ce_checks_the_shared_arguments() -> None:
    logits, labels = _data(seed=2)
    with pytest.raises(ValueError, match="softmax=False"):
        get_loss("ce", softmax=False)
    with pytest.raises(TypeError, match="include_background must be a bool"):
        get_loss("ce", include_background="no")
    with pytest.raises(ValueError, match="expected class probabilities"):
        get_loss("ce", to_onehot_y=False)(logits, labels)
    with pytest.raises(ValueError, match="expected a label map"):
        get_loss("ce")(logits, F.one_hot(labels[:, 0], K).movedim(-1, 1).float())
