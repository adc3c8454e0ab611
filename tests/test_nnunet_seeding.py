"""Seeded nnU-Net trainers (``mime_seed`` / ``$MONAI_MIME_SEED``) and the CPU budget variants, in-process on the tiny
dataset: the same seed gives the same initial network, the same batches and the same training losses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

import _nnunet_tiny_dataset  # noqa: E402
from _nnunet_tiny_dataset import make_trainer  # noqa: E402
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor  # noqa: E402
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy  # noqa: E402

from nnunet_trainers import budget  # noqa: E402
from nnunet_trainers.seeding import ENV_SEED, derived_seed, resolve_seed  # noqa: E402

nnunet_env = _nnunet_tiny_dataset.nnunet_env


@pytest.fixture(autouse=True)
def _single_threaded_augmentation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.delenv(ENV_SEED, raising=False)


def _with_class_locations(folder: Path) -> None:
    """Add the foreground locations that nnU-Net's preprocessor stores (its own sampling function) to the tiny
    dataset's cases, for nnU-Net's data loader to oversample from."""
    data_folder = folder / "nnUNetPlans_2d"
    dataset = nnUNetDatasetNumpy(str(data_folder))
    for key in dataset.identifiers:
        data, seg, _, properties = dataset.load_case(key)
        properties["class_locations"] = DefaultPreprocessor._sample_foreground_locations(np.asarray(seg), [1, 2, 3])
        nnUNetDatasetNumpy.save_case(np.asarray(data), np.asarray(seg), properties, str(data_folder / key))


def _first_steps(cls: type, steps: int = 3) -> tuple[list[float], torch.Tensor, np.ndarray]:
    """Initialise a trainer, build its data loaders, take ``steps`` training steps: the losses, the initial weights
    of the first convolution and the first training batch's data."""
    trainer = make_trainer(cls)
    trainer.initialize()
    first_weights = next(trainer.network.parameters()).detach().clone()
    loader, _ = trainer.get_dataloaders()
    losses, first_batch = [], None
    for _ in range(steps):
        batch = next(loader)
        if first_batch is None:
            first_batch = np.asarray(batch["data"]).copy()
        losses.append(float(trainer.train_step(batch)["loss"]))
    assert first_batch is not None
    return losses, first_weights, first_batch


@pytest.mark.parametrize("cls", [budget.nnUNetTrainer_CPUBudget, budget.nnUNetTrainerMimeCE_CPUBudget])
def test_same_seed_same_losses_other_seed_other_losses(
    cls: type, nnunet_env: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_class_locations(nnunet_env())
    monkeypatch.setenv(ENV_SEED, "5")
    losses, weights, batch = _first_steps(cls)
    again = _first_steps(cls)
    assert losses == again[0] and all(np.isfinite(losses))
    assert torch.equal(weights, again[1]) and np.array_equal(batch, again[2])
    monkeypatch.setenv(ENV_SEED, "6")
    other = _first_steps(cls)
    assert not torch.equal(weights, other[1]) and not np.array_equal(batch, other[2])
    assert all(a != b for a, b in zip(losses, other[0]))


def test_class_attribute_wins_and_unseeded_runs_are_nnunets(
    nnunet_env: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    nnunet_env()

    class Seeded(budget.nnUNetTrainerMime_CPUBudget):
        mime_seed = 11

    monkeypatch.setenv(ENV_SEED, "3")
    trainer = make_trainer(Seeded)
    assert trainer.mime_resolved_seed() == 11
    trainer.initialize()
    assert "monai-mime: seed 11 (torch, numpy, random)" in Path(trainer.log_file).read_text()
    monkeypatch.delenv(ENV_SEED)
    unseeded = make_trainer(budget.nnUNetTrainer_CPUBudget)
    assert unseeded.mime_resolved_seed() is None
    unseeded.initialize()
    assert "monai-mime: seed" not in Path(unseeded.log_file).read_text()


def test_seed_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SEED, " 42 ")
    assert resolve_seed(None) == 42 and resolve_seed(0) == 0
    for bad in ("abc", "-1", "1.5"):
        monkeypatch.setenv(ENV_SEED, bad)
        with pytest.raises(ValueError, match=f"{ENV_SEED}='{bad}': expected a non-negative integer"):
            resolve_seed(None)
    monkeypatch.setenv(ENV_SEED, "")
    assert resolve_seed(None) is None
    assert derived_seed(0, 1) == derived_seed(0, 1)
    assert len({derived_seed(0, 0), derived_seed(0, 1), derived_seed(1, 0)}) == 3


def test_budget_schedule_threads_and_inference_mirroring(
    nnunet_env: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    nnunet_env()
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        trainer = make_trainer(budget.nnUNetTrainerMimeFixedCE_CPUBudget)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    mixin = budget.CPUBudgetMixin
    assert (
        trainer.num_epochs,
        trainer.num_iterations_per_epoch,
        trainer.num_val_iterations_per_epoch,
        trainer.save_every,
    ) == (mixin.budget_epochs, mixin.budget_iterations, mixin.budget_val_iterations, mixin.budget_save_every)
    assert trainer.save_every < trainer.num_epochs  # --c finds a checkpoint_latest.pth
    *_, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert mirror_axes == (0, 1) and trainer.inference_allowed_mirroring_axes is None  # training still mirrors

    class WithMirroring(budget.nnUNetTrainer_CPUBudget):
        budget_inference_mirroring = True

    with_tta = make_trainer(WithMirroring)
    with_tta.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert with_tta.inference_allowed_mirroring_axes == (0, 1)
