#!/usr/bin/env python
"""Compare the losses under patch-based training: one UNet per loss, same seed, data and budget.

    python examples/train_patches.py --out results/synthetic                # built-in rare-class data, CPU ok
    python examples/train_patches.py --quick                                 # smoke run, < 1 min on a CPU
    python examples/train_patches.py --spatial-dims 3 --device cuda          # 3D UNet on 3D patches of volumes
    python examples/train_patches.py --quick --spatial-dims 3                # 3D smoke run, seconds on a CPU
    python examples/train_patches.py --data /path/to/Dataset027_ACDC --patch-size 128 \\
        --epochs 30 --steps-per-epoch 250 --out results/acdc                  # an nnU-Net raw dataset
    torchrun --nproc_per_node 2 examples/train_patches.py --out results/ddp   # DDP, one process per GPU
    python examples/train_patches.py --losses "dice,mime:mode=dice:overlap=0.5,mime:mode=balance:gamma=0.5"
    python examples/train_patches.py --deep-supervision 2 --losses mime_adaptive+ce    # DynUNet, 2 extra heads

Loss specs: ``name[:key=value[:key=value...]]``, comma-separated; ``name`` is a registered loss (``mime``,
``mime_adaptive``, ``dice``, ``vnet``, ``gdl``, ``ce`` or your own) or ``X+ce`` (X plus cross-entropy, e.g.
``mime_adaptive+ce:lambda_ce=0.5``). For ``mime``: ``mode=`` is the a/b weight mode of
``ClassStatistics.weights`` and other keys its parameters (``overlap=``, ``gamma=``), ``patch=false`` turns
off the rescaling of the statistics to the patch size; loss options (``include_background=false``,
``batch=true``...) go to the loss. See ``examples/patch_training/`` (specs.py) for details and the Python API.

Writes into --out: results.json, results.md (tables in the paper's style), results.png and
checkpoints/<loss>.pt (the model's and the loss's state_dict). Bad input gives one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from patch_training import DEFAULT_LOSSES, ExperimentConfig, ExperimentError, run_experiment  # noqa: E402

PROG = "train_patches.py"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage block
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 64 or 64,64, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ExperimentConfig()
    p.add_argument(
        "--data",
        help="nnU-Net raw dataset folder (dataset.json, imagesTr, labelsTr, optional "
        "splits.json with 'train'/'val'); default: built-in synthetic data",
    )
    p.add_argument("--losses", default=None, help=f"comma-separated loss specs (default: {','.join(DEFAULT_LOSSES)})")
    p.add_argument("--out", default=None, help=f"output folder (default: {d.out}; --quick: results/quick)")
    p.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {d.epochs})")
    p.add_argument("--steps-per-epoch", type=int, default=None, help=f"steps per epoch (default {d.steps_per_epoch})")
    p.add_argument(
        "--batch-size", type=int, default=None, help=f"patches per step and process (default {d.batch_size})"
    )
    p.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        default=None,
        help="2: a 2D UNet on 2D patches (of images, or of the slices of volumes; default); 3: a 3D UNet on 3D "
        "patches of volumes",
    )
    p.add_argument(
        "--patch-size",
        type=_ints,
        default=None,
        help="patch size, one value (all axes) or one per axis, e.g. 64 or 96,64 (default 64; 3D: 32)",
    )
    p.add_argument(
        "--deep-supervision",
        type=int,
        nargs="?",
        const=2,
        default=None,
        metavar="N",
        help="train a MONAI DynUNet (same levels) with N deep-supervision heads (default N: 2) under MONAI's "
        "DeepSupervisionLoss; default: the UNet, no deep supervision",
    )
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {d.lr:g})")
    p.add_argument("--channels", type=_ints, default=None, help="UNet feature maps per level (default 16,32,64,128)")
    p.add_argument("--seed", type=int, default=None, help="seed of the model, patch sampling and crops (default 0)")
    p.add_argument(
        "--data-seed",
        type=int,
        default=None,
        help="seed of the built-in data and of the split when --data has no splits.json (default 0)",
    )
    p.add_argument(
        "--eval-epochs",
        type=_ints,
        default=None,
        help="also evaluate after these epochs, e.g. 10,20 (several training budgets in one run)",
    )
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 0)")
    p.add_argument("--max-val-cases", type=int, default=None, help="evaluate on the first N held-out cases only")
    p.add_argument(
        "--num-train",
        dest="synthetic_train",
        type=int,
        default=None,
        help=f"built-in data: training images (default {d.synthetic_train})",
    )
    p.add_argument(
        "--num-val",
        dest="synthetic_val",
        type=int,
        default=None,
        help=f"built-in data: held-out images (default {d.synthetic_val})",
    )
    p.add_argument(
        "--image-size",
        dest="synthetic_size",
        type=_ints,
        default=None,
        help=f"built-in data: image (volume) size, one value or one per axis (default {d.synthetic_size[0]}; 3D: 64)",
    )
    p.add_argument(
        "--exclude-both-empty",
        action="store_true",
        default=None,
        help="metrics: leave a class out of an image's scores when absent from prediction and truth",
    )
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision on CUDA")
    p.add_argument("--no-checkpoints", dest="checkpoints", action="store_false", default=None)
    p.add_argument("--no-figure", dest="figure", action="store_false", default=None)
    p.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress bars even when stderr is not a terminal",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per process (default 1, 0: torch's default); for N cores use "
        "torchrun --nproc_per_node N",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: tiny data and model, all losses, < 1 min on a CPU (2D or 3D)"
    )
    return p


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The quick or default preset, overridden by the flags that were given."""
    changes: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None and k != "quick"}
    dims = changes.get("spatial_dims", 2)
    for key in ("patch_size", "synthetic_size"):  # one value: the same size along every axis
        if key in changes and len(changes[key]) == 1:
            changes[key] = changes[key] * dims
    if "losses" in changes:
        changes["losses"] = [s for s in changes["losses"].split(",") if s.strip()]
    return ExperimentConfig.preset(quick=args.quick, **changes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"monai\..*")
    try:
        config = config_from_args(args)
        results = run_experiment(config)
    except ExperimentError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    if config.out and int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {Path(config.out) / 'results.md'}, results.json, results.png")
        print((Path(config.out) / "results.md").read_text())
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
