"""Where nnU-Net finds this package's trainers: the folder to put in ``nnUNet_extTrainer``.

nnU-Net v2 (>= 2.8) resolves ``-tr <name>`` by importing every module of its own
``nnunetv2.training.nnUNetTrainer`` package, then every module of each folder listed in the environment variable
``nnUNet_extTrainer`` (``os.pathsep``-separated), each as a *top-level* module with the folder put on ``sys.path``
for the duration of the search. The folder returned here, ``nnunet_trainers/ext/monai_mime_trainers``, holds only
re-export modules with absolute imports and names that cannot collide with nnU-Net's or a user's modules.

This module imports nothing from nnU-Net (or torch), so ``monai-mime nnunet-path`` is instant::

    export nnUNet_extTrainer=$(monai-mime nnunet-path)
    # with a folder of your own trainers as well:
    export nnUNet_extTrainer=$(monai-mime nnunet-path):/path/to/my_trainers
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "ext_folder", "ext_trainer_path"]

#: The environment variable nnU-Net reads (``nnunetv2.paths.nnUNet_extTrainer``).
ENV_VAR = "nnUNet_extTrainer"


def ext_folder() -> Path:
    """The absolute path of the folder of re-export modules to list in ``nnUNet_extTrainer``.

    Returns:
        ``<installed nnunet_trainers>/ext/monai_mime_trainers`` (inside site-packages for a regular install, inside
        the source tree for an editable one).

    Raises:
        FileNotFoundError: if the folder is missing (a broken install that dropped the package data).
    """
    folder = Path(__file__).resolve().parent / "ext" / "monai_mime_trainers"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: the package data of nnunet_trainers was not installed (reinstall monai-mime)."
        )
    return folder


def ext_trainer_path(*extra: str | os.PathLike[str], existing: str | None = None) -> str:
    """A value for ``nnUNet_extTrainer``: :func:`ext_folder` joined with other folders by ``os.pathsep``.

    Args:
        *extra: further folders of trainers (e.g. your own), searched after ours.
        existing: a current value of the variable to keep (its folders come after ours); ``None`` keeps nothing.
            Duplicates are dropped, order is kept.

    Example:
        >>> import os
        >>> value = ext_trainer_path("/my/trainers", existing=os.environ.get("nnUNet_extTrainer"))
    """
    parts = [str(ext_folder())]
    if existing:
        parts.extend(p for p in existing.split(os.pathsep) if p.strip())
    parts.extend(os.fspath(p) for p in extra)
    return os.pathsep.join(dict.fromkeys(parts))  # duplicates dropped, first occurrence kept
