"""The simple likelihood baselines (genlab/baselines.py; issue 17) measured on digits, shapes-captions'
captions and two real English texts, with the time each took (1 torch thread, no cache).

    python benchmarks/baselines.py            # writes benchmarks/results/baselines.json

The texts are built as benchmarks/lm_defaults.py builds them (the same files in the same order):
``licenses.txt`` (nine licenses of /usr/share/common-licenses, 145,468 bytes) and ``vim.txt`` (the Vim
user manual, /usr/share/vim/vim90/doc/usr_*.txt in name order, 641,560 bytes), loaded as
``genlab train transformer --data FILE`` loads them: char tokens, blocks of 128, 90/5/5 % split.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from genlab.baselines import baselines

RESULTS = Path(__file__).parent / "results"
LICENSE_FILES = ("Apache-2.0", "Artistic", "BSD", "CC0-1.0", "GFDL-1.3", "GPL-2", "GPL-3", "LGPL-2.1", "MPL-2.0")


def build_texts(work: Path) -> dict[str, Path]:
    parts = {
        "licenses.txt": [Path("/usr/share/common-licenses", f) for f in LICENSE_FILES],
        "vim.txt": sorted(Path("/usr/share/vim/vim90/doc").glob("usr_*.txt")),
    }
    out = {}
    for name, files in parts.items():
        out[name] = work / name
        out[name].write_bytes(b"".join(f.read_bytes() for f in files))
    return out


def main() -> None:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    texts = build_texts(work)
    cases = [
        ("digits", "digits", {}),
        ("shapes-captions (key text)", "shapes-captions", {"key": "text"}),
        ("licenses.txt", str(texts["licenses.txt"]), {}),
        ("vim.txt", str(texts["vim.txt"]), {}),
    ]
    results = {}
    for label, data, kw in cases:
        for split in ("val", "test"):
            t0 = time.perf_counter()
            figures = baselines(data, split, cache=False, **kw)
            results[f"{label} / {split}"] = {"seconds": round(time.perf_counter() - t0, 2), **figures}
            print(label, split, json.dumps(results[f"{label} / {split}"]), flush=True)
    out = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": 1,
        "loadavg": os.getloadavg(),
        "sizes_bytes": {k: v.stat().st_size for k, v in texts.items()},
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "baselines.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
