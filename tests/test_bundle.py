"""The MONAI bundle of examples/bundle: its config instantiates the loss, and it runs through monai.bundle."""

from __future__ import annotations

import torch
from _patch_example import EXAMPLES


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
