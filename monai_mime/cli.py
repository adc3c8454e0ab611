"""The ``monai-mime`` command line (also ``python -m monai_mime``).

``monai-mime stats PATH``      count the classes of a label folder / nnU-Net raw or preprocessed dataset / saved
                               statistics file, print a per-class table with Mime's a/b, write JSON.
``monai-mime nnunet-path``     print the folder to put in ``nnUNet_extTrainer``.
``monai-mime nnunet-cpu-plans DATASET``  add the CPU-sized configurations (``2d_cpu128``, ``2d_cpu64``) to a
                               dataset's nnU-Net plans (JSON only: imports nothing from nnU-Net).

Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "build_parser", "detect_source", "format_table", "KINDS"]

PROG = "monai-mime"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``monai-mime stats: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class CLIError(Exception):
    """A usage problem found after parsing (printed as one line, exit status 2)."""


MODES_HELP = """weight modes (G, B: mean class / background voxels per image, or per patch with --patch-size;
N: number of images; every mode prints its threshold b/(a+b)):
  paper    a = 1/(N^2 G)     b = 1/(N^2 B)      Eq. 3 read literally
  mean     a = 1/G           b = 1/B            inverse mean count per image
  dice     a = (2-r)/(2G)    b = r/(2G)         Eq. 2 at overlap r (--overlap, default 0.5)
  balance  a = 1/G           b = a (G/B)^gamma  (default; --gamma in [0, 1], default 0.5; 1 = mean, 0: a = b)
