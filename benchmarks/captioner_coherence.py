"""Image -> caption coherence of the representation-conditioned ``captioner`` on shapes-captions, on
the budget of benchmarks/frozen_captioning.py (20,000 training captions at 32x32, batch 64, lr 2e-3,
1,500 steps, 500 test images, greedy captions), so its numbers sit beside the frozen captioner's and
mmvae's there. Not a test; run by hand:

    python benchmarks/captioner_coherence.py       # writes results/captioner_coherence.json
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

import genlab
from genlab.models.frozen import caption_coherence
from genlab.train import TrainConfig

HERE = Path(__file__).resolve().parent


def main() -> None:
    tr = genlab.load_dataset("shapes-captions", "train", n=20000, size=32)
    te = genlab.load_dataset("shapes-captions", "test", n=500, size=32)
    torch.manual_seed(0)
    model = genlab.build_model("captioner", tr.spec)
    cfg = TrainConfig(steps=1500, batch_size=64, lr=2e-3, progress=False, eval_every=0, sample_every=0, seed=0)
    t0 = time.perf_counter()
    genlab.Trainer(model, tr, None, cfg, out_dir=HERE / "runs" / "captioner").fit()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        nll = -model.log_prob({"x": te.tensors["x"], "text": te.tensors["text"]}).mean().item()
    result = {
        "command": "python benchmarks/captioner_coherence.py",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_seconds": round(train_s, 1),
        "caption_nll_nats": nll,
        "bits_per_token": nll / (te.tensors["text"].shape[1] * math.log(2)),
        "coherence_greedy": caption_coherence(model, te, n_examples=500, mean=True),
    }
    out = HERE / "results" / "captioner_coherence.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
