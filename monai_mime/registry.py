"""A name → loss registry, so that configs, command lines and the examples pick losses by name.

Every registered name ``X`` other than ``"ce"``, the user's own included, also answers to ``"X+ce"``:
:class:`~monai_mime.losses.compound.CompoundCELoss` around ``get_loss("X", ...)``, i.e.
``lambda_overlap · X + lambda_ce · CE`` (one pass over the logits for label maps with softmax). :func:`list_losses`
lists the registered base names only.

The registry records what each loss needs (:class:`RegisteredLoss`, :func:`registered_loss`): whether it can be
built from dataset statistics (``stats=``; the Mime losses) and whether it takes MONAI's activation and label
arguments (``softmax``, ``to_onehot_y``...; all but ``"ce"``), so that callers can build any registered loss
without trying it first.

>>> from monai_mime import get_loss, register_loss
>>> loss = get_loss("dice", softmax=True, to_onehot_y=True)
>>> loss = get_loss("mime+ce", a=[1.0, 40.0], b=[1.0, 1.0], softmax=True, to_onehot_y=True, lambda_ce=0.5)
>>> @register_loss("my_loss")
... class MyLoss(nn.Module): ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from monai_mime.losses import (
    AdaptiveMimeLoss,
    CompoundCELoss,
    CrossEntropyLoss,
    GeneralizedSoftDiceLoss,
    MimeLoss,
    SoftDiceLoss,
    VNetDiceLoss,
)
from monai_mime.losses.compound import split_compound_arguments

LossFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=LossFactory)
COMPOUND_SUFFIX = "+ce"


@dataclass(frozen=True)
class RegisteredLoss:
    """A registered loss and what it needs.

    Attributes:
        factory: the class or function that builds it from keyword arguments.
        from_statistics: builds it from a :class:`~monai_mime.ClassStatistics` (``from_statistics(stats, mode=None,
            patch_size=None, include_background=True, weight_kwargs=None, **loss_kwargs)``, as
            :meth:`MimeLoss.from_statistics`); ``None`` for losses that take no statistics.
        monai_arguments: whether it takes MONAI's ``include_background``, ``to_onehot_y``, ``sigmoid``, ``softmax``,
            ``other_act``, ``reduction``, ``batch`` (every :class:`~monai_mime.losses.base.ClassSumLoss`).
    """

    factory: LossFactory
    from_statistics: LossFactory | None = None
    monai_arguments: bool = True


_REGISTRY: dict[str, RegisteredLoss] = {}


def register_loss(
    name: str, *, from_statistics: LossFactory | None = None, monai_arguments: bool = True
) -> Callable[[F], F]:
    """Decorator registering a loss class (or any factory returning an ``nn.Module``) under ``name``, with what it
    needs (see :class:`RegisteredLoss`)."""

    def decorator(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"a loss named {name!r} is already registered ({_REGISTRY[name].factory!r}).")
        _REGISTRY[name] = RegisteredLoss(factory, from_statistics, monai_arguments)
        return factory

    return decorator


def registered_loss(name: str) -> RegisteredLoss:
    """What the registry records of ``name``; for ``"X+ce"``, of ``X`` (the loss the compound wraps)."""
    base = name[: -len(COMPOUND_SUFFIX)] if name.endswith(COMPOUND_SUFFIX) and name not in _REGISTRY else name
    try:
        if base == "ce" and base != name:
            raise KeyError(name)
        return _REGISTRY[base]
    except KeyError:
        raise KeyError(
            f"unknown loss {name!r}; registered losses: {', '.join(list_losses())} "
            f"(each but 'ce' also as NAME{COMPOUND_SUFFIX})."
        ) from None


def list_losses() -> list[str]:
    """The registered loss names, sorted (each name ``X`` but ``"ce"`` also answers to ``"X+ce"``)."""
    return sorted(_REGISTRY)


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with ``kwargs``.

    ``"mime"`` and ``"mime_adaptive"`` take either ``a=`` and ``b=`` or ``stats=`` (a
    :class:`~monai_mime.ClassStatistics`, with the optional ``mode``, ``patch_size`` and ``weight_kwargs`` of
    :meth:`MimeLoss.from_statistics`).

    ``"X+ce"`` builds ``CompoundCELoss(get_loss("X", **rest), **own)`` where ``own`` are the compound's arguments
    (``lambda_overlap`` or its alias ``lambda_dice``, ``lambda_ce``, ``weight``, ``label_smoothing``) and ``rest``
    the others.
    """
    if name not in _REGISTRY and name.endswith(COMPOUND_SUFFIX):
        base = name[: -len(COMPOUND_SUFFIX)]
        if base in _REGISTRY and base != "ce":
            own, rest = split_compound_arguments(kwargs)
            return CompoundCELoss(get_loss(base, **rest), **own)
    entry = registered_loss(name)
    if "stats" in kwargs:
        if entry.from_statistics is None:
            raise TypeError(f"loss {name!r} is not built from dataset statistics; it takes no stats=.")
        return entry.from_statistics(**kwargs)
    return entry.factory(**kwargs)


register_loss("dice")(SoftDiceLoss)
register_loss("vnet")(VNetDiceLoss)
register_loss("gdl")(GeneralizedSoftDiceLoss)
register_loss("mime", from_statistics=MimeLoss.from_statistics)(MimeLoss)
register_loss("mime_adaptive", from_statistics=AdaptiveMimeLoss.from_statistics)(AdaptiveMimeLoss)
register_loss("ce", monai_arguments=False)(CrossEntropyLoss)

__all__ = ["RegisteredLoss", "get_loss", "list_losses", "register_loss", "registered_loss"]