"""


def build_parser() -> argparse.ArgumentParser:
    from monai_mime.stats.counts import ABSENT_RULES, DEFAULT_MODE, WEIGHT_MODES

    parser = _Parser(prog=PROG, description="Mime / Dice-family losses for MONAI and nnU-Net v2: command-line tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    st = sub.add_parser(
        "stats",
        help="count classes of a label folder or nnU-Net dataset; print and save Mime's a/b",
        description="Count the voxels of every class over a dataset (cached: a second run is instant), print a\n"
        "per-class table (count, fraction, presence, Mime's a and b, threshold b/(a+b)), write JSON.\n\n"
        "PATH is detected as: a statistics .json written before; an nnU-Net raw dataset (dataset.json\n"
        "+ labelsTr/); an nnU-Net preprocessed dataset (dataset.json + <plans>.json); else a folder of\n"
        "label images (.nii/.nii.gz/.npy/.nrrd/.mha...).",
        epilog=MODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("path", metavar="PATH", type=Path, help="label folder, nnU-Net dataset folder or stats .json")
    st.add_argument(
        "--num-classes",
        type=int,
        metavar="K",
        help="number of classes (default: from dataset.json, else largest label + 1)",
    )
    st.add_argument(
        "--ignore-index",
        type=int,
        metavar="I",
        help="label value to leave out (default: nnU-Net's 'ignore' label from dataset.json, else none)",
    )
    st.add_argument(
        "--fold",
        default=None,
        metavar="F",
        help="nnU-Net preprocessed: fold whose training cases are counted (0-4 or 'all'; default 0)",
    )
    st.add_argument(
        "--configuration",
        "-c",
        metavar="C",
        help="nnU-Net preprocessed: configuration (default: "
        "the first of 3d_fullres, 2d, 3d_lowres that is preprocessed)",
    )
    st.add_argument(
        "--plans", default="nnUNetPlans", metavar="P", help="nnU-Net plans identifier (default %(default)s)"
    )
    st.add_argument("--out", "-o", type=Path, metavar="FILE", help="write the statistics and weights as JSON here")
    st.add_argument(
        "--mode",
        default=DEFAULT_MODE,
        choices=list(WEIGHT_MODES),
        help="weight mode (default %(default)s; see ClassStatistics.weights)",
    )
    st.add_argument(
        "--patch-size",
        type=int,
        nargs="+",
        metavar="N",
        help="training patch size, one size per image axis (2D patches over a volume's slices: 1 on the "
        "through-plane axis, e.g. 128 128 1): rescale the counts to a patch, and report each class's empty share, "
        "the share of patch positions without it (label folders and nnU-Net raw datasets)",
    )
    st.add_argument("--overlap", type=float, metavar="R", help="'dice' mode: overlap r in (0, 1] (default 0.5)")
    st.add_argument("--gamma", type=float, metavar="G", help="'balance' mode: exponent in [0, 1] (default 0.5)")
    st.add_argument(
        "--absent",
        default="error",
        choices=ABSENT_RULES,
        help="a class that never occurs: error (default) or one_voxel (weights of a class with a single voxel)",
    )
    st.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (default: 1 below 256 files, else up to 8)"
    )
    st.add_argument("--no-cache", action="store_true", help="count again and do not write the cache")
    st.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    st.set_defaults(func=_cmd_stats)

    nn = sub.add_parser(
        "nnunet-path",
        help="print the folder to put in nnUNet_extTrainer",
        description="Print the folder of this package's nnU-Net trainers, for "
        "export nnUNet_extTrainer=$(monai-mime nnunet-path).",
    )
    nn.add_argument("--export", action="store_true", help="print 'export nnUNet_extTrainer=...' instead")
    nn.set_defaults(func=_cmd_nnunet_path)

    cp = sub.add_parser(
        "nnunet-cpu-plans",
        help="add CPU-sized configurations (2d_cpu128, 2d_cpu64) to a dataset's nnU-Net plans",
        description="Add configurations that inherit from 2d with a smaller patch, network and batch to an\n"
        "nnU-Net plans file (atomic; nothing else changes; running it again changes nothing). They use\n"
        "2d's preprocessed data: train with nnUNetv2_train DATASET 2d_cpu128 FOLD -tr ...\n"
        "DATASET: the plans file, the preprocessed dataset folder, or a dataset id / name under\n"
        "$nnUNet_preprocessed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument("dataset", metavar="DATASET", help="plans file, preprocessed dataset folder, dataset id or name")
    cp.add_argument(
        "--plans", default="nnUNetPlans", metavar="P", help="plans identifier in a dataset folder (default %(default)s)"
    )
    cp.add_argument("--configurations", nargs="+", metavar="C", help="which ones (default: all: 2d_cpu128 2d_cpu64)")
    cp.add_argument("--force", action="store_true", help="replace a configuration of the same name that differs")
    cp.set_defaults(func=_cmd_nnunet_cpu_plans)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("monai-mime")
    except Exception:  # noqa: BLE001
        return "unknown"


#: Names of the kinds of PATH that ``stats`` accepts.
KINDS = {
    "json": "statistics file",
    "nnunet_raw": "nnU-Net raw dataset",
    "nnunet_preprocessed": "nnU-Net preprocessed dataset",
    "folder": "label folder",
}


def detect_source(path: Path, plans: str = "nnUNetPlans") -> str:
    """``"json"``, ``"nnunet_raw"``, ``"nnunet_preprocessed"`` or ``"folder"`` for a PATH given to ``stats``."""
    if path.is_file() and path.suffix == ".json":
        return "json"
    if not path.is_dir():
        raise CLIError(
            f"{path}: " + ("not a folder or a statistics .json file" if path.exists() else "no such file or folder")
        )
    if (path / "dataset.json").is_file():
        if (path / "labelsTr").is_dir():
            return "nnunet_raw"
        if (path / f"{plans}.json").is_file():
            return "nnunet_preprocessed"
        raise CLIError(f"{path} has a dataset.json but neither labelsTr/ (raw) nor {plans}.json (preprocessed)")
    return "folder"


def _load(args: argparse.Namespace) -> Any:
    from monai_mime.stats import ClassStatistics

    kind = detect_source(args.path, args.plans)
    nnunet_only = [f"--{n}" for n, v in (("fold", args.fold), ("configuration", args.configuration)) if v is not None]
    if nnunet_only and kind != "nnunet_preprocessed":
        raise CLIError(
            f"{'/'.join(nnunet_only)}: only for an nnU-Net preprocessed dataset, {args.path} is a {KINDS[kind]}"
        )
    common = dict(num_workers=args.workers, cache=not args.no_cache, progress=not args.quiet)
    if kind == "json":
        return ClassStatistics.load(args.path, num_classes=args.num_classes)
    if kind == "nnunet_raw":
        return ClassStatistics.from_nnunet_raw(args.path, args.num_classes, args.ignore_index, **common)
    if kind == "nnunet_preprocessed":
        if args.num_classes is not None or args.ignore_index is not None:
            raise CLIError("--num-classes/--ignore-index: an nnU-Net preprocessed dataset takes them from dataset.json")
        fold = args.fold if args.fold in (None, "all") else _int(args.fold, "--fold")
        return ClassStatistics.from_nnunet_preprocessed(
            args.path, args.configuration, 0 if fold is None else fold, args.plans, **common
        )
    return ClassStatistics.from_folder(args.path, args.num_classes, args.ignore_index, **common)


def _int(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CLIError(f"{option}: expected an integer or 'all', got {text!r}") from None


def _weight_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"absent": args.absent}
    if args.overlap is not None:
        kw["overlap"] = args.overlap
    if args.gamma is not None:
        kw["gamma"] = args.gamma
    return kw


def format_table(stats: Any, a: Any, b: Any) -> str:
    """The per-class table: index, name, voxels, fraction, presence, a, b and the threshold b/(a+b); with an empty
    share, also the share of patch positions without the class, uniform and under nnU-Net's oversampling."""
    share = stats.empty_share
    head = f"{'k':>3}  {'class':<14} {'voxels':>15} {'fraction':>9} {'presence':>11} {'a':>11} {'b':>11} {'b/(a+b)':>9}"
    if share is not None:
        head += f" {'empty':>7} {'empty(os)':>9}"
    lines = [head, "-" * len(head)]
    n = stats.num_images
    for k in range(stats.num_classes):
        line = (
            f"{k:>3}  {stats.class_names[k][:14]:<14} {stats.total_counts[k]:>15,} "
            f"{stats.fractions[k]:>9.5f} {f'{stats.presence[k]}/{n}':>11} {a[k]:>11.4g} {b[k]:>11.4g} "
            f"{b[k] / (a[k] + b[k]):>9.4g}"
        )
        if share is not None:
            line += f" {share.uniform[k]:>7.1%} {share.oversampled()[k]:>9.1%}"
        lines.append(line)
    return "\n".join(lines)


