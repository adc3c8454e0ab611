"""The argument vocabulary, input checks and reductions shared by every loss of this package.

A loss here is a formula over the per-(image, class) sums ``(I, P, G)`` of :mod:`monai_mime.losses.sums`;
subclasses implement :meth:`ClassSumLoss.formula` and nothing else. The constructor arguments carry MONAI's names
and meaning (``monai.losses.DiceLoss``): ``include_background``, ``to_onehot_y``, ``sigmoid``, ``softmax``,
``other_act``, ``reduction``, ``batch``, ``weight``, plus ``ignore_index`` and ``validate``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from monai_mime.losses.sums import Activation, ClassSums, dense_sums, label_map_sums

REDUCTIONS = ("mean", "sum", "none")


class PreparedInput(NamedTuple):
    """What :meth:`ClassSumLoss.prepare` hands to the sums: logits ``x`` ``(B, K, N)``; ``target`` the label map
    ``(B, N)`` int64 in ``[0, K)`` if ``label_map``, else the dense target ``(B, K, N)``; ``valid`` ``(B, N)``
    float32 0/1 or ``None`` (mask and ignore label); the activation to apply to ``x``."""

    x: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor | None
    activation: Activation
    label_map: bool


class ClassSumLoss(nn.Module):
    """Base class: activation, label handling, ``(I, P, G)``, formula, reduction.

    Args:
        include_background: if False, class 0 takes no part in the loss (its channel still enters the softmax).
        to_onehot_y: the target is a label map ``(B, 1, *spatial)`` of integer classes. It is *not* one-hot encoded:
            the sums are taken directly from the labels (scatter-add), which is what the flag means in MONAI.
        sigmoid: apply a sigmoid to the input (independent channels, e.g. nnU-Net regions).
        softmax: apply a softmax over the channels. Ignored with a warning for a single channel, as in MONAI.
        other_act: a callable applied to the input instead (MONAI's ``other_act``); mutually exclusive with the two.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the per-(image, class) terms of :meth:`formula`.
            ``"none"`` returns them with singleton spatial dimensions appended (MONAI's broadcastable shape).
        batch: sum ``I, P, G`` over the batch before the formula (MONAI's ``batch``, nnU-Net's ``batch_dice``).
        ignore_index: a label value whose voxels take no part in any sum (label-map targets; it may lie outside
            ``[0, K)``, like nnU-Net's ignore label ``K``).
        weight: class weights, MONAI's ``DiceLoss(weight=...)``: one non-negative value per class the loss sees
            (``K``, or ``K − 1`` with ``include_background=False``), or one value for all. Each per-(image, class)
            term of :meth:`formula` is multiplied by its class's weight before the reduction (the ``"mean"`` stays
            a plain mean over the terms, as in MONAI). Where the loss sees a single class the weight is ignored, as
            MONAI does. Cast to the terms' dtype and device at each call.
        validate: check labels, shapes and finiteness on every call. The checks cost one reduction over the labels
            and one over the logits, and a host sync; switch them off in a tuned training loop.
    """

    squared: bool = False
    #: whether :meth:`formula` returns one term per class, which ``weight`` then multiplies; a formula that sums
    #: over the classes itself (the Generalized Dice) sets False and applies :meth:`class_weights` inside.
    per_class_terms: ClassVar[bool] = True
    class_weight: torch.Tensor | None

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reduction: str = "mean",
        batch: bool = False,
        ignore_index: int | None = None,
        validate: bool = True,
        weight: Sequence[float] | float | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable, got {type(other_act).__name__}.")
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("Incompatible values: more than one of sigmoid=True, softmax=True, other_act is set.")
        if reduction not in REDUCTIONS:
            raise ValueError(f"Unsupported reduction {reduction!r}, available options are {list(REDUCTIONS)}.")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.reduction = reduction
        self.batch = batch
        self.ignore_index = ignore_index
        self.validate = validate
        self.register_buffer("class_weight", None if weight is None else as_class_weight(weight))

    # -- the formula -------------------------------------------------------------------------------------------
    def formula(self, sums: ClassSums) -> torch.Tensor:
        """Per-(image, class) loss terms ``(B, K')`` (or ``(K',)`` with ``batch``) from the sums."""
        raise NotImplementedError

    # -- the sums ----------------------------------------------------------------------------------------------
    def _activation(self, num_channels: int) -> Activation:
        if self.softmax and num_channels == 1:
            warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=4)
            return "none"
        return "softmax" if self.softmax else "sigmoid" if self.sigmoid else "none"

    def prepare(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> PreparedInput:
        """The checks, activation choice, ignore label and mask applied: what the sums are taken over.

        Args:
            input: ``(B, K, *spatial)`` logits (probabilities when no activation is set).
            target: ``(B, 1, *spatial)`` label map with ``to_onehot_y=True``, else ``(B, K, *spatial)`` one-hot,
                soft or region masks.
            mask: optional ``(B, 1, *spatial)``; voxels where it is 0 take no part.
        """
        _check_shapes(input, target, mask, self.to_onehot_y)
        num_classes = input.shape[1]
        if self.other_act is not None:
            input = self.other_act(input)
        activation = self._activation(num_classes)
        if self.validate:
            _check_input_values(input, activation, uses_other_act=self.other_act is not None)
        x = input.reshape(input.shape[0], num_classes, -1)
        valid = None if mask is None else mask.reshape(mask.shape[0], -1).float()
        if self.to_onehot_y and num_classes > 1:
            labels = target.reshape(target.shape[0], -1)
            if self.validate:
                _check_labels(labels, num_classes, self.ignore_index)
            labels = labels.long()
            if self.ignore_index is not None:
                keep = labels != self.ignore_index
                valid = keep.float() if valid is None else valid * keep
                labels = labels.masked_fill(~keep, 0)
            return PreparedInput(x, labels, valid, activation, label_map=True)
        if self.ignore_index is not None:
            raise ValueError("ignore_index needs a label-map target (to_onehot_y=True); pass a mask instead.")
        return PreparedInput(x, target.reshape(target.shape[0], target.shape[1], -1), valid, activation, False)

    def select_classes(self, sums: ClassSums) -> ClassSums:
        """The sums of all ``K`` channels checked for NaN/inf (with ``validate``), background dropped when
        ``include_background=False``: the classes :meth:`formula` is taken over."""
        if self.validate and not (torch.isfinite(sums.prediction).all() and torch.isfinite(sums.ground_truth).all()):
            raise ValueError("input or target contains NaN or inf.")
        if not self.include_background:
            if sums.prediction.shape[1] == 1:
                warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
            else:
                sums = ClassSums(*(t[:, 1:] for t in sums))
        return sums

    def class_sums(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> ClassSums:
        """``(I, P, G)`` of shape ``(B, K')`` in float32, background dropped when ``include_background=False``:
        :meth:`prepare`, the sums of :mod:`monai_mime.losses.sums`, :meth:`select_classes` (shapes as in
        :meth:`prepare`)."""
        p = self.prepare(input, target, mask)
        if p.label_map:
            sums = label_map_sums(p.x, p.target, p.valid, p.activation, self.squared)
        else:
            sums = dense_sums(p.x, p.target, p.valid, p.activation, self.squared)
        return self.select_classes(sums)

    # -- reduction ---------------------------------------------------------------------------------------------
    def loss_from_sums(self, sums: ClassSums, num_voxels: int | None = None) -> torch.Tensor:
        """The loss from ``(I, P, G)``: :meth:`batched`, then :meth:`formula`, then :meth:`reduce`.

        ``num_voxels`` is the number of spatial voxels of one image of the input the sums were taken over
        (``forward`` passes it). The formulas of this module ignore it; a loss whose state is kept per voxel
        (:class:`~monai_mime.AdaptiveMimeLoss`) needs it to mean the same thing at every output scale. Adapters call
        this method with sums gathered across processes (nnU-Net's DDP batch dice) or computed by a fused compound.
        """
        return self.reduce(self.weighted(self.formula(self.batched(sums))))

    def batched(self, sums: ClassSums) -> ClassSums:
        """The sums over the batch, ``(K',)``, with ``batch``; unchanged otherwise."""
        return ClassSums(*(t.sum(0) for t in sums)) if self.batch else sums

    def weighted(self, terms: torch.Tensor) -> torch.Tensor:
        """The per-(image, class) terms of :meth:`formula` times the class ``weight`` (:meth:`class_weights`, MONAI's
        rule) for a loss whose terms are per class; unchanged without a weight or for a loss summed over classes."""
        if not self.per_class_terms:
            return terms
        weight = self.class_weights(terms.shape[-1], terms)
        return terms if weight is None else terms * weight

    def reduce(self, terms: torch.Tensor) -> torch.Tensor:
        """The per-(image, class) terms of :meth:`formula` reduced by ``reduction``."""
        if self.reduction == "mean":
            return terms.mean()
        if self.reduction == "sum":
            return terms.sum()
        return terms

    def class_weights(self, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
        """``weight`` as a ``(num_classes,)`` tensor in ``like``'s dtype and on its device; ``None`` without a weight
        or for a single class (MONAI's rule). A single value is used for every class.

        Raises:
            ValueError: the weight's length is not ``num_classes`` (the classes the loss sees, background dropped
                with ``include_background=False``).
        """
        weight = self.class_weight
        if weight is None or num_classes == 1:
            return None
        if weight.ndim == 0:
            weight = weight.expand(num_classes)
        elif weight.numel() != num_classes:
            raise ValueError(
                f"weight has {weight.numel()} values but the loss sees {num_classes} classes; "
                f"with include_background={self.include_background} give "
                + ("one per class." if self.include_background else "one per class except the background (class 0).")
            )
        return weight.to(dtype=like.dtype, device=like.device)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``input`` against ``target`` (see :meth:`class_sums` for the shapes)."""
        loss = self.loss_from_sums(self.class_sums(input, target, mask), num_voxels=math.prod(input.shape[2:]))
        if self.reduction == "none":
            loss = loss.reshape(loss.shape + (1,) * (input.ndim - 2))
        return loss

    def extra_repr(self) -> str:
        return (
            f"include_background={self.include_background}, to_onehot_y={self.to_onehot_y}, "
            f"activation={self._activation(2)!r}, reduction={self.reduction!r}, batch={self.batch}, "
            f"ignore_index={self.ignore_index}"
            + ("" if self.class_weight is None else f", weight={self.class_weight.tolist()}")
        )


def as_class_weight(weight: Sequence[float] | float | np.ndarray | torch.Tensor) -> torch.Tensor:
    """``weight`` as a float32 tensor of one value or one value per class, checked finite and non-negative."""
    tensor = torch.as_tensor(weight).detach().to(torch.float32).clone()
    if tensor.ndim > 1:
        raise ValueError(f"weight must be one value or one value per class, got shape {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise ValueError(f"weight must hold finite values >= 0, got {tensor.tolist()}.")
    return tensor


def _check_shapes(input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, label_map: bool) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"input and target must be tensors, got {type(input).__name__} and {type(target).__name__}.")
    if input.ndim < 3:
        raise ValueError(
            f"input must have shape (B, K, *spatial) with at least one spatial dim, got {tuple(input.shape)}."
        )
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating point tensor of logits or probabilities, got {input.dtype}.")
    expected_channels = (1, input.shape[1]) if label_map else (input.shape[1],)
    if (
        target.ndim != input.ndim
        or target.shape[0] != input.shape[0]
        or target.shape[2:] != input.shape[2:]
        or target.shape[1] not in expected_channels
    ):
        hint = (
            "a label map (B, 1, *spatial)"
            if label_map
            else "a one-hot target (B, K, *spatial); pass to_onehot_y=True for a label map"
        )
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match input {tuple(input.shape)}: expected {hint}."
        )
    if label_map and target.shape[1] != 1 and input.shape[1] > 1:
        raise ValueError(f"to_onehot_y=True expects a label map (B, 1, *spatial), got target {tuple(target.shape)}.")
    if mask is not None and (
        mask.shape[0] != input.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != input.shape[2:]
    ):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match input {tuple(input.shape)}: expected (B, 1, *spatial)."
        )


def _check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int | None) -> None:
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError("label map holds non-integer values; pass integer class labels.")
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bad.any():
        values = torch.unique(labels[bad])[:8].tolist()
        allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
        raise ValueError(f"label values {values} outside {allowed} for an input of {num_classes} channels.")


def _check_input_values(input: torch.Tensor, activation: Activation, uses_other_act: bool) -> None:
    extremes = torch.aminmax(input.detach())
    low, high = float(extremes.min), float(extremes.max)
    if not (math.isfinite(low) and math.isfinite(high)):  # NaN propagates through min/max
        raise ValueError(f"input contains NaN or inf (values in [{low}, {high}]).")
    if activation == "none" and not uses_other_act and (low < 0 or high > 1):
        raise ValueError(
            f"input values in [{low:.3g}, {high:.3g}] are not probabilities; "
            "pass softmax=True or sigmoid=True for logits."
        )
    if activation == "softmax" and low >= 0 and high <= 1:
        channel_sum = input.detach().sum(1, dtype=torch.float32)
        if torch.allclose(channel_sum, torch.ones_like(channel_sum), atol=1e-3):
            raise ValueError(
                "input already sums to 1 over the channels: pass logits with softmax=True, not probabilities."
            )
