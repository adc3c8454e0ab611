"""The figure of an experiment (``results.png``): per-class scores, training curves and one held-out slice."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .cases import PreparedData

__all__ = ["plot_results"]


def plot_results(
    results: dict[str, Any],
    data: PreparedData,
    examples: dict[str, np.ndarray | None],
    path: str | os.PathLike[str],
) -> None:
    """The figure: per-class Dice and HD95 bars per loss, training-loss curves, and one held-out slice with
    the ground truth and each loss's prediction overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    losses = results["losses"]
    names = list(losses)
    classes = results["data"]["classes"][1:]
    n_cols = max(3, len(names) + 1)
    fig = plt.figure(figsize=(3.2 * n_cols, 7.0), constrained_layout=True)
    gs = fig.add_gridspec(2, n_cols)
    width = 0.8 / max(1, len(names))
    xs = np.arange(len(classes))
    colors = plt.get_cmap("tab10")
    thirds = [gs[0, : n_cols // 3], gs[0, n_cols // 3 : 2 * n_cols // 3], gs[0, 2 * n_cols // 3 :]]
    for slot, (key, ylabel) in zip(
        thirds[:2], (("dice", "Dice"), ("hd95", f"HD95 ({results['data']['spacing_unit']})")), strict=True
    ):
        ax = fig.add_subplot(slot)
        for j, n in enumerate(names):
            pc = losses[n]["per_class"]
            m = np.array([pc[c][f"{key}_mean"] or 0.0 for c in classes])
            s = np.array([pc[c][f"{key}_std"] or 0.0 for c in classes])
            lo = np.minimum(s, m)  # std bars clipped to the metric's range
            hi = np.minimum(s, 1.0 - m) if key == "dice" else s
            ax.bar(
                xs + (j - (len(names) - 1) / 2) * width,
                m,
                width,
                yerr=np.stack([lo, hi]),
                capsize=2,
                label=n,
                color=colors(j % 10),
            )
        ax.set_xticks(xs, classes)
        ax.set_ylabel(ylabel)
        if key == "dice":
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"per-class {ylabel.split(' ')[0]} (held-out)")
    ax = fig.add_subplot(thirds[2])
    for j, n in enumerate(names):
        curve = np.asarray(losses[n]["loss_curve"], dtype=np.float64)
        if curve.size == 0:
            continue
        v = curve[:, 1]
        lo, hi = np.nanmin(v), np.nanmax(v)
        ax.plot(curve[:, 0], (v - lo) / (hi - lo) if hi > lo else v * 0, label=n, color=colors(j % 10), lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (min–max scaled per loss)")
    ax.set_title("training loss")

    ci, si = data.example()
    case = data.val_cases[ci]
    img = case.image[0] if si is None else np.take(case.image[0], si, axis=data.view_axis)
    gt = case.label if si is None else np.take(case.label, si, axis=data.view_axis)
    k = data.num_classes
    cmap = ListedColormap([(0, 0, 0, 0)] + [(*colors((i + 2) % 10)[:3], 0.55) for i in range(k - 1)])
    panels = [("ground truth", gt)] + [(n, examples.get(n)) for n in names]
    for j, (title, lab) in enumerate(panels):
        ax = fig.add_subplot(gs[1, j])
        ax.imshow(img, cmap="gray")
        if lab is not None:
            ax.imshow(lab, cmap=cmap, vmin=0, vmax=k - 1, interpolation="nearest")
        ax.set_title(title if j == 0 else f"{title}", fontsize=8)
        ax.axis("off")
    fig.suptitle(
        f"{results['data']['name']}: held-out case {case.case_id}" + ("" if si is None else f", slice {si}"),
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
