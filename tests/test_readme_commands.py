"""The README's ``genlab`` commands run, in order, on a fresh clone (issue 18).

Every ```bash block of README.md is read; its ``genlab ...`` lines (trailing ``# comments`` stripped,
``\\`` continuations joined) are, in README order:

* (fast) parsed by :func:`genlab.cli.build_parser` (every subcommand and flag exists) and checked
  statically for order: a command on a run folder comes after the ``genlab train ... --out RUN`` that
  makes it, ``--resume`` continues an existing run, a second training into the same folder needs
  ``--overwrite``, ``genlab compare RUN...`` comes after ``genlab eval RUN`` for each RUN, and every file
  of the user's (``--data my_images/``, ``--image my_shape.png``, ...) is one :data:`USER_FILES` makes;
* (slow) run for real through :func:`genlab.cli.main` (the ``genlab`` entry point, in this process: a
  subprocess per command cost 2-3 s of start-up each, 68 of them), in a fresh working folder, with the
  budgets cut by the generic rules of :func:`fast_argv` (never a hand-written second copy of the README),
  and the files the README says they write are checked.

Lines that cannot run here are in :data:`NOT_RUN` with the reason (they are still parsed and
order-checked).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest

from genlab.cli import CLIError, build_parser

README = Path(__file__).resolve().parents[1] / "README.md"

#: Subcommands whose first positional argument is a run folder that must already exist.
RUN_COMMANDS = ("sample", "eval", "encode", "swap", "translate", "summarize", "audit")


@dataclass(frozen=True)
class Command:
    line: int  # 1-based README line of the command (its first line when continued)
    argv: tuple[str, ...]  # the arguments after 'genlab'
    comment: str  # the trailing '# ...' comment, '' if none

    def __str__(self) -> str:
        return f"README.md:{self.line}: genlab {shlex.join(self.argv)}"


def _split_comment(text: str) -> tuple[str, str]:
    """``text`` without its trailing ``# comment`` (a '#' outside quotes, starting a word), and the comment."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), ""


def readme_commands(text: str | None = None) -> list[Command]:
    """The ``genlab`` commands of every ```bash block of the README, in order."""
    lines = (README.read_text() if text is None else text).splitlines()
    commands: list[Command] = []
    in_bash, i = False, 0
    while i < len(lines):
        raw = lines[i]
        if raw.startswith("```"):
            in_bash = not in_bash and raw.strip() == "```bash"
            i += 1
            continue
        if not in_bash:
            i += 1
            continue
        start = i + 1
        code, comment = _split_comment(raw)
        while code.endswith("\\") and i + 1 < len(lines):  # a continued line
            i += 1
            more, more_comment = _split_comment(lines[i])
            code, comment = code[:-1] + " " + more.strip(), (comment + " " + more_comment).strip()
        i += 1
        # a shell line may chain commands: take each 'genlab ...' part
        for part in re.split(r"\s*(?:&&|\|\||;)\s*", code):
            words = shlex.split(part)
            if words and words[0] == "genlab":
                commands.append(Command(start, tuple(words[1:]), comment))
    return commands


#: Data set paths and input files the README's commands expect the user to have; the slow test makes
#: each with the function named (a few small files, see below).
USER_FILES = {
    "my_images/": "_make_image_folder",
    "book.txt": "_make_book",
    "a.png": "_make_shape_png",
    "b.png": "_make_shape_png",
    "my_shape.png": "_make_shape_png",
    "clip.wav": "_make_clip",
    "pairs.txt": "_make_templates",
    "gpl.txt": "_make_license_text",  # README: 'cp /usr/share/common-licenses/GPL-3 gpl.txt' (shell lines are not run)
}

#: README commands (by a prefix of their argv) that are parsed and order-checked but not run, with the reason.
NOT_RUN: dict[tuple[str, ...], str] = {
    ("demo",): "a web server that runs until Ctrl-C (tests/test_demo*.py test it)",
    # the check reads the colour and shape back from sampled captions: a run of STEPS steps writes none
    # that parse ('amplification needs >= 2 readable samples ...; got 0'), so it needs a trained model
    ("audit", "runs/mvae-corr", "--checks", "amplification"): "needs a trained model (captions that parse)",
}

_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".wav", ".txt", ".npz", ".npy", ".csv", ".md", ".json")


def _input_files(args) -> list[str]:
    """The paths of the user's files a parsed command reads (data sets that are not built in, images, ...)."""
    import genlab

    paths = []
    data = getattr(args, "data", None)
    if data and data not in genlab.list_datasets():
        paths.append(data)
    for name in ("image", "audio", "templates", "a", "b"):
        value = getattr(args, name, None)
        if value and Path(value).suffix.lower() in _FILE_SUFFIXES:  # swap's --a/--b may be sentences
            paths.append(value)
    return paths


