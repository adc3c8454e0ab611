"""The CPU-sized configurations (``monai-mime nnunet-cpu-plans``): written into a plans file as nnU-Net reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from _nnunet_tiny_dataset import DATASET, plans  # noqa: E402
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

from monai_mime.cli import main  # noqa: E402
from nnunet_trainers.cpu_plans import (  # noqa: E402
    CPU_CONFIGURATIONS,
    CPUConfiguration,
    add_cpu_configurations,
    cpu_configuration,
    find_plans_file,
)


def _write_plans(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nnUNetPlans.json"
    path.write_text(json.dumps(plans(), indent=4))
    return path


@pytest.fixture()
def plans_file(tmp_path: Path) -> Path:
    return _write_plans(tmp_path / DATASET)


def test_adds_configurations_and_changes_nothing_else(plans_file: Path) -> None:
    before = json.loads(plans_file.read_text())
    assert add_cpu_configurations(plans_file) == {"2d_cpu128": "added", "2d_cpu64": "added"}
    after = json.loads(plans_file.read_text())
    added = {name: after["configurations"].pop(name) for name in CPU_CONFIGURATIONS}
    assert after == before
    assert list(json.loads(plans_file.read_text())["configurations"]) == ["2d", "2d_cpu128", "2d_cpu64"]
    assert added["2d_cpu128"]["inherits_from"] == "2d" and added["2d_cpu128"]["patch_size"] == [128, 128]
    # idempotent: nothing written the second time
    mtime = plans_file.stat().st_mtime_ns
    assert add_cpu_configurations(plans_file) == {"2d_cpu128": "unchanged", "2d_cpu64": "unchanged"}
    assert plans_file.stat().st_mtime_ns == mtime
    assert not [p for p in plans_file.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", sorted(CPU_CONFIGURATIONS))
def test_nnunet_resolves_the_configuration_and_builds_its_network(plans_file: Path, name: str) -> None:
    """nnU-Net's PlansManager: the parent's preprocessing, our patch/batch/network; the network takes the patch and
    has one output per deep-supervision scale that nnU-Net derives from the strides, each of the scaled size."""
    add_cpu_configurations(plans_file)
    spec = CPU_CONFIGURATIONS[name]
    manager = PlansManager(str(plans_file))
    config = manager.get_configuration(name)
    parent = manager.get_configuration("2d")
    assert config.data_identifier == parent.data_identifier == "nnUNetPlans_2d"
    assert config.spacing == parent.spacing and config.batch_dice == parent.batch_dice
    assert config.patch_size == [spec.patch, spec.patch] and config.batch_size == spec.batch_size
    kwargs = config.network_arch_init_kwargs
    assert kwargs["features_per_stage"] == spec.features() and kwargs["n_stages"] == spec.n_stages
    assert (
        len(kwargs["n_conv_per_stage"]) == spec.n_stages
        and len(kwargs["n_conv_per_stage_decoder"]) == spec.n_stages - 1
    )
    network = get_network_from_plans(
        config.network_arch_class_name,
        kwargs,
        config.network_arch_init_kwargs_req_import,
        1,
        4,
        allow_init=True,
        deep_supervision=True,
    )
    with torch.no_grad():
        outputs = network(torch.zeros(1, 1, spec.patch, spec.patch))
    scales = (1 / np.cumprod(np.vstack(config.pool_op_kernel_sizes), axis=0))[:-1]  # nnUNetTrainer's formula
    assert len(outputs) == len(scales) == spec.n_stages - 1
    for output, scale in zip(outputs, scales):
        assert tuple(output.shape) == (1, 4, *(round(spec.patch * s) for s in scale))


def test_configuration_checks_its_size() -> None:
    with pytest.raises(ValueError, match="divisible by the total stride 32"):
        CPUConfiguration(patch=100, n_stages=6, base_features=8, max_features=64, batch_size=2)
    with pytest.raises(ValueError, match="at least 4 voxels"):
        CPUConfiguration(patch=64, n_stages=6, base_features=8, max_features=64, batch_size=2)
    assert CPUConfiguration(64, 4, 8, 32, 2).features() == [8, 16, 32, 32]
    parent: dict[str, Any] = {"patch_size": [1, 32, 32], "architecture": {"arch_kwargs": {}}}
    with pytest.raises(ValueError, match="not 2D"):
        cpu_configuration(parent, CPU_CONFIGURATIONS["2d_cpu64"])


def test_clear_errors(tmp_path: Path, plans_file: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no plans file"):
        add_cpu_configurations(tmp_path / "missing.json")
    no_2d = plans()
    no_2d["configurations"] = {"3d_fullres": no_2d["configurations"]["2d"]}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(no_2d))
    with pytest.raises(ValueError, match=r"no '2d' configuration \(has \['3d_fullres'\]\)"):
        add_cpu_configurations(other)
    assert json.loads(other.read_text()) == no_2d
    with pytest.raises(ValueError, match="unknown configuration"):
        add_cpu_configurations(plans_file, ["2d_cpu32"])
    # a configuration of that name that differs (edited, or the parent re-planned): error, or --force
    add_cpu_configurations(plans_file)
    doc = json.loads(plans_file.read_text())
    doc["configurations"]["2d_cpu64"]["batch_size"] = 3
    plans_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="already has a configuration '2d_cpu64' that differs"):
        add_cpu_configurations(plans_file)
    assert json.loads(plans_file.read_text())["configurations"]["2d_cpu64"]["batch_size"] == 3
    assert add_cpu_configurations(plans_file, force=True) == {"2d_cpu128": "unchanged", "2d_cpu64": "replaced"}


def test_find_plans_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_plans(tmp_path / "pre" / "Dataset991_MimeTiny")
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    assert find_plans_file(path) == find_plans_file(path.parent) == find_plans_file("991") == path
    assert find_plans_file("Dataset991_MimeTiny") == path
    with pytest.raises(FileNotFoundError, match="0 folders match Dataset992_"):
        find_plans_file("992")
    with pytest.raises(FileNotFoundError, match="no plans file"):
        find_plans_file(path.parent, "nnUNetResEncUNetMPlans")


def test_cli_writes_and_reports(plans_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nnunet-cpu-plans", str(plans_file.parent), "--configurations", "2d_cpu64"]) == 0
    out = capsys.readouterr().out
    assert "2d_cpu64: added (patch 64x64, features [8, 16, 32, 64, 128], batch 32)" in out
    assert set(json.loads(plans_file.read_text())["configurations"]) == {"2d", "2d_cpu64"}
    assert main(["nnunet-cpu-plans", str(plans_file.parent / "missing")]) == 2
    assert "nnunet-cpu-plans: error:" in capsys.readouterr().err


def test_cli_imports_no_nnunet(plans_file: Path) -> None:
    """The command edits JSON only: nnU-Net (an optional extra) is not imported."""
    code = (
        "import sys; from monai_mime.cli import main; "
        f"assert main(['nnunet-cpu-plans', {str(plans_file)!r}]) == 0; "
        "print([m for m in sys.modules if m.split('.')[0] in ('nnunetv2', 'dynamic_network_architectures')])"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().endswith("[]")
