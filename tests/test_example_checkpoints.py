"""Checkpoints of the patch-training example carry the loss's state: AdaptiveMimeLoss's running averages after
training, so a loss rebuilt from the spec and loaded from the checkpoint continues with the weights it had."""

from __future__ import annotations

import pytest
import torch
from _patch_example import pt, tiny_config


@pytest.mark.slow
def test_checkpoint_holds_the_trained_loss_state(tmp_path):
    config = tiny_config(losses=["mime_adaptive", "dice"], out=str(tmp_path), figure=False)
    data = pt.prepare_data(config)
    results = pt.run_experiment(config, data=data)
    ckpt = torch.load(tmp_path / "checkpoints" / "mime_adaptive.pt", weights_only=False)
    state = ckpt["loss_state"]

    # the same training again, in process: the checkpoint holds this loss's averages after its last step
    spec = pt.parse_loss_specs("mime_adaptive")[0]
    model, loss_fn, _ = pt.train_model(spec, data, config)
    assert set(state) == set(loss_fn.state_dict())
    for key in ("running_intersection", "running_union", "initial_a", "initial_b"):
        torch.testing.assert_close(state[key], loss_fn.state_dict()[key], rtol=0, atol=0, msg=key)
    # ... which are not the starting ones, and are the a/b reported in results.json
    fresh = pt.build_loss(spec, data.statistics(), config.patch_size)
    assert not torch.equal(state["running_union"], fresh.running_union)
    entry = results["losses"]["mime_adaptive"]
    assert loss_fn.a.double().tolist() == entry["a"] and loss_fn.b.double().tolist() == entry["b"]

    # a loss rebuilt from the spec resumes from the checkpoint with the trained weights
    fresh.load_state_dict(state)
    assert torch.equal(fresh.running_union, loss_fn.running_union)
    assert torch.equal(fresh.weights_at(32 * 32)[0], loss_fn.weights_at(32 * 32)[0])
    model_back = pt.build_model(data.in_channels, data.num_classes, config)
    model_back.load_state_dict(ckpt["model"])
    assert ckpt["loss"] == "mime_adaptive"

    # a loss without state saves an empty state
    assert torch.load(tmp_path / "checkpoints" / "dice.pt", weights_only=False)["loss_state"] == {}