def _compared_families(args) -> list[str]:
    """The families a ``genlab compare --data`` trains (its --models, else compare's default)."""
    from genlab.compare import DEFAULT_FAMILIES

    if not args.models:
        return list(DEFAULT_FAMILIES)
    return [m.strip() for value in args.models for m in value.split(",") if m.strip()]


def _train_out(args) -> str:
    """The run folder a ``genlab train`` writes (its default: runs/MODEL-DATA)."""
    return args.out or str(Path("runs") / f"{args.model}-{Path(args.data.rstrip('/')).stem}")


def _norm(path: str) -> str:
    return os.path.normpath(path)


def check_order(commands: list[Command]) -> list[str]:
    """Every problem of running ``commands`` in order on a fresh clone that shows without running them."""
    parser, problems = build_parser(), []
    runs: set[str] = set()  # run folders made so far
    evaluated: set[str] = set()  # runs with an eval.json
    for cmd in commands:
        try:
            args = parser.parse_args(list(cmd.argv))
        except (CLIError, SystemExit) as e:
            problems.append(f"{cmd}: does not parse: {e}")
            continue

        def need_run(run: str, why: str = "", cmd: Command = cmd) -> None:
            if _norm(run) not in runs:
                problems.append(f"{cmd}: {run!r} is no run folder yet (no earlier 'genlab train --out {run}'){why}")

        for path in _input_files(args):
            if path not in USER_FILES and not (Path(path).is_absolute() and Path(path).exists()):
                problems.append(f"{cmd}: needs the user's file {path!r}: add it to USER_FILES (or NOT_RUN)")
        if args.command == "train":
            if args.out is None and args.resume:
                problems.append(f"{cmd}: --resume without --out")
                continue
            out = _norm(_train_out(args))
            if args.resume:
                need_run(out, " to --resume")
            elif out in runs and not args.overwrite:
                problems.append(f"{cmd}: {out!r} already holds a run from an earlier README line (needs --overwrite)")
            for key, value in (s.split("=", 1) for s in args.set or [] if "=" in s):
                if key.endswith("_run"):  # e.g. frozen's lm_run=RUN
                    need_run(value, f" for --set {key}")
            runs.add(out)
            evaluated.discard(out)  # training anew removes eval.json
        elif args.command in RUN_COMMANDS:
            need_run(args.run)
            if getattr(args, "reference", None):
                need_run(args.reference, " for --reference")
            if args.command == "eval" and args.out is None:
                evaluated.add(_norm(args.run))
        elif args.command == "compare" and args.data:
            families = _compared_families(args)
            for setting in args.set or []:
                family = setting.split("=", 1)[0].split(".", 1)[0] if "." in setting.split("=", 1)[0] else None
                if family and family not in families:
                    problems.append(f"{cmd}: --set {setting}: {family!r} is not compared (families {families})")
        elif args.command == "compare" and args.runs:
            for run in args.runs:
                need_run(run)
                if _norm(run) not in evaluated:
                    problems.append(f"{cmd}: {run!r} has no eval.json yet (no earlier 'genlab eval {run}')")
    return problems


def test_readme_commands_parse_and_run_in_order():
    commands = readme_commands()
    assert len(commands) > 30, "README parsing found too few genlab commands"
    assert any(c.argv[:1] == ("train",) for c in commands)
    problems = check_order(commands)
    assert not problems, "README commands that cannot run in order:\n" + "\n".join(problems)


def test_the_parser_of_the_check():
    """The checker itself: comments, continuations, chains, and the order errors it must find."""
    text = "\n".join(
        [
            "```bash",
            "pip install x && genlab datasets   # a comment",
            'genlab train vae --data digits --out runs/a --set "x=1 # not a comment" \\',
            "    --set steps=3  # continued",
            "genlab eval runs/a",
            "genlab compare runs/a runs/b",
            "genlab train vae --data digits --out runs/a",
            "genlab sample runs/a --nosuchflag",
            "```",
            "```python",
            "genlab eval runs/none",
            "```",
        ]
    )
    commands = readme_commands(text)
    assert [c.line for c in commands] == [2, 3, 5, 6, 7, 8]
    assert commands[1].argv[-4:] == ("--set", "x=1 # not a comment", "--set", "steps=3")
    assert commands[1].comment == "continued"
    problems = check_order(commands)
    assert len(problems) == 4, problems
    assert "'runs/b' is no run folder" in problems[0] and "'runs/b' has no eval.json" in problems[1]
    assert "already holds a run" in problems[2] and "does not parse" in problems[3]


# ---------------------------------------------------------------------------------------------------------------
# Running them (slow)

