"""Softmax, the sums ``(I, P, G)`` and cross-entropy from a label map in one pass over the logits.

A loss over ``(I, P, G)`` plus cross-entropy needs the softmax twice (once as log-softmax) and, written as a sum of
two modules, pays for two softmaxes and two sets of saved tensors. :class:`LabelMapSumsCE` computes the softmax once
(:func:`softmax_and_label_log_probability`) and takes from it, per voxel, the cross-entropy

    ``CE_i = −(1 − ε) log s[t_i, i] − (ε / K) Σ_k log s[k, i]``    (label smoothing ``ε``, PyTorch's definition),

reduced to ``Σ_i v_i CE_i`` (``"sum"``) or ``Σ_i v_i CE_i / Σ_i v_i`` (``"mean"``; 0 when every voxel is ignored),
and the sums from the same probabilities (:func:`~monai_mime.losses.sums.probability_sums`, the code of
:class:`~monai_mime.losses.sums.LabelMapSums`). The backward pass recomputes ``s`` and writes one gradient,
``∂L/∂x`` of the sums' part plus ``c v_i (s − (1 − ε) y − ε/K)`` of the cross-entropy (``c`` the upstream
gradient, divided by ``Σ v`` for the mean), in the same channel loop (:func:`~monai_mime.losses.sums.logit_gradient_`).
Saved are the inputs and ``s[t_i, i]`` (one value per voxel), nothing the size of the logits.

:func:`class_sums_and_cross_entropy` composes a :class:`~monai_mime.losses.base.ClassSumLoss`'s own steps around this
Function: :meth:`~monai_mime.losses.base.ClassSumLoss.prepare` (checks, activation, ignore label and mask), the fused
sums in place of ``LabelMapSums``, then :meth:`~monai_mime.losses.base.ClassSumLoss.select_classes` (background).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from monai_mime.losses.base import ClassSumLoss
from monai_mime.losses.sums import (
    ClassSums,
    accumulation_dtype,
    logit_gradient_,
    probability_sums,
    recomputed_probabilities,
)

CEReduction = Literal["mean", "sum"]


def softmax_and_label_log_probability(
    x: torch.Tensor, labels: torch.Tensor, exact_everywhere: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``s = softmax(x)`` ``(B, K, N)``, ``s_t = s[b, t_i, i]`` and ``log s_t`` ``(B, N)``, in accumulation dtype.

    ``exact_everywhere``: ``log_softmax`` over all channels, then ``exp`` in place (one logarithm per logit; cheap
    where memory bandwidth bounds the pass, as on GPUs). Otherwise (CPU, where the logarithms dominate): ``softmax``
    and one logarithm per voxel, ``log s_t``, exact wherever ``s_t`` is a normal float; the voxels where it is not
    (logit gaps beyond ~87 in float32) are recomputed with ``log_softmax``. Both agree to float rounding.
    """
    dtype = accumulation_dtype(x)
    index = labels.unsqueeze(1)
    if exact_everywhere:
        log_s = torch.log_softmax(x, dim=1, dtype=dtype)
        log_s_t = log_s.gather(1, index).squeeze(1)
        s = log_s.exp_()
        return s, s.gather(1, index).squeeze(1), log_s_t
    s = torch.softmax(x, dim=1, dtype=dtype)
    s_t = s.gather(1, index).squeeze(1)
    log_s_t = s_t.log()
    underflow = s_t < torch.finfo(dtype).tiny
    if underflow.any():
        b, i = underflow.nonzero(as_tuple=True)
        exact = torch.log_softmax(x[b, :, i].to(dtype), dim=1)
        log_s_t[b, i] = exact.gather(1, labels[b, i].unsqueeze(1)).squeeze(1)
    return s, s_t, log_s_t


