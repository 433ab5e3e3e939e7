"""Shared test settings: the tiny data specs of the contract tests, a TINY size per model, and the
data kinds each model accepts (tests/test_contract.py runs every model on every spec through them).

Adding a model family: add its TINY entry and its ACCEPTS entry here; the contract tests then cover
it (and ``test_tables_cover_the_registry`` fails until both entries exist).
"""

import os
import tempfile
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

import genlab
from genlab import DataSpec

# Tiny test networks run fastest on one thread, and one thread keeps timings stable when the
# machine is shared (numpy's BLAS too: its spinning threads slow the metrics down under load);
# feature networks trained by the evaluation suite go to a throw-away cache.
torch.set_num_threads(1)
threadpool_limits(1)
CACHE = Path(tempfile.mkdtemp(prefix="genlab-test-cache-"))
os.environ["GENLAB_CACHE"] = str(CACHE)

#: The contract tests' data: one tiny spec per kind of data a model may take, all with 3 classes
#: (``pairs``: a multimodal spec, image "x" + caption "text", whose batches hold both keys).
SPECS: dict[str, DataSpec] = {
    s.name: s
    for s in [
        DataSpec(name="bin-img", kind="image", shape=(1, 4, 4), levels=2, num_classes=3),  # binary image
        DataSpec(name="img17", kind="image", shape=(1, 8, 8), levels=17, num_classes=3),  # digits-like
        DataSpec(name="rgb16", kind="image", shape=(3, 16, 16), levels=256, num_classes=3),  # 8-bit RGB
        DataSpec(name="vec", kind="vector", shape=(2,), value_range=None, num_classes=3),  # 2-D toys
        DataSpec(
            name="tokens",
            kind="tokens",
            shape=(7,),
            dtype="int64",
            value_range=None,
            levels=5,
            vocab=tuple("<>abc"),
            num_classes=3,
        ),
        DataSpec(name="audio", kind="audio", shape=(12,), value_range=(-1.0, 1.0), num_classes=3),
        # image + caption pairs: multimodal models take both; single-modality image models model "x"
        DataSpec(
            name="pairs",
            kind="multimodal",
            shape=(3, 8, 8),
            levels=2,
            num_classes=3,
            vocab=tuple("<>abc"),
            extra={"text_len": 5},
            modalities={
                "x": DataSpec(name="x", kind="image", shape=(3, 8, 8), levels=2),
                "text": DataSpec(
                    name="text",
                    kind="tokens",
                    shape=(5,),
                    dtype="int64",
                    value_range=None,
                    levels=5,
                    vocab=tuple("<>abc"),
                ),
            },
        ),
        # image + caption + summary (the summarizer's data): summaries are tokens over the caption's vocabulary
        DataSpec(
            name="triples",
            kind="multimodal",
            shape=(3, 8, 8),
            levels=2,
            num_classes=3,
            vocab=tuple("<>abc"),
            extra={"text_len": 5},
            modalities={
                "x": DataSpec(name="x", kind="image", shape=(3, 8, 8), levels=2),
                "text": DataSpec(
                    name="text",
                    kind="tokens",
                    shape=(5,),
                    dtype="int64",
                    value_range=None,
                    levels=5,
                    vocab=tuple("<>abc"),
                ),
                "summary": DataSpec(
                    name="summary",
                    kind="tokens",
                    shape=(3,),
                    dtype="int64",
                    value_range=None,
                    levels=5,
                    vocab=tuple("<>abc"),
                ),
            },
        ),
    ]
}

#: Per registered model: the smallest constructor kwargs that still exercise its architecture
#: (every layer type, the multi-scale split, the conditioning path). Contract, CLI and training
#: tests build models with these; the defaults are for real data and make tests minutes long.
TINY: dict[str, dict] = {
    "betatcvae": {"z_dim": 2, "hidden": [16], "channels": 4},
    "dcgan": {"z_dim": 4, "channels": 4, "hidden": [16]},
    "ddpm": {"timesteps": 8, "channels": 8, "channel_mult": [1, 2], "attention": [4], "sample_steps": 4},
    # n_levels stays at its default 2: on images it exercises the split prior (4x4 -> 2x2 -> 1x1),
    # and glow on vectors refuses any other value.
    "glow": {"steps": 2, "hidden": 8},
    "factorvae": {"z_dim": 2, "hidden": [16], "channels": 4, "disc_hidden": [8]},
    "made": {"hidden": [16]},
    "maf": {"n_layers": 2, "hidden": [8]},
    "mmvae": {"z_dim": 2, "hidden": 8, "channels": 4, "k": 2, "dreg": True},
    "mmvaeplus": {"z_dim": 2, "w_dim": 2, "hidden": 8, "channels": 4},
    "mopoe": {"z_dim": 2, "hidden": 8, "channels": 4},
    "mvae": {"z_dim": 2, "hidden": 8, "channels": 4},
    "nsf": {"n_couplings": 2, "hidden": 8, "depth": 1, "bins": 4},
    "pixelcnn": {"channels": 4, "n_layers": 1, "first_kernel": 3},
    "pixelcnn_text": {"channels": 3, "n_layers": 1, "first_kernel": 3, "text_dim": 4, "text_hidden": 4, "cond_map": 2},
    "realnvp": {"n_couplings": 2, "hidden": 8, "depth": 1, "stage_couplings": 1},
    "sentencevae": {"z_dim": 2, "embed": 8, "hidden": 8, "iwae_k": 2},
    "transformer": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_prefix": 2},
    "vae": {"z_dim": 2, "hidden": [16], "channels": 4},
    "wavenet": {"channels": 4, "skip_channels": 8, "layers_per_stack": 2, "mu_levels": 16},
    "wgan_gp": {"z_dim": 4, "channels": 4, "hidden": [16]},
}


