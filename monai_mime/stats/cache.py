"""JSON files for :class:`~monai_mime.stats.ClassStatistics`: atomic writes, checksums and the counting cache.

A statistics file is human-readable JSON (one line per image) with a ``checksum`` field: the SHA-256 of the
canonical JSON of everything else. A truncated, hand-edited or otherwise corrupt file fails the check and is
never trusted. Files are written atomically (a temporary file in the same folder, then :func:`os.replace`), so a
crash or a full disk leaves either the old file or the new one, never half of one.

The counting cache keeps one such file per counted source under :func:`default_cache_dir`, named after the
source folder and the counting options. The file records the *fingerprint* of the inputs (every file's path,
size and modification time, and the options); when the inputs change, the cached counts are *stale*: a
:class:`CacheWarning` says so and the data are counted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "FORMAT",
    "VERSION",
    "CacheWarning",
    "CorruptStatisticsError",
    "default_cache_dir",
    "cache_file",
    "fingerprint",
    "write_json_atomic",
    "read_json_checked",
    "load_cached",
]

#: ``format`` field of every statistics file, and its schema version.
FORMAT = "monai-mime.class-statistics"
VERSION = 1


class CacheWarning(UserWarning):
    """A cached statistics file was corrupt or stale (or could not be written); the data are counted again."""


class CorruptStatisticsError(ValueError):
    """A statistics file is not valid JSON, has the wrong format or version, or fails its checksum."""


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$MONAI_MIME_CACHE_DIR``, else ``$XDG_CACHE_HOME/monai-mime``, else ``~/.cache/monai-mime``."""
    if os.environ.get("MONAI_MIME_CACHE_DIR"):
        return Path(os.environ["MONAI_MIME_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "monai-mime"


def cache_file(source: str | os.PathLike, options: Mapping[str, Any]) -> Path:
    """The cache file of a source (a folder or a dataset) counted with ``options``: readable name + key hash."""
    path = Path(source).resolve()
    key = _digest({"source": str(path), "options": dict(options)})[:16]
    return default_cache_dir() / f"{path.name or 'root'}-{key}.json"


def fingerprint(files: Iterable[str | os.PathLike], options: Mapping[str, Any]) -> str:
    """SHA-256 of the sorted (path, size, mtime in ns) of ``files`` and of the counting ``options``.

    Any added, removed, renamed, resized or touched file, or any change of options, changes the fingerprint.
    """
    stats = []
    for f in sorted(str(Path(f).resolve()) for f in files):
        st = os.stat(f)
        stats.append([f, st.st_size, st.st_mtime_ns])
    return "sha256:" + _digest({"files": stats, "options": dict(options)})


def _dumps(doc: Mapping[str, Any]) -> str:
    """JSON with one line per top-level key and one line per element of list-of-dict values (the images)."""
    parts = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            rows = ",\n    ".join(json.dumps(v, allow_nan=False) for v in value)
            text = f"[\n    {rows}\n  ]"
        elif isinstance(value, dict):
            items = ",\n    ".join(f"{json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in value.items())
            text = f"{{\n    {items}\n  }}" if value else "{}"
        else:
            text = json.dumps(value, allow_nan=False)
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_json_atomic(path: str | os.PathLike, doc: Mapping[str, Any], checksum: bool = True) -> Path:
    """Write ``doc`` (plus a ``checksum`` field when ``checksum``) to ``path`` atomically; create parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {k: v for k, v in doc.items() if k != "checksum"}
    if checksum:
        doc["checksum"] = "sha256:" + _digest(doc)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a statistics file is meant to be read
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_dumps(doc))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json_checked(path: str | os.PathLike) -> dict[str, Any]:
    """Read a statistics file and verify its format, version and checksum.

    Raises:
        FileNotFoundError: no such file.
        CorruptStatisticsError: anything else wrong with it (the message names the file and the problem).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptStatisticsError(f"{path}: not valid JSON (truncated or corrupt?): {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptStatisticsError(f"{path}: not a monai-mime statistics file (format != {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise CorruptStatisticsError(f"{path}: statistics format version {doc.get('version')!r}, expected {VERSION}")
    stored = doc.pop("checksum", None)
    if stored != "sha256:" + _digest(doc):
        raise CorruptStatisticsError(f"{path}: checksum mismatch (the file was modified or is incomplete)")
    return doc


def load_cached(path: str | os.PathLike, expected_fingerprint: str, parse: Callable[[dict[str, Any]], T]) -> T | None:
    """``parse(document)`` of the cache file at ``path`` if it is valid and was counted from the same inputs.

    Returns ``None`` when there is no file; a corrupt file (bad JSON, checksum, or ``parse`` raising
    :class:`CorruptStatisticsError`) or one with another fingerprint (stale) is reported with a
    :class:`CacheWarning` and also gives ``None``.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        doc = read_json_checked(path)
        result = parse(doc)
    except (CorruptStatisticsError, OSError) as e:
        warnings.warn(f"ignoring corrupt statistics cache, counting again: {e}", CacheWarning, stacklevel=3)
        return None
    if doc.get("fingerprint") != expected_fingerprint:
        warnings.warn(
            f"statistics cache {path} is stale (the input files or options changed), counting again",
            CacheWarning,
            stacklevel=3,
        )
        return None
    return result