class LabelMapSumsCE(torch.autograd.Function):
    """Fused log-softmax + ``(I, P, G)`` + cross-entropy from a label map (see the module docstring).

    Forward: ``x`` ``(B, K, N)`` logits, ``labels`` ``(B, N)`` int64 in ``[0, K)``, ``valid`` ``(B, N)`` or ``None``;
    returns ``I, P, G`` ``(B, K)`` and the cross-entropy, a 0-dim tensor, all in float32 (float64 for float64 logits).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        labels: torch.Tensor,
        valid: torch.Tensor | None,
        squared: bool,
        label_smoothing: float,
        reduction: CEReduction,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            s, s_t, log_s_t = softmax_and_label_log_probability(x, labels, exact_everywhere=x.device.type != "cpu")
            valid = None if valid is None else valid.to(s.dtype)
            if label_smoothing:
                # Σ_k log s_k = Σ_k x_k − K lse, with lse = x_t − log s_t
                lse = x.gather(1, labels.unsqueeze(1)).squeeze(1).to(s.dtype).sub_(log_s_t)
                channel_sum = x.sum(1, dtype=s.dtype).sub_(lse, alpha=x.shape[1])
                log_s_t = log_s_t.mul(1 - label_smoothing).add_(channel_sum, alpha=label_smoothing / x.shape[1])
            total = -(log_s_t.sum() if valid is None else torch.linalg.vecdot(log_s_t.flatten(), valid.flatten()))
            intersection, prediction, ground_truth = probability_sums(s, labels, valid, squared, s_t)
            del s, log_s_t
            if reduction == "mean":
                count = total.new_tensor(labels.numel()) if valid is None else valid.sum()
                # Σ v = 0 (every voxel ignored): the term is 0, with a zero gradient, as nnU-Net skips it
                scale = 1 / count.clamp_min(torch.finfo(count.dtype).tiny)
            else:
                scale = total.new_ones(())
        ctx.save_for_backward(x, labels, valid, s_t, scale)
        ctx.squared = squared
        ctx.label_smoothing = label_smoothing
        ctx.mark_non_differentiable(ground_truth)
        return intersection, prediction, ground_truth, total * scale

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any,
        grad_i: torch.Tensor,
        grad_p: torch.Tensor,
        _grad_g: torch.Tensor,
        grad_ce: torch.Tensor,
    ) -> tuple[torch.Tensor, None, None, None, None, None]:
        x, labels, valid, s_t, scale = ctx.saved_tensors
        with torch.autocast(device_type=x.device.type, enabled=False):
            s = recomputed_probabilities(x, "softmax")
            ce_scale = grad_ce.to(s.dtype) * scale
            grad = logit_gradient_(
                s, labels, valid, grad_i, grad_p, "softmax", ctx.squared, ce_scale, ctx.label_smoothing, s_t
            )
        return grad.to(x.dtype), None, None, None, None, None


def can_fuse(loss: ClassSumLoss, input: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``loss``'s sums and a cross-entropy term can come from :class:`LabelMapSumsCE`: a label-map target,
    softmax over more than one channel, no ``other_act``."""
    return (
        loss.to_onehot_y
        and loss.softmax
        and loss.other_act is None
        and input.ndim >= 3
        and input.shape[1] > 1
        and target.ndim == input.ndim
        and target.shape[1] == 1
    )


def class_sums_and_cross_entropy(
    loss: ClassSumLoss,
    input: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: CEReduction = "mean",
) -> tuple[ClassSums, torch.Tensor]:
    """``loss.class_sums(input, target, mask)`` and the cross-entropy of ``input`` against the label map, in one pass.

    The cross-entropy takes part where the sums do: voxels of ``loss.ignore_index`` and where ``mask`` is 0 are left
    out of both (``"mean"`` divides by the number of the others). Needs :func:`can_fuse`.
    """
    if not can_fuse(loss, input, target):
        raise ValueError("the fused cross-entropy needs a label-map target and a softmax over several channels.")
    prepared = loss.prepare(input, target, mask)
    intersection, prediction, ground_truth, ce = LabelMapSumsCE.apply(
        prepared.x, prepared.target, prepared.valid, loss.squared, float(label_smoothing), reduction
    )
    return loss.select_classes(ClassSums(intersection, prediction, ground_truth)), ce
