"""Forward+backward time and peak extra memory of this package's losses and compounds against MONAI's, nnU-Net's and
``torch.nn.functional.cross_entropy`` on the same inputs, in the same run.

    python examples/benchmark_losses.py                  # the three shapes of docs/results/benchmarks.md
    python examples/benchmark_losses.py --repeats 3 --shapes 2d --labels shells,uniform
    python examples/benchmark_losses.py --threads 1 --clock process   # on a machine shared with other jobs

Labels: ``shells`` (default) are realistic label maps — ACDC's class fractions (96 % background), each class one
coherent nested shell (:mod:`benchmark_labels`); ``uniform`` draws every voxel's class uniformly at random, which
flatters kernels that accumulate into per-class buckets.

Time: the median over ``--repeats`` rounds, the losses taking turns within each round so that a change in the
machine's load hits all of them alike, of one forward and one backward pass (``torch.autograd.grad`` with respect
to the logits); the spread is (slowest − fastest round) / median. Ratios are to MONAI's ``DiceLoss`` (standalone
losses) or ``DiceCELoss`` (compounds), both ``softmax=True, to_onehot_y=True``, and to ``cross_entropy``.

Peak extra memory: the highest memory in use during the step above what was live before it, divided by the size
of the logits; it includes the returned gradient (one logits' worth, the floor for any loss). On CUDA it is
``max_memory_allocated``; on the CPU it is the resident set's high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``), measured in a child process whose glibc returns every freed block to the system
(``MALLOC_MMAP_THRESHOLD_``), since a reusing allocator hides temporaries. Timing runs with the default allocator.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from benchmark_labels import class_fractions, nested_shells

import monai_mime

SHAPES = {"2d": (12, 4, 256, 256), "3d": (2, 4, 96, 96, 96), "3d14": (2, 14, 64, 64, 64)}
LABELS = ("shells", "uniform")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
COMPOUNDS = {"SoftDiceCELoss", "VNetCELoss", "GDLCELoss", "MimeCELoss", "AdaptiveMimeCELoss"}


def candidates(num_classes: int) -> dict[str, LossFn]:
    """Every loss under test, as ``f(logits, label_map) -> scalar``."""
    from monai.losses import DiceCELoss, DiceLoss, GeneralizedDiceLoss

    common: dict[str, Any] = dict(softmax=True, to_onehot_y=True)
    ours: dict[str, Any] = dict(common, validate=False)
    rng = torch.Generator().manual_seed(0)
    a = (torch.rand(num_classes, generator=rng) * 50 + 1).tolist()
    b = (torch.rand(num_classes, generator=rng) + 0.5).tolist()
    soft_dice = monai_mime.SoftDiceLoss(**ours)
    losses: dict[str, LossFn] = {
        "monai DiceLoss": DiceLoss(**common),
        "monai DiceLoss(squared_pred)": DiceLoss(squared_pred=True, **common),
        "monai GeneralizedDiceLoss": GeneralizedDiceLoss(**common),
        "torch cross_entropy": lambda x, t: F.cross_entropy(x, t[:, 0]),
        "MimeLoss": monai_mime.MimeLoss(a, b, **ours),
        "MimeLoss (validate=True)": monai_mime.MimeLoss(a, b, **common),
        "SoftDiceLoss": soft_dice,
        "VNetDiceLoss": monai_mime.VNetDiceLoss(**ours),
        "GeneralizedSoftDiceLoss": monai_mime.GeneralizedSoftDiceLoss(**ours),
        "monai DiceCELoss": DiceCELoss(**common),
        "SoftDiceLoss + F.cross_entropy": lambda x, t: soft_dice(x, t) + F.cross_entropy(x, t[:, 0]),
        "SoftDiceCELoss": monai_mime.SoftDiceCELoss(**ours),
        "VNetCELoss": monai_mime.VNetCELoss(**ours),
        "GDLCELoss": monai_mime.GDLCELoss(**ours),
        "MimeCELoss": monai_mime.MimeCELoss(a, b, **ours),
        "AdaptiveMimeCELoss": monai_mime.AdaptiveMimeCELoss(a, b, **ours),
    }
    try:
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
        from nnunetv2.utilities.helpers import softmax_helper_dim1
    except ImportError:
        print("nnunetv2 not installed: its losses are left out (pip install 'monai-mime[nnunet]').", file=sys.stderr)
        return losses
    losses["nnU-Net MemoryEfficientSoftDiceLoss"] = MemoryEfficientSoftDiceLoss(
        apply_nonlin=softmax_helper_dim1, batch_dice=False, do_bg=True
    )
    losses["nnU-Net DC_and_CE_loss"] = DC_and_CE_loss({"batch_dice": False, "do_bg": False}, {}, 1, 1)
    return losses


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def step(loss: LossFn, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """One forward and backward pass; the gradient is dropped at once."""
    (grad,) = torch.autograd.grad(loss(logits, labels), logits)
    del grad


def seconds_once(loss: LossFn, logits: torch.Tensor, labels: torch.Tensor, clock: Callable[[], float]) -> float:
    if logits.device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    step(loss, logits, labels)
    if logits.device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def peak_mib_once(loss: LossFn, logits: torch.Tensor, labels: torch.Tensor) -> float:
    if logits.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        allocated = torch.cuda.memory_allocated()
        step(loss, logits, labels)
        return (torch.cuda.max_memory_allocated() - allocated) / 2**20
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    step(loss, logits, labels)
    return _status_mib("VmHWM") - before


def samples_per_loss(
    probe: Callable[[LossFn, torch.Tensor, torch.Tensor], float],
    losses: dict[str, LossFn],
    logits: torch.Tensor,
    labels: torch.Tensor,
    repeats: int,
) -> dict[str, list[float]]:
    """``probe`` per loss in ``repeats`` rounds after one warm-up round; the losses take turns within a round."""
    samples: dict[str, list[float]] = {key: [] for key in losses}
    for repeat in range(repeats + 1):
        for key, loss in losses.items():
            value = probe(loss, logits, labels)
            if repeat:
                samples[key].append(value)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {key: statistics.median(values) for key, values in samples.items()}


def inputs(shape: tuple[int, ...], device: torch.device, labels: str = "shells") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``N(0, 1)`` and label maps of the given kind (see the module docstring), seeded."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).to(device).requires_grad_()
    if labels == "shells":
        label_map = nested_shells(shape[0], shape[2:], class_fractions(shape[1]), generator)
    else:
        label_map = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator)
    return logits, label_map.to(device)


def peak_memory(shape_name: str, labels: str, device: torch.device, repeats: int) -> dict[str, float]:
    """Peak extra MiB per loss; on the CPU measured in a child process (see the module docstring)."""
    if device.type == "cuda":
        logits, label_map = inputs(SHAPES[shape_name], device, labels)
        return medians(samples_per_loss(peak_mib_once, candidates(logits.shape[1]), logits, label_map, repeats))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    command = [sys.executable, __file__, "--shapes", shape_name, "--labels", labels, "--repeats", str(repeats)]
    run = subprocess.run(command + ["--memory-json"], env=env, check=True, capture_output=True, text=True)
    return json.loads(run.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="2d,3d,3d14", help=f"comma list of {list(SHAPES)}")
    parser.add_argument("--labels", default="shells", help=f"comma list of {list(LABELS)}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="process: CPU time of this process (all its threads), robust to other jobs on a shared machine",
    )
    parser.add_argument("--no-memory", action="store_true", help="time only")
    parser.add_argument("--memory-json", action="store_true", help=argparse.SUPPRESS)  # the CPU memory child
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_json:
        logits, labels = inputs(SHAPES[args.shapes], device, args.labels)
        samples = samples_per_loss(peak_mib_once, candidates(logits.shape[1]), logits, labels, args.repeats)
        print(json.dumps(medians(samples)))
        return
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, {args.repeats} rounds, "
        f"{args.clock} clock"
    )
    for name, kind in itertools.product(args.shapes.split(","), args.labels.split(",")):
        logits, labels = inputs(SHAPES[name], device, kind)
        clock = time.process_time if args.clock == "process" else time.perf_counter
        timer = functools.partial(seconds_once, clock=clock)
        samples = samples_per_loss(timer, candidates(logits.shape[1]), logits, labels, args.repeats)
        times = medians(samples)
        peaks = None if args.no_memory else peak_memory(name, kind, device, max(2, args.repeats // 3))
        logits_mib = logits.numel() * logits.element_size() / 2**20
        ce = times["torch cross_entropy"]
        print(f"\n### {name} {tuple(logits.shape)}, {kind} labels: logits {logits_mib:.0f} MiB")
        print("| loss | ms | spread | × MONAI Dice(CE) | × cross_entropy | peak extra memory (× logits) |")
        print("|---|---:|---:|---:|---:|---:|")
        for key, seconds in times.items():
            reference = times["monai DiceCELoss" if key in COMPOUNDS or "+" in key else "monai DiceLoss"]
            spread = (max(samples[key]) - min(samples[key])) / seconds
            peak = "" if peaks is None else f"{peaks[key] / logits_mib:.1f}"
            print(
                f"| {key} | {seconds * 1e3:.1f} | {spread:.0%} | {seconds / reference:.2f} | {seconds / ce:.2f} "
                f"| {peak} |"
            )


if __name__ == "__main__":
    main()
