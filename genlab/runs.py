"""Run folders: every file name in one, the marker and the lock that guard one, the trainer state
read and written atomically, ``config.yaml``, and :func:`load_run`.

A run folder is what ``genlab train --out`` (or ``Trainer(out_dir=)``) writes. Every name below is
defined here once; the trainer, the CLI and ``compare`` import them. Three rules protect what is
in a folder:

- genlab marks a folder as its run when it first writes into it (:data:`MARKER_FILE`), and only a
  marked folder is ever cleared, and then only of genlab's own file names (:func:`clear_run`);
  a non-empty folder that is not a run is never written into (:func:`claim_run_folder`);
- one training at a time holds a run folder (:class:`RunLock`, an advisory lock file that names
  its holder's PID and host, and that is stale once that process is gone);
- results of older weights (``eval.json``, latents, figures) are removed whenever training writes
  new weights (:func:`remove_results`), so they never sit beside weights they do not describe.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import checkpoint as ckpt
from .config import ConfigError
from .data.spec import DataSpec
from .protocol import GenerativeModel

# --- the file names of a run folder -------------------------------------------------------------
CONFIG_FILE = "config.yaml"  # everything needed to rebuild the model and repeat the run
MODEL_FILE = "model.safetensors"  # last weights (the EMA if there is one)
BEST_FILE = "best.safetensors"  # best validation weights
STATE_FILE = "trainer-state.safetensors"  # optimizer tensors, RNG states, data order
STATE_JSON = "trainer-state.json"  # step, best metric, optimizer skeletons, training settings
METRICS_FILE = "metrics.jsonl"  # one JSON object per line: train and val records
EVAL_FILE = "eval.json"  # written by `genlab eval`
SAMPLES_DIR = "samples"  # sample grids during training: samples/step-000500.png
LATENTS_PREFIX = "latents"  # `genlab encode`: latents-SPLIT.npz (+ .png), latents-DATA-SPLIT.npz
MARKER_FILE = ".genlab-run"  # "this folder is a genlab run": the only folders genlab clears
LOCK_FILE = ".genlab-lock"  # held by the training that writes the folder (PID and host)
#: Figures written into a run folder: the end-of-training pictures (``viz.run_figures``; text and
#: audio samples are written as ``samples.txt``/``samples.wav``) and the memorization plot of
#: ``genlab eval``. A figure added elsewhere must be named here, or ``--overwrite`` cannot remove it
#: (tests/test_runs.py checks that every file a run folder gets is a name of this module).
FIGURE_FILES = (
    "samples.png",
    "samples-mean.png",
    "samples.txt",
    "samples.wav",
    "reconstructions.png",
    "traversal.png",
    "interpolation.png",
    "density.png",
    "memorization.png",
    "hallucination.png",  # genlab audit
    "exposure.png",  # genlab audit
)
WEIGHTS = {"best": BEST_FILE, "last": MODEL_FILE}
#: ``genlab compare --data``'s record of a family's training seconds and whether its budget is spent.
COMPARE_STATE_FILE = "compare-state.json"

#: What describes the weights rather than makes them: removed whenever training writes new weights.
AUDIT_FILE = "audit.json"  # written by `genlab audit`
RESULT_FILES = (EVAL_FILE, AUDIT_FILE, *FIGURE_FILES)
RESULT_PATTERNS = (f"{LATENTS_PREFIX}-*.npz", f"{LATENTS_PREFIX}-*.png")
#: Everything else genlab writes (the ``.prev`` backups of the trainer state included).
TRAINING_FILES = (
    CONFIG_FILE,
    MODEL_FILE,
    BEST_FILE,
    STATE_FILE,
    STATE_JSON,
    ckpt.prev_path(Path(STATE_FILE)).name,
    ckpt.prev_path(Path(STATE_JSON)).name,
    METRICS_FILE,
    COMPARE_STATE_FILE,
)


def latents_file(split: str, data: str | None = None) -> str:
    """``latents-SPLIT.npz`` for the run's own data, ``latents-DATA-SPLIT.npz`` for other data."""
    return f"{LATENTS_PREFIX}-{split}.npz" if data is None else f"{LATENTS_PREFIX}-{data}-{split}.npz"