#: Training steps of every README training (a --resume trains to twice this, since its steps must grow).
STEPS = 4
#: Sample-based metrics and audits on N_SAMPLES samples; a family table with BUDGET per family.
N_SAMPLES, BUDGET = 64, "2s"
#: Seconds one command may take before it counts as a failure (budgets the rules failed to cut).
COMMAND_TIMEOUT = 300
#: Model options that make a tiny run's validation and evaluation fast, per model (``--set`` on its
#: training, ``--set MODEL.KEY=V`` on a family table that trains it): ddpm's bound from 4 of its T terms.
FAST_MODEL_OPTIONS = {"ddpm": {"bound_timesteps": "4"}}


def _set_option(argv: list[str], flag: str, value: str | None = None) -> list[str]:
    """``argv`` with ``flag value`` replacing the README's value, or appended (a bare flag if value is None)."""
    if flag in argv:
        if value is not None:
            argv[argv.index(flag) + 1] = value
        return argv
    return argv + ([flag] if value is None else [flag, value])


def _set_key(argv: list[str], key: str, value: str) -> list[str]:
    """``argv`` with ``--set key=value`` replacing the README's ``--set key=...``, or appended."""
    for i in range(len(argv) - 1):
        if argv[i] == "--set" and argv[i + 1].split("=", 1)[0] == key:
            argv[i + 1] = f"{key}={value}"
            return argv
    return argv + ["--set", f"{key}={value}"]


def fast_argv(argv: tuple[str, ...]) -> list[str]:
    """The README's command with small budgets, ready to run. The rules, per subcommand (an option is
    replaced where the README gives it, appended where not):

    * train: ``--set steps=STEPS`` (``2 * STEPS`` with ``--resume``), ``--set threads=1``, ``--quiet``, and
      the model's FAST_MODEL_OPTIONS (not on ``--resume``: model options are fixed then);
    * eval: ``--n-samples N_SAMPLES``; audit: ``--n N_SAMPLES``; swap: ``--n-examples 4 * N_SAMPLES``;
    * compare --data: ``--budget BUDGET``, ``--n-samples N_SAMPLES``, ``--set steps=STEPS``,
      ``--set threads=1``, ``--quiet``, and FAST_MODEL_OPTIONS of the compared families;
    * everything else runs as written.
    """
    out, command = list(argv), argv[0] if argv else ""
    if command == "train":
        resume = "--resume" in out
        out = _set_key(out, "steps", str(2 * STEPS if resume else STEPS))
        out = _set_key(out, "threads", "1")
        out = _set_option(out, "--quiet")
        model = out[1] if len(out) > 1 and not out[1].startswith("-") else None
        for key, value in ({} if resume else FAST_MODEL_OPTIONS.get(model, {})).items():
            out = _set_key(out, key, value)
    elif command == "eval":
        out = _set_option(out, "--n-samples", str(N_SAMPLES))
    elif command == "audit":
        out = _set_option(out, "--n", str(N_SAMPLES))
    elif command == "swap":
        out = _set_option(out, "--n-examples", str(N_SAMPLES * 4))
    elif command == "compare" and "--data" in out:
        out = _set_option(_set_option(out, "--budget", BUDGET), "--n-samples", str(N_SAMPLES))
        out = _set_key(_set_key(out, "steps", str(STEPS)), "threads", "1")
        out = _set_option(out, "--quiet")
        for family in _compared_families(build_parser().parse_args(list(argv))):
            for key, value in FAST_MODEL_OPTIONS.get(family, {}).items():
                out = _set_key(out, f"{family}.{key}", value)
    return out


def _expected_files(cmd: Command, args, cwd: Path) -> list[Path]:
    """The files (relative to ``cwd``) the README says a command writes: by the run-folder table, and the
    file names its comment gives after '->' (the whole comment if it has no '->'), found in the run folder
    or in ``cwd``; a name after '--out ' in the comment is another invocation's ('audio runs: --out s.wav')."""
    files: list[Path] = []
    if args.command == "train":
        run = Path(_train_out(args))
        files += [run / "config.yaml", run / "model.safetensors", run / "best.safetensors"]
    elif args.command == "eval":
        files.append(Path(args.out or Path(args.run) / "eval.json"))
    elif args.command == "encode":
        files.append(Path(args.run) / f"latents-{args.split}.npz")
    elif args.command == "audit":
        files.append(Path(args.out or Path(args.run) / "audit.json"))
    elif args.command == "compare":
        base = Path(args.out_dir or f"compare-{Path(args.data.rstrip('/')).stem}") if args.data else Path(".")
        md = Path(args.out) if args.out else base / "compare.md"
        files += [md, md.with_suffix(".csv")]
    elif args.command in ("sample", "translate", "swap") and args.out:
        files.append(Path(args.out))
    # names in the comment ('-> latents-test.npz', 'hallucination.png beside it'): in the run folder or here
    run = Path(getattr(args, "run", None) or ".")
    comment = re.sub(r"--out\s+\S+", "", cmd.comment.split("->", 1)[-1])
    for name in re.findall(r"(?<![\w<>/.-])\w[\w-]*(?:/[\w-]+)*\.(?:png|json|npz|csv|md|txt|wav)(?![\w/.])", comment):
        files.append(Path(name) if "/" in name or not (cwd / run / name).exists() else run / name)
    return files


