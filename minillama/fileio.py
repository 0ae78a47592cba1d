"""Crash-safe file writes (text, JSON, JSON lines, safetensors through a temp file, fsync and
rename) and the readers that go with them.

The lowest floor of the package (it imports nothing from minillama), so the tokenizer, the data
generator, the training loop, the stages and the checkpoints all write files the same way. The
readers raise ``ValueError`` naming the file when it is missing or not what it should be.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, TypeVar

import torch
from safetensors.torch import save_file

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_path)`` then fsync and rename over ``path``: a crash leaves either the old
    file or the new one, never half of one. The file gets the usual permissions (0666 less the
    umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text(path: str | Path, text: str) -> None:
    """``text`` as UTF-8 with ``\\n`` line ends, atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda p: p.write_bytes(data))


def save_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def jsonl(rows: Iterable[Any]) -> str:
    """One JSON value per line (keys sorted): the text :func:`write_jsonl` writes."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    write_text(path, jsonl(rows))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _numbered_jsonl(path: Path) -> list[tuple[int, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err})") from err
    return rows


def read_jsonl(path: str | Path) -> list[Any]:
    """The values of a JSON-lines file (blank lines skipped)."""
    return [row for _, row in _numbered_jsonl(Path(path))]


def read_records(path: str | Path, build: Callable[[dict[str, Any]], T], what: str, fields: Collection[str],
                 required: Collection[str]) -> list[T]:
    """``build(row)`` for every row of a JSON-lines file of ``what`` records (a task, a pair, ...),
    checked first: a ``ValueError`` names the file and the line of a row that is not an object, has
    a field outside ``fields`` or lacks one of ``required``, or that ``build`` rejects; an empty
    file is an error too (a stage given nothing to read would train or score on nothing)."""
    path = Path(path)
    rows = _numbered_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: empty; expected one {what} per line")
    out = []
    for number, row in rows:
        where = f"{path}, line {number}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a {what} must be a JSON object, got {type(row).__name__}")
        unknown, missing = sorted(set(row) - set(fields)), sorted(set(required) - set(row))
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r} in a {what} (fields: {', '.join(sorted(fields))})")
        if missing:
            raise ValueError(f"{where}: a {what} without the field {missing[0]!r}")
        try:
            out.append(build(row))
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{where}: {err}") from err
    return out


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(contiguous, str(p), metadata=metadata))
