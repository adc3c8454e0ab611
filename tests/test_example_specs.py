"""Loss specs of the patch-training example (examples/patch_training/specs.py): parsing and building losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _patch_example import ALL_LOSSES, pt, tiny_config


# ============================================================================================ loss specs
def test_parse_loss_specs():
    specs = pt.parse_loss_specs("mime, dice ,mime:mode=dice:overlap=0.5,gdl:w_type=simple,mime:a=1/2/3:b=1/1/1")
    assert [s.name for s in specs] == ["mime", "dice", "mime", "gdl", "mime"]
    assert specs[2].text == "mime:mode=dice:overlap=0.5"
    assert specs[2].options == {"mode": "dice", "overlap": 0.5}
    assert specs[3].options == {"w_type": "simple"}
    assert specs[4].options == {"a": [1.0, 2.0, 3.0], "b": [1.0, 1.0, 1.0]}
    assert pt.LossSpec.parse("dice:include_background=false:batch=true:smooth_nr=0").options == {
        "include_background": False,
        "batch": True,
        "smooth_nr": 0,
    }
    assert [s.text for s in pt.parse_loss_specs(["dice,vnet", "ce"])] == ["dice", "vnet", "ce"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("focal", "unknown loss 'focal'"),
        ("dice,dice", "given twice"),
        ("mime:mode", "expected key=value"),
        ("mime:mode=a:mode=b", "given twice"),
        ("", "no loss"),
        ("1dice", "bad loss spec"),
    ],
)
def test_bad_loss_specs(text, match):
    with pytest.raises(pt.ExperimentError, match=match):
        pt.parse_loss_specs(text)


def test_build_losses_from_specs():
    from monai_mime import MimeLoss
    from monai_mime.stats import ClassStatistics

    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, size=(16, 16)) for _ in range(4)]
    stats = ClassStatistics.from_labels(labels, num_classes=4)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    y = torch.randint(0, 4, (2, 1, 16, 16))
    for text in ALL_LOSSES + [
        "gdl:w_type=simple",
        "dice:include_background=false",
        "mime:mode=dice:overlap=0.5",
        "mime_adaptive:mode=dice:overlap=0.5:momentum=0.9",
        "mime:include_background=false:patch=false",
        "mime:a=1/2/3/4:b=1/1/1/1",
    ]:
        loss = pt.build_loss(text, stats, patch_size=(8, 8))
        value = loss(x, y)
        assert value.ndim == 0 and torch.isfinite(value), text
        value.backward()
    adaptive = pt.build_loss("mime_adaptive:momentum=0.9", stats, (8, 8))
    assert isinstance(adaptive, MimeLoss) and type(adaptive).__name__ == "AdaptiveMimeLoss"
    nobg = pt.build_loss("mime:include_background=false", stats, (8, 8))
    assert isinstance(nobg, MimeLoss) and nobg.a.numel() == 3
    full = pt.build_loss("mime:patch=false", stats, (8, 8))
    patch = pt.build_loss("mime", stats, (8, 8))
    assert not torch.allclose(full.a, patch.a)  # rescaled to the patch
    for bad, match in [
        ("mime:mode=nope", "unknown weight mode"),
        ("dice:nonsense=1", "nonsense"),
        ("mime:mode=dice:gamma=2", "gamma"),
    ]:
        with pytest.raises(pt.ExperimentError, match=match):
            pt.build_loss(bad, stats, (8, 8))
    with pytest.raises(pt.ExperimentError, match="statistics"):
        pt.build_loss("mime", None, (8, 8))


def test_compound_ce_specs():
    """``X+ce`` for any registered X (not ce): statistics are needed when X needs them, options split between the
    compound and X, and the compound's Mime reports its a/b and keeps its state in the checkpoint."""
    from monai_mime import AdaptiveMimeLoss, MimeLoss, SoftDiceLoss
    from monai_mime.losses.compound import CompoundCELoss
    from monai_mime.stats import ClassStatistics

    rng = np.random.default_rng(0)
    stats = ClassStatistics.from_labels([rng.integers(0, 4, size=(16, 16)) for _ in range(4)], num_classes=4)
    specs = pt.parse_loss_specs("mime_adaptive+ce,mime+ce:mode=dice:overlap=0.5:lambda_ce=0.5,dice+ce")
    assert [s.name for s in specs] == ["mime_adaptive+ce", "mime+ce", "dice+ce"]
    adaptive, fixed, dice = (pt.build_loss(s, stats, (8, 8)) for s in specs)
    assert isinstance(adaptive, CompoundCELoss) and isinstance(adaptive.loss, AdaptiveMimeLoss)
    assert isinstance(fixed.loss, MimeLoss) and fixed.lambda_ce == 0.5
    # the Mime inside has the weights the plain spec gives
    torch.testing.assert_close(fixed.loss.a, pt.build_loss("mime:mode=dice:overlap=0.5", stats, (8, 8)).a)
    assert isinstance(dice.loss, SoftDiceLoss)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    y = torch.randint(0, 4, (2, 1, 16, 16))
    value = adaptive(x, y)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert "loss.running_union" in adaptive.state_dict()
    with pytest.raises(pt.ExperimentError, match="statistics"):
        pt.build_loss("mime_adaptive+ce", None, (8, 8))
    for bad in ("ce+ce", "nope+ce", "dice+dice"):
        with pytest.raises(pt.ExperimentError, match="unknown loss|bad loss spec"):
            pt.parse_loss_specs(bad)


@pytest.mark.slow
def test_compound_run_reports_mime_weights(tmp_path):
    res = pt.run_experiment(tiny_config(losses=["mime_adaptive+ce"], out=str(tmp_path), figure=False))
    entry = res["losses"]["mime_adaptive+ce"]
    assert len(entry["a"]) == 4 and entry["a"] != entry["a_initial"]
    state = torch.load(tmp_path / "checkpoints" / "mime_adaptive+ce.pt", weights_only=False)["loss_state"]
    from monai_mime import AdaptiveMimeLoss

    restored = AdaptiveMimeLoss([1.0] * 4, [1.0] * 4)
    restored.load_state_dict({key.removeprefix("loss."): value for key, value in state.items()})
    assert restored.weights_at(32 * 32)[0].double().tolist() == entry["a"]  # the checkpoint's averages give them
