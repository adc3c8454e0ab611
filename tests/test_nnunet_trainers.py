"""The nnU-Net trainers (nnunet_trainers.trainers) and their discovery, on a tiny hand-written preprocessed dataset.

Fast: no planning, no training. The dataset is written with nnU-Net's own ``nnUNetDatasetNumpy.save_case`` next to a
minimal plans file with a small 2D PlainConvUNet, so that ``nnUNetTrainer.__init__``/``initialize`` run for real.
The end-to-end run of the real nnU-Net commands is in ``test_nnunet_e2e.py``.
"""

from __future__ import annotations

import ast
import copy
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

from _nnunet_plans import NETWORK_CLASS, REQUIRES_IMPORT, tiny_unet_arch_kwargs  # noqa: E402
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name  # noqa: E402

from monai_mime import AdaptiveMimeLoss, GeneralizedSoftDiceLoss, MimeLoss, VNetDiceLoss  # noqa: E402
from monai_mime.stats import (
    DEFAULT_MODE,  # noqa: E402
    ClassStatistics,  # noqa: E402
)
from nnunet_trainers import trainers as tr  # noqa: E402
from nnunet_trainers.discovery import ext_folder, ext_trainer_path  # noqa: E402
from nnunet_trainers.losses import NnUNetLossAdapter  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_FOLDER = REPO / "examples" / "nnunet" / "my_trainers"
DATASET = "Dataset991_MimeTiny"
SHAPE = (1, 40, 36)  # (z, y, x): 2D images stored as one-slice volumes, as nnU-Net preprocesses 2D data
NUM_CASES = 8
RARE_CASES = (1, 4, 6)  # the only cases containing label 3

LABELS = {"background": 0, "left": 1, "right": 2, "rare": 3}
LABELS_IGNORE = {**LABELS, "ignore": 4}
LABELS_REGIONS = {"background": 0, "any": [1, 2, 3], "right_or_rare": [2, 3], "rare": 3}


def _plans() -> dict[str, Any]:
    return {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": list(SHAPE),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1.0,
                "mean": 0.5,
                "median": 0.5,
                "min": 0.0,
                "percentile_00_5": 0.0,
                "percentile_99_5": 1.0,
                "std": 0.2,
            }
        },
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [32, 32],
                "median_image_size_in_voxels": [40.0, 36.0],
                "spacing": [1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": {
                    "network_class_name": NETWORK_CLASS,
                    "arch_kwargs": tiny_unet_arch_kwargs(),
                    "_kw_requires_import": REQUIRES_IMPORT,
                },
                "batch_dice": True,
            }
        },
    }


def _segmentation(case: int, ignore: bool) -> np.ndarray:
    """(1, z, y, x) int8 label map: two blobs in every case, a small 'rare' blob in RARE_CASES, -1 in a corner
    (nnU-Net's "outside the nonzero crop", background for training), the ignore label on a stripe if asked."""
    seg = np.zeros((1, *SHAPE), dtype=np.int8)
    seg[0, 0, 5 : 15 + case, 4:14] = 1
    seg[0, 0, 20:30, 18 : 26 + case % 3] = 2
    if case in RARE_CASES:
        seg[0, 0, 32:35, 30:33] = 3
    seg[0, 0, 0, 0:2] = -1
    if ignore:
        seg[0, 0, 36:40, :] = 4
    return seg


