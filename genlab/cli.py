"""The ``genlab`` command line: train, sample, eval, encode, swap, translate, summarize, compare, datasets, models.

Every error a user can cause (bad data path, unknown option, damaged checkpoint) ends the program
with one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import parse_assignments, read_config_file, split_settings


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _split_settings(model: str, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`genlab.config.split_settings` with the trainer's keys and the options of ``model``."""
    import dataclasses

    from .registry import model_kwargs
    from .train import TrainConfig

    train_keys = [f.name for f in dataclasses.fields(TrainConfig)]
    return split_settings(settings, train_keys=train_keys, model_keys=model_kwargs(model), model=model)


def _check_out_suffix(out: str | None, suffix: str, note: str = "") -> None:
    """One-line error unless ``--out`` (when given) ends in ``suffix`` (any letter case)."""
    if out is not None and Path(out).suffix.lower() != suffix:
        raise CLIError(f"--out must name a {suffix} file{note}; got {out!r}")


def _same_data(given: str, stored: str) -> bool:
    """Whether ``--data given`` names the data set ``stored`` in a run's config.yaml (built-in
    names as they are; paths compared resolved, as config.yaml stores them absolute)."""
    if given == stored:
        return True
    return Path(given).exists() and Path(given).resolve() == Path(stored).resolve()


def cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch

    from . import build_model, list_datasets, load_dataset
    from .checkpoint import read_yaml
    from .registry import get_model_class, weights_bytes
    from .runs import (
        CONFIG_FILE,
        MARKER_FILE,
        RunLock,
        check_out_folder,
        check_run_folder,
        checkpoint_step,
        claim_run_folder,
        clear_run,
        full_data_opts,
        has_checkpoint,
        is_run_folder,
        saved_data_opts,
        saved_model_kwargs,
    )
    from .train import (
        TrainConfig,
        Trainer,
        check_training_memory,
        idle_threads,
        init_distributed,
        rank0_first,
        resolve_device,
    )

    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out and --overwrite starts it over; give one of them")
    if args.out is None:
        if args.resume or not args.model or not args.data:
            raise CLIError("train needs --out RUN_FOLDER (or MODEL and --data, to default to runs/MODEL-DATA)")
        args.out = str(Path("runs") / f"{args.model}-{Path(args.data.rstrip('/')).stem}")
    out = Path(args.out)
    overrides = parse_assignments(args.set or [], "--set")
    data_opts = parse_assignments(args.data_opt or [], "--data-opt")
    if "split" in data_opts:
        raise CLIError(
            "--data-opt split: the split is not a data option; "
            "train uses the train and val splits, eval/encode take --split"
        )
    if args.resume:
        if not (out / CONFIG_FILE).exists() and (out / MARKER_FILE).exists():
            raise CLIError(
                f"--resume: the training in {str(out)!r} stopped before it wrote {CONFIG_FILE}: nothing to resume; "
                "train it again without --resume"
            )
        if not (out / CONFIG_FILE).exists() or not is_run_folder(out):
            raise CLIError(f"--resume: {str(out)!r} holds no run to resume (no genlab {CONFIG_FILE})")
        cfg = read_yaml(out / CONFIG_FILE)
        if args.model and args.model != cfg["model"]:
            raise CLIError(f"--resume: run {str(out)!r} trains {cfg['model']!r}, not {args.model!r}")
        # A resumed run keeps its data and settings: flags that would change them are refused,
        # not silently ignored.
        if args.data and not _same_data(args.data, cfg["data"]):
            raise CLIError(
                f"--resume: run {str(out)!r} trains on {cfg['data']!r}, not {args.data!r}; "
                "leave out --data to resume it, or train a new run in another --out"
            )
        saved_opts = saved_data_opts(cfg)
        if args.data_opt and full_data_opts(cfg["data"], data_opts) != full_data_opts(cfg["data"], saved_opts):
            raise CLIError(f"--resume cannot change data options (the run has {saved_opts})")
        if args.config:
            raise CLIError(
                f"--resume takes the settings of {str(out / CONFIG_FILE)!r}; change training keys with --set"
            )
        if not has_checkpoint(out):
            raise CLIError(
                f"--resume: run {str(out)!r} has no checkpoint yet (it stopped before its first one); "
                "start it over with --overwrite"
            )
        model_name, data_name, data_opts = cfg["model"], cfg["data"], saved_opts
        check_out_folder(out, data_name)
        train_over, model_over = _split_settings(model_name, overrides)
        if model_over:
            raise CLIError(f"--resume cannot change model options ({', '.join(model_over)})")
        train_settings = {**cfg["train"], **train_over}
        done = checkpoint_step(out) or 0
        if int(train_settings.get("steps", 0)) <= done:
            raise CLIError(
                f"--resume: run {str(out)!r} is already at step {done} and steps={train_settings.get('steps')}; "
                f"pass --set steps=N with N > {done} to train further"
            )
        model_settings = saved_model_kwargs(cfg)
    else:
        if not args.model:
            raise CLIError("train needs a MODEL (see 'genlab models')")
        if not args.data:
            raise CLIError("train needs --data NAME|PATH (see 'genlab datasets')")
        model_name, data_name = args.model, args.data
        if data_name not in list_datasets() and Path(data_name).exists():
            # config.yaml keeps an absolute path, so eval/encode work from any directory
            data_name = str(Path(data_name).resolve())
        check_out_folder(out, data_name)
        check_run_folder(out)  # early, before data and model are loaded; checked again under the lock
        file_cfg = read_config_file(args.config)
        flat = {k: v for k, v in file_cfg.items() if k not in ("model", "train", "data_opts")}
        nested = (
            {**(file_cfg.get("train") or {}), **(file_cfg.get("model") or {})}
            if isinstance(file_cfg.get("model"), dict) or "train" in file_cfg
            else {}
        )
        data_opts = {**(file_cfg.get("data_opts") or {}), **data_opts}
        train_settings, model_settings = _split_settings(model_name, {**nested, **flat, **overrides})
        train_settings = {**get_model_class(model_name).train_defaults, **train_settings}
    train_cfg = TrainConfig.from_dict(train_settings)
    if args.quiet:
        train_cfg.progress = False
    device = resolve_device(train_cfg.device)
    init_distributed(device)
    if not args.resume and train_cfg.threads is None and device.type == "cpu" and "WORLD_SIZE" not in os.environ:
        # A new run takes the idle cores and config.yaml records the count, so --resume uses the same
        # (thread count changes float summation order: bit-for-bit resumes need the same).
        train_cfg.threads = idle_threads()
    # Data and model first: a bad --data or option fails before the folder is touched (with
    # --overwrite, before the old run is cleared).
    train_data = load_dataset(data_name, "train", **data_opts)
    val_data = load_dataset(data_name, "val", **data_opts)
    # Sizes this machine cannot train are refused before the (possibly minutes-long) build.
    weights = weights_bytes(get_model_class(model_name), train_data.spec, model_settings)
    if weights is not None:
        check_training_memory(model_name, weights, device, options=model_settings)
    torch.manual_seed(train_cfg.seed)
    model = build_model(model_name, train_data.spec, **model_settings)

    # Rank 0 alone locks, checks and clears the folder (under torchrun every rank runs this
    # command); the others wait for it, and stop if it refuses. The lock is held to the end: the
    # final figures are written into the folder too.
    lock = RunLock(out)

    def prepare() -> None:
        lock.acquire()
        if args.resume:
            claim_run_folder(out)  # marks a run written before run folders had a marker
            return
        if has_checkpoint(out) and not args.overwrite:
            raise CLIError(
                f"{str(out)!r} already holds a run; use --resume to continue it or --overwrite to start over"
            )
        claim_run_folder(out)
        # A run folder: --overwrite was given, or it holds no checkpoint (a run stopped before its
        # first one). Either way nothing of the old run (eval.json, latents, figures) may stay
        # beside the new weights.
        clear_run(out)

    try:
        rank0_first(prepare)
        trainer = Trainer(model, train_data, val_data, train_cfg, out)
        trainer.write_config(data_name, data_opts)  # on --resume too: the settings it continues with
        summary = trainer.fit(resume=args.resume)
        interrupted = summary["stopped"] == "interrupted"
        if trainer.is_main:
            from .viz import display_count, run_figures

            # Final pictures with the configured sample count: sequential samplers (PixelCNN on
            # 64x64) pay per sample. Not after Ctrl-C: the user asked to stop.
            n = display_count(model.spec, train_cfg.n_samples)
            figs = (
                []
                if interrupted
                else run_figures(
                    model,
                    val_data,
                    out,
                    seed=train_cfg.seed,
                    n=n,
                    title=f"{model_name} {out.name}, step {trainer.step}",
                )
            )
            best = "" if summary["best"] is None else f", best val {summary['best']:.4f} at step {summary['best_step']}"
            print(
                f"{summary['stopped']} at step {summary['step']} in {summary['seconds']:.1f}s{best}; run folder {out}"
            )
            for f in figs:
                print(f"  wrote {f}")
            if interrupted:
                print(
                    f"genlab: interrupted at step {summary['step']}; the checkpoint is saved: "
                    f"continue with 'genlab train --out {out} --resume'",
                    file=sys.stderr,
                )
        import torch.distributed as dist

        if dist.is_initialized():
            # The other ranks wait for rank 0's figures: a rank that tore its process group down
            # while rank 0 still held the connection was seen to abort in gloo's threads (SIGABRT).
            dist.barrier()
    finally:
        lock.release()
        import torch.distributed as dist

        if dist.is_initialized():  # leave the process group cleanly, whether training ended well or not
            dist.destroy_process_group()
    return 130 if interrupted else 0  # 128 + SIGINT, as a shell reports a program stopped by Ctrl-C


