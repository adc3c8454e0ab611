"""The base class the trainer mixins declare for the type checker: ``nnUNetTrainer`` there, ``object`` at runtime.

A mixin goes *first* in a trainer's bases (``class T(MimeLossMixin, nnUNetTrainer)``), so at runtime it must not
derive from ``nnUNetTrainer`` itself; for mypy it does, so that the trainer attributes it uses are known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as TrainerBase
else:
    TrainerBase = object

__all__ = ["TrainerBase"]
