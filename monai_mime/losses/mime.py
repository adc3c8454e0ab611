"""The Mime loss (Kervadec & de Bruijne, MIDL 2023), Eq. 3.

``L = Σ_{k,i} ω[k,i] · s[k,i]`` with ``ω = −a_k`` where ``y = 1`` and ``+b_k`` where ``y = 0``: a fixed linear map
that imitates the two-valued gradient of the soft Dice loss (Eq. 2) without ever dividing. Over the sums of
:mod:`monai_mime.losses.sums` it reads, per image and class, ``b_k (P_k − I_k) − a_k I_k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from monai_mime.losses.base import ClassSumLoss
from monai_mime.losses.sums import ClassSums

if TYPE_CHECKING:
    from monai_mime.stats import ClassStatistics


_Mime = TypeVar("_Mime", bound="MimeLoss")
#: per-class weights as the constructors take them
Weights = Sequence[float] | np.ndarray | torch.Tensor


def _as_weight_vector(name: str, value: Weights) -> torch.Tensor:
    vector = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if vector.ndim != 1 or vector.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of per-class weights, got shape {tuple(vector.shape)}."
        )
    if not torch.isfinite(vector).all() or (vector <= 0).any():
        raise ValueError(f"{name} must hold finite positive weights, got {vector.tolist()}.")
    return vector


class MimeLoss(ClassSumLoss):
    """Mime loss, Eq. 3: ``L = Σ_{b,k,i} ω s`` with ``ω = −a_k`` on the ground truth of class k, ``+b_k`` elsewhere.

    The gradient with respect to the probabilities is exactly ``ω``: constant, bounded, and well defined on empty
    patches, where every Dice variant divides by (almost) zero. Per image and class the term is
    ``b_k (P_k − I_k) − a_k I_k``; it is negative when the prediction covers the ground truth.

    A class ``weight`` (MONAI's name, see :class:`~monai_mime.losses.base.ClassSumLoss`) is a per-class factor on
    ``ω``: class k's map becomes ``−weight_k a_k`` on its ground truth and ``+weight_k b_k`` elsewhere, i.e. its
    per-(image, class) term is multiplied by ``weight_k``, as MONAI weights a Dice term. It scales class k's
    gradient and leaves its decision threshold ``b_k / (a_k + b_k)`` where a/b put it.

    Args:
        a: per-class weight on the ground truth, length ``K`` (or ``K − 1`` with ``include_background=False``,
            as MONAI's ``weight``); positive.
        b: per-class weight off the ground truth, same length; positive. Both are buffers: they follow
            ``.to(device)`` and are saved in the ``state_dict``.
        **kwargs: the shared arguments of :class:`~monai_mime.losses.base.ClassSumLoss`.

    Reductions: ``"sum"`` is ``Σ_{b,k,i} ω s`` exactly; ``"mean"`` is that sum divided by the number of
    (image, class) terms ``B·K'`` (``K'`` with ``batch=True``), so that it does not grow with the batch size;
    ``"none"`` returns the ``(B, K', 1, …)`` terms.

    A voxel takes class k rather than background once ``a_k q > b_k (1 − q)`` roughly, i.e. at a predicted
    probability ``q > b_k / (a_k + b_k)``: the ratio ``a/b`` sets the operating point (see
    :meth:`monai_mime.ClassStatistics.thresholds`).

    Example:
        >>> import torch
        >>> loss = MimeLoss(a=[1.0, 40.0, 80.0], b=[1.0, 1.0, 1.0], softmax=True, to_onehot_y=True)
        >>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        >>> loss(logits, torch.randint(0, 3, (2, 1, 16, 16))).backward()
    """

    a: torch.Tensor
    b: torch.Tensor
    #: the buffer names the constructor's a/b are stored under
    weight_buffers: tuple[str, str] = ("a", "b")

    def __init__(
        self,
        a: Weights,
        b: Weights,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        a_vector, b_vector = _as_weight_vector("a", a), _as_weight_vector("b", b)
        if a_vector.shape != b_vector.shape:
            raise ValueError(f"a and b must have the same length, got {a_vector.numel()} and {b_vector.numel()}.")
        self.register_buffer(self.weight_buffers[0], a_vector)
        self.register_buffer(self.weight_buffers[1], b_vector)

    @classmethod
    def from_statistics(
        cls: type[_Mime],
        stats: ClassStatistics,
        mode: str | None = None,
        patch_size: Sequence[int] | None = None,
        include_background: bool = True,
        weight_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> _Mime:
        """Build the loss from dataset statistics: ``a, b = stats.weights(mode, patch_size, **weight_kwargs)``.

        ``mode=None`` takes the default of :meth:`ClassStatistics.weights`. The background entry is dropped when
        ``include_background=False``. ``kwargs`` go to the constructor (``softmax=True``, ``to_onehot_y=True``...).
        """
        weight_args: dict[str, Any] = dict(weight_kwargs or {})
        if mode is not None:
            weight_args["mode"] = mode
        a, b = stats.weights(patch_size=patch_size, **weight_args)
        if not include_background:
            a, b = a[1:], b[1:]
        return cls(a, b, include_background=include_background, **kwargs)

    def formula(self, sums: ClassSums) -> torch.Tensor:
        return mime_terms(sums, self.a, self.b, self.include_background)

    def extra_repr(self) -> str:
        return f"a={self.a.tolist()}, b={self.b.tolist()}, " + super().extra_repr()


def mime_terms(sums: ClassSums, a: torch.Tensor, b: torch.Tensor, include_background: bool) -> torch.Tensor:
    """Eq. 3 over the sums, per image and class: ``b_k (P_k − I_k) − a_k I_k``."""
    intersection, prediction, _ = sums
    if intersection.shape[-1] != a.numel():
        raise ValueError(
            f"MimeLoss has a/b for {a.numel()} classes but the loss sees {intersection.shape[-1]} "
            f"(include_background={include_background}); give a/b of that length."
        )
    return b * (prediction - intersection) - a * intersection
