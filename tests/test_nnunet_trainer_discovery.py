"""How nnU-Net finds the trainers: ``nnUNet_extTrainer=$(monai-mime nnunet-path)`` and nnU-Net's own class search."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nnunetv2")

from _nnunet_tiny_dataset import EXAMPLE_FOLDER  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402
from nnunetv2.utilities.find_objects import (
    recursive_find_python_class,  # noqa: E402
    recursive_find_trainer_class_by_name,  # noqa: E402
)

import nnunet_trainers  # noqa: E402
from nnunet_trainers import trainers as tr  # noqa: E402
from nnunet_trainers.budget import BUDGET_TRAINER_NAMES  # noqa: E402
from nnunet_trainers.discovery import ext_folder, ext_trainer_path  # noqa: E402


@pytest.mark.slow
def test_nnunet_ships_none_of_our_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    for name in tr.TRAINER_NAMES + BUDGET_TRAINER_NAMES:
        with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
            recursive_find_trainer_class_by_name(name)


@pytest.mark.slow  # nnU-Net's recursive trainer search imports every trainer module
@pytest.mark.parametrize("name", tr.TRAINER_NAMES)
def test_trainers_found_by_name_through_ext_folder(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(ext_folder()))
    cls = recursive_find_trainer_class_by_name(name)
    assert cls is getattr(tr, name)
    assert issubclass(cls, nnUNetTrainer) and issubclass(cls, tr.LossTrainerMixin)
    assert cls.__init__ is nnUNetTrainer.__init__  # the constructor is nnU-Net's, untouched


@pytest.mark.parametrize("name", BUDGET_TRAINER_NAMES)
def test_budget_trainers_found_by_name_through_ext_folder(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunet_trainers import budget

    monkeypatch.setenv("nnUNet_extTrainer", str(ext_folder()))
    cls = recursive_find_trainer_class_by_name(name)
    assert cls is getattr(budget, name)
    assert issubclass(cls, budget.CPUBudgetMixin) and issubclass(cls, budget.SeedMixin)
    assert issubclass(cls, nnUNetTrainer) and (name == "nnUNetTrainer_CPUBudget") != issubclass(
        cls, tr.LossTrainerMixin
    )


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
            assert node.level == 0, f"{path.name}: absolute imports"
            assert node.module in ("nnunet_trainers.trainers", "nnunet_trainers.budget"), node.module
            exported |= {alias.name for alias in node.names}
    assert exported == set(tr.TRAINER_NAMES) | set(BUDGET_TRAINER_NAMES)
    assert not [p for p in folder.iterdir() if p.suffix not in (".py", "") and p.name != "__pycache__"]


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_every_name_is_exported_and_found_by_nnunets_own_class_search() -> None:
    """The eight names: in TRAINER_NAMES, in ``nnunet_trainers``'s names, and found by ``recursive_find_python_class``
    in the ext folder (the function nnU-Net's trainer search calls on each folder)."""
    assert {"nnUNetTrainerMimeFixed", "nnUNetTrainerMimeFixedCE"} <= set(tr.TRAINER_NAMES)
    assert len(tr.TRAINER_NAMES) == 8
    for name in tr.TRAINER_NAMES:
        assert name in nnunet_trainers.__all__ and getattr(nnunet_trainers, name) is getattr(tr, name)
        found = recursive_find_python_class(str(ext_folder()), name, current_module=None)
        assert found is not None and found.__name__ == name
        assert issubclass(found, tr.LossTrainerMixin) and issubclass(found, nnUNetTrainer)