def is_genlab_file(name: str) -> bool:
    """Whether a top-level file name in a run folder is one genlab writes (and may remove)."""
    return (
        name in TRAINING_FILES
        or name in RESULT_FILES
        or any(fnmatch.fnmatchcase(name, p) for p in RESULT_PATTERNS)
        or _is_temp_file(name)
    )


def _is_temp_file(name: str) -> bool:
    # checkpoint._atomic names its temporary files .NAME.XXXXXXXX.tmp
    return name.endswith(ckpt.TMP_SUFFIX) and any(name.startswith(f".{n}.") for n in (*TRAINING_FILES, *RESULT_FILES))


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (not a run, locked, no checkpoint); one line."""


# --- config.yaml ----------------------------------------------------------------------------------
class Run(NamedTuple):
    """A loaded run: ``model, config, spec = genlab.load_run(path)``."""

    model: GenerativeModel
    config: dict[str, Any]
    spec: DataSpec


def plain(obj: Any) -> Any:
    """Tuples -> lists and other YAML-safe conversions (via a JSON round trip)."""
    return json.loads(json.dumps(obj))


#: Version of config.yaml: 1 kept the model and data options set by hand; 2 keeps every option with
#: its value, defaults included, so a later change of a default never changes a saved run.
CONFIG_VERSION = 2


def full_model_kwargs(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every constructor option of registered model ``model``: its default, or the value in ``kwargs``."""
    from .registry import model_kwargs

    params = model_kwargs(model)
    defaults = {k: p.default for k, p in params.items() if p.default is not p.empty and p.kind != p.VAR_KEYWORD}
    return {**defaults, **kwargs}


