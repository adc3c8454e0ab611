"""The built wheel holds both packages, the typing marker and nnU-Net's trainer folder; the CLI is installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_both_packages(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("monai_mime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "monai_mime/__init__.py",
        "monai_mime/py.typed",
        "monai_mime/losses/sums.py",
        "monai_mime/stats/counts.py",
        "nnunet_trainers/__init__.py",
        "nnunet_trainers/trainers.py",
        "nnunet_trainers/ext/monai_mime_trainers/monai_mime_nnunet_trainers.py",
    ):
        assert expected in names, expected
    assert not any(name.startswith(("tests/", "examples/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "monai-mime = monai_mime.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
