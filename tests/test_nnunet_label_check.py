"""Out-of-range labels in an nnU-Net batch: one clear line naming the value and the case, before the loss runs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("nnunetv2")

import _nnunet_tiny_dataset as tiny  # noqa: E402
from _nnunet_tiny_dataset import LABELS_IGNORE, make_trainer  # noqa: E402

from nnunet_trainers import trainers as tr  # noqa: E402

torch.set_num_threads(1)
nnunet_env = tiny.nnunet_env


def _batch(bad_value: int | None, bad_image: int = 1) -> dict:
    """An nnU-Net batch as the data loader gives it: int16 targets at the three deep-supervision scales."""
    seg = torch.randint(0, 4, (2, 1, 32, 32), dtype=torch.int16)
    if bad_value is not None:
        seg[bad_image, 0, 5, 7] = bad_value
    return {
        "data": torch.randn(2, 1, 32, 32),
        "target": [seg, seg[..., ::2, ::2], seg[..., ::4, ::4]],
        "keys": ["case_000", "case_005"],
    }


@pytest.mark.parametrize("name", ["nnUNetTrainerMime", "nnUNetTrainerVNetCE"])
def test_a_label_outside_the_classes_is_named_with_its_case(nnunet_env, name: str) -> None:
    nnunet_env()
    trainer = make_trainer(getattr(tr, name))
    trainer.initialize()
    assert set(trainer.train_step(_batch(None))) == {"loss"}  # valid labels train
    for value, image in ((7, 1), (4, 0), (-1, 1)):
        with pytest.raises(ValueError, match=rf"label value {value} in case case_00{5 * image} is outside .*0\.\.3"):
            trainer.train_step(_batch(value, image))
    with pytest.raises(ValueError, match=r"label value 9 in case case_005"):
        trainer.validation_step(_batch(9))


def test_the_ignore_label_is_allowed_and_the_next_value_is_not(nnunet_env) -> None:
    nnunet_env(labels=LABELS_IGNORE)
    trainer = make_trainer(tr.nnUNetTrainerMimeCE)
    trainer.initialize()
    assert set(trainer.train_step(_batch(4))) == {"loss"}
    with pytest.raises(ValueError, match=r"label value 5 in case case_005 is outside .*ignore label 4"):
        trainer.train_step(_batch(5))
