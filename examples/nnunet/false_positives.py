"""Where a run's false positives lie: near the labelled structures, far from them, or on slices without the class.

Reads the predictions of nnU-Net's final validation (``fold_0/validation/*.nii.gz``) of each run and the reference
segmentations (``$nnUNet_preprocessed/DATASET/gt_segmentations``), and counts, per class, the false-positive voxels
of 2D slices (the last axis, as nnU-Net's 2d configurations slice NIfTI volumes)

* on slices that contain the class: within ``--near`` pixels of the labelled foreground (any class; 0 = inside it,
  i.e. confusion between classes or a thicker boundary) and farther away (a separate blob);
* on slices without the class, and how many such slices get any voxel of it.

Usage (results laid out by ``compare.py``: ``RESULTS/seed<S>/DATASET/TRAINER__PLANS__CONFIGURATION/fold_0``)::

    python examples/nnunet/false_positives.py --results /path/to/results --runs \\
        2d_cpu128:nnUNetTrainer_CPUBudget:0 2d_cpu128:nnUNetTrainerMime_CPUBudget:0,1

The runs are given and found as in ``compare.py`` (``CONFIGURATION:TRAINER:SEED[,SEED...]``, ``Run.folder``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import distance_transform_edt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import dataset_folder_name, parse_runs  # noqa: E402


@dataclass
class FalsePositives:
    """Per-class counts of one run, index = label value."""

    near: np.ndarray  # voxels within `near` pixels of the labelled foreground, on slices with the class
    far: np.ndarray  # voxels farther away, on slices with the class
    on_empty: np.ndarray  # voxels on slices without the class
    empty_slices_hit: np.ndarray  # slices without the class that get some of it
    empty_slices: np.ndarray  # slices without the class

    @classmethod
    def zeros(cls, classes: int) -> FalsePositives:
        return cls(*(np.zeros(classes, dtype=np.int64) for _ in range(5)))


def count_false_positives(prediction: np.ndarray, reference: np.ndarray, classes: int, near: float) -> FalsePositives:
    """Counts of one volume (label maps of equal shape, slices along the last axis; labels 1..classes-1)."""
    counts = FalsePositives.zeros(classes)
    for z in range(reference.shape[-1]):
        ref, pred = reference[..., z], prediction[..., z]
        foreground = ref > 0
        distance = distance_transform_edt(~foreground) if foreground.any() else None
        for c in range(1, classes):
            false_positive = (pred == c) & (ref != c)
            if (ref == c).any():
                assert distance is not None
                counts.near[c] += int((false_positive & (distance <= near)).sum())
                counts.far[c] += int((false_positive & (distance > near)).sum())
            else:
                counts.on_empty[c] += int(false_positive.sum())
                counts.empty_slices[c] += 1
                counts.empty_slices_hit[c] += int(false_positive.any())
    return counts


def _label_map(path: Path) -> np.ndarray:
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise SystemExit(f"{path}: not a NIfTI-1 image")
    return np.asarray(image.dataobj)


def run_counts(validation: Path, references: Path, classes: int, near: float) -> FalsePositives:
    """The sums over every case of one run's validation folder."""
    total = FalsePositives.zeros(classes)
    cases = sorted(validation.glob("*.nii.gz"))
    if not cases:
        raise SystemExit(f"no predictions (*.nii.gz) in {validation}")
    for case in cases:
        prediction, reference = _label_map(case), _label_map(references / case.name)
        counts = count_false_positives(prediction, reference, classes, near)
        for name in vars(total):
            getattr(total, name)[:] += getattr(counts, name)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="results root with seed<S> folders")
    parser.add_argument("--dataset", default="27", help="dataset id or name (default %(default)s)")
    parser.add_argument("--classes", type=int, default=4, help="label values 0..classes-1 (default %(default)s)")
    parser.add_argument("--near", type=float, default=3.0, help="pixels from the foreground (default %(default)s)")
    parser.add_argument("--runs", nargs="+", required=True, metavar="C:T:S", help="CONFIGURATION:TRAINER:SEED,SEED")
    args = parser.parse_args(argv)
    dataset = dataset_folder_name(args.dataset)
    references = Path(os.environ.get("nnUNet_preprocessed", ".")) / dataset / "gt_segmentations"
    print(
        f"false-positive voxels per class (1..{args.classes - 1}); near = within {args.near:g} px of the foreground\n"
    )
    print(
        "| run | near, slices with the class | far, slices with the class | slices without the class | "
        "of those slices, predicted |"
    )
    print("|---|---|---|---|---|")
    for run in parse_runs(args.runs, with_fixed_ce=False):
        c = run_counts(run.folder(args.results, dataset) / "validation", references, args.classes, args.near)
        cells = [" / ".join(str(v) for v in x[1:]) for x in (c.near, c.far, c.on_empty)]
        hit = " / ".join(f"{h}/{n}" for h, n in zip(c.empty_slices_hit[1:], c.empty_slices[1:]))
        print(f"| {run.configuration} `{run.trainer}` seed {run.seed} | {cells[0]} | {cells[1]} | {cells[2]} | {hit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
