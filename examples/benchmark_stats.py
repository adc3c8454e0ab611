"""Benchmark: counting label volumes with ClassStatistics.from_folder against just reading them.

Writes N label volumes of 128^3 uint8 voxels (a few random ellipsoids per class, like organs) as .nii.gz to a
temporary folder, then times

  (a) reading every file once with nibabel (``np.asanyarray(nib.load(f).dataobj)``), in 1 process and in 2,
  (b) ``ClassStatistics.from_folder(..., cache=False)`` with 1 and 2 worker processes,

and reports the overhead of counting over reading (the issue's target: < 20 %) in wall time and in CPU time (this
process + workers; steadier on a shared machine), best of ``--repeat`` interleaved runs, and memory: the growth of
this process's peak RSS during each step (Linux ``VmHWM``, reset before each step) and the largest worker's peak
RSS (``RUSAGE_CHILDREN``; forked workers also count the pages they share with this process).

    python examples/benchmark_stats.py            # N = 100
    python examples/benchmark_stats.py --n 1000   # the issue's figure
    python examples/benchmark_stats.py --labels /data/Dataset027_ACDC/labelsTr   # real labels, read only
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_mime.stats import ClassStatistics
from monai_mime.stats.readers import list_label_files


def make_volume(rng: np.random.Generator, size: int, num_classes: int) -> np.ndarray:
    """Background with 1-3 random ellipsoids per foreground class (later classes drawn over earlier ones)."""
    z, y, x = np.ogrid[:size, :size, :size]
    vol = np.zeros((size,) * 3, np.uint8)
    for k in range(1, num_classes):
        for _ in range(rng.integers(1, 4)):
            c = rng.uniform(0.2, 0.8, 3) * size
            r = rng.uniform(0.05, 0.2, 3) * size
            vol[((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1] = k
    return vol


def write_dataset(folder: Path, n: int, size: int, num_classes: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        files.append(folder / f"case_{i:05d}.nii.gz")
        nib.save(nib.Nifti1Image(make_volume(rng, size, num_classes), np.diag([1.0, 1.0, 1.0, 1.0])), files[-1])
    return files


def read_file(path: Path) -> int:
    return int(np.asanyarray(nib.load(path).dataobj).size)  # type: ignore[attr-defined]


def read_all(files: list[Path], workers: int) -> None:
    if workers == 1:
        for f in files:
            read_file(f)
    else:
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(read_file, files, chunksize=max(1, min(16, len(files) // (workers * 8)))))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu() -> float:
    """CPU seconds of this process and of its terminated children (the worker processes, once joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn) -> tuple[float, float, float]:
    """(wall s, CPU s of this process + workers, growth of this process's peak RSS over its RSS before, MiB)."""
    rss_before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    c0, t0 = _cpu(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return wall, cpu, (_status_kb("VmHWM") - rss_before) / 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="number of volumes (default 100; the issue's figure: 1000)")
    p.add_argument("--size", type=int, default=128, help="edge length of the cubic volumes (default 128)")
    p.add_argument("--classes", type=int, default=4, help="number of classes incl. background (default 4)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    p.add_argument("--repeat", type=int, default=5, help="interleaved timed repetitions, best kept (default 5)")
    p.add_argument("--dir", type=Path, help="write the volumes to / reuse them from this folder (kept)")
    p.add_argument(
        "--labels",
        type=Path,
        help="benchmark an existing folder of label images instead (read only; --classes must match)",
    )
    args = p.parse_args(argv)

    folder = args.labels or args.dir or Path(tempfile.mkdtemp(prefix="monai_mime_bench_"))
    try:
        if args.labels:
            files = list_label_files(folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            files = sorted(folder.glob("case_*.nii.gz"))
            if len(files) != args.n:
                if any(folder.iterdir()):
                    raise SystemExit(f"{folder} is not empty and does not hold {args.n} case_*.nii.gz volumes")
                t0 = time.perf_counter()
                files = write_dataset(folder, args.n, args.size, args.classes)
                print(f"wrote {args.n} volumes in {time.perf_counter() - t0:.1f} s")
        mb = sum(f.stat().st_size for f in files) / 2**20
        shape = "various shapes" if args.labels else f"{args.size}^3 uint8"
        print(
            f"{len(files)} label volumes ({shape}) in {folder}, {mb:.1f} MiB on disk, {args.classes} classes; "
            f"best of {args.repeat}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
        )
        read_all(files, 1)  # warm the page cache
        rows = []
        for w in args.workers:
            read = functools.partial(read_all, files, w)
            count = functools.partial(
                ClassStatistics.from_folder, folder, args.classes, num_workers=w, cache=False, progress=False
            )
            runs = [(measure(read), measure(count)) for _ in range(args.repeat)]  # interleaved against drift
            best = [
                min(r[i][j] for r in runs) if j < 2 else max(r[i][j] for r in runs) for i in (0, 1) for j in (0, 1, 2)
            ]
            rows.append((w, *best))
        print(
            f"\n{'workers':>7} {'read wall':>10} {'count wall':>11} {'overhead':>9} {'read CPU':>9} "
            f"{'count CPU':>10} {'overhead':>9} {'ms/vol count':>13} {'+RSS MiB read':>14} {'count':>6}"
        )
        for w, tr, cr, mr, tc, cc, mc in rows:
            print(
                f"{w:>7} {tr:>9.2f}s {tc:>10.2f}s {100 * (tc / tr - 1):>8.1f}% {cr:>8.2f}s {cc:>9.2f}s "
                f"{100 * (cc / cr - 1):>8.1f}% {1e3 * tc / len(files):>13.2f} {mr:>14.1f} {mc:>6.1f}"
            )
        self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"\npeak RSS: this process {self_mb:.0f} MiB over the whole run (imports included), "
            f"largest worker {child_mb:.0f} MiB (incl. pages shared with the parent after fork)"
        )
        stats = ClassStatistics.from_folder(folder, args.classes, cache=False, progress=False)
        print(f"check: {stats.num_images} images, class fractions {np.round(stats.fractions, 4).tolist()}")
    finally:
        if args.dir is None and args.labels is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
