"""Mime's starting a/b in nnU-Net: from the fold's training cases (cached), weight mode, user mixins, DDP broadcast."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

import _nnunet_tiny_dataset as tiny  # noqa: E402
from _nnunet_tiny_dataset import (  # noqa: E402
    EXAMPLE_FOLDER,
    NUM_CASES,
    RARE_CASES,
    expected_stats,
    fold_training_cases,
    inner_adapter,
    make_trainer,
)
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name  # noqa: E402

from monai_mime import AdaptiveMimeLoss, GeneralizedSoftDiceLoss  # noqa: E402
from monai_mime.stats import DEFAULT_MODE  # noqa: E402
from nnunet_trainers import trainers as tr  # noqa: E402
from nnunet_trainers.discovery import ext_trainer_path  # noqa: E402

torch.set_num_threads(1)
nnunet_env = tiny.nnunet_env


def test_mime_ab_come_from_the_fold_training_cases_and_are_cached(nnunet_env) -> None:
    folder = nnunet_env()
    trainer = make_trainer(tr.nnUNetTrainerMime)
    trainer.initialize()  # writes splits_final.json (nnU-Net's seeded 5-fold split) and the statistics cache
    cases = fold_training_cases(0)
    a, b = expected_stats(cases).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    adapter = inner_adapter(trainer.loss)
    np.testing.assert_allclose(adapter.loss.a.numpy(), a[1:], rtol=1e-6)
    np.testing.assert_allclose(adapter.loss.b.numpy(), b[1:], rtol=1e-6)
    state = trainer.mime_checkpoint_state()
    assert state["num_training_cases"] == len(cases) and state["weight_mode"] == DEFAULT_MODE
    assert state["class_names"] == ["background", "left", "right", "rare"]
    cache = Path(trainer.mime_cache_file())
    assert cache.parent == folder and cache.is_file()
    mtime = cache.stat().st_mtime_ns
    again = make_trainer(tr.nnUNetTrainerMime)
    again.initialize()
    assert cache.stat().st_mtime_ns == mtime  # reused, not rewritten
    np.testing.assert_allclose(inner_adapter(again.loss).loss.a.numpy(), a[1:], rtol=1e-6)


def test_custom_split_and_absent_class_message(nnunet_env) -> None:
    all_cases = [f"case_{i:03d}" for i in range(NUM_CASES)]
    without_rare = [c for i, c in enumerate(all_cases) if i not in RARE_CASES]
    splits = [
        {"train": all_cases[:6], "val": all_cases[6:]},
        {"train": without_rare, "val": [all_cases[i] for i in RARE_CASES]},
    ]
    nnunet_env(splits=splits)
    trainer = make_trainer(tr.nnUNetTrainerMime, fold=0)
    trainer.initialize()
    a, _ = expected_stats(all_cases[:6]).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    np.testing.assert_allclose(inner_adapter(trainer.loss).loss.a.numpy(), a[1:], rtol=1e-6)

    failing = make_trainer(tr.nnUNetTrainerMime, fold=1)
    with pytest.raises(RuntimeError, match=r"class 3 \(rare\) does not occur.*fold 1"):
        failing.initialize()
    assert "does not occur" in Path(failing.log_file).read_text()
    # the Dice variants need no a/b: the same fold trains
    make_trainer(tr.nnUNetTrainerGDL, fold=1).initialize()


def test_weight_mode_selection(nnunet_env, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_env()
    monkeypatch.setenv(tr.ENV_WEIGHT_MODE, "balance")
    monkeypatch.setenv(tr.ENV_WEIGHT_KWARGS, '{"gamma": 0.5}')
    trainer = make_trainer(tr.nnUNetTrainerMime)
    trainer.initialize()
    state = trainer.mime_checkpoint_state()
    assert state["weight_mode"] == "balance" and state["weight_kwargs"] == {"gamma": 0.5}
    a, b = expected_stats(fold_training_cases(0)).weights(mode="balance", patch_size=[32, 32], gamma=0.5)
    np.testing.assert_allclose(state["a"], a)
    np.testing.assert_allclose(state["b"], b)

    class DiceWeights(tr.nnUNetTrainerMime):  # a subclass's attribute wins over the environment
        mime_weight_mode = "dice"
        mime_weight_kwargs = {"overlap": 0.8}
        mime_rescale_to_patch = False

    trainer = make_trainer(DiceWeights)
    trainer.initialize()
    state = trainer.mime_checkpoint_state()
    assert state["weight_mode"] == "dice" and state["patch_size"] is None
    a, _ = expected_stats(fold_training_cases(0)).weights(mode="dice", overlap=0.8)
    np.testing.assert_allclose(state["a"], a)

    monkeypatch.setenv(tr.ENV_WEIGHT_KWARGS, "[1, 2]")
    monkeypatch.setenv(tr.ENV_WEIGHT_MODE, "mean")
    with pytest.raises(ValueError, match="JSON object"):
        make_trainer(tr.nnUNetTrainerMime).initialize()


@pytest.mark.slow  # nnU-Net's recursive trainer search imports every trainer module
def test_user_mixin_trainer_from_the_example_is_found_and_builds_its_loss(nnunet_env, monkeypatch) -> None:
    nnunet_env()
    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_path(EXAMPLE_FOLDER))
    for name, loss_cls, with_ce, mode, epochs in (
        ("nnUNetTrainerMime_250epochs", AdaptiveMimeLoss, False, DEFAULT_MODE, 250),
        ("nnUNetTrainerMimeCE_250epochs", AdaptiveMimeLoss, True, DEFAULT_MODE, 250),
        ("nnUNetTrainerGDLCE_250epochs", GeneralizedSoftDiceLoss, True, None, 250),
        ("nnUNetTrainerMimeDiceWeights_250epochs", AdaptiveMimeLoss, False, "dice", 250),
    ):
        cls = recursive_find_trainer_class_by_name(name)
        trainer = make_trainer(cls)
        assert trainer.num_epochs == epochs  # the schedule comes from the trainer the mixin is combined with
        trainer.initialize()
        adapter = inner_adapter(trainer.loss)
        assert type(adapter.loss) is loss_cls and (adapter.ce is not None) == with_ce
        assert trainer.mime_checkpoint_state().get("weight_mode") == mode


# -- DDP: a/b computed on rank 0 and broadcast -------------------------------------------------------------------------
class _CountingTrainer(tr.nnUNetTrainerMime):
    """nnU-Net's trainer with the adaptive Mime, recording whether it counted the fold's cases itself."""

    counted = False

    def mime_fold_statistics(self) -> Any:
        self.counted = True
        return super().mime_fold_statistics()


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    """A real nnU-Net trainer per rank under gloo on the CPU; ``_build_loss`` as ``initialize()`` calls it (whose DDP
    wrap of the network needs a GPU per rank). Rank 0 must count the fold's cases, rank 1 must only receive."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result: dict[int, dict[str, Any]] = {}
        for fold in (0, 1):
            trainer = make_trainer(_CountingTrainer, fold=fold)
            assert isinstance(trainer, _CountingTrainer) and trainer.is_ddp and trainer.local_rank == rank
            trainer.device = torch.device("cpu")  # nnU-Net picks cuda:<rank> under DDP; these ranks run on the CPU
            try:
                trainer.loss = trainer._build_loss()
                loss = inner_adapter(trainer.loss).loss
                state = trainer.mime_checkpoint_state()
                assert state is not None
                result[fold] = {"a": loss.a.tolist(), "b": loss.b.tolist(), "loss_state": state.pop("loss_state")}
                result[fold]["entry"] = state  # the checkpoint entry besides the loss state
            except RuntimeError as error:
                result[fold] = {"error": str(error)}
            result[fold]["counted"] = trainer.counted
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes that import nnU-Net and build real trainers (about 20 s)
def test_ddp_ab_computed_on_rank0_and_broadcast(nnunet_env, tmp_path: Path) -> None:
    all_cases = [f"case_{i:03d}" for i in range(NUM_CASES)]
    without_rare = [c for i, c in enumerate(all_cases) if i not in RARE_CASES]
    nnunet_env(splits=[{"train": all_cases[:6], "val": all_cases[6:]}, {"train": without_rare, "val": all_cases[:1]}])
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r[0]["counted"] for r in ranks] == [True, False]  # rank 0 counts, rank 1 receives
    a, b = expected_stats(all_cases[:6]).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    for r in ranks:  # both hold the a/b of fold 0's training cases, bitwise equal
        assert r[0]["a"] == ranks[0][0]["a"] and r[0]["b"] == ranks[0][0]["b"] and r[0]["entry"] == ranks[0][0]["entry"]
        assert all(torch.equal(v, ranks[0][0]["loss_state"][k]) for k, v in r[0]["loss_state"].items())
        np.testing.assert_allclose(r[0]["a"], a[1:], rtol=1e-6)
        np.testing.assert_allclose(r[0]["b"], b[1:], rtol=1e-6)
    # an error on rank 0 (fold 1 lacks the rare class) reaches every rank instead of leaving the others waiting
    assert [r[1]["counted"] for r in ranks] == [True, False]
    for r in ranks:
        assert "computing a/b on rank 0 failed" in r[1]["error"] and "class 3 (rare) does not occur" in r[1]["error"]
