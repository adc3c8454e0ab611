"""A name → loss registry, so that configs, command lines and the examples pick losses by name.

>>> from monai_mime import get_loss, register_loss
>>> loss = get_loss("dice", softmax=True, to_onehot_y=True)
>>> @register_loss("my_loss")
... class MyLoss(nn.Module): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from monai_mime.losses import (
    AdaptiveMimeLoss,
    CrossEntropyLoss,
    GeneralizedSoftDiceLoss,
    MimeLoss,
    SoftDiceLoss,
    VNetDiceLoss,
)

LossFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=LossFactory)

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
    """The registered loss names, sorted."""
    return sorted(_REGISTRY)


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with ``kwargs``.

    ``"mime"`` and ``"mime_adaptive"`` take either ``a=`` and ``b=`` or ``stats=`` (a
    :class:`~monai_mime.ClassStatistics`, with the optional ``mode``, ``patch_size`` and ``weight_kwargs`` of
    :meth:`MimeLoss.from_statistics`).
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; registered losses: {', '.join(list_losses())}.") from None
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
