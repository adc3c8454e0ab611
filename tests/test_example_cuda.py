"""The example's GPU paths, run by ``python -m pytest -m cuda`` on a machine with CUDA (skipped elsewhere):
float16 autocast with a GradScaler, cudnn.benchmark, the 2D and 3D ``--quick`` runs with ``--device cuda``, and
DDP over NCCL when two GPUs are present."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from _patch_example import ENV, EXAMPLES, TINY, finite_results, free_port, pt, tiny_config

from monai_mime import AdaptiveMimeLoss

pytestmark = pytest.mark.cuda

TINY_CUDA = [a for a in TINY if a not in ("--device", "cpu")] + ["--device", "cuda"]


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_amp_training_and_cudnn_benchmark():
    """float16 autocast + GradScaler: finite losses, the loss itself in float32, Mime's weights moving; cudnn picks
    its fastest kernels (benchmark on, deterministic off) for training on the GPU."""
    config = tiny_config(device="cuda", losses=["mime_adaptive"], epochs=2)
    data = pt.prepare_data(config)
    spec = pt.parse_loss_specs("mime_adaptive")[0]
    model, loss_fn, info = pt.train_model(spec, data, config)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert next(model.parameters()).device.type == "cuda"
    assert all(math.isfinite(v) for v in info["loss_per_epoch"]) and not info["diverged"]
    assert info["a"] != info["a_initial"]
    x = torch.randn(2, 1, 32, 32, device="cuda")
    y = torch.randint(0, 4, (2, 1, 32, 32), device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(x)
        value = loss_fn(logits, y)
    assert logits.dtype == torch.float16 and value.dtype == torch.float32 and torch.isfinite(value)
    summary, _, _ = pt.evaluate_model(model, data, config)  # sliding window under autocast
    assert math.isfinite(summary["mean"]["dice"])


@pytest.mark.parametrize("dims", [2, 3])
def test_quick_example_on_cuda(tmp_path, dims):
    out = tmp_path / f"quick{dims}d"
    cmd = [sys.executable, str(EXAMPLES / "train_patches.py"), "--quick", "--spatial-dims", str(dims)]
    _run(cmd + ["--device", "cuda", "--out", str(out)])
    res = finite_results(out, list(pt.DEFAULT_LOSSES), classes=3)
    assert res["environment"]["device"].startswith("cuda") and res["environment"]["amp"] is True
    ckpt = torch.load(out / "checkpoints" / "mime_adaptive.pt", map_location="cpu", weights_only=False)
    # the saved averages are not those of a loss freshly started from the run's starting a/b
    entry = res["losses"]["mime_adaptive"]
    fresh = AdaptiveMimeLoss(
        entry["a_initial"], entry["b_initial"], reference_voxels=int(ckpt["loss_state"]["reference_voxels"])
    )
    trained = AdaptiveMimeLoss(entry["a_initial"], entry["b_initial"])
    trained.load_state_dict(ckpt["loss_state"])
    voxels = int(ckpt["loss_state"]["reference_voxels"])
    assert not torch.allclose(trained.weights_at(voxels)[0], fresh.weights_at(voxels)[0], rtol=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs two GPUs")
def test_ddp_two_gpus_nccl(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    r = _run(cmd + [str(EXAMPLES / "train_patches.py"), *TINY_CUDA, "--out", str(out), "--losses", "mime_adaptive"])
    res = finite_results(out, ["mime_adaptive"], classes=3)
    assert res["environment"]["world_size"] == 2 and res["environment"]["device"].startswith("cuda")
    assert [c["case_id"] for c in res["losses"]["mime_adaptive"]["per_case"]] == [
        "synthetic_012",
        "synthetic_013",
        "synthetic_014",
    ]
    assert r.stdout.count("wrote ") == 1
