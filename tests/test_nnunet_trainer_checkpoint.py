"""The checkpoint entry ``checkpoint["monai_mime"]``: starting a/b and loss state, restored by ``--c``."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

import _nnunet_tiny_dataset as tiny  # noqa: E402
from _nnunet_tiny_dataset import (  # noqa: E402
    expected_stats,
    fold_training_cases,
    inner_adapter,
    make_trainer,
    segmentation,
)
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from monai_mime import AdaptiveMimeLoss, MimeLoss  # noqa: E402
from monai_mime.stats import DEFAULT_MODE  # noqa: E402
from nnunet_trainers import trainers as tr  # noqa: E402

torch.set_num_threads(1)
nnunet_env = tiny.nnunet_env


# -- checkpoints -----------------------------------------------------------------------------------------------------
def test_checkpoint_stores_ab_and_load_reuses_them(nnunet_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nnunet_env()
    trainer = make_trainer(tr.nnUNetTrainerMimeCE)
    trainer.initialize()
    ours, theirs = tmp_path / "ours.pth", tmp_path / "theirs.pth"
    trainer.save_checkpoint(str(ours))
    nnUNetTrainer.save_checkpoint(trainer, str(theirs))
    saved = torch.load(ours, weights_only=False)
    reference = torch.load(theirs, weights_only=False)
    assert set(saved) - set(reference) == {tr.CHECKPOINT_KEY} and set(reference) <= set(saved)
    entry = saved[tr.CHECKPOINT_KEY]
    assert entry["loss"] == "mime_adaptive" and entry["with_ce"] and entry["weight_mode"] == DEFAULT_MODE
    # the a/b of the fold's training cases, counted here from the labels, and a loss state that gives them back
    a, b = expected_stats(fold_training_cases(0)).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    np.testing.assert_allclose(entry["a"], a, rtol=1e-6)
    np.testing.assert_allclose(entry["b"], b, rtol=1e-6)
    stored = AdaptiveMimeLoss([1.0] * 3, [1.0] * 3)
    stored.load_state_dict(entry["loss_state"])
    for voxels, scale in ((32 * 32, 1), (16 * 16, 4)):  # Eq. 2 at the starting point: 4x the weights at 1/4 voxels
        np.testing.assert_allclose(stored.weights_at(voxels)[0].numpy(), scale * a[1:], rtol=1e-5)
        np.testing.assert_allclose(stored.weights_at(voxels)[1].numpy(), scale * b[1:], rtol=1e-5)

    # --c / --val: a fresh trainer must not count anything, and keeps the stored a/b even if another mode is asked
    def no_counting(self):
        raise AssertionError("statistics recomputed although the checkpoint has a/b")

    monkeypatch.setattr(tr.LossTrainerMixin, "mime_fold_statistics", no_counting)
    monkeypatch.setenv(tr.ENV_WEIGHT_MODE, "dice")
    resumed = make_trainer(tr.nnUNetTrainerMimeCE)
    resumed.load_checkpoint(str(ours))
    np.testing.assert_allclose(inner_adapter(resumed.loss).loss.a.numpy(), np.array(entry["a"][1:]), rtol=1e-6)
    assert resumed.mime_checkpoint_state()["weight_mode"] == DEFAULT_MODE
    assert "keeping them although 'dice' is requested" in Path(resumed.log_file).read_text()

    # an already initialised trainer (e.g. --val_best after training) rebuilds its loss with the loaded a/b
    changed = copy.deepcopy(saved)
    changed[tr.CHECKPOINT_KEY]["a"] = [2 * x for x in entry["a"]]
    del changed[tr.CHECKPOINT_KEY]["loss_state"]  # as written before the loss state was stored
    torch.save(changed, tmp_path / "changed.pth")
    resumed.load_checkpoint(str(tmp_path / "changed.pth"))
    np.testing.assert_allclose(inner_adapter(resumed.loss).loss.a.numpy(), 2 * np.array(entry["a"][1:]), rtol=1e-6)


def test_nnunet_checkpoint_without_entry_falls_back_to_statistics(nnunet_env, tmp_path: Path) -> None:
    nnunet_env()
    plain = make_trainer(nnUNetTrainer)
    plain.initialize()
    plain.save_checkpoint(str(tmp_path / "plain.pth"))
    trainer = make_trainer(tr.nnUNetTrainerMime)
    trainer.load_checkpoint(str(tmp_path / "plain.pth"))
    assert trainer.mime_checkpoint_state()["num_training_cases"] == len(fold_training_cases(0))


def _train_steps(trainer: nnUNetTrainer, steps: int = 3) -> None:
    """A few loss calls with gradients on the network's deep-supervision outputs: the running averages move."""
    trainer.loss.train()
    seg = torch.from_numpy(segmentation(1, False)[0, 0, :32, :32].astype(np.int64)).clamp_min(0)
    targets = [seg[::s, ::s][None, None].expand(2, 1, -1, -1) for s in (1, 2, 4)]
    for _ in range(steps):
        trainer.loss(trainer.network(torch.randn(2, 1, 32, 32)), targets).backward()


@pytest.mark.parametrize("initialize_first", [False, True])
def test_the_running_averages_survive_a_checkpoint(nnunet_env, tmp_path: Path, initialize_first: bool) -> None:
    """``--c`` loads before ``initialize()``, ``--val_best`` after it: both continue with the saved averages."""
    nnunet_env()
    trainer = make_trainer(tr.nnUNetTrainerMime)
    trainer.initialize()
    start = {k: v.clone() for k, v in trainer.mime_overlap_loss().state_dict().items()}
    _train_steps(trainer)
    saved = {k: v.clone() for k, v in trainer.mime_overlap_loss().state_dict().items()}
    assert not torch.equal(saved["running_union"], start["running_union"])
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))
    entry = torch.load(tmp_path / "checkpoint.pth", weights_only=False)[tr.CHECKPOINT_KEY]
    assert set(entry["loss_state"]) == set(saved)

    resumed = make_trainer(tr.nnUNetTrainerMime)
    if initialize_first:
        resumed.initialize()
    resumed.load_checkpoint(str(tmp_path / "checkpoint.pth"))
    restored = resumed.mime_overlap_loss().state_dict()
    for name, value in saved.items():
        assert torch.equal(restored[name], value), name
    assert resumed.mime_output_weights() == trainer.mime_output_weights()
    assert "loss state restored from the checkpoint" in Path(resumed.log_file).read_text()


def test_the_fixed_weight_trainer_stores_its_ab_as_loss_state(nnunet_env, tmp_path: Path) -> None:
    nnunet_env()
    trainer = make_trainer(tr.nnUNetTrainerMimeFixed)
    trainer.initialize()
    assert type(trainer.mime_overlap_loss()) is MimeLoss and trainer.mime_output_weights() == []
    trainer.save_checkpoint(str(tmp_path / "fixed.pth"))
    entry = torch.load(tmp_path / "fixed.pth", weights_only=False)[tr.CHECKPOINT_KEY]
    assert entry["loss"] == "mime" and set(entry["loss_state"]) == {"a", "b"}
    np.testing.assert_allclose(entry["loss_state"]["a"].numpy(), np.array(entry["a"][1:]), rtol=1e-6)
