"""CPU-sized nnU-Net configurations: ``2d`` with a smaller patch and network, written into an existing plans file.

nnU-Net plans support configurations that inherit from another one (``"inherits_from": "2d"``): the child's keys
replace the parent's, everything else (spacing, normalisation, resampling, the preprocessed data folder
``data_identifier``, ``batch_dice``) is the parent's. :func:`add_cpu_configurations` adds, for each entry of
:data:`CPU_CONFIGURATIONS`, a configuration that keeps all of nnU-Net's pipeline (the planner's preprocessing, so no
new preprocessing is needed; augmentation; deep supervision; poly-LR SGD; oversampling; sliding-window validation)
and replaces only

* ``patch_size``: a square patch of :attr:`CPUConfiguration.patch` voxels per side;
* ``batch_size``;
* ``architecture``: the parent's network class and arguments with ``n_stages`` stages, stage ``i`` having
  ``min(base_features * 2**i, max_features)`` feature maps, 3x3 kernels, stride 1 then 2 per stage. The patch must be
  divisible by the total stride ``2**(n_stages - 1)``; nnU-Net's deep supervision derives its output scales from the
  strides (``1 / cumprod(strides)``, one output per decoder stage), so they follow. Per-stage lists of the parent
  (``n_conv_per_stage``, ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``) keep their first entries.

The architecture is written out in full, because nnU-Net's inheritance replaces top-level keys only (a child's
``architecture`` replaces the parent's whole). Nothing else in the plans file changes; the write is atomic and
idempotent. This module imports nothing from nnU-Net: a plans file is JSON.

Command line: ``monai-mime nnunet-cpu-plans $nnUNet_preprocessed/Dataset027_ACDC`` (or the plans file itself).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CPU_CONFIGURATIONS", "CPUConfiguration", "add_cpu_configurations", "cpu_configuration", "find_plans_file"]

#: per-stage lists of the encoder (n_stages entries) and of the decoder (n_stages - 1 entries) in ``arch_kwargs``
_ENCODER_LISTS = ("n_conv_per_stage", "n_blocks_per_stage")
_DECODER_LISTS = ("n_conv_per_stage_decoder",)


@dataclass(frozen=True)
class CPUConfiguration:
    """One CPU-sized configuration: a square 2D patch, a network of ``n_stages`` stages and a batch size."""

    patch: int
    n_stages: int
    base_features: int
    max_features: int
    batch_size: int

    def features(self) -> list[int]:
        """Feature maps per stage: ``min(base_features * 2**i, max_features)``."""
        return [min(self.base_features * 2**i, self.max_features) for i in range(self.n_stages)]

    def __post_init__(self) -> None:
        stride = 2 ** (self.n_stages - 1)
        if self.n_stages < 2 or self.patch % stride or self.patch // stride < 4:
            raise ValueError(
                f"patch {self.patch} with {self.n_stages} stages: the patch must be divisible by the total stride "
                f"{stride} and leave at least 4 voxels per side at the bottleneck"
            )


#: The configurations that :func:`add_cpu_configurations` writes, by name (all inherit from ``2d``).
CPU_CONFIGURATIONS: dict[str, CPUConfiguration] = {
    "2d_cpu128": CPUConfiguration(patch=128, n_stages=6, base_features=8, max_features=128, batch_size=8),
    "2d_cpu64": CPUConfiguration(patch=64, n_stages=5, base_features=8, max_features=128, batch_size=32),
}


def cpu_configuration(parent: Mapping[str, Any], spec: CPUConfiguration, parent_name: str = "2d") -> dict[str, Any]:
    """The plans entry of ``spec``: ``inherits_from`` the parent plus patch, batch and the full architecture.

    Args:
        parent: the parent configuration's plans entry (its ``architecture`` is the template).
        spec: the size of the new configuration.
        parent_name: the name of the parent configuration in the plans.

    Raises:
        ValueError: if the parent is not 2D or has no ``architecture.arch_kwargs`` to start from.
    """
    patch = parent.get("patch_size")
    architecture = parent.get("architecture")
    if not isinstance(architecture, Mapping) or not isinstance(architecture.get("arch_kwargs"), Mapping):
        raise ValueError(f"configuration {parent_name!r} has no architecture.arch_kwargs (nnU-Net >= 2.4 plans)")
    if not isinstance(patch, list) or len(patch) != 2:
        raise ValueError(f"configuration {parent_name!r} is not 2D (patch_size {patch!r})")
    kwargs = dict(architecture["arch_kwargs"])
    n = spec.n_stages
    kwargs.update(
        n_stages=n,
        features_per_stage=spec.features(),
        kernel_sizes=[[3, 3] for _ in range(n)],
        strides=[[1, 1]] + [[2, 2] for _ in range(n - 1)],
    )
    for key, length in [(k, n) for k in _ENCODER_LISTS] + [(k, n - 1) for k in _DECODER_LISTS]:
        if key in kwargs:
            values = list(kwargs[key])
            kwargs[key] = (values + values[-1:] * length)[:length]  # first entries; the last one repeated if short
    return {
        "inherits_from": parent_name,
        "patch_size": [spec.patch, spec.patch],
        "batch_size": spec.batch_size,
        "architecture": {**architecture, "arch_kwargs": kwargs},
    }


def find_plans_file(target: str | os.PathLike[str], plans_identifier: str = "nnUNetPlans") -> Path:
    """The plans file of ``target``: a plans file; a preprocessed dataset folder (``<plans_identifier>.json`` in it);
    or a dataset id (``27``) or name (``Dataset027_ACDC``) under ``$nnUNet_preprocessed``.

    Raises:
        FileNotFoundError: naming what is missing.
    """
    path, text = Path(target), str(target)
    if not path.exists() and (text.isdigit() or text.startswith("Dataset")):
        root = os.environ.get("nnUNet_preprocessed")
        if not root:
            raise FileNotFoundError(f"{text}: not a path, and $nnUNet_preprocessed is not set to look it up")
        pattern = f"Dataset{int(text):03d}_*" if text.isdigit() else text
        found = sorted(p for p in Path(root).glob(pattern) if p.is_dir())
        if len(found) != 1:
            raise FileNotFoundError(f"{text}: {len(found)} folders match {pattern} in $nnUNet_preprocessed={root}")
        path = found[0]
    if path.is_dir():
        path = path / f"{plans_identifier}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no plans file (run nnUNetv2_plan_and_preprocess -c 2d first)")
    return path


def add_cpu_configurations(
    plans_file: str | os.PathLike[str],
    names: list[str] | None = None,
    parent_name: str = "2d",
    force: bool = False,
) -> dict[str, str]:
    """Write the CPU configurations into ``plans_file`` (atomically); return ``{name: "added" | "unchanged" |
    "replaced"}``.

    Args:
        plans_file: an nnU-Net plans JSON (``$nnUNet_preprocessed/DatasetXXX_Name/nnUNetPlans.json``).
        names: which entries of :data:`CPU_CONFIGURATIONS` (default: all).
        parent_name: the configuration to inherit from; must exist and be 2D.
        force: replace a configuration of the same name that differs (e.g. after re-planning the parent).

    Raises:
        FileNotFoundError: no plans file. ValueError: not a plans file, no parent configuration, an unknown name,
        or a configuration of that name that differs and ``force`` is False.
    """
    path = Path(plans_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no plans file (run nnUNetv2_plan_and_preprocess -c {parent_name} first)")
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    configurations = plans.get("configurations") if isinstance(plans, dict) else None
    if not isinstance(configurations, dict):
        raise ValueError(f"{path}: not an nnU-Net plans file (no 'configurations')")
    if parent_name not in configurations:
        raise ValueError(
            f"{path} has no {parent_name!r} configuration (has {sorted(configurations)}): "
            f"run nnUNetv2_plan_and_preprocess -c {parent_name} first"
        )
    unknown = sorted(set(names or []) - set(CPU_CONFIGURATIONS))
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown}; known: {sorted(CPU_CONFIGURATIONS)}")
    status: dict[str, str] = {}
    for name in names or list(CPU_CONFIGURATIONS):
        entry = cpu_configuration(configurations[parent_name], CPU_CONFIGURATIONS[name], parent_name)
        old = configurations.get(name)
        if old == entry:
            status[name] = "unchanged"
            continue
        if old is not None and not force:
            raise ValueError(
                f"{path} already has a configuration {name!r} that differs from this package's "
                "(re-planned parent or edited by hand): pass --force to replace it"
            )
        configurations[name] = entry
        status[name] = "added" if old is None else "replaced"
    if any(s != "unchanged" for s in status.values()):
        _write_json_atomic(path, plans)
    return status


def _write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` as nnU-Net writes plans (indent 4, key order kept) to a temporary file, then rename it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777)  # the plans file's own permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=4)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
