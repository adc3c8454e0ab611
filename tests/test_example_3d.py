"""3D patch training in the example: a MONAI 3D UNet on 3D patches of volumes (built-in data or nnU-Net raw),
3D sliding-window evaluation, the same report; ``--quick --spatial-dims 3`` as a CPU smoke run."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from _patch_example import ENV, EXAMPLES, finite_results, pt, tiny_config, train_patches

from monai_mime.synthetic import write_nnunet_raw


def tiny_3d(**changes):
    base = dict(spatial_dims=3, patch_size=(16, 16, 16), synthetic_size=(24, 24, 24), sw_batch_size=4)
    return tiny_config(**{**base, **changes})


@pytest.mark.slow
def test_3d_synthetic_in_process(tmp_path):
    config = tiny_3d(out=str(tmp_path), losses=["mime_adaptive", "dice"])
    data = pt.prepare_data(config)
    assert data.slice_axis is None and data.view_axis == 2
    assert all(it["image"].shape == (1, 24, 24, 24) and it["label"].shape == (1, 24, 24, 24) for it in data.train_items)
    res = pt.run_experiment(config, data=data)
    finite_results(tmp_path, ["mime_adaptive", "dice"], classes=3)
    assert res["config"]["spatial_dims"] == 3
    # a missed class costs the diagonal of the whole volume
    diag = math.sqrt(3 * 24**2)
    assert all(0.0 <= h <= diag + 1e-6 for c in res["losses"]["dice"]["per_case"] for h in c["hd95"])
    assert "3D patches 16×16×16" in (tmp_path / "results.md").read_text()
    # the checkpoint is a 3D UNet
    model = pt.build_model(1, 4, config)
    assert any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
    model.load_state_dict(torch.load(tmp_path / "checkpoints" / "dice.pt", weights_only=False)["model"])
    # 3D sliding window: the prediction of a whole volume has the volume's shape
    summary, per_case, example = pt.evaluate_model(model, data, config)
    assert example is not None and example.shape == (24, 24)  # the figure's slice across view_axis
    assert len(per_case) == len(data.val_cases)


@pytest.mark.slow
def test_3d_nnunet_raw_volumes(tmp_path):
    folder = write_nnunet_raw(
        tmp_path / "Dataset906_S3D", num_cases=4, seed=1, spatial_size=(32, 28, 16), spacing=(1.0, 1.0, 2.0), num_val=1
    )
    config = tiny_3d(data=str(folder), losses=["mime"], figure=False)
    data = pt.prepare_data(config)
    assert data.slice_axis is None and data.view_axis == 2 and data.num_train_cases == 3
    assert len(data.train_items) == 3 and data.train_items[0]["label"].shape == (1, 32, 28, 16)
    res = pt.run_experiment(config, data=data)
    assert math.isfinite(res["losses"]["mime"]["mean"]["dice"])
    # the same folder in 2D: slices across the coarsest axis, as before
    flat = pt.prepare_data(tiny_config(data=str(folder)))
    assert flat.slice_axis == 2 and len(flat.train_items) == 3 * 16


def test_3d_bad_settings(tmp_path, capsys):
    with pytest.raises(pt.ExperimentError, match="3 sizes"):
        tiny_3d(patch_size=(16, 16)).validate()
    with pytest.raises(pt.ExperimentError, match="3 axes"):
        tiny_3d(synthetic_size=(48, 48)).validate()
    folder = write_nnunet_raw(tmp_path / "Dataset907_S2D", num_cases=3, spatial_size=(32, 32))
    with pytest.raises(pt.ExperimentError, match="needs 3D volumes"):
        pt.prepare_data(tiny_3d(data=str(folder)))
    assert train_patches.main(["--spatial-dims", "3", "--patch-size", "16,16", "--out", str(tmp_path / "o")]) == 2
    assert "patch-size must be 3 sizes" in capsys.readouterr().err


def test_3d_command_line_presets():
    parse = train_patches.build_parser().parse_args
    cfg = train_patches.config_from_args(parse(["--spatial-dims", "3", "--patch-size", "48", "--image-size", "80"]))
    assert cfg.spatial_dims == 3 and cfg.patch_size == (48, 48, 48) and cfg.synthetic_size == (80, 80, 80)
    assert train_patches.config_from_args(parse(["--spatial-dims", "3"])).patch_size == (32, 32, 32)
    quick = train_patches.config_from_args(parse(["--quick", "--spatial-dims", "3"]))
    assert quick == pt.ExperimentConfig.quick(spatial_dims=3) and quick.synthetic_size == (32, 32, 32)
    quick.validate()


@pytest.mark.slow
def test_quick_3d_smoke_run(tmp_path):
    """The documented CPU smoke run, every default loss."""
    out = tmp_path / "q3d"
    cmd = [sys.executable, str(EXAMPLES / "train_patches.py"), "--quick", "--spatial-dims", "3", "--out", str(out)]
    r = subprocess.run(cmd + ["--device", "cpu"], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = finite_results(out, list(pt.DEFAULT_LOSSES), classes=3)
    assert res["environment"]["device"] == "cpu"
    assert np.all([e["steps"] == 20 for e in res["losses"].values()])
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["patch_size"] == [16, 16, 16]
    # the training items of a 3D run are whole volumes (the --quick 3D preset has 12)
    assert saved["data"]["num_train_items"] == saved["data"]["num_train_cases"] == 12
    assert "(whole volumes)" in (out / "results.md").read_text()