def _pairs_lm_run() -> str:
    """A 'transformer' run on the captions of SPECS["pairs"]: the frozen LM of TINY["frozen"]."""
    from genlab.data import TensorDataset
    from genlab.train import TrainConfig

    spec, out = SPECS["pairs"], Path(tempfile.mkdtemp(prefix="genlab-test-lm-")) / "lm"
    g = torch.Generator().manual_seed(0)
    x, text = torch.randint(0, 2, (8, 3, 8, 8), generator=g).float(), torch.randint(0, 5, (8, 5), generator=g)
    cfg = TrainConfig(steps=1, batch_size=8, progress=False, eval_every=0, sample_every=0, checkpoint_every=0)
    with torch.random.fork_rng(devices=[]):
        lm = genlab.build_model("transformer", spec, source="text", d_model=8, n_layers=1, n_heads=2, max_prefix=2)
        genlab.Trainer(lm, TensorDataset({"x": x, "text": text}, spec), None, cfg, out).fit()
    return str(out)


TINY["captioner"] = {"d_model": 8, "n_layers": 2, "n_heads": 2, "channels": 4, "hidden": 8}
# p_drop_image = 0.5: the contract's batch of 6 then drops some image, so the no-image vectors learn
TINY["summarizer"] = {"d_model": 8, "n_layers": 2, "n_heads": 2, "channels": 4, "hidden": 8, "p_drop_image": 0.5}
TINY["frozen"] = {"lm_run": _pairs_lm_run(), "prefix_len": 2, "channels": 4, "hidden": 8}

BOTH = (False, True)  # unconditional and class-conditional
#: Per registered model: the SPECS it accepts, each with the ``conditional`` values it accepts.
#: Every listed case must build and pass the contract; every case not listed must be refused at
#: construction with a one-line ValueError that names the data set's bad property.
ACCEPTS: dict[str, dict[str, tuple[bool, ...]]] = {
    # the VAE's data ("x" only); the TC models share its networks
    "betatcvae": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH, "pairs": BOTH, "triples": BOTH},
    "captioner": {"pairs": (False,), "triples": (False,)},  # captions given images (a summary modality unused)
    "dcgan": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH},
    "ddpm": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH, "pairs": BOTH, "triples": BOTH},  # "x" only
    "factorvae": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH, "pairs": BOTH, "triples": BOTH},
    # captions given images, through a frozen LM run (TINY's lm_run)
    "frozen": {"pairs": (False,), "triples": (False,)},
    "glow": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH},
    # categorical outputs: <= 64 levels, no continuous data
    "made": {"bin-img": BOTH, "img17": BOTH, "pairs": BOTH, "triples": BOTH},
    "maf": {"bin-img": BOTH, "img17": BOTH, "vec": BOTH},  # images up to 256 values (D sequential passes)
    # multimodal VAEs: only data with several modalities (two or three), and no class conditioning
    "mmvae": {"pairs": (False,), "triples": (False,)},
    "mmvaeplus": {"pairs": (False,), "triples": (False,)},
    "mopoe": {"pairs": (False,), "triples": (False,)},
    "mvae": {"pairs": (False,), "triples": (False,)},
    "nsf": {"vec": BOTH},
    "pixelcnn": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "pairs": BOTH, "triples": BOTH},
    "pixelcnn_text": {"pairs": (False,), "triples": (False,)},  # images given captions
    "realnvp": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH},
    "sentencevae": {"tokens": (False,)},  # captions need source='text'; unconditional only
    "summarizer": {"triples": (False,)},  # summaries given image + caption
    "transformer": {"tokens": BOTH},
    "vae": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH, "pairs": BOTH, "triples": BOTH},  # "x" only
    "wavenet": {"audio": BOTH},
    "wgan_gp": {"bin-img": BOTH, "img17": BOTH, "rgb16": BOTH, "vec": BOTH},
}


def builtin_models() -> list[str]:
    """The registered models that ship with genlab (tests may register toy plugins of their own)."""
    return [name for name, cls in genlab.list_models().items() if cls.__module__.startswith("genlab.")]


def tiny_model(name: str, spec: DataSpec, **kwargs) -> genlab.GenerativeModel:
    """``build_model(name, spec)`` at the TINY size (``kwargs`` override it), in float64."""
    return genlab.build_model(name, spec, **{**TINY[name], **kwargs}).double()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def cache(monkeypatch):
    """The feature-network cache of the test session (never the user's ~/.cache): one directory for
    every test and CLI call, so the digits classifier behind FID & co. (~13 s) trains once a session."""
    monkeypatch.setenv("GENLAB_CACHE", str(CACHE))
    return CACHE
