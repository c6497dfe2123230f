"""File and path helpers: YAML IO, locating config files by bare name, incrementing run directories."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Any, Union

import yaml

ROOT = Path(__file__).resolve().parents[1]  # repository root
PathLike = Union[str, os.PathLike]


def yaml_load(file: PathLike) -> dict:
    """Return the mapping stored in a YAML file (``yaml.safe_load``; an empty file gives ``{}``)."""
    with open(file, errors="ignore", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def atomic_write_bytes(file: PathLike, data: bytes) -> None:
    """Write ``data`` to ``file`` through a temporary file in the same directory and an atomic rename."""
    file = Path(file)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give outputs the usual permissions
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def yaml_save(file: PathLike, data: dict) -> None:
    """Write ``data`` as YAML atomically; ``Path`` values are stored as strings."""
    clean = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    atomic_write_bytes(file, yaml.safe_dump(clean, sort_keys=False, allow_unicode=True).encode("utf-8"))


def check_file(file: PathLike, suffix: Any = "") -> str:
    """Return the path of an existing file; a bare name is searched under ROOT/{data,models,utils,extensions}.

    URLs are not downloaded (nothing may download at run time). Raises ``FileNotFoundError`` when the file is
    missing and ``ValueError`` when a bare name matches several files.
    """
    file = str(file)
    check_suffix(file, suffix)
    if not file or os.path.isfile(file):
        return file
    if file.startswith(("http:/", "https:/", "clearml://")):
        raise FileNotFoundError(f"'{file}' is a URL; this project never downloads at run time. Download it "
                                f"yourself and pass the local path.")
    matches = []
    for d in ("data", "models", "utils", "extensions"):
        matches.extend(glob.glob(str(ROOT / d / "**" / file), recursive=True))
    if not matches:
        raise FileNotFoundError(f"File not found: {file} (also searched {ROOT}/data, models, utils and extensions)")
    if len(matches) > 1:
        raise ValueError(f"Multiple files match '{file}', specify one of: {matches}")
    return matches[0]


def check_yaml(file: PathLike, suffix: tuple[str, ...] = (".yaml", ".yml")) -> str:
    """Return the path of a YAML file given as a path or a bare name (see :func:`check_file`)."""
    return check_file(file, suffix)


def check_suffix(file: Any = "yolov5s.pt", suffix: Any = (".pt",), msg: str = "") -> None:
    """Raise ``ValueError`` unless each file (a path or a list of paths) has one of the ``suffix`` suffixes.

    Files without a suffix, and an empty ``file`` or ``suffix``, are accepted (upstream semantics).
    """
    if not file or not suffix:
        return
    suffixes = tuple(s.lower() for s in ((suffix,) if isinstance(suffix, str) else suffix))
    for f in [file] if isinstance(file, (str, os.PathLike)) else file:
        s = Path(f).suffix.lower()
        if s and s not in suffixes:
            raise ValueError(f"{msg}{f}: acceptable suffix is {suffixes}, not {s}")


def increment_path(path: PathLike, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """Return ``path`` or the first free ``path{sep}2``, ``path{sep}3``, ... (files keep their suffix)."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        for n in range(2, 10000):
            candidate = Path(f"{stem}{sep}{n}{suffix}")
            if not candidate.exists():
                path = candidate
                break
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def file_size(path: PathLike) -> float:
    """Return the size of a file, or the total size of a directory tree, in MB."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 1e6
    if path.is_dir():
        return sum(f.stat().st_size for f in path.glob("**/*") if f.is_file()) / 1e6
    return 0.0