@pytest.fixture()
def nnunet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory: write the tiny preprocessed dataset with a given label dict; set nnU-Net's paths."""
    pre, res = tmp_path / "nnUNet_preprocessed", tmp_path / "nnUNet_results"
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    monkeypatch.setenv("nnUNet_results", str(res))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    monkeypatch.setenv("nnUNet_compile", "false")
    monkeypatch.setenv("MONAI_MIME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(tr.ENV_WEIGHT_MODE, raising=False)
    monkeypatch.delenv(tr.ENV_WEIGHT_KWARGS, raising=False)

    def make(labels: dict[str, Any] = LABELS, splits: list[dict[str, list[str]]] | None = None) -> Path:
        folder = pre / DATASET
        data_folder = folder / "nnUNetPlans_2d"
        data_folder.mkdir(parents=True, exist_ok=True)
        dataset_json = {
            "channel_names": {"0": "MRI"},
            "labels": labels,
            "numTraining": NUM_CASES,
            "file_ending": ".nii.gz",
        }
        if any(isinstance(v, list) for v in labels.values()):
            dataset_json["regions_class_order"] = [1, 2, 3]
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
        (folder / "nnUNetPlans.json").write_text(json.dumps(_plans()))
        rng = np.random.default_rng(0)
        for case in range(NUM_CASES):
            seg = _segmentation(case, ignore="ignore" in labels)
            data = rng.standard_normal(seg.shape).astype(np.float32)
            nnUNetDatasetNumpy.save_case(data, seg, {"spacing": [1.0, 1.0, 1.0]}, str(data_folder / f"case_{case:03d}"))
        if splits is not None:
            (folder / "splits_final.json").write_text(json.dumps(splits))
        return folder

    return make


def _trainer(cls: type, fold: int | str = 0) -> nnUNetTrainer:
    folder = Path(os.environ["nnUNet_preprocessed"]) / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return cls(plans=plans, configuration="2d", fold=fold, dataset_json=dataset_json, device=torch.device("cpu"))


def _expected_stats(cases: list[str], ignore: bool = False) -> ClassStatistics:
    labels = []
    for c in cases:
        seg = _segmentation(int(c.split("_")[1]), ignore)
        labels.append(np.where(seg < 0, 0, seg))
    return ClassStatistics.from_labels(labels, num_classes=4, ignore_index=4 if ignore else None, case_ids=cases)


def _fold_training_cases(fold: int = 0) -> list[str]:
    splits = json.loads((Path(os.environ["nnUNet_preprocessed"]) / DATASET / "splits_final.json").read_text())
    return sorted(splits[fold]["train"])


def _inner_adapter(loss: torch.nn.Module) -> NnUNetLossAdapter:
    assert isinstance(loss, DeepSupervisionWrapper)
    assert isinstance(loss.loss, NnUNetLossAdapter)
    return loss.loss


# -- names and discovery --------------------------------------------------------------------------------------------
def test_nnunet_ships_none_of_our_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    for name in tr.TRAINER_NAMES:
        with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
            recursive_find_trainer_class_by_name(name)


@pytest.mark.parametrize("name", tr.TRAINER_NAMES)
def test_trainers_found_by_name_through_ext_folder(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(ext_folder()))
    cls = recursive_find_trainer_class_by_name(name)
    assert cls is getattr(tr, name)
    assert issubclass(cls, nnUNetTrainer) and issubclass(cls, tr.LossTrainerMixin)
    assert cls.__init__ is nnUNetTrainer.__init__  # the constructor is nnU-Net's, untouched


def test_nnunet_own_trainers_not_shadowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(ext_folder()))
    for name in ("nnUNetTrainer", "nnUNetTrainerDiceLoss", "nnUNetTrainerCELoss"):
        assert recursive_find_trainer_class_by_name(name).__module__.startswith("nnunetv2.")


def test_ext_folder_holds_only_reexports() -> None:
    folder = ext_folder()
    assert folder.is_dir() and not (folder / "__init__.py").exists()
    files = sorted(folder.glob("*.py"))
    assert files, "no re-export module"
    exported: set[str] = set()
    import nnunetv2

    nnunet_top = {p.stem for p in Path(nnunetv2.__path__[0]).parent.iterdir()}
    for path in files:
        assert path.stem not in nnunet_top and path.stem.startswith("monai_mime"), path.stem
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # docstring
                continue
            assert isinstance(node, ast.ImportFrom), f"{path.name}: only 'from ... import' re-exports allowed"
            assert node.level == 0 and node.module == "nnunet_trainers.trainers", f"{path.name}: absolute imports"
            exported |= {alias.name for alias in node.names}
    assert exported == set(tr.TRAINER_NAMES)
    assert not [p for p in folder.iterdir() if p.suffix not in (".py", "") and p.name != "__pycache__"]


