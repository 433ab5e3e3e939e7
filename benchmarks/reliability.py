"""Fault injection against real `genlab train` processes (issue 10, "Lose nothing").

Not a test (it takes minutes): run by hand, results go to benchmarks/results/reliability.json and
the README's Reliability table. Every fault is injected into a real CLI process:

- kill: `kill -9` at a random moment of a training run (seeded), then `--resume` until the run
  completes; the final weights must equal those of an uninterrupted run bit for bit.
- disk full: the training process gets a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored), so a
  checkpoint write fails half-way as on a full disk; the error must be one line and the run must
  resume exactly once the limit is lifted.
- concurrent: two trainings started at once into the same --out; exactly one trains, the other
  gets one line naming the holder's PID, and the finished run is intact.
- bad files: a truncated model/trainer-state file, a torn last metrics line; each gives one line
  or is recovered, and nothing else in the folder changes.

    python benchmarks/reliability.py --kills 10 --out benchmarks/results/reliability.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 300
TRAIN = [
    "vae",
    "--data",
    "digits",
    "--quiet",
    "--set",
    f"steps={STEPS}",
    "--set",
    "checkpoint_every=10",
    "--set",
    "eval_every=50",
    "--set",
    "sample_every=0",
    "--set",
    "threads=1",
]


def genlab(
    *args: str, limit_bytes: int | None = None, wait: bool = True
) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "genlab", *args]

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    pre = limit if limit_bytes is not None else None
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pre)


def digest(run: Path) -> str:
    """Hash of what a run computed: every tensor of model.safetensors (name, dtype, shape, bytes),
    its metadata, and every training/validation record of metrics.jsonl. Not the file's bytes:
    safetensors writes its header's metadata map in a per-process order."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        h.update(json.dumps(f.metadata(), sort_keys=True).encode())
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            h.update(f"{k}{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes())
    h.update((run / "metrics.jsonl").read_bytes())
    return h.hexdigest()


def one_line(err: str) -> bool:
    err = err.strip()
    return err.startswith("genlab: error:") and "\n" not in err


def resume_until_done(out: Path, max_tries: int = 20) -> tuple[bool, int]:
    """`--resume` until the run reaches STEPS; (completed?, resumes used)."""
    for i in range(max_tries):
        r = genlab("train", "--out", str(out), "--resume", "--quiet")
        if r.returncode == 0:
            return True, i + 1
        if "already at step" in r.stderr:
            return True, i
        if "no checkpoint" in r.stderr or "train it again" in r.stderr:  # killed before the first checkpoint
            r = genlab("train", *TRAIN, "--out", str(out), "--overwrite")
            if r.returncode == 0:
                return True, i + 1
        else:
            print("   resume failed:", r.stderr.strip()[-300:])
            return False, i + 1
    return False, max_tries


def kills(root: Path, reference: str, n: int, seed: int, duration: float) -> dict:
    rng = random.Random(seed)
    lost = mismatched = 0
    delays = []
    for i in range(n):
        out = root / f"kill-{i}"
        delay = rng.uniform(0.5, duration)
        delays.append(round(delay, 2))
        p = genlab("train", *TRAIN, "--out", str(out), wait=False)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        ok, _ = resume_until_done(out)
        if not ok:
            lost += 1
        elif digest(out) != reference:
            mismatched += 1
        exact = ok and digest(out) == reference
        print(f"kill {i}: after {delay:.2f}s, resumed={ok}, bit-exact={exact}")
    return {"kills": n, "delays_s": delays, "runs_lost": lost, "not_bit_exact": mismatched}


def disk_full(root: Path, reference: str, limits: list[int]) -> dict:
    results = []
    for lim in limits:
        out = root / f"full-{lim}"
        r = genlab("train", *TRAIN, "--out", str(out), limit_bytes=lim)
        ok, _ = resume_until_done(out) if r.returncode != 0 else (True, 0)
        exact = ok and digest(out) == reference
        results.append(
            {
                "limit_bytes": lim,
                "exit": r.returncode,
                "one_line": r.returncode == 0 or one_line(r.stderr),
                "resumed": ok,
                "bit_exact": exact,
            }
        )
        print("disk full", results[-1], r.stderr.strip().splitlines()[-1:] if r.stderr else "")
    return {"cases": results, "runs_lost": sum(not c["resumed"] for c in results)}


def concurrent(root: Path) -> dict:
    out = root / "concurrent"
    a = genlab("train", *TRAIN, "--out", str(out), wait=False)
    time.sleep(3.0)  # let the first one claim the folder
    b = genlab("train", *TRAIN, "--out", str(out), "--overwrite", wait=False)
    _, eb = b.communicate()
    _, ea = a.communicate()
    refused = b.returncode == 2 and one_line(eb) and str(a.pid) in eb
    print("concurrent:", a.returncode, b.returncode, eb.strip())
    return {
        "first_exit": a.returncode,
        "second_exit": b.returncode,
        "second_refused_naming_pid": refused,
        "runs_lost": int(a.returncode != 0),
    }


def bad_files(root: Path, finished: Path) -> dict:
    cases = {}

    def fresh(name: str) -> Path:
        d = root / f"bad-{name}"
        shutil.copytree(finished, d)
        return d

    d = fresh("weights")
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100])
    r = genlab("sample", str(d), "--weights", "last", "--out", str(d / "s.png"))
    cases["truncated model.safetensors (sample)"] = {"exit": r.returncode, "one_line": one_line(r.stderr)}
    d = fresh("state")
    (d / "trainer-state.safetensors").write_bytes(b"\0" * 50)
    r = genlab("train", "--out", str(d), "--resume", "--quiet", "--set", f"steps={STEPS + 20}")
    cases["zeroed trainer-state.safetensors (resume)"] = {
        "exit": r.returncode,
        "one_line": r.returncode == 0 or one_line(r.stderr),
    }
    d = fresh("metrics")
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 999, "split": "tra')
    r = genlab("train", "--out", str(d), "--resume", "--quiet", "--set", f"steps={STEPS + 20}")
    cases["torn last metrics.jsonl line (resume)"] = {"exit": r.returncode, "recovered": r.returncode == 0}
    d = fresh("config")
    (d / "config.yaml").write_text("model: [unclosed\n")
    r = genlab("eval", str(d), "--metrics", "likelihood")
    cases["broken config.yaml (eval)"] = {"exit": r.returncode, "one_line": one_line(r.stderr)}
    for k, v in cases.items():
        print("bad file:", k, v)
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/reliability.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="genlab-faults-"))
    t0 = time.time()
    ref = root / "reference"
    r = genlab("train", *TRAIN, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    duration = time.time() - t0
    reference = digest(ref)
    print(f"reference run: {duration:.1f}s")
    res = {
        "command": " ".join(["genlab train", *TRAIN]),
        "reference_seconds": round(duration, 1),
        "kill -9": kills(root, reference, args.kills, args.seed, duration),
        "disk full": disk_full(root, reference, [20_000, 60_000, 150_000]),
        "concurrent runs": concurrent(root),
        "bad files": bad_files(root, ref),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
