"""Sampling, settings and in-process training runs of the patch-training example (examples/patch_training/)."""

from __future__ import annotations

import pytest
import torch
from _patch_example import finite_results, pt, tiny_config, train_patches


# ============================================================================================ sampling
def test_patch_sampler_shards_and_epochs():
    s0 = pt.PatchSampler(10, 7, num_replicas=2, rank=0, seed=3)
    s1 = pt.PatchSampler(10, 7, num_replicas=2, rank=1, seed=3)
    a, b = list(s0), list(s1)
    assert len(a) == len(b) == len(s0) == 7
    # the two shards are one common sequence, and each item appears once before any repeats
    merged = [v for pair in zip(a, b, strict=True) for v in pair]
    assert sorted(merged[:10]) == list(range(10))
    assert list(pt.PatchSampler(10, 7, num_replicas=2, rank=0, seed=3)) == a  # deterministic
    s0.set_epoch(1)
    assert list(s0) != a
    assert isinstance(s0, torch.utils.data.distributed.DistributedSampler)


def test_config_validation_and_cli_presets():
    with pytest.raises(pt.ExperimentError, match="divisible"):
        tiny_config(patch_size=(31, 31)).validate()
    with pytest.raises(pt.ExperimentError, match="epochs"):
        tiny_config(epochs=0).validate()
    args = train_patches.build_parser().parse_args(
        ["--quick", "--epochs", "3", "--patch-size", "32", "--losses", "dice,mime:mode=dice"]
    )
    cfg = train_patches.config_from_args(args)
    assert cfg.epochs == 3 and cfg.patch_size == (32, 32) and cfg.losses == ["dice", "mime:mode=dice"]
    assert cfg.synthetic_train == pt.ExperimentConfig.quick().synthetic_train
    cfg = train_patches.config_from_args(train_patches.build_parser().parse_args([]))
    assert cfg == pt.ExperimentConfig()


# ============================================================================================ in-process runs
@pytest.mark.slow
def test_run_experiment_synthetic_in_process(tmp_path):
    res = pt.run_experiment(tiny_config(out=str(tmp_path), losses=["mime", "ce", "mime_adaptive"]))
    finite_results(tmp_path, ["mime", "ce", "mime_adaptive"], classes=3)
    moving = res["losses"]["mime_adaptive"]
    assert "a_initial" in moving and moving["a"] != moving["a_initial"]  # the weights moved and are reported
    assert "a_initial" not in res["losses"]["mime"]
    points = moving["operating_point_per_epoch"]  # Eq. 2's running Ī, Ū after each epoch, in voxels of a patch
    assert [p["epoch"] for p in points] == list(range(1, tiny_config().epochs + 1))
    a, b, u, i = (
        torch.tensor(v, dtype=torch.float64)
        for v in (moving["a"], moving["b"], points[-1]["union"], points[-1]["intersection"])
    )
    i = torch.minimum(i, u / 2)  # weights_at's bound I ≤ min(G, P) ≤ U/2 (the balance start has I/U = 0.75 for bg)
    torch.testing.assert_close(a, 2 * (u - i) / u**2, rtol=1e-5, atol=0)  # the last weights are Eq. 2 at that point
    torch.testing.assert_close(b, 2 * i / u**2, rtol=1e-5, atol=0)
    assert "operating_point_per_epoch" not in res["losses"]["mime"]
    assert (tmp_path / "checkpoints" / "mime.pt").exists()
    e = res["losses"]["mime"]
    assert len(e["a"]) == 4 and all(0 < t < 1 for t in e["threshold"])
    assert len(e["per_case"]) == 3 and res["data"]["num_val_cases"] == 3
    ckpt = torch.load(tmp_path / "checkpoints" / "ce.pt", weights_only=False)
    model = pt.build_model(1, 4, tiny_config())
    model.load_state_dict(ckpt["model"])


@pytest.mark.slow
def test_same_seed_same_result_and_data_reuse():
    cfg = tiny_config(losses=["dice"], figure=False)
    data = pt.prepare_data(cfg)
    r1 = pt.run_experiment(cfg, data=data)
    r2 = pt.run_experiment(cfg, data=data)
    assert r1["losses"]["dice"]["loss_per_epoch"] == r2["losses"]["dice"]["loss_per_epoch"]
    assert r1["losses"]["dice"]["per_case"] == r2["losses"]["dice"]["per_case"]


@pytest.mark.slow
def test_intermediate_evaluations_equal_shorter_runs():
    cfg = tiny_config(losses=["mime"], figure=False, epochs=2)
    data = pt.prepare_data(cfg)
    with_eval = pt.run_experiment(cfg.replace(eval_epochs=(1,)), data=data)["losses"]["mime"]
    short = pt.run_experiment(cfg.replace(epochs=1), data=data)["losses"]["mime"]
    plain = pt.run_experiment(cfg, data=data)["losses"]["mime"]
    # constant learning rate and epoch-seeded sampling: epoch 1 of a long run is the short run
    assert with_eval["intermediate"]["1"]["per_class"] == short["per_class"]
    assert with_eval["intermediate"]["1"]["steps"] == short["steps"] == 3
    assert with_eval["loss_per_epoch"] == plain["loss_per_epoch"]
    assert with_eval["per_class"] == plain["per_class"]
    with pytest.raises(pt.ExperimentError, match="eval-epochs"):
        pt.run_experiment(cfg.replace(eval_epochs=(3,)), data=data)


def test_deep_supervision_trains_a_dynunet_under_monai_deep_supervision_loss(tmp_path):
    import copy

    from monai.networks.nets import DynUNet

    from monai_mime import get_loss

    cfg = tiny_config(out=str(tmp_path), losses=["mime_adaptive+ce"], channels=(4, 8, 16), deep_supervision=1)
    pt.run_experiment(cfg)
    finite_results(tmp_path, ["mime_adaptive+ce"], classes=3)
    model = pt.build_model(1, 4, cfg)
    assert isinstance(model, DynUNet) and model.deep_supervision
    model.load_state_dict(torch.load(tmp_path / "checkpoints" / "mime_adaptive+ce.pt", weights_only=False)["model"])
    # the objective is MONAI's weighted sum over the heads (1, then 1/2), every head at full size
    loss = get_loss("mime_adaptive+ce", a=[1.0, 2.0, 3.0, 4.0], b=[1.0] * 4, softmax=True, to_onehot_y=True)
    twin = copy.deepcopy(loss)
    x, y = torch.randn(2, 1, 32, 32), torch.randint(0, 4, (2, 1, 32, 32))
    stacked = model.train()(x)
    assert stacked.shape == (2, 2, 4, 32, 32)
    expected = twin(stacked[:, 0], y) + 0.5 * twin(stacked[:, 1], y)
    torch.testing.assert_close(pt.training_objective(loss, cfg)(stacked, y), expected)
    assert pt.build_model(1, 4, cfg.replace(deep_supervision=0)).__class__.__name__ == "UNet"
    with pytest.raises(pt.ExperimentError, match="deep-supervision must lie in \\[0, 1\\]"):
        cfg.replace(deep_supervision=2).validate()
    args = train_patches.build_parser().parse_args(["--deep-supervision"])
    assert train_patches.config_from_args(args).deep_supervision == 2
