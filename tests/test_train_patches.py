"""The patch-based loss comparison (examples/train_patches.py, examples/patch_training.py) and the bundle config."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import patch_training as pt  # noqa: E402
import train_patches  # noqa: E402

from monai_mime.synthetic import write_nnunet_raw  # noqa: E402

torch.set_num_threads(1)
ALL_LOSSES = ["mime", "dice", "vnet", "gdl", "ce"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
# a few iterations of a tiny model on tiny data: seconds per loss on a CPU
TINY = [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "2",
    "--patch-size",
    "32",
    "--channels",
    "4,8",
    "--num-train",
    "12",
    "--num-val",
    "3",
    "--threads",
    "1",
    "--device",
    "cpu",
]


def tiny_config(**changes) -> pt.ExperimentConfig:
    base = dict(
        epochs=1,
        steps_per_epoch=3,
        batch_size=2,
        patch_size=(32, 32),
        channels=(4, 8),
        synthetic_train=12,
        synthetic_val=3,
        synthetic_size=(48, 48),
        synthetic_rare_probability=0.5,
        device="cpu",
        threads=1,
        progress=False,
        out=None,
    )
    base.update(changes)
    return pt.ExperimentConfig(**base)


def _finite_results(path: Path, losses: list[str], classes: int) -> dict:
    res = json.loads((path / "results.json").read_text())
    assert list(res["losses"]) == losses
    for name, e in res["losses"].items():
        assert len(e["per_class"]) == classes, name
        for cls, v in e["per_class"].items():
            for key in ("dice_mean", "dice_std", "hd95_mean", "hd95_std"):
                assert isinstance(v[key], float) and math.isfinite(v[key]), (name, cls, key, v[key])
            assert 0.0 <= v["dice_mean"] <= 1.0
        assert math.isfinite(e["mean"]["dice"]) and math.isfinite(e["mean"]["hd95"])
        assert e["train_time_s"] > 0 and e["steps"] >= 1
        assert e["loss_per_epoch"] and all(math.isfinite(x) for x in e["loss_per_epoch"])
        assert e["loss_curve"] and all(math.isfinite(x[1]) for x in e["loss_curve"])
    md = (path / "results.md").read_text()
    for name in losses:
        assert f"| {name} |" in md
    assert "nan" not in md.lower()
    png = path / "results.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
def test_run_experiment_synthetic_in_process(tmp_path):
    res = pt.run_experiment(tiny_config(out=str(tmp_path), losses=["mime", "ce", "mime_adaptive"]))
    _finite_results(tmp_path, ["mime", "ce", "mime_adaptive"], classes=3)
    moving = res["losses"]["mime_adaptive"]
    assert "a_initial" in moving and moving["a"] != moving["a_initial"]  # the weights moved and are reported
    assert "a_initial" not in res["losses"]["mime"]
    assert (tmp_path / "checkpoints" / "mime.pt").exists()
    e = res["losses"]["mime"]
    assert len(e["a"]) == 4 and all(0 < t < 1 for t in e["threshold"])
    assert len(e["per_case"]) == 3 and res["data"]["num_val_cases"] == 3
    ckpt = torch.load(tmp_path / "checkpoints" / "ce.pt", weights_only=False)
    model = pt.build_model(1, 4, tiny_config())
    model.load_state_dict(ckpt["model"])


def test_same_seed_same_result_and_data_reuse():
    cfg = tiny_config(losses=["dice"], figure=False)
    data = pt.prepare_data(cfg)
    r1 = pt.run_experiment(cfg, data=data)
    r2 = pt.run_experiment(cfg, data=data)
    assert r1["losses"]["dice"]["loss_per_epoch"] == r2["losses"]["dice"]["loss_per_epoch"]
    assert r1["losses"]["dice"]["per_case"] == r2["losses"]["dice"]["per_case"]


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


def test_nnunet_raw_3d_volumes(tmp_path):
    folder = write_nnunet_raw(
        tmp_path / "Dataset903_S3D",
        num_cases=4,
        seed=1,
        spatial_size=(40, 36, 6),
        spacing=(1.5, 1.5, 5.0),
        num_val=1,
        rare_probability=1.0,
        size_jitter=2,
    )
    cfg = tiny_config(data=str(folder), out=str(tmp_path / "out"), losses=["mime", "dice"])
    data = pt.prepare_data(cfg)
    assert data.slice_axis == 2 and data.spacing_unit == "mm" and data.class_names[3] == "rare"
    assert data.num_train_cases == 3 and len(data.val_cases) == 1
    assert data.val_cases[0].spacing == (1.5, 1.5, 5.0)
    assert len(data.train_items) >= 3 * 4  # 4-8 slices per training volume
    assert all(it["image"].ndim == 3 and it["label"].ndim == 3 for it in data.train_items)
    res = pt.run_experiment(cfg, data=data)
    _finite_results(tmp_path / "out", ["mime", "dice"], classes=3)
    # a missed class costs the diagonal of the whole volume in mm
    shape = data.val_cases[0].label.shape
    diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, (1.5, 1.5, 5.0), strict=True)))
    hd = [c["hd95"] for c in res["losses"]["dice"]["per_case"]][0]
    assert all(0.0 <= h <= diag + 1e-6 for h in hd)


def test_nnunet_raw_2d_without_splits(tmp_path):
    folder = write_nnunet_raw(tmp_path / "Dataset904_S2D", num_cases=5, seed=0, spatial_size=(48, 48))
    (folder / "splits.json").unlink()
    cfg = tiny_config(data=str(folder), losses=["ce"], val_fraction=0.4, figure=False)
    data = pt.prepare_data(cfg)
    assert len(data.val_cases) == 2 and data.num_train_cases == 3 and len(data.train_items) == 3
    assert data.slice_axis == 2 and data.val_cases[0].label.shape == (48, 48, 1)
    res = pt.run_experiment(cfg, data=data)
    assert math.isfinite(res["losses"]["ce"]["mean"]["dice"])
    # one-slice volumes are scored as 2D images: a missed class costs the 2D diagonal
    assert max(max(c["hd95"]) for c in res["losses"]["ce"]["per_case"]) <= math.hypot(48, 48) + 1e-6


# ============================================================================================ bad input
def _dataset_with_bad_labels(tmp_path: Path) -> Path:
    folder = write_nnunet_raw(
        tmp_path / "Dataset905_Bad", num_cases=3, seed=0, spatial_size=(32, 32), rare_probability=1.0
    )
    meta = json.loads((folder / "dataset.json").read_text())
    del meta["labels"]["rare"]  # the label files still contain 3
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "does not exist"),
        ("labels", "not declared in dataset.json"),
        ("loss", "unknown loss 'nope'"),
        ("option", "unknown weight mode"),
        ("numtraining", "numTraining"),
        ("nolabels", "labelsTr does not exist"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, case, match):
    args = TINY + ["--out", str(tmp_path / "out")]
    if case == "missing":
        args += ["--data", str(tmp_path / "nowhere")]
    elif case == "labels":
        args += ["--data", str(_dataset_with_bad_labels(tmp_path))]
    elif case == "loss":
        args += ["--losses", "dice,nope"]
    elif case == "option":
        args += ["--losses", "mime:mode=nope"]
    elif case == "numtraining":
        folder = write_nnunet_raw(tmp_path / "D", num_cases=3, spatial_size=(32, 32))
        meta = json.loads((folder / "dataset.json").read_text())
        meta["numTraining"] = 4
        (folder / "dataset.json").write_text(json.dumps(meta))
        args += ["--data", str(folder)]
    elif case == "nolabels":
        (tmp_path / "D" / "imagesTr").mkdir(parents=True)
        (tmp_path / "D" / "dataset.json").write_text(
            json.dumps({"labels": {"background": 0, "a": 1}, "channel_names": {"0": "x"}, "file_ending": ".nii.gz"})
        )
        args += ["--data", str(tmp_path / "D")]
    rc = train_patches.main(args)
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("train_patches.py: error: ") and match in lines[0]
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_flag_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        train_patches.main(["--epochs", "many"])
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--epochs" in lines[0]


@pytest.mark.slow
def test_cli_bad_input_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "train_patches.py"),
            "--data",
            str(_dataset_with_bad_labels(tmp_path)),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not declared in dataset.json" in lines[0], r.stderr


# ============================================================================================ end to end
@pytest.mark.slow
def test_cli_end_to_end_all_losses(tmp_path):
    out = tmp_path / "res"
    r = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "train_patches.py"),
            *TINY,
            "--out",
            str(out),
            "--losses",
            ",".join(ALL_LOSSES),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _finite_results(out, ALL_LOSSES, classes=3)
    for name in ALL_LOSSES:
        assert (out / "checkpoints" / f"{name}.pt").exists()
    assert "results.md" in r.stdout


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            str(EXAMPLES / "train_patches.py"),
            *TINY,
            "--out",
            str(out),
            "--losses",
            "mime,dice",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = _finite_results(out, ["mime", "dice"], classes=3)
    assert res["environment"]["world_size"] == 2
    # every held-out case evaluated once, gathered from both processes
    assert [c["case_id"] for c in res["losses"]["dice"]["per_case"]] == [
        "synthetic_012",
        "synthetic_013",
        "synthetic_014",
    ]
    assert r.stdout.count("wrote ") == 1  # only rank 0 writes


# ============================================================================================ bundle
def test_bundle_config_instantiates_mime():
    from monai.bundle import ConfigParser

    from monai_mime import MimeLoss

    parser = ConfigParser()
    parser.read_config(str(EXAMPLES / "bundle" / "configs" / "train.json"))
    parser["data"] = "$monai_mime.synthetic.make_dataset(6, seed=0, rare_probability=1.0)"
    parser["device"] = "$torch.device('cpu')"
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, MimeLoss) and loss.a.numel() == 4
    fixed = parser.get_parsed_content("loss_fixed_weights")
    assert isinstance(fixed, MimeLoss)
    net = parser.get_parsed_content("network")
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    value = loss(net(batch["image"]), batch["label"])
    assert torch.isfinite(value)
    value.backward()