def cmd_sample(args: argparse.Namespace) -> int:
    import math

    import torch

    from .runs import load_run
    from .viz import save_samples

    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise CLIError(f"--temperature must be a finite number > 0; got {args.temperature}")
    model, cfg, spec = load_run(args.run, weights=args.weights)
    if not model.capabilities.sample:
        caps = model.capabilities
        src = [f for k, (f, _) in _MODALITY_FLAGS.items() if k in caps.modalities and not caps.generates(k)]
        how = f" (it translates: genlab translate RUN {src[0]} ...)" if caps.modalities and src else ""
        if caps.generates("summary"):
            how = " (it summarizes: genlab summarize RUN --image FILE --text CAPTION)"
        raise CLIError(f"model {cfg['model']!r} of run {str(args.run)!r} cannot sample{how}")
    steer_opts = {"step": "step_size", "iters": "iterations", "kl": "kl_scale", "gm": "gm_scale", "window": "window"}
    steer_kw = {v: getattr(args, f"steer_{k}") for k, v in steer_opts.items()}
    steer_kw = {k: v for k, v in steer_kw.items() if v is not None}
    given = [f"--steer-{k}" for k in [*steer_opts, "kind"] if getattr(args, f"steer_{k}") is not None]
    if args.steer is None and given:
        raise CLIError(f"{', '.join(given)}: steering options need --steer FACTOR=VALUE")
    if args.steer is not None:
        from .models.transformer import TransformerLM

        if not isinstance(model, TransformerLM):
            raise CLIError(f"--steer needs a transformer run on token data; run {args.run!r} is {cfg['model']!r}")
    # What save_samples can write for this run's data, decided before the (possibly slow) sampling;
    # .npy (the raw array) always works. The file name is never changed behind the user's back.
    modalities = model.capabilities.modalities
    if modalities:  # one sample = a dict of modalities: a captioned PNG (+ WAVs), or every array in .npz
        what, exts = "multimodal", ((".png", ".npz") if "x" in modalities else (".npz",))
    elif model.data_key == "text" or spec.kind == "tokens":
        what, exts = (
            ("caption" if spec.kind == "multimodal" else "token"),
            ((".txt", ".npy") if spec.vocab else (".npy",)),
        )
    elif spec.kind == "audio":
        what, exts = "audio", (".wav", ".npy")
    elif spec.kind in ("image", "multimodal"):
        what, exts = "image", (".png", ".npy")
    elif spec.kind == "vector" and tuple(spec.shape) == (2,):
        what, exts = "2-D vector", (".png", ".npy")
    else:
        what, exts = f"{spec.dim}-D {spec.kind}", (".npy",)
    out = Path(args.out if args.out is not None else f"samples{exts[0]}")
    if out.suffix.lower() not in exts:
        got = out.suffix or "no extension"
        raise CLIError(f"--out {args.out}: samples of {what} data are written as {' or '.join(exts)}; got {got}")
    if args.n is None:  # a 2-D density needs points to show its shape; images a readable grid
        # (multimodal: 16 captioned cells stay readable, and 16 WAV files, not 64, land beside them)
        args.n = 2000 if spec.kind == "vector" and tuple(spec.shape) == (2,) else 16 if modalities else 64
    if "audio" in (modalities or ()) and out.suffix.lower() == ".png":
        _check_wavs_beside(out, args.n, args.overwrite)
    gen = torch.Generator().manual_seed(args.seed)
    cond = None
    if model.conditional:
        if args.cond is None:
            cond = torch.arange(args.n) % (spec.num_classes or 1)
        else:
            if not spec.num_classes or not 0 <= args.cond < spec.num_classes:
                raise CLIError(
                    f"--cond {args.cond} is not a class id of {spec.name!r} (0..{(spec.num_classes or 1) - 1})"
                )
            cond = torch.full((args.n,), args.cond, dtype=torch.long)
    elif args.cond is not None:
        raise CLIError(f"--cond given but run {args.run!r} is not conditional")
    options = model.capabilities.sample_options
    kw: dict[str, Any] = {}
    if args.mean:
        if "mean" not in options:
            raise CLIError(f"--mean: model {cfg['model']!r} has no mean sample")
        kw["mean"] = True
    if "temperature" in options:
        kw["temperature"] = args.temperature
    elif args.temperature != 1.0:
        raise CLIError(f"--temperature: model {cfg['model']!r} does not support sampling temperature")
    for key, ok, want in (
        ("steps", lambda v: v >= 1, "an integer >= 1"),
        ("eta", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        ("guidance", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    ):
        value = getattr(args, key)
        if value is None:
            continue
        if key not in options:
            raise CLIError(f"--{key}: model {cfg['model']!r} takes no {key} (a diffusion run does)")
        if not ok(value):
            raise CLIError(f"--{key} must be {want}; got {value}")
        if key == "guidance" and not model.conditional:
            raise CLIError(f"--guidance: run {args.run!r} is not class-conditional")
        kw[key] = value
    if args.steer is not None:  # PPLM (Dathathri et al. 2020): the LM's weights are not changed
        from .steer import attribute_from_spec, steered_sample

        for key, ok, want in (
            ("step_size", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
            ("iterations", lambda v: v >= 0, "an integer >= 0"),
            ("kl_scale", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
            ("gm_scale", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            ("window", lambda v: v >= 1, "an integer >= 1"),
        ):
            if key in steer_kw and not ok(steer_kw[key]):
                flag = next(k for k, v in steer_opts.items() if v == key)
                raise CLIError(f"--steer-{flag} must be {want}; got {steer_kw[key]}")
        kind = args.steer_kind or "bow"
        data = None
        if kind == "classifier":  # the linear head trains on the run's training split (seconds)
            from . import load_dataset
            from .runs import saved_data_opts

            data = load_dataset(cfg["data"], "train", **saved_data_opts(cfg))
        try:
            attribute = attribute_from_spec(model, spec, args.steer, data=data, kind=kind, seed=args.seed)
        except ValueError as e:
            raise CLIError(f"--steer {args.steer}: {e}") from None
        what = "bag of words " + ", ".join(attribute.words) if kind == "bow" else "linear classifier"
        if getattr(attribute, "val_accuracy", None) is not None:
            what += f" (held-out accuracy {attribute.val_accuracy:.2f})"
        print(f"steering toward {args.steer}: {what}")
        x = steered_sample(model, args.n, attribute, generator=gen, cond=cond, **steer_kw, **kw)
    else:
        x = model.sample(args.n, cond, generator=gen, **kw)
    if modalities:
        written_all = _write_multimodal(x, spec, out, title=f"{args.n} jointly generated examples")
        print(f"wrote {args.n} samples to {written_all[0]}" + _and_wavs(written_all))
        return 0
    if out.suffix.lower() == ".npy":
        import numpy as np

        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:  # a file object: np.save would append .npy to 'S.NPY'
            np.save(f, x.cpu().numpy())
        written: Path | None = out
    else:
        from .viz import class_labels

        nrow = spec.num_classes if model.conditional and args.cond is None else None  # a column per class
        title = f"{cfg['model']} {Path(args.run).name}, {args.weights} weights{_weights_step(args.run, args.weights)}"
        if args.temperature != 1.0:
            title += f", temperature {args.temperature:g}"
        if args.cond is not None:
            title += f", class {class_labels(spec)[args.cond]}"
        written = save_samples(x, spec, out, nrow=nrow, title=title, labels=class_labels(spec) if nrow else None)
    if written is None:
        raise CLIError(f"--out {out}: samples of {what} data cannot be written as {out.suffix}; use --out FILE.npy")
    if written != out:  # save_samples normalizes '.WAV'/'.TXT' to lower case; keep the user's name
        written = written.replace(out)
    print(f"wrote {args.n} samples to {written}")
    return 0


def _weights_step(run: str, weights: str) -> str:
    """ ", step N" for the run's ``best`` or ``last`` weights ("" if unknown)."""
    from .runs import weights_step

    step = weights_step(run, weights)
    return "" if step is None else f", step {step}"


def _write_multimodal(outputs: dict[str, Any], spec: Any, out: Path, **kw: Any) -> list[Path]:
    """Generated modalities to ``out``, under exactly that name: ``.npz`` (one array per modality) or a
    PNG with WAVs beside it (:func:`genlab.viz.save_multimodal`). Returns the paths written."""
    if out.suffix.lower() == ".npz":
        import numpy as np

        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:  # a file object: np.savez would append .npz to 'S.NPZ'
            np.savez(f, **{k: v.detach().cpu().numpy() for k, v in outputs.items()})
        return [out]
    from .viz import save_multimodal

    return save_multimodal(outputs, spec, out, **kw)


def _check_wavs_beside(png: Path, count: int, overwrite: bool) -> None:
    """Refuse, before any sampling, to write ``<stem>-<i>.wav`` (i < ``count``) over existing files
    the user did not name: only ``--overwrite`` replaces them."""
    if overwrite:
        return
    taken = [p for p in (png.with_name(f"{png.stem}-{i}.wav") for i in range(count)) if p.exists()]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise CLIError(
            f"--out {png}: the audio goes to {png.stem}-0.wav ... {png.stem}-{count - 1}.wav beside it, and "
            f"{taken[0]} exists{more}; choose another --out, remove them, or pass --overwrite"
        )


def _and_wavs(written: list[Path]) -> str:
    wavs = [p for p in written if p.suffix == ".wav"]
    return f" and {len(wavs)} WAV files beside it ({wavs[0].name} ...)" if wavs else ""


#: --to / source flag names of each batch key, and what it holds.
_MODALITY_FLAGS = {"x": ("--image", "image"), "text": ("--text", "caption"), "audio": ("--audio", "audio")}


def _read_image_source(path: str, spec: Any) -> Any:
    """An image file -> float tensor [C, H, W] on the run's levels (:func:`genlab.data.files.read_image_as`)."""
    from .data.files import read_image_as

    return read_image_as(path, spec)


def _read_audio_source(path: str, spec: Any) -> Any:
    """A WAV file -> float tensor [T] in [-1, 1] of the run's clip length (cut, or padded with
    silence); one-line error for an unreadable file or another sample rate than the run's."""
    import numpy as np
    import torch

    from .data.audio import read_wav

    samples, rate = read_wav(path)
    want = int(spec.extra.get("sample_rate", rate))
    if rate != want:
        raise CLIError(f"--audio {path}: the file has {rate} Hz but the run's audio has {want} Hz; resample it first")
    length = int(spec.shape[0])
    if len(samples) != length:
        print(
            f"note: --audio {path} has {len(samples)} samples; the run's clips hold {length}: "
            + ("using the first ones" if len(samples) > length else "padded with silence"),
            file=sys.stderr,
        )
    clip = np.zeros(length, dtype=np.float32)
    clip[: min(length, len(samples))] = samples[:length]
    return torch.from_numpy(clip)


def cmd_translate(args: argparse.Namespace) -> int:
    import torch

    from .runs import load_run

    given = {k: v for k, v in (("text", args.text), ("x", args.image), ("audio", args.audio)) if v is not None}
    if not given:
        raise CLIError("translate needs a source: --text CAPTION, --image FILE or --audio FILE.wav")
    to = [t.strip() for item in (args.to or []) for t in item.split(",") if t.strip()]
    for t in to:
        if t not in _MODALITY_FLAGS:
            raise CLIError(f"--to {t!r}: expected x (image), text (caption) or audio")
    exts = (".png", ".txt", ".wav", ".npz")
    if args.out is not None and Path(args.out).suffix.lower() not in exts:
        got = Path(args.out).suffix or "no extension"
        raise CLIError(
            f"--out {args.out}: translations are written as .png (images, captions under them), .txt (captions), "
            f".wav (audio) or .npz (arrays); got {got}"
        )
    model, cfg, spec = load_run(args.run, weights=args.weights)
    keys = model.capabilities.modalities
    if not keys:
        raise CLIError(
            f"run {str(args.run)!r} models one modality ({cfg['model']} on {cfg['data']}); translate needs a "
            "multimodal run, e.g. 'genlab train mvae --data shapes-captions'"
        )

    if model.capabilities.generates("summary"):  # summaries are lines of text, not a file of a modality
        raise CLIError(
            f"run {str(args.run)!r} writes summaries: use 'genlab summarize {args.run} --image FILE --text CAPTION'"
        )

    def lacks(k: str, flag: str) -> CLIError:
        have = ", ".join(f"{m} ({_MODALITY_FLAGS[m][1] if m in _MODALITY_FLAGS else m})" for m in keys)
        return CLIError(f"{flag}: run {str(args.run)!r} has no {_MODALITY_FLAGS[k][1]} modality {k!r}; it has {have}")

    for k in given:
        if k not in keys:
            raise lacks(k, _MODALITY_FLAGS[k][0])
    for t in to:
        if t not in keys:
            raise lacks(t, f"--to {t}")
        if t in given:
            raise CLIError(f"--to {t}: {_MODALITY_FLAGS[t][0]} gives it as the source; translate to another modality")
    suffix = Path(args.out).suffix.lower() if args.out is not None else None
    pinned = {".txt": "text", ".wav": "audio"}.get(suffix or "")
    if not to and pinned is not None:  # --out captions.txt / clip.wav names the target
        if pinned not in keys:
            raise lacks(pinned, f"--out {args.out}")
        if pinned in given:
            raise CLIError(
                f"--out {args.out}: {_MODALITY_FLAGS[pinned][0]} gives {pinned!r} as the source; write .png or .npz"
            )
        to = [pinned]
    caps = model.capabilities
    targets = to or [k for k in keys if k not in given]
    if not targets:
        raise CLIError("every modality of the run is a source; leave one out to translate to it")
    if not to and any(caps.generates(t) for t in targets):
        targets = [t for t in targets if caps.generates(t)]
    cannot = [t for t in targets if not caps.generates(t)]
    if cannot:  # conditional one-way models (captioners, text -> image) produce their targets only
        can = [t for t in keys if caps.generates(t)]
        src = " or ".join(_MODALITY_FLAGS[k][0] for k in keys if k not in can and k in _MODALITY_FLAGS)
        raise CLIError(
            f"run {str(args.run)!r} ({cfg['model']}) produces {', '.join(can)} only, not {', '.join(cannot)}; "
            f"give {src or 'its source'} instead"
        )
    if suffix is None:
        pictured = "x" in targets or ("x" in given and "text" in targets)
        suffix = ".png" if pictured else {"text": ".txt", "audio": ".wav"}.get(targets[0], ".npz")
    only = {".txt": "text", ".wav": "audio"}.get(suffix)
    if only is not None and targets != [only]:
        raise CLIError(
            f"--out {args.out or 'FILE' + suffix}: a {suffix} file holds {_MODALITY_FLAGS[only][1]}s only, but the "
            f"targets are {', '.join(targets)}; pass --to {only}, or write .png or .npz"
        )
    if suffix == ".png" and "x" not in targets and not ("x" in given and "text" in targets):
        raise CLIError(
            f"--out {args.out}: a .png shows images (or captions under the source image); the targets "
            f"{', '.join(targets)} have none: write .{'txt' if targets == ['text'] else 'wav'} or .npz"
        )
    out = Path(args.out) if args.out is not None else Path(f"translation{suffix}")
    if suffix == ".png" and "audio" in targets:
        _check_wavs_beside(out, args.n, args.overwrite)

    # The sources, as the run's data: tokenized, resized, cut to length.
    from .data.text import encode_text

    source: dict[str, torch.Tensor] = {}
    if "text" in given:
        try:
            source["text"] = torch.from_numpy(encode_text(args.text, spec.modality("text")))[None]
        except ValueError as e:
            raise CLIError(f"--text {args.text!r}: {e}") from None
    if "x" in given:
        source["x"] = _read_image_source(args.image, spec.modality("x"))[None]
    if "audio" in given:
        source["audio"] = _read_audio_source(args.audio, spec.modality("audio"))[None]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    source = {
        k: (v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device)) for k, v in source.items()
    }
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    with torch.no_grad():
        res = model.translate(source, targets, n=args.n, generator=gen, mean=args.mean)
    res = {k: v.detach().cpu() for k, v in res.items()}

    described = {"text": f'"{args.text}"', "x": f"image {args.image}", "audio": f"audio {args.audio}"}
    title = "from " + " + ".join(described[k] for k in given)
    if suffix == ".txt":
        from .viz import modality_texts

        texts = modality_texts(res["text"], spec)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
        for t in texts:
            print(t)
        written = [out]
    elif suffix == ".wav":
        from .data.audio import write_wav

        rate = int(spec.modality("audio").extra.get("sample_rate", 16000))
        written = [write_wav(out, res["audio"], rate)]  # the clips one after another, 0.25 s apart
    else:
        src_img = source["x"][0].cpu() if "x" in source else None
        written = _write_multimodal(res, spec, out, title=title, source_image=src_img)
    plural = {"x": "images", "text": "captions", "audio": "audio clips"}
    what = ", ".join(f"{args.n} {plural[t] if args.n > 1 else _MODALITY_FLAGS[t][1]}" for t in targets)
    print(f"wrote {what} translated {title} to {written[0]}" + _and_wavs(written))
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    import torch

    from .data.summary import decode_summary
    from .data.text import encode_text
    from .runs import load_run

    if args.image is None and args.text is None:
        raise CLIError('summarize needs --image FILE, --text "CAPTION" or both')
    if args.sample and not args.temperature > 0:
        raise CLIError(f"--temperature must be a number > 0; got {args.temperature}")
    if not args.sample and args.temperature != 1.0:
        raise CLIError("--temperature applies to drawn summaries: add --sample (the default summary is greedy)")
    model, cfg, spec = load_run(args.run, weights=args.weights)
    keys = model.capabilities.modalities
    if not (model.capabilities.generates("summary") and "x" in keys and "text" in keys):
        raise CLIError(
            f"run {str(args.run)!r} is a {cfg['model']!r} run on {cfg['data']!r}, which writes no summaries; "
            "summarize needs e.g. 'genlab train summarizer --data shapes-summary'"
        )
    source: dict[str, torch.Tensor] = {}
    if args.text is not None:
        try:
            source["text"] = torch.from_numpy(encode_text(args.text, spec.modality("text")))[None].to(model.device)
        except ValueError as e:
            raise CLIError(f"--text {args.text!r}: {e}") from None
    if args.image is not None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        source["x"] = _read_image_source(args.image, spec.modality("x"))[None].to(model.device, dtype)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    with torch.no_grad():
        ids = model.translate(
            source, ["summary"], n=args.n, generator=gen, mean=not args.sample, temperature=args.temperature
        )["summary"].cpu()
    vocab = tuple(spec.modality("summary").vocab or ())
    for row in ids:
        print(decode_summary(row, vocab) or "<empty summary>")
    how = "drawn" if args.sample else "greedy"
    if args.image is None:
        print(f'({how}; from the text "{args.text}" alone: no --image, the image modality is dropped)')
    elif args.text is None:
        print(f"({how}; from image {args.image} alone: no --text, the caption modality is dropped)")
    else:
        print(f'({how}; from image {args.image} + text "{args.text}")')
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import evaluate, load_dataset
    from .evaluate import AVAILABLE, applicable_metrics
    from .runs import EVAL_FILE, load_run, saved_data_opts

    # Flags first: a bad value is reported before the run and its data are loaded.
    if args.k is not None and args.k < 1:
        raise CLIError(f"--k must be >= 1 (importance samples of the IWAE bound); got {args.k}")
    if args.n_samples < 2:
        raise CLIError(f"--n-samples must be >= 2; got {args.n_samples}")
    if args.dynamic_lr is not None and not 0 <= args.dynamic_lr < 1:
        raise CLIError(f"--dynamic-lr must be in [0, 1) (the step size of dynamic evaluation); got {args.dynamic_lr}")
    if not 0 <= args.seed < 2**64:
        raise CLIError(f"--seed must be an integer in 0..2**64-1; got {args.seed}")
    metrics = None
    if args.metrics is not None:
        canonical = {m.lower(): m for m in AVAILABLE}
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        if not names:
            raise CLIError(
                "--metrics is empty; "
                f"expected a comma-separated subset of {', '.join(AVAILABLE)} (or leave it out for all that apply)"
            )
        metrics = []
        for m in names:
            if m.lower() not in canonical:
                raise CLIError(
                    f"--metrics: unknown metric {m!r}; expected a comma-separated subset of {', '.join(AVAILABLE)}"
                )
            if canonical[m.lower()] not in metrics:
                metrics.append(canonical[m.lower()])
    _check_out_suffix(args.out, ".json")
    import torch

    from .train import idle_threads

    if "OMP_NUM_THREADS" not in os.environ:  # as genlab train: torch's default oversubscribes a busy CPU
        torch.set_num_threads(idle_threads())
    model, cfg, spec = load_run(args.run, weights=args.weights)
    if args.k is not None and "iwae" not in applicable_metrics(model):
        raise CLIError(
            "--k sets the IWAE bound of latent-variable models (and the k-draw dequantization bound of flows on "
            f"discrete data); model {cfg['model']!r} has likelihood {model.likelihood!r}"
        )
    data_opts = saved_data_opts(cfg)
    data = load_dataset(cfg["data"], args.split, **data_opts)
    out = Path(args.out) if args.out else Path(args.run) / EVAL_FILE
    # The training split (loaded only if a sample metric needs it) trains the feature classifier
    # and is the 'train' side of the memorization audit.
    reference = (lambda: data) if args.split == "train" else (lambda: load_dataset(cfg["data"], "train", **data_opts))
    res = evaluate(
        model,
        data,
        metrics,
        k=100 if args.k is None else args.k,
        n_samples=args.n_samples,
        reference=reference,
        features=args.features,
        seed=args.seed,
        out_dir=out.parent,
        dynamic_lr=args.dynamic_lr,
    )
    if args.dynamic_lr is not None and (metrics is None or "dynamic" not in metrics):
        print("genlab: note: --dynamic-lr is used only by --metrics dynamic", file=sys.stderr)
    scored = metrics is None or "likelihood" in metrics or "dynamic" in metrics
    if scored and model.likelihood != "none" and not model.capabilities.modalities:
        from .baselines import baselines  # cached per data set, options and split: computed on first use

        res.update(baselines(cfg["data"], args.split, key=getattr(model, "data_key", "x"), **data_opts))
    res = {"run": str(args.run), "weights": args.weights, "split": args.split, "data": cfg["data"], **res}
    from .evaluate import write_eval

    # NaN and infinity are not JSON: such a metric is written as null, and said so.
    for key, value in _non_finite(res):
        print(f"genlab: warning: metric {key!r} is {value} (not finite); written as null in {out}", file=sys.stderr)
    try:  # merged into an earlier eval.json of the same model: a later --metrics fid keeps the likelihoods
        _, notes = write_eval(res, out, model=model)
    except ValueError as e:
        raise CLIError(str(e)) from None
    for note in notes:
        print(f"genlab: note: {out}: {note}", file=sys.stderr)
    from .evaluate import metric_unit

    for k, v in res.items():  # each number with its unit: bits/dim of images, bits/char of char text, ...
        unit = metric_unit(k, spec, getattr(model, "data_key", "x")) if isinstance(v, (int, float)) else ""
        shown = f"{v:.4f}" if isinstance(v, float) else f"{v}"
        print(f"{k:>28}: {shown} {unit}".rstrip())
    print(f"wrote {out}")
    return 0


EVAL_KEYS_HELP = """\
keys of eval.json and their units:
  *_nats             log-likelihoods or their bounds in nats per example, higher is better (elbo_nats,
                     iwae_nats, log_prob_nats)
  *_bpd              bits per dimension, named per modality in the printed table: bits/dim (per sub-pixel)
                     for images, bits/char (char tokenizer) or bits/token for text, bits/sample for audio;
                     2-D vectors: read the nats
  stream_bpd         a text file's split as one stream, each block given the text before it
  dynamic_bpd        the same stream read by a copy of the LM that learns from each block once it has scored
                     it (dynamic evaluation; dynamic_lr, dynamic_stride): the figure to set beside gzip/xz
  baseline/*/bpd     the data's simple baselines on the same split (uniform, independent, linear AR; unigram,
                     Kneser-Ney, gzip -9 / xz -9 given train); bits_per_char for text
  fid, fid_reference Frechet distance on the feature network; the reference is real train vs test (the floor)
  kid_mean, kid_std  unbiased MMD^2, cubic polynomial kernel, in the kernel's units (not x1000); 0 = same law
  precision, recall, coverage   k-NN manifold estimates in [0, 1]; density: can exceed 1 (1: as dense as data)
  classes_covered    classes the feature classifier finds among the samples
  mmd2, mmd_p_value  kernel two-sample statistic and its permutation p-value
  c2st_accuracy      held-out accuracy of a classifier telling samples from data (0.5: indistinguishable)
  mem_mean_dist_train, mem_mean_dist_heldout   mean nearest-neighbour distance of the samples to the
                     training / held-out examples (data units)
  mem_closer_to_train, mem_closer_to_train_null   fraction of samples whose nearest real example is a
                     training one, and its value without memorization, M / (M + H)
  mem_near_copy_threshold, mem_near_copy_fraction, mem_near_copy_null_rate   the 5% quantile of held-out
                     examples' nearest-train distances, the fraction of samples within it, and its null (0.05)
  mem_copy_auc       P(a sample's nearest-train distance < a held-out example's); 0.5 without memorization
"""


def _non_finite(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(key, value) of every NaN or infinite float in a nested dict/list of results."""
    import math

    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [(prefix, obj)]
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in _non_finite(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [kv for i, v in enumerate(obj) for kv in _non_finite(v, f"{prefix}[{i}]")]
    return []


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from . import load_dataset
    from .encode import encode_dataset, latent_scatter
    from .runs import latents_file, load_run, saved_data_opts

    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1; got {args.limit}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1; got {args.batch_size}")
    _check_out_suffix(args.out, ".npz")
    model, cfg, spec = load_run(args.run, weights=args.weights)
    own = args.data is None or args.data == cfg["data"]
    data = load_dataset(cfg["data"], args.split, **saved_data_opts(cfg)) if own else load_dataset(args.data, args.split)
    if not own and (data.spec.kind, tuple(data.spec.shape)) != (spec.kind, tuple(spec.shape)):
        raise CLIError(
            f"--data {args.data!r} holds {data.spec.kind} data of shape {tuple(data.spec.shape)}, "
            f"but run {str(args.run)!r} models {spec.kind} data of shape {tuple(spec.shape)}"
        )
    if model.conditional and "cond" not in data.tensors and "y" not in data.tensors:
        raise CLIError(
            f"run {str(args.run)!r} is conditional but data set {data.spec.name!r} has no labels to condition on"
        )
    try:
        res = encode_dataset(model, data, batch_size=args.batch_size, limit=args.limit)
    except NotImplementedError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "encode is not implemented"
        raise CLIError(f"model {cfg['model']!r} has no encoder: {reason}") from None
    default = latents_file(args.split, None if own else Path(args.data.rstrip("/")).stem)
    out = Path(args.out) if args.out else Path(args.run) / default
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **res)
    n, z_dim = res["z"].shape
    png = (
        latent_scatter(res["z"], out.with_suffix(".png"), labels=res.get("y"), class_names=data.spec.class_names)
        if n
        else None
    )
    print(f"wrote {out}: z [{n}, {z_dim}] of {n} {args.split} examples" + ("" if png is None else f"; scatter {png}"))
    return 0


def _parse_dims(text: str, z_dim: int) -> list[int]:
    """``--dims 3,5`` -> [3, 5], each in 0..z_dim-1; one-line CLIError otherwise."""
    try:
        dims = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CLIError(f"--dims {text}: expected comma-separated latent dims, e.g. 3,5") from None
    if not dims:
        raise CLIError(f"--dims {text!r}: name at least one latent dim, e.g. 3,5")
    bad = [d for d in dims if not 0 <= d < z_dim]
    if bad:
        raise CLIError(f"--dims {text}: the run has z_dim {z_dim} (dims 0..{z_dim - 1})")
    return list(dict.fromkeys(dims))


def cmd_swap(args: argparse.Namespace) -> int:
    import torch

    from . import load_dataset
    from .runs import load_run, saved_data_opts
    from .swap import (
        as_model_input,
        attribute_dims,
        check_codec,
        encode_examples,
        factor_means,
        factor_value,
        swap_latents,
    )

    name, _, value = (args.attribute or "").partition("=")
    name, value = name.strip(), value.strip()
    if (args.dims is None and not name) or (args.dims is not None and name and not value):
        raise CLIError(
            "swap needs either --dims 3,5 (latent dims to take) or --attribute NAME (dims picked by a data factor); "
            "--dims goes with --attribute only as NAME=VALUE"
        )
    if args.b is None and not value:
        raise CLIError("swap needs --b (the example to take latents from) or --attribute NAME=VALUE (e.g. colour=red)")
    if args.b is not None and value:
        raise CLIError(f"give either --b or a value in --attribute {args.attribute!r}, not both")
    if args.shift and not value:
        raise CLIError("--shift moves A towards a value: it needs --attribute NAME=VALUE (and no --b)")
    if args.top < 1 or args.n_examples < 2:
        raise CLIError(f"--top must be >= 1 and --n-examples >= 2; got {args.top} and {args.n_examples}")
    model, cfg, spec = load_run(args.run, weights=args.weights)
    try:
        check_codec(model)
    except ValueError:
        raise CLIError(
            f"run {str(args.run)!r} is a {cfg['model']!r} run, which cannot encode and decode; "
            "swap needs e.g. a vae (images) or a sentencevae (sentences)"
        ) from None
    if model.conditional:
        raise CLIError(f"run {str(args.run)!r} is conditional; swap works on unconditional runs")
    key = getattr(model, "data_key", "x")
    mspec = spec.modality(key)
    if mspec.kind not in ("image", "tokens"):
        raise CLIError(f"run {str(args.run)!r} models {mspec.kind} data; swap reads and writes images or sentences")
    text = mspec.kind == "tokens"
    _check_out_suffix(args.out, ".txt" if text else ".png", " (the run models sentences)" if text else "")
    a = _swap_input(args.a, mspec)
    b = _swap_input(args.b, mspec) if args.b is not None else None
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    with torch.no_grad():
        za = model.encode(as_model_input(model, a))
    z_dim = int(za.shape[1])
    how, data, codes = "", None, None
    if name:
        data = load_dataset(cfg["data"], "train", **saved_data_opts(cfg))
        names = tuple(data.spec.factor_names or ())
        if not names or "factors" not in data.tensors:
            raise CLIError(f"--attribute {name}: data set {cfg['data']!r} of the run has no named factors; use --dims")
        if name not in names:
            raise CLIError(f"--attribute {name!r}: unknown; data set {cfg['data']!r} has {', '.join(names)}")
        codes = encode_examples(model, data, args.n_examples)  # once, for the dims and the value's mean
    if args.dims is not None:
        dims = _parse_dims(args.dims, z_dim)
    elif not args.shift:
        dims = attribute_dims(model, data, name, top=args.top, codes=codes)
        how = f" (carrying {name!r} on {min(args.n_examples, len(data))} training examples)"
    if value:
        try:
            target = factor_value(data.spec, name, value)
        except ValueError as e:
            raise CLIError(f"--attribute {args.attribute}: {e}") from None
        means = factor_means(model, data, name, codes=codes).to(za)  # [V, z_dim]
        if torch.isnan(means[target]).any():
            raise CLIError(f"--attribute {args.attribute}: no training example among the first {args.n_examples}")
        if args.shift:  # A's own value: the nearest class mean (NaN rows never win)
            source = int(torch.nan_to_num(torch.cdist(za, means), nan=float("inf")).argmin())
            z = za + means[target] - means[source]
            words = data.spec.extra.get("factor_values", {}).get(name) or range(len(means))
            dims, label = list(range(z_dim)), f"A shifted from {name}={words[source]} to {name}={value}"
        else:
            z = za.clone()
            z[:, dims] = means[target][dims]
            label = f"A with the {name}={value} mean's dim{'s' if len(dims) > 1 else ''} {', '.join(map(str, dims))}"
        with torch.no_grad():
            result = model.decode(z.to(dtype), mean=True)
    else:
        result = swap_latents(model, a, b, dims)
        label = f"A with B's dim{'s' if len(dims) > 1 else ''} {', '.join(map(str, dims))}"
    if text:
        from .data.text import tokens_to_text

        rows = [("A", a), ("B", b)] if b is not None else [("A", a)]
        lines = [f"{n}: {tokens_to_text(t.cpu(), mspec)[0]}" for n, t in rows]
        lines.append(f"{label}{how}: {tokens_to_text(result.cpu(), mspec)[0]}")
        print("\n".join(lines))
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
            print(f"wrote {args.out}")
        return 0
    from .viz import captioned_grid, save_png, titled

    images = [a] + ([b] if b is not None else []) + [result.cpu().float().view_as(a)]
    captions = ["A"] + (["B"] if b is not None else []) + [label]
    out = Path(args.out or "swap.png")
    save_png(titled(captioned_grid(torch.cat(images), captions, ncol=len(images)), f"swap: {label}{how}"), out)
    print(f"wrote {out}: {', '.join(captions)}{how}")
    return 0


def _swap_input(source: str, spec: Any) -> Any:
    """``--a``/``--b`` of swap as a batch of one: an image file -> [1, C, H, W] float, or for a
    sentence run the sentence itself (or a text file holding it) -> token ids [1, T]."""
    import torch

    if spec.kind == "image":
        return _read_image_source(source, spec)[None]
    from .data.base import InvalidDataError
    from .data.text import encode_text

    path = Path(source)
    sentence = path.read_text(encoding="utf-8").strip() if path.suffix == ".txt" and path.is_file() else source
    try:
        return torch.from_numpy(encode_text(sentence, spec))[None]
    except InvalidDataError as e:
        raise CLIError(f"{source!r}: {e}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import CHECKS, run_audit

    checks = None
    if args.checks is not None:
        checks = [c.strip() for c in args.checks.split(",") if c.strip()]
        bad = [c for c in checks if c not in CHECKS]
        if bad or not checks:
            raise CLIError(f"--checks {args.checks!r}: expected a comma-separated subset of {', '.join(CHECKS)}")
    if args.n < 4:
        raise CLIError(f"--n must be >= 4; got {args.n}")
    for flag, path in (("--templates", args.templates), ("--reference", args.reference)):
        if path is not None and not Path(path).exists():
            raise CLIError(f"{flag} {path!r} does not exist")
    _check_out_suffix(args.out, ".json")
    res = run_audit(
        args.run,
        checks,
        weights=args.weights,
        templates=args.templates,
        reference=args.reference,
        n=args.n,
        seed=args.seed,
        out=args.out,
        log=lambda m: print(m, file=sys.stderr),
    )
    for check, r in res.items():
        if check != "written":
            print(f"{check}: {_audit_line(check, r)}")
    print(f"wrote {res['written']}")
    return 0


def _audit_line(check: str, r: dict[str, Any]) -> str:
    """The headline numbers of one audit check, for the terminal (all of them are in audit.json)."""

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    if check == "membership":
        return f"AUC {f(r['auc'])} {[round(v, 3) for v in r['auc_ci']]} (null {f(r['null_auc'])}), " + ", ".join(
            f"TPR at FPR {k} {f(v)}" for k, v in r["tpr_at_fpr"].items()
        )
    if check == "exposure":
        rows = [f"{c['secret']}: {f(c['exposure'])} bits ({'inserted' if c['inserted'] else 'fresh'})"
                for c in r["canaries"]]  # fmt: skip
        return f"log2|R| {f(r['log2_space'])}; " + "; ".join(rows)
    if check == "amplification":
        return "; ".join(
            f"{m}: A {f(a['amplification'])} {[round(v, 3) for v in a['amplification_ci']]}"
            for m, a in r["by_modality"].items()
        )
    if check == "hallucination":
        return (
            f"{f(r['fit_fraction'])} of restarts fit the low-res input, {f(r['mean_distinct'])} distinct answers "
            f"per image, class changed in {f(r['class_changed'])} ({r.get('png')})"
        )
    if check == "extraction":
        return "; ".join(f"{k}: {v}" for k, v in r.get("summary", {}).items()) or "see audit.json"
    if check == "bias-templates":
        return "; ".join(f"{p['a']!r} vs {p['b']!r}: JS {f(p['js'].get('js_bits'))} bits" for p in r["pairs"])
    return "see audit.json"


def cmd_compare(args: argparse.Namespace) -> int:
    """Two modes: ``genlab compare RUN RUN ...`` tabulates the ``eval.json`` of finished runs;
    ``genlab compare --data NAME|PATH --budget 10m`` trains one model per family under the same
    wall-clock budget, evaluates each and tabulates them (:func:`genlab.compare.compare_families`)."""
    from .compare import compare_families, compare_runs, parse_budget, text_table

    family_flags = [
        f
        for f, given in (
            ("--budget", args.budget is not None),
            ("--models", args.models is not None),
            ("--out-dir", args.out_dir is not None),
            ("--data-opt", bool(args.data_opt)),
            ("--set", bool(args.set)),
            ("--seed", args.seed is not None),
            ("--n-samples", args.n_samples is not None),
        )
        if given
    ]
    if args.runs and args.data is not None:
        raise CLIError(
            "give either RUN folders (compare finished runs) or --data (train one model per family), not both"
        )
    if args.data is None:
        if not args.runs:
            raise CLIError(
                "the following arguments are required: RUN (run folders), or --data NAME|PATH to train and "
                "compare one model per family (see 'genlab compare --help')"
            )
        if family_flags:
            raise CLIError(f"{', '.join(family_flags)}: only with --data (training families), not with RUN folders")
        _check_out_suffix(args.out, ".md", " (Markdown; the .csv and .png are written next to it)")
        res = compare_runs(args.runs, args.out if args.out is not None else "compare.md")
        print(text_table(res["header"], res["rows"]))
        for note in res["notes"]:
            print(f"note: {note}")
        for f in res["written"]:
            print(f"wrote {f}")
        return 0
    _check_out_suffix(args.out, ".md", " (Markdown; the .csv, .json and .png are written next to it)")
    budget = parse_budget(args.budget if args.budget is not None else "10m")
    if args.n_samples is not None and args.n_samples < 2:
        raise CLIError(f"--n-samples must be >= 2; got {args.n_samples}")
    seed = 0 if args.seed is None else args.seed
    if not 0 <= seed < 2**63:
        raise CLIError(f"--seed must be an integer in 0..2**63-1; got {seed}")
    models = None if args.models is None else [m for part in args.models for m in part.split(",")]
    res = compare_families(
        args.data,
        models,
        budget,
        args.out_dir,
        data_opts=parse_assignments(args.data_opt or [], "--data-opt"),
        settings=parse_assignments(args.set or [], "--set"),
        seed=seed,
        n_samples=1000 if args.n_samples is None else args.n_samples,
        out=args.out,
        progress=not args.quiet,
    )
    print(text_table(res["header"], res["rows"]))
    for note in res["notes"]:
        print(f"note: {note}")
    for f in res["written"]:
        print(f"wrote {f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoError, RunDemo, import_gradio, serve

    if not 1 <= args.port <= 65535:
        raise CLIError(f"--port must be in 1..65535; got {args.port}")
    try:
        import_gradio()  # before loading any run: a missing extra is the first thing to say
        demos = [RunDemo(run, weights=args.weights) for run in args.runs]
        names = [d.name for d in demos]
        if len(set(names)) < len(names):
            raise CLIError(f"runs share a folder name ({', '.join(names)}): the page names its tabs by folder")
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"genlab: note: --host {args.host}: the page and your runs are reachable from the network",
                file=sys.stderr,
            )
        url = serve(demos, host=args.host, port=args.port, open_browser=args.open, block=False)
    except DemoError as e:
        raise CLIError(str(e)) from None
    print(f"genlab demo: {len(demos)} run{'s' if len(demos) > 1 else ''} on {url} (Ctrl-C stops it)", flush=True)
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("genlab demo: stopped")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from . import list_datasets

    for name, desc in list_datasets().items():
        print(f"{name:<16} {desc}")
    print("paths: an image folder, a .npy/.npz array file or a UTF-8 .txt file")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import list_models, model_kwargs

    models = list_models()
    w = max((len(name) for name in models), default=0)  # the name column fits the longest name
    lw = max((len(cls.likelihood) for cls in models.values()), default=0)
    for name, cls in models.items():
        doc = ((cls.__doc__ or "").strip().splitlines() or [""])[0]
        print(f"{name:<{w}} likelihood={cls.likelihood:<{lw}} {doc}")
        print(f"{'':<{w}} capabilities: {cls.capabilities.describe()}")
        opts = ", ".join(f"{k}={p.default!r}" for k, p in model_kwargs(name).items())
        print(f"{'':<{w}} options: {opts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genlab", description="Deep generative models: train, sample, evaluate.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    t = sub.add_parser("train", help="train a model and write a run folder")
    t.add_argument("model", nargs="?", help="model name (see 'genlab models')")
    t.add_argument("--data", help="built-in data set name or a path (see 'genlab datasets')")
    t.add_argument("--out", help="run folder to write (default runs/MODEL-DATA)")
    t.add_argument("--config", help="YAML file of settings (flat keys, or 'model:'/'train:' sections)")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="training or model setting, e.g. --set steps=500 --set z_dim=8",
    )
    t.add_argument(
        "--data-opt", action="append", metavar="KEY=VALUE", help="option for the data loader, e.g. --data-opt n=5000"
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an existing run folder (only genlab's own files in a folder genlab made are removed)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run")
    s.add_argument(
        "--n",
        type=int,
        default=None,
        help="number of samples (default 64; 16 for multimodal runs; 2,000 points for 2-D data)",
    )
    s.add_argument(
        "--out",
        help=(
            "file to write: .png grid (images, 2-D data; multimodal runs: each image with its caption, "
            "audio as WAVs beside), .txt (tokens, captions), .wav (audio) or .npy (raw array; multimodal: .npz); "
            "default samples.png/.txt/.wav as suits the data"
        ),
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cond", type=int, help="class id for a conditional model (default: cycle through classes)")
    s.add_argument("--mean", action="store_true", help="decoder means instead of random draws (VAE)")
    s.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help=(
            "sampling temperature T > 0 for models that take one (flows: z ~ N(0, T^2 I); "
            "autoregressive models: logits / T)"
        ),
    )
    s.add_argument("--steps", type=int, help="diffusion runs: DDIM sampling steps (default: the run's sample_steps)")
    s.add_argument("--eta", type=float, help="diffusion runs: DDIM noise, 0 deterministic .. 1 ancestral (default 0)")
    s.add_argument(
        "--guidance", type=float, help="conditional diffusion runs: classifier-free guidance scale w >= 0 (default 0)"
    )
    s.add_argument("--weights", choices=["best", "last"], default="best")
    s.add_argument("--overwrite", action="store_true", help="replace existing <out>-<i>.wav files beside a .png")
    s.add_argument(
        "--steer",
        metavar="FACTOR=VALUE",
        help=(
            "transformer runs: steer sampling toward an attribute with PPLM (plug-and-play, the LM unchanged), "
            "e.g. colour=red on shapes-captions, or words=a,b,c (a bag of vocabulary entries)"
        ),
    )
    s.add_argument(
        "--steer-kind",
        choices=["bow", "classifier"],
        help="attribute model: bag of words {VALUE} (default) or a linear classifier trained on the run's data",
    )
    s.add_argument("--steer-step", type=float, help="PPLM step size on the key/value cache (default 0.02)")
    s.add_argument("--steer-iters", type=int, help="gradient steps per token (default 3)")
    s.add_argument("--steer-kl", type=float, help="weight of the KL term to the unsteered next-token law (0.01)")
    s.add_argument("--steer-gm", type=float, help="geometric-mean fusion weight of the steered law (default 0.95)")
    s.add_argument("--steer-window", type=int, help="perturb only the last N cached positions (default all)")
    s.set_defaults(func=cmd_sample)
    tr = sub.add_parser(
        "translate",
        help="translate between the modalities of a multimodal run (caption -> images, image -> captions, ...)",
    )
    tr.add_argument("run")
    tr.add_argument("--text", metavar="CAPTION", help='source caption, e.g. "a small red heart in the top left"')
    tr.add_argument("--image", metavar="FILE", help="source image file (PNG/JPEG; resized to the run's images)")
    tr.add_argument("--audio", metavar="FILE.wav", help="source audio clip (8- or 16-bit PCM WAV at the run's rate)")
    tr.add_argument(
        "--to",
        action="append",
        metavar="MODALITY",
        help="target modality: x (image), text (caption) or audio; repeat or comma-separate (default: all others)",
    )
    tr.add_argument("--n", type=int, default=8, help="translations of the source (default 8)")
    tr.add_argument(
        "--out",
        help=(
            ".png (images with captions under them, or captions under the source image; audio as WAVs beside), "
            ".txt (captions), .wav (clips) or .npz (arrays); without --to, a .txt or .wav names the target; "
            "default translation.png/.txt/.wav"
        ),
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--mean", action="store_true", help="posterior mean and decoder means instead of random draws")
    tr.add_argument("--weights", choices=["best", "last"], default="best")
    tr.add_argument("--overwrite", action="store_true", help="replace existing <out>-<i>.wav files beside a .png")
    tr.set_defaults(func=cmd_translate)
    su = sub.add_parser(
        "summarize",
        help="summarize an image and a caption with facts withheld in a summarizer run (e.g. 'red heart, top left')",
    )
    su.add_argument("run")
    su.add_argument("--image", metavar="FILE", help="image file (PNG/JPEG; resized to the run's images); omit: none")
    su.add_argument(
        "--text",
        metavar="CAPTION",
        help='caption with facts withheld, e.g. "a small ___ shape in the top left"; omit: none',
    )
    su.add_argument("--n", type=int, default=1, help="summaries to write (default 1)")
    su.add_argument("--sample", action="store_true", help="draw summaries instead of the greedy one")
    su.add_argument("--temperature", type=float, default=1.0, help="sampling temperature T > 0 with --sample")
    su.add_argument("--seed", type=int, default=0)
    su.add_argument("--weights", choices=["best", "last"], default="best")
    su.set_defaults(func=cmd_summarize)
    e = sub.add_parser(
        "eval",
        help="evaluate a trained run; writes eval.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EVAL_KEYS_HELP,
    )
    e.add_argument("run")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument(
        "--k",
        type=int,
        default=None,
        help="importance samples of the IWAE bound of latent-variable models (default 100)",
    )
    e.add_argument(
        "--metrics",
        help=(
            "comma-separated subset of: likelihood, iwae, dynamic, recon, fid, kid, pr, dc, classes, mmd, "
            "c2st, memorization, disentanglement, coherence, modalities, summary, in any letter case "
            "(default: all that apply to the model and data, except disentanglement for models "
            "without a latent posterior: flows, autoregressive models, and dynamic: an LM on a text file "
            "that keeps learning from the text it has scored, as gzip and xz do)"
        ),
    )
    e.add_argument(
        "--dynamic-lr",
        type=float,
        default=None,
        help="step size of the 'dynamic' metric's updates (default 1e-4; 0: the fixed weights on the same stream)",
    )
    e.add_argument("--n-samples", type=int, default=1000, help="samples drawn for the sample-based metrics")
    e.add_argument(
        "--features",
        default="auto",
        choices=["auto", "classifier", "random", "inception"],
        help=(
            "feature network of FID/KID/PR/MMD/C2ST (auto: a cached classifier for labelled data, else random features)"
        ),
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--weights", choices=["best", "last"], default="best")
    e.add_argument("--out", help="where to write the JSON (default RUN/eval.json)")
    e.set_defaults(func=cmd_eval)
    en = sub.add_parser(
        "encode", help="encode a data split with a trained run; writes latents (.npz) and a scatter (.png)"
    )
    en.add_argument("run")
    en.add_argument(
        "--data",
        help=(
            "data set name or path to encode (default: the run's own data set and options); "
            "must match the run's data shape"
        ),
    )
    en.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    en.add_argument(
        "--out",
        help=(
            "where to write z (and y, factors) as .npz (default RUN/latents-SPLIT.npz); "
            "the scatter goes next to it as .png"
        ),
    )
    en.add_argument("--batch-size", type=int, default=512)
    en.add_argument("--weights", choices=["best", "last"], default="best")
    en.add_argument("--limit", type=int, help="encode only the first N examples of the split")
    en.set_defaults(func=cmd_encode)
    sw = sub.add_parser(
        "swap", help="style transfer by latent swap: decode A's code with some dims from B or from a factor value"
    )
    sw.add_argument("run")
    sw.add_argument(
        "--a", required=True, metavar="A", help="A, the content: an image file, or for a sentence run the sentence"
    )
    sw.add_argument("--b", metavar="B", help="B, whose chosen latent dims are taken (image file or sentence)")
    sw.add_argument("--dims", metavar="D1,D2", help="latent dims to take from B, comma-separated, e.g. 3,5")
    sw.add_argument(
        "--attribute",
        metavar="NAME[=VALUE]",
        help=(
            "a factor of the run's data (shapes: shape, scale, orientation, pos_x, pos_y; shapes-captions also "
            "colour): take the latent dims that carry it most (normalized mutual information on the run's "
            "training data); with =VALUE (e.g. colour=red) and no --b, take them from the mean code of the "
            "training examples with that value"
        ),
    )
    sw.add_argument(
        "--shift",
        action="store_true",
        help="with --attribute NAME=VALUE: add the difference of the value's mean code and A's own value's "
        "(nearest mean) to every dim, instead of swapping dims",
    )
    sw.add_argument("--top", type=int, default=3, help="with --attribute: at most this many dims (default 3)")
    sw.add_argument(
        "--n-examples", type=int, default=2000, help="with --attribute: training examples to measure on (2000)"
    )
    sw.add_argument(
        "--out", help="images: the PNG of A, B and the result in a row (default swap.png); sentences: a .txt to write"
    )
    sw.add_argument("--weights", choices=["best", "last"], default="best")
    sw.set_defaults(func=cmd_swap)
    au = sub.add_parser(
        "audit",
        help="ethics audits of a run: membership inference, training-data extraction, canary exposure, "
        "bias (templates, amplification), hallucination by latent search -> audit.json",
    )
    au.add_argument("run")
    au.add_argument(
        "--checks",
        metavar="C1,C2",
        help="membership, extraction, exposure, bias-templates, amplification, hallucination "
        "(default: every one that applies to the run)",
    )
    au.add_argument("--templates", metavar="FILE", help="bias-templates: prompt pairs, one 'A | B' per line")
    au.add_argument("--reference", metavar="RUN", help="extraction: a smaller model of the same text")
    au.add_argument("--n", type=int, default=1000, help="examples per side (membership) / samples (default 1000)")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--out", help="the JSON to write (default RUN/audit.json, merged with an earlier one)")
    au.add_argument("--weights", choices=["best", "last"], default="best")
    au.set_defaults(func=cmd_audit)
    c = sub.add_parser(
        "compare",
        help=(
            "compare finished runs (RUN ...: eval.json metrics as a table .md/.csv, validation curves .png), or "
            "train one model per family on --data under one --budget each and tabulate them (.md/.csv/.json/.png)"
        ),
    )
    c.add_argument(
        "runs", nargs="*", metavar="RUN", help="run folders, each evaluated with 'genlab eval RUN' (the runs mode)"
    )
    c.add_argument(
        "--out",
        default=None,
        help=(
            "Markdown table to write (default ./compare.md, with --data OUT_DIR/compare.md); "
            ".csv, .png (and with --data .json) go next to it"
        ),
    )
    c.add_argument(
        "--data",
        metavar="NAME|PATH",
        help="train and compare one model per family on this data set (built-in name or path, as for train)",
    )
    c.add_argument(
        "--budget",
        metavar="DURATION",
        help=(
            "with --data: wall-clock training time per family, e.g. 90s, 10m, 1h or plain seconds (default 10m); "
            "validation passes and checkpoints are timed apart (the val+ckpt s column)"
        ),
    )
    c.add_argument(
        "--models",
        action="append",
        metavar="M1,M2",
        help="with --data: comma-separated families (default vae,pixelcnn,glow,dcgan,ddpm; ddpm if registered)",
    )
    c.add_argument(
        "--out-dir",
        metavar="FOLDER",
        help=(
            "with --data: one run folder per family in FOLDER/<model> (default compare-<data>); "
            "rerunning resumes: finished families are not retrained, half-trained ones continue"
        ),
    )
    c.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="with --data: data set option")
    c.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=(
            "with --data: a training key for every family (batch_size, lr, threads, device, steps as a cap, ...), "
            "or FAMILY.KEY=VALUE for one family (a model option or training key, e.g. vae.z_dim=8)"
        ),
    )
    c.add_argument("--seed", type=int, help="with --data: seed of training and evaluation (default 0)")
    c.add_argument(
        "--n-samples", type=int, help="with --data: samples per family for FID/KID/PR/memorization (default 1000)"
    )
    c.add_argument("--quiet", action="store_true", help="with --data: no progress lines on stderr")
    c.set_defaults(func=cmd_compare)
    dm = sub.add_parser(
        "demo",
        help="a local web page to try runs in a browser (needs the demo extra: pip install -e '.[demo]')",
        description=(
            "Serve a web page (Gradio) on this machine for one or more run folders: sample with a seed, "
            "temperature and class (DDIM steps and guidance for diffusion runs); for models with an encoder, "
            "reconstruct a test or uploaded image, move its latents with sliders and interpolate; translate "
            "text -> image and image -> caption for multimodal runs; the run's eval.json with units and its "
            "validation curve. Nothing is downloaded or sent anywhere. Ctrl-C stops it."
        ),
    )
    dm.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by genlab train")
    dm.add_argument("--weights", default="best", choices=["best", "last"])
    dm.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)",
    )
    dm.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    dm.add_argument("--open", action="store_true", help="open the page in the default web browser")
    dm.set_defaults(func=cmd_demo)
    sub.add_parser("datasets", help="list built-in data sets").set_defaults(func=cmd_datasets)
    sub.add_parser("models", help="list models with their likelihood kind and capabilities").set_defaults(
        func=cmd_models
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genlab`` console script; returns the exit status.

    Ctrl-C anywhere, the first imports of torch included, ends with one line and status 130; a
    user error (bad option, file, device, size, a full disk, a folder that cannot be written) with
    one ``genlab: error: ...`` line and status 2. ``GENLAB_DEBUG=1`` shows tracebacks instead.
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "n", 1) is not None and getattr(args, "n", 1) < 1:
            raise CLIError(f"--n must be >= 1; got {args.n}")
        return args.func(args)
    except Exception as e:  # one line for anything the user can cause; tracebacks with GENLAB_DEBUG=1
        import os

        msg = _user_error(e)
        if msg is None or os.environ.get("GENLAB_DEBUG"):
            raise
        print(f"genlab: error: {msg}", file=sys.stderr)
        return 2


#: What a failed allocation says: torch's CPU allocator, CUDA's, and the OS's.
_OUT_OF_MEMORY = ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory")


def _user_error(e: Exception) -> str | None:
    """The one line to print for an error the user can cause, or None for a bug (a traceback).

    genlab's own error classes are looked up among the modules already imported (an error of a
    module never imported cannot have happened), so reporting an error imports nothing."""
    import errno
    import re

    def imported(module: str, name: str) -> tuple[type, ...]:
        mod = sys.modules.get(f"{__package__}.{module}")
        return (getattr(mod, name),) if mod is not None and hasattr(mod, name) else ()

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(s in str(e).lower() for s in _OUT_OF_MEMORY)):
        asked = re.search(r"tried to allocate (\d+) bytes", str(e), re.IGNORECASE)
        size = f" ({int(asked.group(1)) / 2**30:.1f} GiB asked for at once)" if asked else ""
        return f"out of memory{size}; choose smaller sizes (e.g. z_dim, hidden, channels) or a smaller batch_size"
    user_errors = (
        CLIError,
        ValueError,
        KeyError,
        TypeError,
        FileNotFoundError,
        *imported("checkpoint", "CheckpointError"),
        *imported("checkpoint", "DiskFullError"),
        *imported("data.base", "InvalidDataError"),
        *imported("train", "NonFiniteLossError"),
    )
    if isinstance(e, user_errors):
        return first
    if isinstance(e, OSError):  # no permission, a full disk outside genlab's own writes, ...
        where = f" {e.filename!r}" if e.filename else ""
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"permission denied: cannot write{where} (a read-only or another user's file or folder)"
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return f"no space left on device{' while writing' + where if where else ''}; free some space"
        return (
            e.strerror
            if e.strerror and e.strerror.startswith("cannot write")
            else (f"{e.strerror}:{where}" if e.strerror and where else first)
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