def test_ext_folder_composes_with_user_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ours first, a missing folder, the example user folder: every trainer is found; in the other order too."""
    missing = tmp_path / "does_not_exist"
    for value in (
        os.pathsep.join([str(ext_folder()), str(missing), str(EXAMPLE_FOLDER)]),
        os.pathsep.join([str(EXAMPLE_FOLDER), str(ext_folder())]),
        ext_trainer_path(EXAMPLE_FOLDER, existing=str(missing)),
    ):
        monkeypatch.setenv("nnUNet_extTrainer", value)
        assert recursive_find_trainer_class_by_name("nnUNetTrainerMime") is tr.nnUNetTrainerMime
        user = recursive_find_trainer_class_by_name("nnUNetTrainerMime_250epochs")
        assert issubclass(user, tr.MimeLossMixin) and user.__mro__[1] is tr.MimeLossMixin
    assert ext_trainer_path(EXAMPLE_FOLDER, existing=str(ext_folder())).split(os.pathsep) == [
        str(ext_folder()),
        str(EXAMPLE_FOLDER),
    ]


def test_discovery_imports_no_nnunet_and_cli_prints_the_folder() -> None:
    code = (
        "import sys, nnunet_trainers.discovery as d; print(d.ext_folder()); "
        "print(sorted(m for m in ('nnunetv2', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == str(ext_folder()) and out[1] == "[]"
    cli = subprocess.run([sys.executable, "-m", "monai_mime", "nnunet-path"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == str(ext_folder())


# -- the loss each trainer builds ------------------------------------------------------------------------------------
LOSS_OF = {
    "nnUNetTrainerMime": (AdaptiveMimeLoss, False),
    "nnUNetTrainerMimeCE": (AdaptiveMimeLoss, True),
    "nnUNetTrainerVNet": (VNetDiceLoss, False),
    "nnUNetTrainerVNetCE": (VNetDiceLoss, True),
    "nnUNetTrainerGDL": (GeneralizedSoftDiceLoss, False),
    "nnUNetTrainerGDLCE": (GeneralizedSoftDiceLoss, True),
}


@pytest.mark.parametrize("name", tr.TRAINER_NAMES)
def test_each_trainer_builds_its_loss_like_nnunet(name: str, nnunet_env) -> None:
    nnunet_env()
    trainer = _trainer(getattr(tr, name))
    trainer.initialize()
    reference = _trainer(nnUNetTrainer)
    reference.initialize()
    adapter = _inner_adapter(trainer.loss)
    loss_cls, with_ce = LOSS_OF[name]
    assert type(adapter.loss) is loss_cls
    assert (adapter.ce is not None) == with_ce and adapter.weight_dice == 1.0
    assert adapter.loss.include_background is False and adapter.loss.to_onehot_y and adapter.loss.softmax
    # batch dice from the plans for the Dice variants; Mime averages over images (see LossTrainerMixin)
    assert adapter.loss.batch is (not issubclass(loss_cls, MimeLoss))
    assert trainer.loss.weight_factors == reference.loss.weight_factors  # nnU-Net's deep-supervision weights
    # a step on real network outputs and nnU-Net-shaped deep-supervision targets
    outputs = trainer.network(torch.randn(2, 1, 32, 32))
    seg = torch.from_numpy(_segmentation(1, False)[0, 0, :32, :32].astype(np.int16)).clamp_min(0)
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

    trainer = _trainer(NoDeepSupervision)
    trainer.initialize()
    assert isinstance(trainer.loss, NnUNetLossAdapter)
    output = trainer.network(torch.randn(2, 1, 32, 32))
    assert isinstance(output, torch.Tensor)
    target = torch.from_numpy(_segmentation(2, False)[0, 0, :32, :32].astype(np.int16)).clamp_min(0)
    assert torch.isfinite(trainer.loss(output, target[None, None].expand(2, 1, -1, -1)))


def test_mime_ab_come_from_the_fold_training_cases_and_are_cached(nnunet_env) -> None:
    folder = nnunet_env()
    trainer = _trainer(tr.nnUNetTrainerMime)
    trainer.initialize()  # writes splits_final.json (nnU-Net's seeded 5-fold split) and the statistics cache
    cases = _fold_training_cases(0)
    a, b = _expected_stats(cases).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    adapter = _inner_adapter(trainer.loss)
    np.testing.assert_allclose(adapter.loss.a.numpy(), a[1:], rtol=1e-6)
    np.testing.assert_allclose(adapter.loss.b.numpy(), b[1:], rtol=1e-6)
    state = trainer.mime_checkpoint_state()
    assert state["num_training_cases"] == len(cases) and state["weight_mode"] == DEFAULT_MODE
    assert state["class_names"] == ["background", "left", "right", "rare"]
    cache = Path(trainer.mime_cache_file())
    assert cache.parent == folder and cache.is_file()
    mtime = cache.stat().st_mtime_ns
    again = _trainer(tr.nnUNetTrainerMime)
    again.initialize()
    assert cache.stat().st_mtime_ns == mtime  # reused, not rewritten
    np.testing.assert_allclose(_inner_adapter(again.loss).loss.a.numpy(), a[1:], rtol=1e-6)


def test_custom_split_and_absent_class_message(nnunet_env) -> None:
    all_cases = [f"case_{i:03d}" for i in range(NUM_CASES)]
    without_rare = [c for i, c in enumerate(all_cases) if i not in RARE_CASES]
    splits = [
        {"train": all_cases[:6], "val": all_cases[6:]},
        {"train": without_rare, "val": [all_cases[i] for i in RARE_CASES]},
    ]
    nnunet_env(splits=splits)
    trainer = _trainer(tr.nnUNetTrainerMime, fold=0)
    trainer.initialize()
    a, _ = _expected_stats(all_cases[:6]).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    np.testing.assert_allclose(_inner_adapter(trainer.loss).loss.a.numpy(), a[1:], rtol=1e-6)

    failing = _trainer(tr.nnUNetTrainerMime, fold=1)
    with pytest.raises(RuntimeError, match=r"class 3 \(rare\) does not occur.*fold 1"):
        failing.initialize()
    assert "does not occur" in Path(failing.log_file).read_text()
    # the Dice variants need no a/b: the same fold trains
    _trainer(tr.nnUNetTrainerGDL, fold=1).initialize()


def test_ignore_label(nnunet_env) -> None:
    nnunet_env(labels=LABELS_IGNORE)
    trainer = _trainer(tr.nnUNetTrainerMimeCE)
    trainer.initialize()
    adapter = _inner_adapter(trainer.loss)
    assert adapter.ignore_label == 4 and adapter.ce.ignore_index == 4
    a, b = _expected_stats(_fold_training_cases(0), ignore=True).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    np.testing.assert_allclose(adapter.loss.a.numpy(), a[1:], rtol=1e-6)
    np.testing.assert_allclose(adapter.loss.b.numpy(), b[1:], rtol=1e-6)
    logits = torch.randn(2, 4, 32, 32, requires_grad=True)
    target = torch.from_numpy(_segmentation(0, True)[0, :, 8:40, :32].astype(np.int16)).expand(2, 1, 32, 32)
    target = torch.where(target < 0, 0, target)
    value = adapter(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    assert float(grad[(target == 4).expand_as(grad)].abs().max()) == 0.0


def test_regions(nnunet_env) -> None:
    nnunet_env(labels=LABELS_REGIONS)
    trainer = _trainer(tr.nnUNetTrainerMime)
    trainer.initialize()
    adapter = _inner_adapter(trainer.loss)
    assert adapter.region_based and adapter.loss.sigmoid and adapter.loss.include_background
    regions = [(1, 2, 3), (2, 3), (3,)]
    a, b = _expected_stats(_fold_training_cases(0)).regions(regions).weights(mode=DEFAULT_MODE, patch_size=[32, 32])
    np.testing.assert_allclose(adapter.loss.a.numpy(), a, rtol=1e-6)
    np.testing.assert_allclose(adapter.loss.b.numpy(), b, rtol=1e-6)
    assert trainer.mime_checkpoint_state()["class_names"] == ["any", "right_or_rare", "rare"]
    outputs = trainer.network(torch.randn(2, 1, 32, 32))
    seg = torch.from_numpy(_segmentation(4, False)[0, :, :32, :32].astype(np.int64)).expand(2, 1, 32, 32)
    targets = [torch.stack([torch.isin(seg[:, 0, ::s, ::s], torch.tensor(r)) for r in regions], 1) for s in (1, 2, 4)]
    value = trainer.loss(outputs, targets)
    assert torch.isfinite(value)


def test_weight_mode_selection(nnunet_env, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_env()
    monkeypatch.setenv(tr.ENV_WEIGHT_MODE, "balance")
    monkeypatch.setenv(tr.ENV_WEIGHT_KWARGS, '{"gamma": 0.5}')
    trainer = _trainer(tr.nnUNetTrainerMime)
    trainer.initialize()
    state = trainer.mime_checkpoint_state()
    assert state["weight_mode"] == "balance" and state["weight_kwargs"] == {"gamma": 0.5}
    a, b = _expected_stats(_fold_training_cases(0)).weights(mode="balance", patch_size=[32, 32], gamma=0.5)
    np.testing.assert_allclose(state["a"], a)
    np.testing.assert_allclose(state["b"], b)

    class DiceWeights(tr.nnUNetTrainerMime):  # a subclass's attribute wins over the environment
        mime_weight_mode = "dice"
        mime_weight_kwargs = {"overlap": 0.8}
        mime_rescale_to_patch = False

    trainer = _trainer(DiceWeights)
    trainer.initialize()
    state = trainer.mime_checkpoint_state()
    assert state["weight_mode"] == "dice" and state["patch_size"] is None
    a, _ = _expected_stats(_fold_training_cases(0)).weights(mode="dice", overlap=0.8)
    np.testing.assert_allclose(state["a"], a)

    monkeypatch.setenv(tr.ENV_WEIGHT_KWARGS, "[1, 2]")
    monkeypatch.setenv(tr.ENV_WEIGHT_MODE, "mean")
    with pytest.raises(ValueError, match="JSON object"):
        _trainer(tr.nnUNetTrainerMime).initialize()


def test_user_mixin_trainer_from_the_example_is_found_and_builds_its_loss(nnunet_env, monkeypatch) -> None:
    nnunet_env()
    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_path(EXAMPLE_FOLDER))
    for name, loss_cls, with_ce, mode, epochs in (
        ("nnUNetTrainerMime_250epochs", AdaptiveMimeLoss, False, DEFAULT_MODE, 250),
        ("nnUNetTrainerMimeCE_250epochs", AdaptiveMimeLoss, True, DEFAULT_MODE, 250),
        ("nnUNetTrainerGDLCE_250epochs", GeneralizedSoftDiceLoss, True, None, 250),
        ("nnUNetTrainerMimeDiceWeights_250epochs", AdaptiveMimeLoss, False, "dice", 250),
        ("nnUNetTrainerMimeCE_CPUDemo", AdaptiveMimeLoss, True, DEFAULT_MODE, 5),
    ):
        cls = recursive_find_trainer_class_by_name(name)
        trainer = _trainer(cls)
        assert trainer.num_epochs == epochs  # the schedule comes from the trainer the mixin is combined with
        trainer.initialize()
        adapter = _inner_adapter(trainer.loss)
        assert type(adapter.loss) is loss_cls and (adapter.ce is not None) == with_ce
        assert trainer.mime_checkpoint_state().get("weight_mode") == mode
    demo = _trainer(recursive_find_trainer_class_by_name("nnUNetTrainerMime_CPUDemo"))
    demo.initialize()
    assert demo.num_iterations_per_epoch == 50 and demo.batch_size == 2  # min(plans' batch size 2, 4)


# -- checkpoints -----------------------------------------------------------------------------------------------------
def test_checkpoint_stores_ab_and_load_reuses_them(nnunet_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nnunet_env()
    trainer = _trainer(tr.nnUNetTrainerMimeCE)
    trainer.initialize()
    ours, theirs = tmp_path / "ours.pth", tmp_path / "theirs.pth"
    trainer.save_checkpoint(str(ours))
    nnUNetTrainer.save_checkpoint(trainer, str(theirs))
    saved = torch.load(ours, weights_only=False)
    reference = torch.load(theirs, weights_only=False)
    assert set(saved) - set(reference) == {tr.CHECKPOINT_KEY} and set(reference) <= set(saved)
    entry = saved[tr.CHECKPOINT_KEY]
    assert entry["loss"] == "mime_adaptive" and entry["with_ce"] and entry["weight_mode"] == DEFAULT_MODE
    assert entry["a"] == trainer.mime_checkpoint_state()["a"]

    # --c / --val: a fresh trainer must not count anything, and keeps the stored a/b even if another mode is asked
    def no_counting(self):
        raise AssertionError("statistics recomputed although the checkpoint has a/b")

    monkeypatch.setattr(tr.LossTrainerMixin, "mime_fold_statistics", no_counting)
    monkeypatch.setenv(tr.ENV_WEIGHT_MODE, "dice")
    resumed = _trainer(tr.nnUNetTrainerMimeCE)
    resumed.load_checkpoint(str(ours))
    np.testing.assert_allclose(_inner_adapter(resumed.loss).loss.a.numpy(), np.array(entry["a"][1:]), rtol=1e-6)
    assert resumed.mime_checkpoint_state()["weight_mode"] == DEFAULT_MODE
    assert "keeping them although 'dice' is requested" in Path(resumed.log_file).read_text()

    # an already initialised trainer (e.g. --val_best after training) rebuilds its loss with the loaded a/b
    changed = copy.deepcopy(saved)
    changed[tr.CHECKPOINT_KEY]["a"] = [2 * x for x in entry["a"]]
    torch.save(changed, tmp_path / "changed.pth")
    resumed.load_checkpoint(str(tmp_path / "changed.pth"))
    np.testing.assert_allclose(_inner_adapter(resumed.loss).loss.a.numpy(), 2 * np.array(entry["a"][1:]), rtol=1e-6)


def test_nnunet_checkpoint_without_entry_falls_back_to_statistics(nnunet_env, tmp_path: Path) -> None:
    nnunet_env()
    plain = _trainer(nnUNetTrainer)
    plain.initialize()
    plain.save_checkpoint(str(tmp_path / "plain.pth"))
    trainer = _trainer(tr.nnUNetTrainerMime)
    trainer.load_checkpoint(str(tmp_path / "plain.pth"))
    assert trainer.mime_checkpoint_state()["num_training_cases"] == len(_fold_training_cases(0))


# -- DDP: a/b computed on rank 0 and broadcast -------------------------------------------------------------------------
class _FakeLabelManager:
    num_segmentation_heads = 3
    has_regions = False


class _BroadcastProbe(tr.MimeLossMixin):
    """Just what ``_mime_class_weights`` touches of a trainer; rank 1 must never compute."""

    is_ddp = True
    label_manager = _FakeLabelManager()

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.logged: list[str] = []

    def print_to_log_file(self, *args: Any, **kwargs: Any) -> None:
        self.logged.append(" ".join(map(str, args)))

    def _mime_compute_class_weights(self) -> dict[str, Any]:
        import torch.distributed as dist

        if dist.get_rank() != 0:
            raise AssertionError("a/b computed on a rank other than 0")
        if self.fail:
            raise RuntimeError("class 2 (x) does not occur in fold 0")
        return {
            "a": [1.0, 2.0, 3.0],
            "b": [0.5, 0.25, 0.125],
            "weight_mode": "mean",
            "patch_size": [8, 8],
            "class_names": ["bg", "x", "y"],
        }


def _broadcast_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = {"weights": _BroadcastProbe(fail=False)._mime_class_weights()}
        try:
            _BroadcastProbe(fail=True)._mime_class_weights()
        except RuntimeError as error:
            result["error"] = str(error)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes that import nnU-Net (about 15 s)
def test_ddp_ab_computed_on_rank0_and_broadcast(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_broadcast_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert results[0]["weights"] == results[1]["weights"] and results[1]["weights"]["a"] == [1.0, 2.0, 3.0]
    for r in results:  # an error on rank 0 reaches every rank instead of leaving the others waiting
        assert "computing a/b on rank 0 failed" in r["error"] and "class 2 (x)" in r["error"]
