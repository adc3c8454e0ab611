"""The statistics cache: instant second runs, stale and corrupt files detected and recounted, atomic writes."""

from __future__ import annotations

import json
import os
import warnings

import nibabel as nib
import numpy as np
import pytest

from monai_mime.stats import CacheWarning, ClassStatistics, CorruptStatisticsError, sources
from monai_mime.stats import cache as cache_mod


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MIME_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def counted(monkeypatch):
    """Records how many times the files were actually counted."""
    calls = []
    real = sources.count_many

    def spy(items, *args, **kwargs):
        calls.append(len(items))
        return real(items, *args, **kwargs)

    monkeypatch.setattr(sources, "count_many", spy)
    return calls


def write_labels(folder, n=4, k=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for i in range(n):
        arrays[f"l{i}"] = rng.integers(0, k, (5, 6, 7)).astype(np.uint8)
        nib.save(nib.Nifti1Image(arrays[f"l{i}"], np.eye(4)), str(folder / f"l{i}.nii.gz"))
    return arrays


def expected(arrays, k=3):
    return np.array([[(a == c).sum() for c in range(k)] for _, a in sorted(arrays.items())])


def only_cache_file(cache_dir):
    files = list(cache_dir.glob("*.json"))
    assert len(files) == 1, files
    return files[0]


def stats_of(folder, **kw):
    return ClassStatistics.from_folder(folder, 3, progress=False, **kw)


def test_second_run_comes_from_the_cache(tmp_path, cache_dir, counted):
    arrays = write_labels(tmp_path / "labels")
    first = stats_of(tmp_path / "labels")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = stats_of(tmp_path / "labels")
    assert counted == [4]
    np.testing.assert_array_equal(second.counts, expected(arrays))
    assert second.fingerprint == first.fingerprint and second.case_ids == first.case_ids
    path = only_cache_file(cache_dir)
    assert path.name.startswith("labels-")
    text = path.read_text()
    assert text.count('"case":') == 4 and json.loads(text)["checksum"].startswith("sha256:")  # one line per image


@pytest.mark.parametrize("damage", ["truncate", "edit", "garbage", "empty"])
def test_corrupt_cache_is_warned_about_and_recounted(tmp_path, cache_dir, counted, damage):
    arrays = write_labels(tmp_path / "labels")
    stats_of(tmp_path / "labels")
    path = only_cache_file(cache_dir)
    text = path.read_text()
    damaged = {
        "truncate": text[: len(text) // 2],
        "empty": "",
        "garbage": "\x00\xff{{",
        "edit": text.replace('"counts": [', '"counts": [1', 1),
    }[damage]
    path.write_text(damaged)
    with pytest.raises(CorruptStatisticsError, match=str(path.name)):
        ClassStatistics.load(path)
    with pytest.warns(CacheWarning, match="corrupt"):
        s = stats_of(tmp_path / "labels")
    assert counted == [4, 4]
    np.testing.assert_array_equal(s.counts, expected(arrays))
    ClassStatistics.load(path)  # rewritten, valid again


def test_touched_modified_or_added_files_make_the_cache_stale(tmp_path, cache_dir, counted):
    folder = tmp_path / "labels"
    arrays = write_labels(folder)
    stats_of(folder)
    st = os.stat(folder / "l1.nii.gz")
    os.utime(folder / "l1.nii.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.warns(CacheWarning, match="stale"):
        stats_of(folder)
    assert counted == [4, 4]
    arrays["l2"] = np.full((3, 3, 3), 2, np.uint8)
    nib.save(nib.Nifti1Image(arrays["l2"], np.eye(4)), str(folder / "l2.nii.gz"))
    os.utime(folder / "l2.nii.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    with pytest.warns(CacheWarning, match="stale"):
        s = stats_of(folder)
    np.testing.assert_array_equal(s.counts, expected(arrays))
    arrays["l9"] = np.zeros((2, 2, 2), np.uint8)
    nib.save(nib.Nifti1Image(arrays["l9"], np.eye(4)), str(folder / "l9.nii.gz"))
    with pytest.warns(CacheWarning, match="stale"):
        s = stats_of(folder)
    assert counted == [4, 4, 4, 5] and s.case_ids[-1] == "l9"
    np.testing.assert_array_equal(s.counts, expected(arrays))


def test_options_key_the_cache(tmp_path, cache_dir, counted):
    folder = tmp_path / "labels"
    write_labels(folder)
    stats_of(folder)
    s4 = ClassStatistics.from_folder(folder, 4, progress=False)  # another cache file, no warning
    assert s4.num_classes == 4 and counted == [4, 4] and len(list(cache_dir.glob("*.json"))) == 2
    explicit = tmp_path / "mine.json"
    stats_of(folder, cache=explicit)
    with pytest.warns(CacheWarning, match="stale"):  # same file asked for 4 classes: recount, never reuse
        assert ClassStatistics.from_folder(folder, 4, progress=False, cache=explicit).num_classes == 4
    with pytest.raises(ValueError, match="4 classes, 3 were requested"):
        ClassStatistics.load(explicit, num_classes=3)


def test_cache_false_writes_nothing_and_unwritable_cache_only_warns(tmp_path, cache_dir, counted):
    folder = tmp_path / "labels"
    arrays = write_labels(folder)
    stats_of(folder, cache=False)
    assert not cache_dir.exists()
    (tmp_path / "a_file").write_text("")
    with pytest.warns(CacheWarning, match="could not write"):
        s = stats_of(folder, cache=tmp_path / "a_file" / "stats.json")
    np.testing.assert_array_equal(s.counts, expected(arrays))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    s = ClassStatistics.from_labels([np.array([0, 1, 1])], 2)
    path = s.save(tmp_path / "stats.json")
    before = path.read_bytes()
    monkeypatch.setattr(cache_mod.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        ClassStatistics.from_labels([np.array([0, 0, 0, 1])], 2).save(path)
    assert path.read_bytes() == before
    monkeypatch.undo()
    with pytest.raises(ValueError):  # NaN cannot be serialised: fails before anything replaces the file
        cache_mod.write_json_atomic(path, {"format": cache_mod.FORMAT, "x": float("nan")})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]  # no temporary files left


def test_format_version_and_checksum_checks(tmp_path):
    path = ClassStatistics.from_labels([np.array([0, 1])], 2).save(tmp_path / "s.json")
    doc = json.loads(path.read_text())
    for key, value, match in (
        ("format", "other", "not a monai-mime statistics file"),
        ("version", 99, "version 99"),
        ("source", "edited", "checksum mismatch"),
    ):
        bad = dict(doc, **{key: value})
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(CorruptStatisticsError, match=match):
            ClassStatistics.load(tmp_path / "bad.json")
    del doc["checksum"]
    cache_mod.write_json_atomic(tmp_path / "resigned.json", dict(doc, images=[{"case": "a"}]))
    with pytest.raises(CorruptStatisticsError, match="resigned.json: malformed"):
        ClassStatistics.load(tmp_path / "resigned.json")
    with pytest.raises(FileNotFoundError):
        ClassStatistics.load(tmp_path / "missing.json")


def test_fingerprint_depends_on_files_and_options(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("22")
    fp = cache_mod.fingerprint([a, b], {"k": 3})
    assert fp == cache_mod.fingerprint([b, a], {"k": 3})
    assert fp != cache_mod.fingerprint([a, b], {"k": 4})
    assert fp != cache_mod.fingerprint([a], {"k": 3})
    b.write_text("23")  # same size; mtime may or may not tick, so force it
    os.utime(b, ns=(0, os.stat(b).st_mtime_ns + 10**9))
    assert fp != cache_mod.fingerprint([a, b], {"k": 3})
