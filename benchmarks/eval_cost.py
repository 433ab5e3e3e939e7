"""What ``genlab eval`` costs, metric by metric, on the default digits VAE (run by hand, not a test).

    python benchmarks/eval_cost.py                      # trains /tmp/genlab-eval-cost/vae once, then reuses it
    python benchmarks/eval_cost.py --run RUN --repeats 3 --compare-with /tmp/genlab-head

1. Trains the default run if ``--run`` holds none (``genlab train vae --data digits --out RUN``).
2. In process, on one torch thread, each applicable metric alone (``evaluate(model, test, [m])``,
   the CLI's arguments), repeats alternating between the metrics (A B C ... A B C ...), medians;
   with the feature classifier already in a private ``$GENLAB_CACHE`` (warm) -- its one-off
   training on an empty cache is timed separately (``feature_classifier_train_s``). Also the
   stages the sample metrics share: drawing the samples, loading the feature network, the features.
3. The whole CLI, ``genlab eval RUN`` as a user runs it (a new process: torch imported, the CLI's
   thread choice), on an empty feature cache once (``cli_cold_s``) and on a warm one, repeated and
   alternated between variants: torch's default threads and ``OMP_NUM_THREADS=1``, and, with
   ``--compare-with DIR`` (a copy of an older ``genlab`` package, e.g. ``git archive HEAD genlab |
   tar -x -C DIR``), the same two for that code. Plus the time to start Python with torch imported.

``--source DIR`` runs the in-process part on the genlab package under DIR instead of the installed
one. Writes (merges) ``benchmarks/results/eval_cost.json`` under the key ``--label``. Wall-clock
seconds; the load average of the machine is recorded with each measurement (compare within a run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
#: Start the CLI from a given source folder: drop the editable install's finder, put DIR first.
LAUNCH = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
    "getattr(f, '__module__', getattr(type(f), '__module__', ''))]; {insert}"
    "from genlab.cli import main; sys.argv[0] = 'genlab'; sys.exit(main())"
)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def use_source(source: str | None) -> None:
    """Import genlab from ``source`` (a folder holding a ``genlab`` package) in this process."""
    if source:
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", type(f).__module__)]
        sys.path.insert(0, source)


def run_cli(args: list[str], env: dict[str, str], source: str | None = None) -> float:
    """Wall seconds of ``genlab ARGS`` in a fresh interpreter (raises on a non-zero exit)."""
    insert = f"sys.path.insert(0, {source!r}); " if source else ""
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", LAUNCH.format(insert=insert), *args], env=env, check=True, capture_output=True
    )
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="/tmp/genlab-eval-cost/vae", help="run folder (trained if it holds no run)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per metric and of the warm CLI")
    p.add_argument("--skip-cli", action="store_true", help="only the in-process timings")
    p.add_argument("--source", help="a folder holding an older genlab package to time in process")
    p.add_argument("--compare-with", help="a folder holding an older genlab package to time the CLI of too")
    p.add_argument("--label", default="current", help="key of this measurement in the results file")
    p.add_argument("--out", default=str(RESULTS / "eval_cost.json"))
    args = p.parse_args()
    use_source(args.source)
    run = Path(args.run)
    cache = Path(tempfile.mkdtemp(prefix="genlab-eval-cost-cache-"))
    os.environ["GENLAB_CACHE"] = str(cache)  # before genlab is imported: a private, empty feature cache
    env = dict(os.environ)

    res: dict = {
        "env": {
            "command": " ".join(["python", *sys.argv]),
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
        },
        "run": str(run),
    }
    if not (run / "model.safetensors").exists():
        res["train_s"] = run_cli(["train", "vae", "--data", "digits", "--out", str(run)], env)

    import torch

    torch.set_num_threads(1)
    import genlab
    from genlab import load_dataset
    from genlab.evaluate import applicable_metrics, draw_samples, evaluate
    from genlab.metrics import features as F
    from genlab.runs import load_run, saved_data_opts

    res["env"].update(torch=torch.__version__, threads_in_process=1, genlab_from=str(Path(genlab.__file__).parent))
    model, cfg, _ = load_run(run)
    opts = saved_data_opts(cfg)
    test, train = load_dataset(cfg["data"], "test", **opts), load_dataset(cfg["data"], "train", **opts)
    metrics = applicable_metrics(model)
    res["metrics"] = metrics
    res["n_test"], res["n_train"], res["n_samples"] = len(test), len(train), 1000

    # One-off: the feature classifier on an empty cache (every later eval of digits loads it).
    t = time.perf_counter()
    fx = F.feature_extractor(train, "auto")
    res["feature_classifier_train_s"] = time.perf_counter() - t
    res["load_at_classifier"] = load()

    out_dir = Path(tempfile.mkdtemp(prefix="genlab-eval-cost-out-"))
    per: dict[str, list[float]] = {m: [] for m in metrics}
    stages: dict[str, list[float]] = {k: [] for k in ("draw_samples", "load_feature_network", "features_real_fake")}
    values: dict[str, dict] = {}
    loads = []
    for _ in range(args.repeats):  # round robin: every metric sees the same machine noise
        for m in metrics:
            t = time.perf_counter()
            values[m] = evaluate(model, test, [m], reference=lambda: train, out_dir=out_dir)
            per[m].append(time.perf_counter() - t)
        t = time.perf_counter()
        samples = draw_samples(model, 1000, test)
        stages["draw_samples"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fx = F.feature_extractor(train, "auto")
        stages["load_feature_network"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fx.features(test.tensors["x"].float()), fx.features(samples)
        stages["features_real_fake"].append(time.perf_counter() - t)
        loads.append(load())
    t = time.perf_counter()
    every = evaluate(model, test, None, reference=lambda: train, out_dir=out_dir)
    res["all_in_process_s"] = time.perf_counter() - t
    res["seconds_per_metric"] = {m: statistics.median(v) for m, v in per.items()}
    res["seconds_per_metric_repeats"] = per
    res["sum_of_metrics_s"] = sum(res["seconds_per_metric"].values())
    res["stages_s"] = {k: statistics.median(v) for k, v in stages.items()}
    res["load_during_metrics"] = loads
    # The values, to check a speed change left them alone (compare the labels' "values"). Keys that
    # differ between one metric alone and all at once: the ELBO (k=1) draws from the global RNG
    # before the IWAE bound does when both run, so iwae_* alone differ by their Monte Carlo noise.
    res["values"] = {k: v for k, v in every.items() if isinstance(v, (int, float, str))}
    res["keys_differing_alone_vs_together"] = sorted(
        k for m in metrics for k, v in values[m].items() if not isinstance(v, list) and every.get(k) != v
    )
    if not args.skip_cli:
        target = out_dir / "cli-eval.json"
        cmd = ["eval", str(run), "--out", str(target)]
        res["cli_command"] = f"genlab eval {run} --out {target}"
        cold_env = dict(env, GENLAB_CACHE=tempfile.mkdtemp(prefix="genlab-eval-cost-cli-"))
        res["cli_cold_s"] = run_cli(cmd, cold_env)  # trains the feature classifier: the first eval of digits
        res["load_at_cli_cold"] = load()
        variants = {"default_threads": (cold_env, None), "one_thread": (dict(cold_env, OMP_NUM_THREADS="1"), None)}
        if args.compare_with:
            variants["older_default_threads"] = (cold_env, args.compare_with)
            variants["older_one_thread"] = (dict(cold_env, OMP_NUM_THREADS="1"), args.compare_with)
        warm: dict[str, list[float]] = {k: [] for k in variants}
        warm_loads = []
        for _ in range(args.repeats):  # A B C D A B C D ...
            for k, (e, src) in variants.items():
                warm[k].append(run_cli(cmd, e, src))
                warm_loads.append(load())
        res["cli_warm_s"] = {k: statistics.median(v) for k, v in warm.items()}
        res["cli_warm_repeats"] = warm
        res["load_at_cli_warm"] = warm_loads
        if args.compare_with:
            res["cli_compare_with"] = args.compare_with
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True)
        res["python_with_torch_start_s"] = time.perf_counter() - t
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    everything = json.loads(out.read_text()) if out.exists() else {}
    everything[args.label] = res
    out.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k not in ("values", "seconds_per_metric_repeats")}, indent=2))


if __name__ == "__main__":
    main()
