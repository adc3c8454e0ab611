"""The per-(image, class) sums that every loss of this package is a formula over.

For probabilities ``s[b, k, i]``, a one-hot ground truth ``y[b, k, i]`` and a validity mask ``v[b, i]``
(0 on ignored voxels), ``docs/equations.md`` defines

    I[b, k] = Σ_i v·y·s          (soft intersection)
    P[b, k] = Σ_i v·s  or  Σ_i v·s²   (prediction mass; squared for V-Net, Eq. 5)
    G[b, k] = Σ_i v·y            (ground-truth voxel count)

With a label map ``t[b, i]`` (what MONAI and nnU-Net hand over) ``y`` is never built: ``I`` is a scatter-add of
``s[b, t_i, i]`` into bucket ``t_i`` and ``G`` one of ones (:func:`bucket_sums`). :class:`LabelMapSums` does this in
a fused ``torch.autograd.Function`` that applies the activation itself and saves its inputs and ``s[b, t_i, i]`` (one
value per voxel, ``1/K`` of the logits), nothing the size of the logits; the pieces
(:func:`probability_sums`, :func:`logit_gradient_`) are shared with the fused cross-entropy compound
(:mod:`monai_mime.losses.fused_ce`). The backward pass
recomputes the probabilities and writes into them, channel by channel, the gradient with respect to the logits (the
activation's Jacobian applied to ``∂L/∂s = ∂L/∂P · ∂P/∂s + ∂L/∂I · y``). A loss that is any function of
``(I, P, G)`` therefore holds one K-channel float32 tensor at a time, which becomes the gradient.

All sums accumulate in float32 (float64 for float64 inputs), also for float16 / bfloat16 inputs under autocast.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch

Activation = Literal["softmax", "sigmoid", "none"]


class ClassSums(NamedTuple):
    """``I``, ``P``, ``G`` of shape ``(B, K)`` in float32 (see the module docstring)."""

    intersection: torch.Tensor
    prediction: torch.Tensor
    ground_truth: torch.Tensor


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision and float32 inputs, float64 for float64 inputs (gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def _activate(x: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Probabilities in :func:`accumulation_dtype` from logits ``x`` ``(B, K, N)``.

    No float32 copy of ``x`` is made for softmax.
    """
    dtype = accumulation_dtype(x)
    if activation == "softmax":
        return torch.softmax(x, dim=1, dtype=dtype)
    if activation == "sigmoid":
        return torch.sigmoid(x.to(dtype))
    return x.to(dtype)