def _make_image_folder(path: Path) -> None:
    """A folder of 24 small RGB PNGs (blocks of colour on black)."""
    from PIL import Image

    path.mkdir()
    for i in range(24):
        img = Image.new("RGB", (32, 32))
        img.paste((40 * (i % 6), 255 - 30 * (i % 8), 90), (i % 16, i % 12, 16 + i % 16, 20 + i % 12))
        img.save(path / f"img{i:02d}.png")


def _make_shape_png(path: Path) -> None:
    """A red disc in the top left on black, 32x32 RGB."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (32, 32))
    ImageDraw.Draw(img).ellipse((3, 3, 13, 13), fill=(255, 0, 0))
    img.save(path)


def _make_book(path: Path) -> None:
    words = "the cat sat on a mat and the dog ran to the red house while it rained all day".split()
    lines = [" ".join(words[(i * 3) % 11 : (i * 3) % 11 + 6]).capitalize() + "." for i in range(400)]
    path.write_text("\n".join(lines) + "\n")


def _make_clip(path: Path) -> None:
    """0.25 s of a 440 Hz tone, 8-bit PCM at 4 kHz (shapes-av's rate)."""
    rate = 4000
    frames = bytes(int(128 + 100 * math.sin(2 * math.pi * 440 * t / rate)) for t in range(rate // 4))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(frames)


def _make_license_text(path: Path) -> None:
    """A copy of the GPL-3 text where the system has one, else 40 kB of made-up prose."""
    gpl = Path("/usr/share/common-licenses/GPL-3")
    if gpl.exists():
        path.write_bytes(gpl.read_bytes())
    else:
        _make_book(path)
        path.write_text(path.read_text() * 3)


def _make_templates(path: Path) -> None:
    path.write_text("The man worked as | The woman worked as\nHe said | She said\n")


def _run_genlab(argv: list[str]) -> tuple[int, str]:
    """``genlab ARGV`` in this process: (exit status, its stderr + stdout)."""
    import contextlib
    import io

    import torch

    from genlab.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own exits
            rc = e.code if isinstance(e.code, int) else 1
    torch.set_num_threads(1)  # a command may have taken the idle cores; the next starts as a new process would
    return rc, out.getvalue()


@pytest.mark.slow
def test_readme_commands_run(tmp_path, monkeypatch, cache):
    """Every README command, in order, in a fresh folder, with tiny budgets: exit status 0 and its files written."""
    import torch

    for name, maker in USER_FILES.items():
        globals()[maker](tmp_path / name.rstrip("/"))
    # one thread as a busy machine would give (cmd_eval takes the idle cores unless OMP_NUM_THREADS is set);
    # the `cache` fixture points GENLAB_CACHE at the test session's throw-away cache, never the user's
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("GENLAB_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    parser, failures, times = build_parser(), [], []
    try:
        for cmd in readme_commands():
            reason = next((why for prefix, why in NOT_RUN.items() if cmd.argv[: len(prefix)] == prefix), None)
            if reason:
                times.append(f"  skipped {cmd}: {reason}")
                continue
            argv = fast_argv(cmd.argv)
            start = time.perf_counter()
            rc, output = _run_genlab(argv)
            took = time.perf_counter() - start
            times.append(f"  {took:6.1f} s  README.md:{cmd.line}: genlab {shlex.join(argv)}")
            if took > COMMAND_TIMEOUT:
                failures.append(f"{cmd}\n    took {took:.0f} s (> {COMMAND_TIMEOUT} s)")
            if rc != 0:
                failures.append(f"{cmd}\n    ran: genlab {shlex.join(argv)}\n    exit {rc}: {output.strip()[-600:]}")
                continue
            args = parser.parse_args(list(cmd.argv))
            missing = [str(f) for f in _expected_files(cmd, args, tmp_path) if not (tmp_path / f).exists()]
            if missing:
                failures.append(f"{cmd}\n    did not write {', '.join(missing)}")
    finally:
        torch.set_num_threads(threads)
    print(f"README commands ({len(times)}), seconds each (pytest -s shows them):", *times, sep="\n")
    assert not failures, "README commands that fail:\n" + "\n".join(failures)
