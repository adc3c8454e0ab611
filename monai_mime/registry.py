"""A name → loss registry, so that configs, command lines and the examples pick losses by name.

Every registered name ``X`` other than ``"ce"``, the user's own included, also answers to ``"X+ce"``:
:class:`~monai_mime.losses.compound.CompoundCELoss` around ``get_loss("X", ...)``, i.e.
``lambda_overlap · X + lambda_ce · CE`` (one pass over the logits for label maps with softmax). :func:`list_losses`
lists the registered base names only.

>>> from monai_mime import get_loss, register_loss
>>> loss = get_loss("dice", softmax=True, to_onehot_y=True)
>>> loss = get_loss("mime+ce", a=[1.0, 40.0], b=[1.0, 1.0], softmax=True, to_onehot_y=True, lambda_ce=0.5)
>>> @register_loss("my_loss")
... class MyLoss(nn.Module): ...
"""

from __future__ import annotations

from collections.abc import Callable
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

_REGISTRY: dict[str, LossFactory] = {}


def register_loss(name: str) -> Callable[[F], F]:
    """Decorator registering a loss class (or any factory returning an ``nn.Module``) under ``name``."""

    def decorator(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"a loss named {name!r} is already registered ({_REGISTRY[name]!r}).")
        _REGISTRY[name] = factory
        return factory

    return decorator


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
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown loss {name!r}; registered losses: {', '.join(list_losses())} "
            f"(each but 'ce' also as NAME{COMPOUND_SUFFIX})."
        ) from None
    return factory(**kwargs)


def _from_weights_or_statistics(loss_class: type[MimeLoss]) -> LossFactory:
    """A factory building ``loss_class`` from explicit ``a``/``b`` or from ``stats``."""

    def factory(**kwargs: Any) -> MimeLoss:
        if "stats" in kwargs:
            return loss_class.from_statistics(**kwargs)
        return loss_class(**kwargs)

    factory.__doc__ = f"{loss_class.__name__} from ``a``/``b`` or from ``stats``."
    return factory


register_loss("dice")(SoftDiceLoss)
register_loss("vnet")(VNetDiceLoss)
register_loss("gdl")(GeneralizedSoftDiceLoss)
register_loss("mime")(_from_weights_or_statistics(MimeLoss))
register_loss("mime_adaptive")(_from_weights_or_statistics(AdaptiveMimeLoss))
register_loss("ce")(CrossEntropyLoss)

__all__ = ["get_loss", "list_losses", "register_loss"]
