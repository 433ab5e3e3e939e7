"""Checkpoints: safetensors for tensors, JSON/YAML for metadata, always written atomically.

Never pickle: a checkpoint from an untrusted source can only ever yield tensors and plain data.
Each write goes to a temporary file in the same folder, is flushed to disk, then renamed over the
target, so a crash or Ctrl-C leaves either the old or the new file, never half of one. With
``keep_prev`` the file being replaced is kept as ``*.prev.*`` so one bad file (e.g. a truncated
copy) still leaves a good one; the backup is made by renames too (a hard link to the old file,
renamed over the old backup), so no file is ever rewritten in place. Loaded tensors are copied
into memory of their own: a memory-mapped tensor would change if its file were replaced in place.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or inconsistent; the message says which file and why."""


class DiskFullError(OSError):
    """The disk (or the user's quota) filled up while genlab wrote ``filename``. Writes are atomic,
    so the file as it was before is still there; the message names the file and may say more
    (``note``: what was kept, how to go on)."""

    def __init__(self, path: str | os.PathLike, note: str = "") -> None:
        super().__init__(errno.ENOSPC, f"no space left on device while writing {str(path)!r}{note}", str(path))

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk or quota is full: an ``OSError`` with errno ENOSPC/EDQUOT, or
    safetensors' own error type that wraps one ("os error 28")."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    text = str(e)
    return f"os error {errno.ENOSPC}" in text or "No space left on device" in text


#: Temporary files end in this suffix (and start with ``.NAME.``): a crash can leave them behind,
#: and :func:`genlab.runs.remove_stale_temp_files` recognizes them by it.
TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


def _temp_path(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return tmp


def _backup(path: Path) -> None:
    """Keep the current ``path`` as ``prev_path(path)`` by atomic renames only.

    A hard link gives the current file a second name without copying; renaming that name over the
    old backup replaces it atomically, so at every moment both ``path`` and the backup are
    complete files. (``shutil.copy`` over the backup truncated it first: a crash left a torn
    backup, and a tensor memory-mapped from it changed under the trainer.) On a file system
    without hard links the copy goes to a temporary file that is then renamed."""
    tmp = _temp_path(path)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, prev_path(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic(path: Path, write: Callable[[str], None], keep_prev: bool = False) -> None:
    """Write ``path`` through ``write(temporary_name)`` and a rename. A full disk raises
    :class:`DiskFullError` naming ``path`` (not the temporary file, which is removed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(path)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path) from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # name the file, not the temporary one
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    try:
        write(tmp)
        # mkstemp makes 0600 files (and a writer may make its own): a run folder's files get the
        # permissions the user's umask gives, like any other file the user creates.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if keep_prev and path.exists():
            _backup(path)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(e):
            raise DiskFullError(path) from None
        failed = _write_failure(e, path)
        if failed is not None:
            raise failed from None
        raise
    _fsync_dir(path.parent)


def _write_failure(e: BaseException, path: Path) -> OSError | None:
    """A write that failed in the operating system (a file-size limit, an I/O error, ...) as one
    ``OSError`` naming ``path``; None for anything else (a bug, Ctrl-C), which propagates as is.
    safetensors' Rust writer reports such failures as ``SafetensorError("... I/O error: <reason>
    (os error N)")``, with the errno only in its text."""
    if isinstance(e, OSError) and e.errno is not None:
        return OSError(e.errno, f"cannot write {str(path)!r}: {e.strerror}", str(path))
    text = str(e)
    if type(e).__name__ == "SafetensorError" and "I/O error" in text:
        code = re.search(r"os error (\d+)", text)
        reason = text.split("I/O error:", 1)[1].strip()
        return OSError(int(code.group(1)) if code else errno.EIO, f"cannot write {str(path)!r}: {reason}", str(path))
    return None


def prev_path(path: Path) -> Path:
    """Where the previous version of checkpoint ``path`` is kept (``name.prev.ext``)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_tensors(
    tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, Any] | None = None, keep_prev: bool = False
) -> None:
    """Atomically write ``tensors`` to a safetensors file; ``metadata`` values are JSON-encoded."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    _atomic(Path(path), lambda tmp: save_file(flat, tmp, metadata=meta), keep_prev)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a safetensors file -> (tensors, metadata). Raises :class:`CheckpointError` on a
    missing, truncated or corrupt file, naming the file and the previous good copy if one exists."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        # clone(): own the memory. load_file maps the file; a mapped tensor would follow any later
        # in-place change of the file (an optimizer state resumed from it would silently reset).
        tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        meta = {k: json.loads(v) for k, v in raw.items()}
    except Exception as e:  # safetensors raises several types for a damaged header or body
        hint = f"; the previous good copy is {str(prev_path(path))!r}" if prev_path(path).exists() else ""
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({reason}){hint}") from None
    return tensors, meta


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float, however deeply nested in dicts, lists and tuples,
    replaced by None (JSON has neither; ``json.dump`` would write non-standard ``NaN``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def write_json(obj: Any, path: str | os.PathLike, keep_prev: bool = False) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)

    _atomic(Path(path), w, keep_prev)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Atomically replace the text file ``path`` with ``text``."""

    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(Path(path), w)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is truncated or corrupt ({e})") from None


def write_yaml(obj: Any, path: str | os.PathLike) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            yaml.safe_dump(obj, f, sort_keys=False)

    _atomic(Path(path), w)


def read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:  # bytes: PyYAML decodes (UTF-8/16 by BOM) and reports bad bytes as YAMLError
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        lines = str(e).strip().splitlines()
        raise CheckpointError(f"{str(path)!r} is not valid YAML ({lines[0] if lines else type(e).__name__})") from None
    except RecursionError:
        raise CheckpointError(f"{str(path)!r} is nested too deeply to read as YAML") from None
    except ValueError as e:  # a value PyYAML cannot construct, e.g. the timestamp 2001-13-45
        raise CheckpointError(f"{str(path)!r} is not valid YAML ({e})") from None


# --- optimizer state <-> flat tensors + JSON ----------------------------------------------------
def flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a ``torch.optim`` state dict into safetensors-ready tensors and a JSON skeleton."""
    tensors: dict[str, Tensor] = {}
    skeleton: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        skeleton["state"][str(pid)] = {}
        for k, v in entries.items():
            if isinstance(v, Tensor):
                key = f"{prefix}.{pid}.{k}"
                tensors[key] = v
                skeleton["state"][str(pid)][k] = {"tensor": key}
            else:
                skeleton["state"][str(pid)][k] = v
    return tensors, skeleton


def unflatten_optimizer(tensors: dict[str, Tensor], skeleton: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in skeleton["state"].items():
        state[int(pid)] = {
            k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v) for k, v in entries.items()
        }
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in skeleton["param_groups"]]
    return {"state": state, "param_groups": groups}


def model_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """The model's state dict as plain contiguous tensors (safetensors refuses shared storage)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