def empty_share_reading(stats: Any) -> str:
    """One line on the foreground class most often absent from a patch (the one the Dice variants suffer on)."""
    share = stats.empty_share
    k = 1 + int(share.uniform[1:].argmax())
    size = "x".join(map(str, share.patch_size))
    return (
        f"at {size}, {stats.class_names[k]} is absent from {share.uniform[k]:.0%} of patch positions "
        f"({share.oversampled()[k]:.0%} with nnU-Net's foreground oversampling): every Dice variant divides by "
        "(almost) zero there"
    )


def _attach_empty_share(args: argparse.Namespace, stats: Any) -> str | None:
    """Set ``stats.empty_share`` at ``--patch-size`` from the label files; a note when it cannot be computed."""
    from monai_mime.stats.empty_share import attach_empty_share
    from monai_mime.stats.nnunet_folds import nnunet_raw_label_files, read_dataset_json
    from monai_mime.stats.readers import LABEL_ENDINGS, list_label_files, strip_ending

    patch = tuple(args.patch_size)
    kind = detect_source(args.path, args.plans)
    if kind == "json":
        if stats.empty_share is not None and stats.empty_share.patch_size == patch:
            return None
        stats.empty_share = None
        return "empty share: not in this statistics file at this patch size (run stats on the label folder)"
    if kind == "nnunet_preprocessed":
        return "empty share: computed for label folders and nnU-Net raw datasets only"
    if kind == "nnunet_raw":
        files = nnunet_raw_label_files(args.path.resolve(), read_dataset_json(args.path.resolve()))
    else:
        files = {strip_ending(f.name, LABEL_ENDINGS): f for f in list_label_files(args.path)}
    attach_empty_share(
        stats, [files[c] for c in stats.case_ids], patch, cache=not args.no_cache, progress=not args.quiet
    )
    return None


def _cmd_stats(args: argparse.Namespace) -> int:
    from monai_mime.stats.cache import write_json_atomic

    t0 = time.perf_counter()
    stats = _load(args)
    elapsed = time.perf_counter() - t0
    kwargs = _weight_kwargs(args)
    a, b = stats.weights(args.mode, args.patch_size, **kwargs)
    note = None if args.patch_size is None or stats.num_images == 0 else _attach_empty_share(args, stats)
    patch = "per image" if args.patch_size is None else f"per patch of {'x'.join(map(str, args.patch_size))}"
    params = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "absent")
    print(f"source: {stats.source}" + (f" (loaded from {args.path})" if args.path.suffix == ".json" else ""))
    print(
        f"{stats.num_images} images, {stats.total_voxels:,} voxels counted, {int(stats.ignored.sum()):,} ignored"
        f"{'' if stats.ignore_index is None else f' (label {stats.ignore_index})'}; {elapsed:.2f} s"
    )
    print(f"weights: mode={args.mode}{f' ({params})' if params else ''}, counts {patch}")
    print(format_table(stats, a, b))
    if stats.empty_share is not None and stats.num_classes > 1:
        print(empty_share_reading(stats))
    if note is not None:
        print(note)
    if args.out is not None:
        doc = stats.to_dict()
        doc["weights"] = {
            "mode": args.mode,
            "patch_size": args.patch_size,
            **kwargs,
            "a": a.tolist(),
            "b": b.tolist(),
            "threshold": (b / (a + b)).tolist(),
        }
        print(f"wrote {write_json_atomic(args.out, doc)}")
    return 0


def _cmd_nnunet_path(args: argparse.Namespace) -> int:
    from nnunet_trainers.discovery import ext_folder

    folder = ext_folder()
    print(f"export nnUNet_extTrainer={folder}" if args.export else folder)
    return 0


def _cmd_nnunet_cpu_plans(args: argparse.Namespace) -> int:
    from nnunet_trainers.cpu_plans import CPU_CONFIGURATIONS, add_cpu_configurations, find_plans_file

    path = find_plans_file(args.dataset, args.plans)
    status = add_cpu_configurations(path, args.configurations, force=args.force)
    for name, what in status.items():
        spec = CPU_CONFIGURATIONS[name]
        print(f"{name}: {what} (patch {spec.patch}x{spec.patch}, features {spec.features()}, batch {spec.batch_size})")
    print(f"plans: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line reports every failure as one line
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 2