def full_data_opts(data: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Every option of built-in data set ``data`` (its default, or the value in ``opts``); a user
    path's options as given."""
    from .data import dataset_options, list_datasets

    return {**dataset_options(data), **opts} if data in list_datasets() else dict(opts)


def saved_model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The model options a run's ``config.yaml`` was trained with: as saved (version 2), or, for a
    version-1 config (options set by hand only), those plus the model's ``legacy_defaults``."""
    from .registry import get_model_class

    kwargs = dict(config.get("model_kwargs") or {})
    if int(config.get("config_version", 1)) >= 2:
        return kwargs
    try:
        legacy = get_model_class(str(config.get("model"))).legacy_defaults
    except (KeyError, ValueError):
        return kwargs
    return {**legacy, **kwargs}


def saved_data_opts(config: dict[str, Any]) -> dict[str, Any]:
    """The data options a run was trained with (version-1 configs: plus the data set's options
    whose default has changed since, at their earlier value)."""
    from .data import LEGACY_OPTIONS

    opts = dict(config.get("data_opts") or {})
    if int(config.get("config_version", 1)) >= 2:
        return opts
    return {**LEGACY_OPTIONS.get(str(config.get("data")), {}), **opts}


def run_config(
    model: str,
    model_kwargs: dict[str, Any],
    data: str,
    data_opts: dict[str, Any],
    spec: DataSpec,
    train: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to rebuild the model and repeat the run, as written to ``config.yaml``:
    every model and data option with its value (defaults included, :data:`CONFIG_VERSION` 2)."""
    from . import __version__

    return plain(
        {
            "genlab_version": __version__,
            "config_version": CONFIG_VERSION,
            "model": model,
            "model_kwargs": full_model_kwargs(model, model_kwargs),
            "data": data,
            "data_opts": full_data_opts(data, data_opts),
            "spec": spec.to_dict(),
            "train": train,
        }
    )


# --- which folders are runs, and what may be done to them ----------------------------------------
def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder genlab marked as its run (:data:`MARKER_FILE`). A folder written
    before the marker existed counts if its ``config.yaml`` is a genlab run config (it names the
    genlab version, the model and the data spec): no other program writes that file."""
    path = Path(path)
    if (path / MARKER_FILE).is_file():
        return True
    try:
        cfg = ckpt.read_yaml(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else None
    except (ckpt.CheckpointError, OSError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and {"genlab_version", "model", "spec"} <= set(cfg)


def check_out_folder(out: str | os.PathLike, data: str | os.PathLike | None = None) -> None:
    """Refuse an ``--out`` that no run may be written into, let alone cleared: the root folder,
    the home folder or a folder above it, and the data path or a folder above it (the training
    data would sit among, and could be taken for, the run's files); and a folder this process may
    not write into (read-only, another user's), naming it."""
    target = Path(out).expanduser().resolve()
    try:
        home: Path | None = Path.home().resolve()
    except (RuntimeError, KeyError):  # no home folder known
        home = None
    if target == Path(target.anchor) or (home is not None and (target == home or target in home.parents)):
        raise RunFolderError(f"--out {str(out)!r} is {target}, which holds more than a run; use a folder of its own")
    if data is not None and Path(data).exists():
        d = Path(data).expanduser().resolve()
        if target == d or target in d.parents:
            raise RunFolderError(
                f"--out {str(out)!r} is or contains the training data {str(data)!r}; write the run to another folder"
            )
    # A folder genlab may not write into (read-only, another user's) is named now, before data and
    # model are loaded, not by a PermissionError from deep inside the first write.
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        what = "it" if existing == target else f"{str(existing)!r}, where it would be created"
        raise RunFolderError(
            f"--out {str(out)!r}: permission denied: genlab cannot write into {what} "
            "(a read-only or another user's folder); choose a folder you can write"
        )


def check_run_folder(path: str | os.PathLike) -> None:
    """Refuse, naming it, a ``path`` that is a file, or a folder that is not empty and is not a
    genlab run: genlab would overwrite the user's files (``config.yaml``, ``samples.png``, ...)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"run folder {str(path)!r} is a file, not a folder")
    if path.is_dir() and not is_run_folder(path):
        others = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise RunFolderError(
                f"{str(path)!r} is not empty ({shown}) and is not a genlab run folder; "
                "choose a new or empty folder for --out"
            )


def claim_run_folder(path: str | os.PathLike) -> Path:
    """Make ``path`` a run folder: create it and its marker (:func:`check_run_folder` first)."""
    path = Path(path)
    check_run_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER_FILE).exists():
        ckpt.write_text(
            "genlab run folder: 'genlab train --overwrite' may clear genlab's files in it\n", path / MARKER_FILE
        )
    return path


def _remove(path: Path, names: tuple[str, ...], patterns: tuple[str, ...]) -> list[Path]:
    removed = []
    for f in path.iterdir():
        if f.is_file() and (f.name in names or any(fnmatch.fnmatchcase(f.name, p) for p in patterns)):
            f.unlink()
            removed.append(f)
    return removed


def remove_results(path: str | os.PathLike) -> list[Path]:
    """Remove the results of earlier weights (:data:`RESULT_FILES`, latents): training is about to
    write new weights, which these files do not describe. Returns what was removed."""
    path = Path(path)
    return _remove(path, RESULT_FILES, RESULT_PATTERNS) if path.is_dir() else []


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files left by a write that a crash interrupted (none can be in progress:
    the caller holds the run's lock). Returns what was removed."""
    path = Path(path)
    stale = [f for f in path.iterdir() if f.is_file() and _is_temp_file(f.name)] if path.is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def clear_run(path: str | os.PathLike, keep: tuple[str, ...] = ()) -> list[Path]:
    """Delete the files of an earlier run in the run folder ``path``: genlab's own file names
    (:func:`is_genlab_file`, except ``keep``) and the sample grids in ``samples/``, nothing else.
    The marker and the lock stay. A folder that is not a genlab run is refused."""
    path = Path(path)
    if not path.is_dir():
        return []
    if not is_run_folder(path):
        raise RunFolderError(f"{str(path)!r} is not a genlab run folder; genlab clears only folders it made")
    removed = [f for f in path.iterdir() if f.is_file() and f.name not in keep and is_genlab_file(f.name)]
    for f in removed:
        f.unlink()
    samples = path / SAMPLES_DIR
    if samples.is_dir() and not samples.is_symlink():  # genlab makes a folder, never a link to elsewhere
        for f in samples.iterdir():
            if f.is_file() and fnmatch.fnmatchcase(f.name, "step-*"):
                f.unlink()
                removed.append(f)
        if not any(samples.iterdir()):
            samples.rmdir()
    return removed


# --- the lock ---------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: no signal, only the check that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return True  # cannot tell: never break a lock that may be live
    return True


_HELD: dict[Path, int] = {}  # lock file -> times this process acquired it (re-entrant)


class RunLock:
    """Advisory lock of a run folder: ``with RunLock(path): ...`` while training writes it.

    The lock is the file :data:`LOCK_FILE`, created exclusively (``O_EXCL``), holding the PID and
    host of its holder. It is removed on any exit from the ``with`` block (an exception, Ctrl-C);
    after ``kill -9`` or a power cut the file stays, and is stale: a later run on the same host
    finds that PID gone (``os.kill(pid, 0)``) and takes the lock over. A lock held on another host
    cannot be checked and is reported with the path to remove by hand. Re-entrant within one
    process (the CLI holds it around ``Trainer.fit``, which takes it too).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.file = Path(path).resolve() / LOCK_FILE
        self.held = False  # by this object (release() undoes only its own acquire())

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        if self.held:
            return
        if _HELD.get(self.file):
            _HELD[self.file] += 1
            self.held = True
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex}
        # The lock appears with its content complete: written to a file of our own, then hard-linked
        # to the lock's name (which, like O_EXCL, fails if the name exists). A reader therefore never
        # sees a half-written lock and never takes a live one for a torn, stale one.
        own = self.file.with_name(f"{LOCK_FILE}.{me['token']}.tmp")
        own.write_text(json.dumps(me))
        try:
            for _ in range(10):  # a few rounds: a stale lock is moved aside, then taken anew
                try:
                    self._create(own)
                except FileExistsError:
                    self._break_if_stale()
                    continue
                _HELD[self.file] = 1
                self.held = True
                return
        finally:
            own.unlink(missing_ok=True)
        raise RunFolderError(f"cannot take the lock {str(self.file)!r}; remove it if no training uses the folder")

    def _create(self, own: Path) -> None:
        try:
            os.link(own, self.file)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system: exclusive create, then write
            fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(own.read_text())

    def _break_if_stale(self) -> None:
        """Remove the lock file if its holder is dead; raise naming the holder if it is alive."""
        try:
            holder = json.loads(self.file.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (ValueError, KeyError, TypeError, OSError):
            # Unreadable: torn by a crash, or (without hard links) being written this instant.
            holder, pid, host = None, -1, socket.gethostname()
            try:
                fresh = time.time() - self.file.stat().st_mtime < 10
            except OSError:
                return
            if fresh:
                raise RunFolderError(
                    f"run folder {str(self.file.parent)!r} is being locked by another training "
                    f"(lock {str(self.file)!r})"
                ) from None
        if host != socket.gethostname():
            raise RunFolderError(
                f"run folder {str(self.file.parent)!r} is in use by process {pid} on host {host!r} "
                f"(lock {str(self.file)!r}; remove it if that process is gone)"
            )
        if pid > 0 and pid != os.getpid() and _alive(pid):
            raise RunFolderError(
                f"run folder {str(self.file.parent)!r} is in use by another training, process {pid} "
                f"(lock {str(self.file)!r})"
            )
        # Stale. Move it aside by an atomic rename and check that what was moved is the stale lock:
        # two processes may find it stale at once, and the first may already have made a new one.
        aside = self.file.with_name(f"{LOCK_FILE}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.file, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (ValueError, OSError):
            moved = None
        if holder is not None and moved != holder:
            try:  # a live lock taken meanwhile: put it back (unless yet another one appeared)
                os.link(aside, self.file)
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        count = _HELD.get(self.file, 0)
        if count > 1:
            _HELD[self.file] = count - 1
            return
        if count == 1:
            del _HELD[self.file]
            try:
                if json.loads(self.file.read_text()).get("pid") == os.getpid():
                    self.file.unlink()
            except (OSError, ValueError):
                pass


# --- the trainer state ----------------------------------------------------------------------------
def has_checkpoint(path: str | os.PathLike) -> bool:
    """Whether the run folder holds a trainer state to resume from."""
    return (Path(path) / STATE_JSON).is_file()


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of the run's trainer state, or None if there is none (or it cannot be read)."""
    try:
        return int(ckpt.read_json(Path(path) / STATE_JSON)["step"])
    except (ckpt.CheckpointError, KeyError, TypeError, ValueError):
        return None


def save_trainer_state(path: str | os.PathLike, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
    """Write the trainer state: ``tensors`` to :data:`STATE_FILE` (its metadata holds the step),
    then ``state`` (JSON: must hold ``"step"``) to :data:`STATE_JSON`. Each write is atomic and
    keeps the file it replaces as ``.prev``; a crash between the two leaves the new tensors beside
    the old JSON, and :func:`load_trainer_state` then pairs that JSON with the ``.prev`` tensors."""
    path = Path(path)
    ckpt.save_tensors(tensors, path / STATE_FILE, {"step": state["step"]}, keep_prev=True)
    ckpt.write_json(state, path / STATE_JSON, keep_prev=True)


def _newest_consistent_state(path: Path) -> tuple[Path, dict[str, Tensor], dict[str, Any]]:
    """(tensors file, tensors, state): the JSON with the tensors at its step, the current ones or,
    after a crash between the two writes, the ``.prev`` ones. A damaged file is an error that
    names it (and its previous copy): with atomic writes that is not a crash but a failing disk,
    and going back a checkpoint silently would hide it."""
    if not has_checkpoint(path):
        raise RunFolderError(
            f"run {str(path)!r} has no checkpoint yet (it stopped before its first one); "
            "start it over with 'genlab train ... --overwrite'"
        )
    state = ckpt.read_json(path / STATE_JSON)
    if not isinstance(state, dict) or "step" not in state:
        raise ckpt.CheckpointError(f"{str(path / STATE_JSON)!r} is not a trainer state (no 'step')")
    steps = []
    for tensor_file in (path / STATE_FILE, ckpt.prev_path(path / STATE_FILE)):
        if not tensor_file.exists():
            continue
        tensors, meta = ckpt.load_tensors(tensor_file)
        if meta.get("step") == state["step"]:
            return tensor_file, tensors, state
        steps.append(f"{tensor_file.name} at step {meta.get('step')}")
    raise ckpt.CheckpointError(
        f"{str(path / STATE_JSON)!r} is at step {state['step']} "
        f"but no trainer tensors are: {', '.join(steps) or 'none'}"
    )


def recover_trainer_state(path: str | os.PathLike) -> int:
    """Before a resume (by the one process that holds the run's lock): remove the temporary files
    of an interrupted write and make the newest consistent trainer state the current one.

    A crash between the two writes of :func:`save_trainer_state` leaves new tensors beside the old
    JSON; the ``.prev`` tensors match that JSON. Renaming them back over the orphaned newer file
    matters: otherwise the next checkpoint would back up the orphan as ``.prev``, and a second
    crash at the same point would leave no consistent pair. Returns the step of the state."""
    path = Path(path)
    remove_stale_temp_files(path)
    tensor_file, _, state = _newest_consistent_state(path)
    if tensor_file != path / STATE_FILE:
        warnings.warn(
            f"{path / STATE_FILE} is newer than {STATE_JSON} (a checkpoint was interrupted between its two "
            f"writes); resuming from step {state['step']} ({tensor_file.name})",
            stacklevel=2,
        )
        os.replace(tensor_file, path / STATE_FILE)
    return int(state["step"])


def load_trainer_state(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the trainer state written by :func:`save_trainer_state` -> (tensors, state): the
    newest pair of JSON and tensors whose steps agree (read only; :func:`recover_trainer_state`
    also repairs the files). The tensors are copies in memory, never mapped to a file that a
    later checkpoint replaces."""
    _, tensors, state = _newest_consistent_state(Path(path))
    return tensors, state


# --- metrics.jsonl ----------------------------------------------------------------------------------
def truncate_metrics(path: str | os.PathLike, step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (those after it belong to steps a
    resumed run repeats). A torn last line (a crash or a full disk mid-write) is dropped with a
    warning; a bad line elsewhere is an error naming the file and line."""
    file = Path(path) / METRICS_FILE
    if not file.exists():
        return
    lines = file.read_text(errors="replace").splitlines()
    kept = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rec_step = int(rec["step"])
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                warnings.warn(f"{file}: dropped a torn last line ({line[:40]!r}...)", stacklevel=2)
                continue
            raise ckpt.CheckpointError(f"{str(file)!r} line {i + 1} is not a metrics record: {line[:60]!r}") from None
        if rec_step <= step:
            kept.append(line)
    ckpt.write_text("".join(ln + "\n" for ln in kept), file)


def append_metrics(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record to ``metrics.jsonl``. A full disk raises :class:`genlab.checkpoint.DiskFullError`
    naming the file (a line it tore is dropped on resume, :func:`truncate_metrics`)."""
    file = Path(path) / METRICS_FILE
    try:
        with open(file, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        if ckpt.is_disk_full(e):
            raise ckpt.DiskFullError(file) from None
        raise


def weights_step(path: str | os.PathLike, weights: str = "best") -> int | None:
    """The training step of a run's ``best`` or ``last`` weights, from its trainer-state.json;
    None when the file or the step is missing (e.g. a run written by an older genlab)."""
    try:
        state = ckpt.read_json(Path(path) / STATE_JSON)
        step = state["best_step"] if weights == "best" else state["step"]
    except (ckpt.CheckpointError, OSError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


# --- loading a run ----------------------------------------------------------------------------------
def load_run(path: str | os.PathLike, weights: str = "best", device: str | torch.device = "cpu") -> Run:
    """Load a run folder written by ``genlab train``: the model (in eval mode) with its ``best``
    validation weights (or ``"last"``), the config dict and the data spec."""
    from .registry import build_model

    path = Path(path)
    if not path.is_dir():
        raise ckpt.CheckpointError(f"run folder {str(path)!r} does not exist")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    if not (path / CONFIG_FILE).exists():
        raise ckpt.CheckpointError(
            f"{str(path)!r} is not a genlab run folder (no {CONFIG_FILE}); "
            "runs are written by 'genlab train' or genlab.Trainer(..., out_dir=)"
        )
    config = ckpt.read_yaml(path / CONFIG_FILE)
    if not isinstance(config, dict) or "model" not in config or "spec" not in config:
        raise ckpt.CheckpointError(f"{str(path / CONFIG_FILE)!r} is not a genlab run config (needs 'model' and 'spec')")
    spec = DataSpec.from_dict(config["spec"])
    try:  # e.g. an edited z_dim that this machine cannot hold: say which file asks for it
        model = build_model(config["model"], spec, **saved_model_kwargs(config))
    except ConfigError as e:
        raise ConfigError(f"{str(path / CONFIG_FILE)!r}: {e}") from None
    file = path / WEIGHTS[weights]
    if weights == "best" and not file.exists():
        file = path / WEIGHTS["last"]
    tensors, _ = ckpt.load_tensors(file)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ckpt.CheckpointError(
            f"{str(file)!r} does not fit model {config['model']!r}: {str(e).splitlines()[0]}"
        ) from None
    return Run(model.to(device).eval(), config, spec)
