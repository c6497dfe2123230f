"""Dataset YAML handling: ``check_dataset`` (upstream schema and path rules) and DATASETS_DIR.

Schema: ``path`` (root; relative paths resolve against the repository root), ``train`` and ``val`` (required) and
``test`` (optional), each a directory, a ``.txt`` image list or a list of either, relative to ``path``; ``names``
as a list or ``{int: name}`` dict (``nc`` optional, must match). ``builtin: <name>`` marks a dataset generated
locally on first use (see ``utils.data.builtin``). A ``download:`` field is **never executed**: when data is
missing its URLs are printed as a hint. YAML reading and file lookup come from ``utils.files``.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Union

import yaml

from utils.files import ROOT, check_yaml, yaml_load
from utils.logging import LOGGER

SPLITS = ("train", "val", "test")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset YAML names images that do not exist (the message names the YAML, field and paths)."""


class DatasetYAMLError(ValueError):
    """The dataset YAML is malformed (the message names the YAML and field)."""


def datasets_dir() -> Path:
    """Return env ``YOLOv5_DATASETS_DIR`` if set, else ``<repository parent>/datasets`` (read at call time)."""
    return Path(os.getenv("YOLOv5_DATASETS_DIR", str(ROOT.parent / "datasets")))


def __getattr__(name: str) -> Any:
    if name == "DATASETS_DIR":  # evaluated on access so the environment variable is honoured at call time
        return datasets_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _safe_extract(archive: Path, target: Path) -> None:
    """Unpack a local zip/tar into ``target`` atomically, refusing members that escape the folder."""
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    if not (temp / member).resolve().is_relative_to(temp.resolve()):
                        raise DatasetYAMLError(f"{archive}: unsafe member path {member}")
                bundle.extractall(temp)
        else:
            with tarfile.open(archive) as bundle:
                bundle.extractall(temp, filter="data")
        os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _unpack_archive(data: Union[str, Path]) -> tuple[str, Path]:
    """For a local dataset archive: unpack it to DATASETS_DIR/<stem> (once) and return (its YAML, folder)."""
    archive = Path(data)
    target = datasets_dir() / archive.name.split(".")[0]
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        LOGGER.info(f"Unpacking {archive} to {target}...")
        _safe_extract(archive, target)
    found = sorted(target.rglob("*.yaml"))
    if not found:
        raise DatasetYAMLError(f"{archive}: no dataset *.yaml found inside the archive")
    return str(found[0]), found[0].parent


def _is_archive(data: Any) -> bool:
    return isinstance(data, (str, Path)) and Path(data).is_file() and (
        zipfile.is_zipfile(data) or tarfile.is_tarfile(data))


def _load_mapping(data: Union[str, Path, dict]) -> tuple[dict, str, Path | None]:
    """Return (YAML dict copy, YAML name for messages, extraction folder or None)."""
    extract_dir = None
    if isinstance(data, (str, Path)) and Path(data).suffix.lower() not in (".yaml", ".yml") and _is_archive(data):
        data, extract_dir = _unpack_archive(data)
    if isinstance(data, dict):
        return dict(data), "data dict", None
    yaml_file = check_yaml(data)
    try:
        mapping = yaml_load(yaml_file)
    except (ValueError, yaml.YAMLError) as error:  # not a mapping, or a syntax error (PyYAML names the line)
        raise DatasetYAMLError(f"{yaml_file}: {error}") from None
    return mapping, yaml_file, extract_dir


def _normalise_names(data: dict, source: str) -> None:
    """Turn ``names`` into {0: name, ...}, check its keys and ``nc``, and set ``nc`` = len(names)."""
    names = data.get("names")
    if names is None and data.get("nc") is not None:
        LOGGER.warning(f"WARNING ⚠️ {source}: 'names:' field missing, using class0..class{int(data['nc']) - 1}")
        names = [f"class{i}" for i in range(int(data["nc"]))]
    if names is None:
        raise DatasetYAMLError(f"{source}: 'names:' field missing ❌ (a list or a dict like {{0: person}})")
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not all(isinstance(k, int) for k in names):
        raise DatasetYAMLError(f"{source}: 'names:' keys must be integers, i.e. '2: car'")
    if sorted(names) != list(range(len(names))):
        raise DatasetYAMLError(f"{source}: 'names:' keys must be 0..{len(names) - 1}, got {sorted(names)}")
    if data.get("nc") is not None and int(data["nc"]) != len(names):
        raise DatasetYAMLError(f"{source}: 'nc: {data['nc']}' does not match the {len(names)} entries of 'names:'")
    data["names"] = {k: str(names[k]) for k in sorted(names)}
    data["nc"] = len(names)


