"""The empty share of each class at a patch size against a brute-force count over every patch position."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from monai_mime.stats.empty_share import EmptyShare, compute_empty_share, image_empty_share


def _blobs(shape: tuple[int, ...], num_classes: int, seed: int) -> np.ndarray:
    """Mostly background with a few boxes per class, so that many patches miss a class and some hit it."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int16)
    for k in range(1, num_classes):
        for _ in range(2):
            lo = [int(rng.integers(0, s)) for s in shape]
            size = [int(rng.integers(1, max(2, s // 3))) for s in shape]
            labels[tuple(slice(a, a + b) for a, b in zip(lo, size))] = k
    return labels


def _brute_force(labels: np.ndarray, num_classes: int, patch: tuple[int, ...]) -> tuple[int, np.ndarray, np.ndarray]:
    """Every position (padding an axis shorter than the patch), and every forced patch, checked voxel by voxel."""
    window = [min(p, s) for p, s in zip(patch, labels.shape)]
    ranges = [range(s - w + 1) for s, w in zip(labels.shape, window)]
    absent = np.zeros(num_classes, dtype=np.int64)
    positions = 0
    for corner in itertools.product(*ranges):
        present = np.unique(labels[tuple(slice(c, c + w) for c, w in zip(corner, window))])
        absent += ~np.isin(np.arange(num_classes), present)
        positions += 1
    classes = [c for c in range(1, num_classes) if (labels == c).any()]
    forced = np.zeros(num_classes)
    for c in classes:
        voxels = np.argwhere(labels == c)
        for v in voxels:
            lower = [max(0, int(x) - p // 2) for x, p in zip(v, patch)]
            present = np.unique(labels[tuple(slice(a, a + p) for a, p in zip(lower, patch))])
            forced += ~np.isin(np.arange(num_classes), present) / len(voxels) / len(classes)
    return positions, absent, forced if classes else absent / positions


@pytest.mark.parametrize(
    "shape,patch",
    [
        ((17, 13), (5, 4)),
        ((9, 11), (12, 3)),  # the first axis shorter than the patch: padded, one position along it
        ((8, 9, 7), (3, 4, 2)),
        ((7, 10, 6), (4, 4, 1)),  # 2D patches over the slices of a volume
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_empty_share_equals_a_brute_force_count(shape: tuple[int, ...], patch: tuple[int, ...], seed: int) -> None:
    labels = _blobs(shape, num_classes=4, seed=seed)
    positions, absent, forced = image_empty_share(labels, 4, patch)
    expected_positions, expected_absent, expected_forced = _brute_force(labels, 4, patch)
    assert positions == expected_positions
    np.testing.assert_array_equal(absent, expected_absent)
    np.testing.assert_allclose(forced, expected_forced, rtol=1e-12, atol=1e-12)
    assert 0 < absent[1:].sum() < positions * 3  # the data make the test discriminate


def test_dataset_share_is_the_mean_over_images_and_round_trips() -> None:
    images = [_blobs((12, 10), 3, seed) for seed in range(3)]
    share = compute_empty_share(images, 3, (4, 4))
    per_image = [image_empty_share(im, 3, (4, 4)) for im in images]
    np.testing.assert_allclose(share.uniform, np.mean([a / p for p, a, _ in per_image], axis=0))
    np.testing.assert_allclose(share.oversampled(0.0), share.uniform)
    np.testing.assert_allclose(share.oversampled(1.0), np.mean([f for _, _, f in per_image], axis=0))
    restored = EmptyShare.from_dict(share.to_dict())
    np.testing.assert_array_equal(restored.absent, share.absent)
    np.testing.assert_allclose(restored.forced_absent, share.forced_absent)


def test_ignored_voxels_belong_to_no_class_and_bad_patches_are_refused() -> None:
    labels = np.full((6, 6), 3)  # all ignored (ignore label 3 for 3 classes)
    positions, absent, forced = image_empty_share(labels, 3, (2, 2), ignore_index=3)
    assert positions == 25 and absent.tolist() == [25, 25, 25] and forced.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="1 on the through-plane axis"):
        image_empty_share(np.zeros((4, 5, 6)), 3, (2, 2))
    with pytest.raises(ValueError, match="positive"):
        image_empty_share(np.zeros((4, 5)), 3, (0, 2))


def test_stats_command_prints_saves_and_caches_the_empty_share(tmp_path, monkeypatch, capsys) -> None:
    import json

    import nibabel as nib

    from monai_mime.cli import main
    from monai_mime.stats import ClassStatistics

    monkeypatch.setenv("MONAI_MIME_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "labels"
    folder.mkdir()
    images = [_blobs((10, 9, 3), 3, seed) for seed in range(3)]
    for i, image in enumerate(images):
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / f"case{i}.nii.gz"))
    out = tmp_path / "stats.json"
    assert main(["stats", str(folder), "-q", "--patch-size", "4", "4", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    expected = compute_empty_share(images, 3, (4, 4, 1))
    k = 1 + int(expected.uniform[1:].argmax())
    assert f"at 4x4x1, {k} is absent from {expected.uniform[k]:.0%} of patch positions" in text
    assert f"{expected.uniform[2]:.1%}" in text and "empty(os)" in text
    saved = ClassStatistics.load(out).empty_share
    assert saved is not None and saved.patch_size == (4, 4, 1)
    np.testing.assert_array_equal(saved.absent, expected.absent)
    assert json.loads(out.read_text())["empty_share"]["uniform"][k] == round(float(expected.uniform[k]), 6)
    cached = [p for p in (tmp_path / "cache").iterdir() if '"kind": "empty_share"' in p.read_text()]
    assert len(cached) == 1
    assert main(["stats", str(folder), "-q", "--patch-size", "2", "2", "1"]) == 0  # another size: another entry
    assert len([p for p in (tmp_path / "cache").iterdir() if '"kind": "empty_share"' in p.read_text()]) == 2
    assert main(["stats", str(out), "--patch-size", "2", "2", "1"]) == 0
    assert "empty share: not in this statistics file at this patch size" in capsys.readouterr().out
