"""The loss each nnU-Net trainer builds, as nnU-Net builds its own: deep supervision, ignore label, regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

import _nnunet_tiny_dataset as tiny  # noqa: E402
from _adaptive_reference import Eq2Reference  # noqa: E402
from _nnunet_tiny_dataset import (  # noqa: E402
    LABELS_IGNORE,
    LABELS_REGIONS,
    expected_stats,
    fold_training_cases,
    inner_adapter,
    make_trainer,
    segmentation,
)
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from monai_mime import AdaptiveMimeLoss, GeneralizedSoftDiceLoss, MimeLoss, VNetDiceLoss  # noqa: E402
from monai_mime.losses import ClassSumLoss  # noqa: E402
from monai_mime.stats import DEFAULT_MODE  # noqa: E402
from nnunet_trainers import trainers as tr  # noqa: E402
from nnunet_trainers.losses import NnUNetLossAdapter  # noqa: E402

torch.set_num_threads(1)
nnunet_env = tiny.nnunet_env


# -- the loss each trainer builds ------------------------------------------------------------------------------------
LOSS_OF = {
    "nnUNetTrainerMime": (AdaptiveMimeLoss, False),
    "nnUNetTrainerMimeCE": (AdaptiveMimeLoss, True),
    "nnUNetTrainerMimeFixed": (MimeLoss, False),
    "nnUNetTrainerMimeFixedCE": (MimeLoss, True),
    "nnUNetTrainerVNet": (VNetDiceLoss, False),
    "nnUNetTrainerVNetCE": (VNetDiceLoss, True),
    "nnUNetTrainerGDL": (GeneralizedSoftDiceLoss, False),
    "nnUNetTrainerGDLCE": (GeneralizedSoftDiceLoss, True),
}


@pytest.mark.parametrize("name", tr.TRAINER_NAMES)
def test_each_trainer_builds_its_loss_like_nnunet(name: str, nnunet_env) -> None:
    nnunet_env()
    trainer = make_trainer(getattr(tr, name))
    trainer.initialize()
    reference = make_trainer(nnUNetTrainer)
    reference.initialize()
    adapter = inner_adapter(trainer.loss)
    loss_cls, with_ce = LOSS_OF[name]
    assert type(adapter.loss) is loss_cls
    assert (adapter.ce is not None) == with_ce and adapter.weight_dice == 1.0
    inner = adapter.loss
    assert isinstance(inner, ClassSumLoss)
    assert inner.include_background is False and inner.to_onehot_y and inner.softmax
    # batch dice from the plans for the Dice variants; Mime averages over images (see LossTrainerMixin)
    assert inner.batch is (not issubclass(loss_cls, MimeLoss))
    assert trainer.loss.weight_factors == reference.loss.weight_factors  # nnU-Net's deep-supervision weights
    # a step on real network outputs and nnU-Net-shaped deep-supervision targets
    outputs = trainer.network(torch.randn(2, 1, 32, 32))
    seg = torch.from_numpy(segmentation(1, False)[0, 0, :32, :32].astype(np.int16)).clamp_min(0)
    targets = [seg[::s, ::s][None, None].expand(2, 1, -1, -1) for s in (1, 2, 4)]
    value = trainer.loss(outputs, targets)
    assert torch.isfinite(value)
    value.backward()
    assert all(torch.isfinite(p.grad).all() for p in trainer.network.parameters() if p.grad is not None)


def test_without_deep_supervision_the_loss_is_not_wrapped(nnunet_env) -> None:
    nnunet_env()

    class NoDeepSupervision(tr.nnUNetTrainerVNetCE):  # like nnU-Net's nnUNetTrainerNoDeepSupervision
        def __init__(
            self,
            plans: dict,
            configuration: str,
            fold: int,
            dataset_json: dict,
            device: torch.device = torch.device("cuda"),  # noqa: B008 -- nnU-Net's signature
        ) -> None:  # nnU-Net needs this exact signature
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.enable_deep_supervision = False

    trainer = make_trainer(NoDeepSupervision)
    trainer.initialize()
    assert isinstance(trainer.loss, NnUNetLossAdapter)
    output = trainer.network(torch.randn(2, 1, 32, 32))
    assert isinstance(output, torch.Tensor)
    target = torch.from_numpy(segmentation(2, False)[0, 0, :32, :32].astype(np.int16)).clamp_min(0)
    assert torch.isfinite(trainer.loss(output, target[None, None].expand(2, 1, -1, -1)))


def test_ignore_label(nnunet_env) -> None:
    nnunet_env(labels=LABELS_IGNORE)
    trainer = make_trainer(tr.nnUNetTrainerMimeCE)
    trainer.initialize()
    adapter = inner_adapter(trainer.loss)
    assert adapter.ignore_label == 4 and adapter.ce.ignore_index == 4
    a, b = expected_stats(fold_training_cases(0), ignore=True).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    np.testing.assert_allclose(adapter.loss.a.numpy(), a[1:], rtol=1e-6)
    np.testing.assert_allclose(adapter.loss.b.numpy(), b[1:], rtol=1e-6)
    logits = torch.randn(2, 4, 32, 32, requires_grad=True)
    target = torch.from_numpy(segmentation(0, True)[0, :, 8:40, :32].astype(np.int16)).expand(2, 1, 32, 32)
    target = torch.where(target < 0, 0, target)
    value = adapter(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    assert float(grad[(target == 4).expand_as(grad)].abs().max()) == 0.0


def test_regions(nnunet_env) -> None:
    nnunet_env(labels=LABELS_REGIONS)
    trainer = make_trainer(tr.nnUNetTrainerMime)
    trainer.initialize()
    adapter = inner_adapter(trainer.loss)
    assert adapter.region_based and adapter.loss.sigmoid and adapter.loss.include_background
    regions = [(1, 2, 3), (2, 3), (3,)]
    a, b = expected_stats(fold_training_cases(0)).regions(regions).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    np.testing.assert_allclose(adapter.loss.a.numpy(), a, rtol=1e-6)
    np.testing.assert_allclose(adapter.loss.b.numpy(), b, rtol=1e-6)
    assert trainer.mime_checkpoint_state()["class_names"] == ["any", "right_or_rare", "rare"]
    outputs = trainer.network(torch.randn(2, 1, 32, 32))
    seg = torch.from_numpy(segmentation(4, False)[0, :, :32, :32].astype(np.int64)).expand(2, 1, 32, 32)
    targets = [torch.stack([torch.isin(seg[:, 0, ::s, ::s], torch.tensor(r)) for r in regions], 1) for s in (1, 2, 4)]
    value = trainer.loss(outputs, targets)
    assert torch.isfinite(value)


def test_each_output_gets_the_weights_of_its_size_and_they_are_logged_per_epoch(nnunet_env) -> None:
    nnunet_env()
    trainer = make_trainer(tr.nnUNetTrainerMime)
    trainer.initialize()
    loss = trainer.mime_overlap_loss()
    assert isinstance(loss, AdaptiveMimeLoss) and float(loss.reference_voxels) == 32 * 32
    assert trainer.mime_output_voxels() == [32 * 32, 16 * 16, 8 * 8]
    # the reference: Eq. 2 at the operating point of the fold's a/b at the 32 x 32 patch, computed in the test
    a0, b0 = expected_stats(fold_training_cases(0)).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    reference = Eq2Reference(a0[1:], b0[1:], voxels=32 * 32, momentum=loss.momentum)
    # every class, the rare one too, has a mean union below one voxel at 8 x 8 (the floor is scale-free)
    assert float(reference.union[2]) * 64 < 1
    outputs = trainer.network(torch.randn(2, 1, 32, 32))
    seg = torch.from_numpy(segmentation(1, False)[0, 0, :32, :32].astype(np.int64)).clamp_min(0)
    targets = [seg[::s, ::s][None, None].expand(2, 1, -1, -1) for s in (1, 2, 4)]
    adapter = inner_adapter(trainer.loss)

    def check(weights: list[tuple[int, list[float], list[float]]]) -> None:
        assert [voxels for voxels, _, _ in weights] == trainer.mime_output_voxels()
        for voxels, a, b in weights:
            expected_a, expected_b = reference.weights_at(voxels)
            np.testing.assert_allclose(a, expected_a.numpy(), rtol=1e-5)
            np.testing.assert_allclose(b, expected_b.numpy(), rtol=1e-5)

    check(trainer.mime_output_weights())
    with torch.no_grad():  # no training step: the averages stay; each output's loss uses the a/b of its size
        for (_, a, b), output, target in zip(trainer.mime_output_weights(), outputs, targets):
            adapter(output, target)
            np.testing.assert_allclose(loss.a.numpy(), a, rtol=1e-5)
            np.testing.assert_allclose(loss.b.numpy(), b, rtol=1e-5)
    # a training step through nnU-Net's wrapper: the outputs with a nonzero weight (full, 1/2) move the averages
    trainer.loss(outputs, targets).backward()
    for output, target, weight in zip(outputs, targets, trainer.loss.weight_factors):
        if weight != 0:
            reference.observe(torch.softmax(output, 1), target, include_background=False)
    check(trainer.mime_output_weights())
    trainer.on_train_epoch_end([{"loss": np.array(0.5)}])
    log = Path(trainer.log_file).read_text()
    for index, voxels in enumerate(trainer.mime_output_voxels()):
        assert f"monai-mime: output {index} ({voxels} voxels): a=" in log
