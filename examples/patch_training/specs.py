"""Loss specs: ``name[:key=value[:key=value...]]`` parsed into :class:`LossSpec` and built through the registry.

A list of specs is comma-separated. ``name`` is a registered loss (:func:`monai_mime.list_losses`) or ``X+ce``, a
registered ``X`` (not ``ce``) plus cross-entropy (:class:`monai_mime.losses.compound.CompoundCELoss`; its own
options ``lambda_overlap``, ``lambda_ce``, ``weight``, ``label_smoothing`` go to it, the others to ``X``). Values are
parsed as ``true``/``false``, ``none``, integers, floats, or lists of numbers written ``1/2/3``; anything else
stays a string. Every loss gets ``to_onehot_y=True, softmax=True`` (when it accepts them) plus the spec's options,
e.g. ``dice:include_background=false``, ``gdl:w_type=simple``, ``ce``. Every loss is called as
``loss(logits (B, K, *spatial), labels (B, 1, *spatial))``. For ``mime`` and every other name that builds a
:class:`monai_mime.MimeLoss` (``mime_adaptive``, your own subclasses, and their ``+ce`` compounds), unless ``a=``
and ``b=`` are given explicitly:

- ``mode=M`` picks the weight mode of :meth:`ClassStatistics.weights` (default: its default);
- ``patch=false`` uses per-image statistics instead of rescaling them to the training patch size;
- constructor options (``include_background``, ``batch``, ``reduction``, ``momentum``...) go to the loss;
- any other option goes to ``ClassStatistics.weights`` as a mode parameter (``overlap=0.5``, ``gamma=0.5``).

The spec text (whitespace removed) names the run in ``results.json``, ``results.md`` and the checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from monai_mime.losses.compound import split_compound_arguments
from monai_mime.registry import COMPOUND_SUFFIX

from .config import ExperimentError

__all__ = ["LossSpec", "base_name", "build_loss", "parse_loss_specs"]


_SPEC_RE = re.compile(r"^[A-Za-z_][\w.\-]*(\+[A-Za-z_][\w.\-]*)?$")


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if "/" in text:
        try:
            return [float(p) for p in text.split("/")]
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class LossSpec:
    """One loss to train: a registered ``name`` and its ``options``; ``text`` is its label."""

    name: str
    options: dict[str, Any]
    text: str

    @classmethod
    def parse(cls, text: str) -> LossSpec:
        """Parse ``name[:key=value...]`` (see the module docstring); raise :class:`ExperimentError` if malformed."""
        text = re.sub(r"\s+", "", text)
        name, *parts = text.split(":")
        if not name or not _SPEC_RE.match(name):
            raise ExperimentError(f"bad loss spec {text!r}: expected name[:key=value[:key=value...]]")
        options: dict[str, Any] = {}
        for part in parts:
            key, eq, value = part.partition("=")
            if not eq or not key.isidentifier():
                raise ExperimentError(f"bad option {part!r} in loss spec {text!r}: expected key=value")
            if key in options:
                raise ExperimentError(f"option {key!r} given twice in loss spec {text!r}")
            options[key] = _parse_value(value)
        return cls(name=name, options=options, text=text)


def parse_loss_specs(specs: str | Sequence[str]) -> list[LossSpec]:
    """Parse a comma-separated string (or a list of specs) and check the names against the registry."""
    from monai_mime import list_losses

    items = specs.split(",") if isinstance(specs, str) else [s for x in specs for s in str(x).split(",")]
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ExperimentError("no loss given")
    parsed = [LossSpec.parse(s) for s in items]
    known = list_losses()
    for p in parsed:
        base = base_name(p.name)
        if base not in known or (base != p.name and base == "ce"):
            raise ExperimentError(
                f"unknown loss {p.name!r}; registered losses: {', '.join(known)} "
                f"(each but 'ce' also as NAME{COMPOUND_SUFFIX})"
            )
    seen: set[str] = set()
    for p in parsed:
        if p.text in seen:
            raise ExperimentError(f"loss spec {p.text!r} given twice")
        seen.add(p.text)
    return parsed


def base_name(name: str) -> str:
    """The registered loss a name builds on: ``X`` for ``X+ce``, else the name itself."""
    return name[: -len(COMPOUND_SUFFIX)] if name.endswith(COMPOUND_SUFFIX) else name


def build_loss(
    spec: LossSpec | str,
    stats: Any = None,
    patch_size: Sequence[int] | None = None,
) -> nn.Module:
    """Instantiate ``spec`` through the registry, for logits ``(B, K, *spatial)`` and label maps ``(B, 1, *spatial)``.

    Args:
        spec: a :class:`LossSpec` or its text.
        stats: :class:`monai_mime.ClassStatistics` of the training labels (needed by ``mime``, ``mime_adaptive``
            and their ``+ce`` compounds without a/b: whether a name needs them is decided by its base name).
        patch_size: training patch size, for Mime's patch rescaling (``patch=false`` turns it off).

    Raises:
        ExperimentError: bad options (the loss's own error message, on one line).
    """
    from monai_mime import get_loss
    from monai_mime.registry import registered_loss
    from monai_mime.stats.weight_modes import mode_parameters

    if isinstance(spec, str):
        spec = LossSpec.parse(spec)
    opts = dict(spec.options)
    compound: dict[str, Any] = {}
    if spec.name != base_name(spec.name):  # X+ce: the compound's own options, the rest is X's
        compound, opts = split_compound_arguments(opts)
    entry = registered_loss(spec.name)
    defaults: dict[str, Any] = {"to_onehot_y": True, "softmax": True} if entry.monai_arguments else {}
    try:
        if entry.from_statistics is not None and not ("a" in opts or "b" in opts):
            if stats is None:
                raise ExperimentError(f"{spec.name} needs dataset statistics (or explicit a= and b=)")
            use_patch = bool(opts.pop("patch", True))
            mode = opts.pop("mode", None)
            weight_options = {"absent", *mode_parameters(mode)}
            weight_kwargs = {k: opts.pop(k) for k in list(opts) if k in weight_options}
            return get_loss(
                spec.name,
                stats=stats,
                mode=mode,
                patch_size=tuple(patch_size) if (use_patch and patch_size is not None) else None,
                weight_kwargs=weight_kwargs,
                **{**defaults, **opts, **compound},
            )
        return get_loss(spec.name, **{**defaults, **opts, **compound})
    except ExperimentError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExperimentError(f"loss {spec.text!r}: {msg}") from None
