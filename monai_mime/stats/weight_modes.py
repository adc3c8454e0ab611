"""Mime's a/b weight modes over dataset-level class counts (Eq. 3 of Kervadec & de Bruijne, MIDL 2023).

Notation (``docs/equations.md``): ``N`` images, ``Ḡ_k`` and ``B̄_k`` the mean foreground and background voxel counts of
class k per image (or per patch; :meth:`~monai_mime.stats.ClassStatistics.weights` computes them).

Weight modes (:data:`WEIGHT_MODES`, one function each; every mode has the threshold ``b_k / (a_k + b_k)`` above
which the linear Mime loss prefers class k at a voxel):

- ``"paper"``  Eq. 3 read literally: ``a_k = 1 / (N Σ_n G_nk) = 1 / (N² Ḡ_k)``, ``b_k = 1 / (N² B̄_k)``.
- ``"mean"``   inverse mean count per image: ``a_k = 1 / Ḡ_k``, ``b_k = 1 / B̄_k`` — the natural reading of Eq. 3
  (the literal one divides by ``N`` once more, which only rescales it). Its ratio ``a/b = B̄/Ḡ`` puts the decision
  threshold at the foreground fraction.
- ``"dice"``   Eq. 2 at an operating point (prediction as large as the object, overlap ``r``, ``overlap=0.5``):
  ``a_k = (2 − r) / (2 Ḡ_k)``, ``b_k = r / (2 Ḡ_k)``; threshold ``r / 2``.
- ``"balance"`` (default, ``gamma=0.5``) a balance exponent ``γ`` on the Eq. 3 ratio with ``a_k = 1 / Ḡ_k`` fixed:
  ``b_k = a_k (Ḡ_k / B̄_k)^γ``, i.e. ``a_k / b_k = (B̄_k / Ḡ_k)^γ``; γ = 1 is ``"mean"``, γ = 0 is ``a_k = b_k``.

The default is ``"balance"`` with γ = 0.5, the square root of the Eq. 3 ratio; the comparison of the modes is in the
README ("Which a/b?") and ``docs/results``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

__all__ = ["ABSENT_RULES", "DEFAULT_MODE", "WEIGHT_MODES", "Weights", "mode_parameters"]

Weights = tuple[np.ndarray, np.ndarray]


def _paper(fg: np.ndarray, bg: np.ndarray, n: int) -> Weights:
    """Literal Eq. 3: ``a_k = 1/(N Σ_n G_nk)``, ``b_k = 1/(N Σ_n (|Ω_n| − G_nk))`` (``Σ_n = N ×`` the mean)."""
    return 1.0 / (n * n * fg), 1.0 / (n * n * bg)


def _mean(fg: np.ndarray, bg: np.ndarray, n: int) -> Weights:
    """Inverse mean counts: ``a_k = 1/Ḡ_k``, ``b_k = 1/B̄_k``."""
    return 1.0 / fg, 1.0 / bg


def _dice(fg: np.ndarray, bg: np.ndarray, n: int, overlap: float = 0.5) -> Weights:
    """Eq. 2 with ``P = G``, ``I = rG``: ``a_k = (2 − r)/(2 Ḡ_k)``, ``b_k = r/(2 Ḡ_k)``."""
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must lie in (0, 1], got {overlap}")
    return (2.0 - overlap) / (2.0 * fg), overlap / (2.0 * fg)


def _balance(fg: np.ndarray, bg: np.ndarray, n: int, gamma: float = 0.5) -> Weights:
    """``a_k = 1/Ḡ_k``, ``b_k = a_k (Ḡ_k / B̄_k)^γ``."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    a = 1.0 / fg
    return a, a * (fg / bg) ** gamma


#: mode name -> ``fn(fg, bg, n, **params) -> (a, b)`` with ``fg = Ḡ``, ``bg = B̄`` (length K) and ``n = N``.
WEIGHT_MODES: dict[str, Callable[..., Weights]] = {"paper": _paper, "mean": _mean, "dice": _dice, "balance": _balance}
#: Used when ``mode=None``.
DEFAULT_MODE = "balance"
#: What ``weights`` does for a class that never occurs (or that fills every counted voxel, for b):
#: ``"error"`` raises a ValueError naming the class; ``"one_voxel"`` gives it the weights of a class with one
#: voxel in the whole training set, i.e. a mean count of ``mean_n(scale_n) / N`` (``scale_n = 1`` without a
#: patch size) -- large but finite.
ABSENT_RULES = ("error", "one_voxel")


def mode_parameters(mode: str | None) -> list[str]:
    """The parameters weight mode ``mode`` takes (``overlap`` for ``"dice"``, ``gamma`` for ``"balance"``); None means
    :data:`DEFAULT_MODE`, an unknown mode takes none."""
    fn = WEIGHT_MODES.get(DEFAULT_MODE if mode is None else mode)
    return [] if fn is None else list(inspect.signature(fn).parameters)[3:]