def _resolve_split(value: Any, root: Path) -> Union[str, list[str]]:
    """Resolve one split entry (string or list) against the dataset root (upstream's ``../`` retry included)."""
    if isinstance(value, (list, tuple)):
        return [str((root / str(item)).resolve()) for item in value]
    resolved = (root / str(value)).resolve()
    if not resolved.exists() and str(value).startswith("../"):
        resolved = (root / str(value)[3:]).resolve()
    return str(resolved)


def _dataset_root(data: dict, extract_dir: Path | None) -> Path:
    if extract_dir is not None:
        return extract_dir
    if data.get("builtin") and not data.get("path"):
        return datasets_dir() / str(data["builtin"])
    root = Path(str(data.get("path") or ""))
    return root if root.is_absolute() else (ROOT / root).resolve()


def _missing_paths(value: Any) -> list[str]:
    paths = value if isinstance(value, list) else [value]
    return [p for p in paths if p and not Path(p).exists()]


def download_hint(download: Any, root: Path) -> str:
    """Describe a ``download:`` field without running it: the URLs it mentions and where the data belongs."""
    text = download if isinstance(download, str) else " ".join(map(str, download or []))
    urls = sorted(set(re.findall(r"https?://[^\s'\"\])]+", text)))
    if not urls:
        return f"The YAML's 'download:' field is a script (not run); read it and place the data under {root}."
    shown = "\n  ".join(urls[:10]) + ("\n  ..." if len(urls) > 10 else "")
    return (f"Downloads are never run automatically. The YAML's 'download:' field points to:\n  {shown}\n"
            f"Fetch and unpack the data yourself so that the paths above exist (dataset root: {root}; "
            f"datasets folder: {datasets_dir()}, set YOLOv5_DATASETS_DIR to change it).")


def check_dataset(data: Union[str, Path, dict], autodownload: bool = True) -> dict:
    """Validate a dataset YAML (path or dict) and return it with resolved absolute paths.

    Returns a dict with ``path`` (Path), ``train``/``val``/``test`` (absolute strings or lists), ``names``
    ({int: str}) and ``nc``. Built-in datasets (``builtin:``) are generated on first use. ``autodownload`` is
    accepted for API compatibility; nothing is ever downloaded or executed.

    Raises:
        DatasetYAMLError: a required field is missing or malformed (message names the YAML and field).
        DatasetNotFoundError: the ``val:`` images are missing (message names the YAML, field and paths).
    """
    data, source, extract_dir = _load_mapping(data)
    for field in ("train", "val"):
        if not data.get(field):
            raise DatasetYAMLError(f"{source}: '{field}:' field missing ❌")
    _normalise_names(data, source)
    root = _dataset_root(data, extract_dir)
    data["path"] = root
    if data.get("builtin"):
        from utils.data.builtin import ensure_builtin_dataset

        ensure_builtin_dataset(str(data["builtin"]), root)
    for split in SPLITS:
        if data.get(split):
            data[split] = _resolve_split(data[split], root)
    missing_val = _missing_paths(data["val"])
    if missing_val:
        LOGGER.info(f"\nDataset not found ⚠️, missing paths {missing_val}")
        if data.get("download"):
            LOGGER.info(download_hint(data["download"], root))
        raise DatasetNotFoundError(f"{source}: 'val:' path(s) not found: {', '.join(missing_val)} ❌")
    for split in ("train", "test"):
        missing = _missing_paths(data.get(split)) if data.get(split) else []
        if missing:
            LOGGER.warning(f"WARNING ⚠️ {source}: '{split}:' path(s) not found: {', '.join(missing)}")
    return data
