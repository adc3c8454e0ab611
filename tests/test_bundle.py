"""The MONAI bundle of examples/bundle: its config builds AdaptiveMimeLoss, and it runs as shipped through
``python -m monai.bundle run`` (the README's command), saving the network and the loss's running state."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import torch
from _adaptive_reference import Eq2Reference
from _patch_example import ENV, EXAMPLES

CONFIG = EXAMPLES / "bundle" / "configs" / "train.json"
META = EXAMPLES / "bundle" / "configs" / "metadata.json"


def test_bundle_config_instantiates_adaptive_mime():
    from monai.bundle import ConfigParser

    from monai_mime import AdaptiveMimeLoss, MimeLoss

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser["num_images"] = 6
    parser["device"] = "$torch.device('cpu')"
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, AdaptiveMimeLoss) and loss.a.numel() == 4
    fixed = parser.get_parsed_content("loss_fixed_weights")
    assert isinstance(fixed, MimeLoss) and not isinstance(fixed, AdaptiveMimeLoss)
    net = parser.get_parsed_content("network")
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    assert batch["image"].shape == (6, 1, 64, 64)  # patches of the configured size
    # plain tensors as SupervisedTrainer passes them (batched MetaTensors trip AdaptiveMimeLoss.observe's sum(0))
    image, label = batch["image"].as_tensor(), batch["label"].as_tensor()
    logits = net(image)
    value = loss(logits, label)
    assert torch.isfinite(value)
    value.backward()
    # the training call moved the weights away from those of a freshly built loss, to Eq. 2 at the updated averages
    fresh = parser.get_parsed_content("loss", lazy=False)
    voxels = 64 * 64
    reference = Eq2Reference(fresh.a, fresh.b, voxels, momentum=fresh.momentum)  # the starting a/b, at the patch
    start_a, _ = fresh.weights_at(voxels)
    reference.observe(torch.softmax(logits, 1), label, include_background=fresh.include_background)
    a, b = loss.weights_at(voxels)
    assert not torch.allclose(a, start_a, rtol=1e-3)
    torch.testing.assert_close((a, b), reference.weights_at(voxels), rtol=1e-5, atol=0, check_dtype=False)


def _floats(line: str, key: str) -> list[float]:
    """The list printed after ``key`` on ``line`` (e.g. ``a = [0.1, 0.2]``)."""
    text = line.split(f"{key} = ", 1)[1]
    return [float(v) for v in ast.literal_eval(text[: text.index("]") + 1])]


@pytest.mark.slow
def test_bundle_runs_through_monai_bundle(tmp_path):
    out = tmp_path / "models"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIG), "--meta_file", str(META)]
    cmd += ["--max_epochs", "1", "--num_images", "8", "--output_dir", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    start = next(ln for ln in r.stdout.splitlines() if ln.startswith("Mime weights at the start"))
    final = next(ln for ln in r.stdout.splitlines() if ln.startswith("final training loss"))
    ckpt = torch.load(out / "model_final.pt", weights_only=True)
    assert set(ckpt) == {"network", "loss"}
    state = ckpt["loss"]
    for key in ("initial_a", "initial_b", "running_intersection", "running_union", "reference_voxels"):
        assert key in state, key
    from monai_mime import AdaptiveMimeLoss

    restored = AdaptiveMimeLoss([1.0] * 4, [1.0] * 4)
    restored.load_state_dict(state)  # the weights the saved running averages give at the training size
    # the saved weights are the loss's after training (printed by the bundle), and training moved them
    torch.testing.assert_close(
        restored.weights_at(64 * 64)[0].double(), torch.tensor(_floats(final, "a"), dtype=torch.float64)
    )
    torch.testing.assert_close(
        restored.weights_at(64 * 64)[1].double(), torch.tensor(_floats(final, "b"), dtype=torch.float64)
    )
    assert _floats(final, "a") != _floats(start, "a")
    assert float(state["reference_voxels"]) == 64 * 64