def bucket_sums(labels: torch.Tensor, values: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """``out[b, k] = Σ_i values[b, i] · [labels[b, i] = k]`` (``values=None``: 1), in ``values``' dtype (float32).

    ``labels`` ``(B, N)`` int64 in ``[0, K)``. A scatter-add into ``(B, K)`` buckets; its comparison with
    ``index_add_`` on flattened ``b·K + t`` indices and per-class masked sums is in the README ("Speed and memory").
    """
    if values is None:
        values = torch.ones((), dtype=torch.float32, device=labels.device).expand(labels.shape)
    return values.new_zeros((labels.shape[0], num_classes)).scatter_add_(1, labels, values)


def probability_sums(
    s: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    squared: bool,
    s_t: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(I, P, G)`` from probabilities ``s`` ``(B, K, N)`` and a label map (see the module docstring).

    ``s_t`` ``(B, N)``: ``s[b, t_i, i]`` if the caller has gathered it already. With ``squared`` the probabilities
    are squared in place (no second K-channel tensor): ``s`` must be the caller's own tensor, not the input.
    """
    if s_t is None:
        s_t = s.gather(1, labels.unsqueeze(1)).squeeze(1)
    intersection = bucket_sums(labels, s_t if valid is None else s_t * valid, s.shape[1])
    ground_truth = bucket_sums(labels, valid, s.shape[1]).to(s.dtype)
    mass = s.square_() if squared else s
    prediction = mass.sum(-1) if valid is None else torch.bmm(mass, valid.unsqueeze(-1)).squeeze(-1)
    return intersection, prediction, ground_truth


def logit_gradient_(
    s: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    grad_i: torch.Tensor,
    grad_p: torch.Tensor,
    activation: Activation,
    squared: bool,
    ce_scale: torch.Tensor | None = None,
    ce_smoothing: float = 0.0,
    s_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """The gradient with respect to the logits, written into the probabilities ``s`` ``(B, K, N)`` channel by channel.

    From the upstream ``gI, gP`` ``(B, K)`` the gradient with respect to the probabilities is
    ``ω[b,k,i] = v_i (gP[b,k] · (2 s[b,k,i] if squared else 1) + gI[b,k] y[b,k,i])``; it is mapped to the logits by
    the activation's Jacobian: ``s ⊙ (ω − Σ_k s_k ω_k)`` for softmax, ``ω ⊙ s (1 − s)`` for sigmoid, ``ω`` for none.

    ``ce_scale`` (softmax only) adds the gradient of a cross-entropy term ``c · Σ_i v_i CE_i`` with label smoothing
    ``ε``, ``c · v_i (s − (1 − ε) y − ε / K)``: the ``c s`` part rides in the same channel loop as the softmax
    Jacobian (``s_k (c_k − mean + c)``), the ``y`` part in the same scatter as the intersection's.
    """
    grad_i, grad_p = grad_i.to(s.dtype), grad_p.to(s.dtype)
    # the y-part of ω sits on channel t_i only: y_term is its image under the activation's Jacobian there
    y_term = grad_i.gather(1, labels)  # gI[b, t_i]
    if activation != "none":
        if s_t is None:
            s_t = s.gather(1, labels.unsqueeze(1)).squeeze(1)
        y_term.mul_(s_t if activation == "softmax" else s_t * (1 - s_t))
    slope = 2 * grad_p if squared else grad_p  # c_k = slope_k · s_k if squared else slope_k
    if activation == "softmax":
        # Σ_k s_k ω_k = Σ_k s_k c_k + s_t gI_t
        if squared:
            mean = y_term.clone()
            for k in range(s.shape[1]):
                mean.addcmul_(s[:, k], s[:, k] * slope[:, k : k + 1])
        else:
            mean = torch.bmm(grad_p.unsqueeze(1), s).squeeze(1).add_(y_term)
        if ce_scale is not None:
            mean.sub_(ce_scale)
    elif ce_scale is not None:
        raise ValueError("a fused cross-entropy term needs the softmax activation.")
    if activation == "softmax" and not squared:
        # s_k (c_k − mean) without a temporary: ``mean`` becomes c_k − mean in place, channel after channel
        offset, previous = mean.neg_(), torch.zeros_like(slope[:, :1])
        for k in range(s.shape[1]):
            slope_k = slope[:, k : k + 1]
            s[:, k].mul_(offset.add_(slope_k - previous))
            previous = slope_k
    else:
        for k in range(s.shape[1]):
            s_k, slope_k = s[:, k], slope[:, k : k + 1]
            if activation == "softmax":  # s_k (c_k − mean), one single-channel temporary
                s_k.mul_((s_k * slope_k).sub_(mean))
            elif activation == "sigmoid":  # s_k (1 − s_k) c_k
                s_k.mul_((1 - s_k).mul_(s_k * slope_k if squared else slope_k))
            elif squared:  # c_k
                s_k.mul_(slope_k)
            else:
                s_k.copy_(slope_k.expand_as(s_k))
    grad = s
    if ce_scale is not None:
        y_term.sub_(ce_scale * (1 - ce_smoothing))
        if ce_smoothing:
            grad.sub_(ce_scale * ce_smoothing / s.shape[1])
    grad.scatter_add_(1, labels.unsqueeze(1), y_term.unsqueeze(1))
    if valid is not None:
        grad.mul_(valid.unsqueeze(1))
    return grad


class LabelMapSums(torch.autograd.Function):
    """Fused activation + ``(I, P, G)`` from a label map, with the gradient taken with respect to the logits.

    Forward: ``x`` ``(B, K, N)`` logits (any float dtype), ``labels`` ``(B, N)`` int64 in ``[0, K)``, ``valid``
    ``(B, N)`` float32 0/1 or ``None``. Backward: :func:`logit_gradient_` on the recomputed probabilities.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        labels: torch.Tensor,
        valid: torch.Tensor | None,
        activation: Activation,
        squared: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            s = recomputed_probabilities(x, activation) if squared else _activate(x, activation)
            valid = None if valid is None else valid.to(s.dtype)
            s_t = s.gather(1, labels.unsqueeze(1)).squeeze(1)
            intersection, prediction, ground_truth = probability_sums(s, labels, valid, squared, s_t)
        ctx.save_for_backward(x, labels, valid, s_t)
        ctx.activation = activation
        ctx.squared = squared
        ctx.mark_non_differentiable(ground_truth)
        return intersection, prediction, ground_truth

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, grad_i: torch.Tensor, grad_p: torch.Tensor, _grad_g: torch.Tensor
    ) -> tuple[torch.Tensor, None, None, None, None]:
        x, labels, valid, s_t = ctx.saved_tensors
        with torch.autocast(device_type=x.device.type, enabled=False):
            # The probabilities are recomputed rather than saved: between the passes only the logits (alive anyway)
            # are held, and the gradient is written into the recomputed tensor one channel at a time, so the whole
            # pass holds one K-channel tensor plus a few single-channel ones.
            s = recomputed_probabilities(x, ctx.activation)
            grad = logit_gradient_(s, labels, valid, grad_i, grad_p, ctx.activation, ctx.squared, s_t=s_t)
        return grad.to(x.dtype), None, None, None, None


def recomputed_probabilities(x: torch.Tensor, activation: Activation) -> torch.Tensor:
    """:func:`_activate` as a tensor of its own (never ``x`` itself), to be overwritten."""
    s = _activate(x, activation)
    return s.clone() if s.data_ptr() == x.data_ptr() else s


def label_map_sums(
    x: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None = None,
    activation: Activation = "softmax",
    squared: bool = False,
) -> ClassSums:
    """``(I, P, G)`` from logits ``x`` ``(B, K, N)`` and a label map ``labels`` ``(B, N)`` without a one-hot tensor.

    ``labels`` must hold values in ``[0, K)`` everywhere, ignored voxels included (they are zeroed by ``valid``).
    """
    return ClassSums(*LabelMapSums.apply(x, labels, valid, activation, squared))


def dense_sums(
    x: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    activation: Activation = "softmax",
    squared: bool = False,
) -> ClassSums:
    """``(I, P, G)`` from logits ``x`` ``(B, K, N)`` and a dense target ``(B, K, N)`` (one-hot, soft or region masks).

    Plain autograd; used when the caller already holds a K-channel target, so no one-hot is built here either.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        s = _activate(x, activation)
        y = target.to(s.dtype)
        if valid is not None:
            valid = valid.to(s.dtype)
            y = y * valid.unsqueeze(1)
            s_for_p = s * valid.unsqueeze(1)
        else:
            s_for_p = s
        intersection = torch.linalg.vecdot(s, y)
        prediction = torch.linalg.vecdot(s_for_p, s) if squared else s_for_p.sum(-1)
        ground_truth = y.sum(-1)
    return ClassSums(intersection, prediction, ground_truth.detach())
