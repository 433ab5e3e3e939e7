"""``genlab demo``: a local web page to try trained runs in a browser, the way models are shown in
this field before anyone reads their code.

:class:`RunDemo` is everything the page does, as plain functions of a run folder that return
pictures (uint8 arrays), text and file paths: sample with a seed, temperature, class, DDIM steps and
guidance; encode a test or uploaded image, reconstruct it, move its most informative latents
(sliders) and interpolate between two images; translate between modalities; read the run's
``eval.json`` with units and its validation curve. It needs no web library and is tested as such.
:func:`build_app` lays it out with Gradio (the optional extra ``genlab[demo]``), and :func:`serve`
starts it on 127.0.0.1. The page loads no asset from another host (system fonts, Gradio's bundled
front end, analytics off), so it works offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import runs as R
from .checkpoint import CheckpointError

#: How to get the web UI library; the one line ``genlab demo`` prints when it is missing.
INSTALL_HINT = "genlab demo needs the optional web UI library Gradio: pip install -e '.[demo]'"
#: The label of the class choice that draws a column per class.
EVERY_CLASS = "every class (a column each)"
#: Latent sliders shown for a model with ``encode`` and ``decode`` (its most informative latents).
MAX_SLIDERS = 8
#: Examples whose KL per latent orders the sliders (as the traversal figure does).
RANK_EXAMPLES = 256


class DemoError(ValueError):
    """A run folder the demo cannot show (missing, half-written, unknown model); one line."""


class Sample(NamedTuple):
    """What one press of *Sample* (or *Translate*) gives: a picture (uint8 [H, W, 3]) or None, text
    or None, and the path of a WAV file or None."""

    image: np.ndarray | None
    text: str | None
    audio: str | None


def check_demo_run(path: str | os.PathLike) -> None:
    """Raise :class:`DemoError` (one line, naming the folder and what to do) unless ``path`` is a run
    folder the demo can load: it exists, holds ``config.yaml`` of a registered model, and weights
    (``best.safetensors`` or ``model.safetensors``; a training that has not reached its first
    checkpoint has none yet)."""
    from .registry import model_names

    p = Path(path)
    if not p.exists():
        raise DemoError(f"run folder {str(p)!r} does not exist")
    if not p.is_dir():
        raise DemoError(f"{str(p)!r} is a file, not a run folder (runs are written by 'genlab train --out DIR')")
    if not (p / R.CONFIG_FILE).exists():
        raise DemoError(
            f"{str(p)!r} is not a genlab run folder (no {R.CONFIG_FILE}); runs are written by 'genlab train --out DIR'"
        )
    try:
        cfg = R.ckpt.read_yaml(p / R.CONFIG_FILE)
    except CheckpointError as e:
        raise DemoError(str(e)) from None
    if not isinstance(cfg, dict) or "model" not in cfg or "spec" not in cfg:
        raise DemoError(f"{str(p / R.CONFIG_FILE)!r} is not a genlab run config (needs 'model' and 'spec')")
    if cfg["model"] not in model_names():
        raise DemoError(
            f"run {str(p)!r} is of model {cfg['model']!r}, which this genlab does not know "
            f"(known: {', '.join(model_names())}); was it written by a newer genlab?"
        )
    if not any((p / f).exists() for f in R.WEIGHTS.values()):
        raise DemoError(
            f"run {str(p)!r} has no weights yet ({' or '.join(R.WEIGHTS.values())}): its training has not "
            "reached its first checkpoint, or stopped before it; wait for it or resume it with "
            f"'genlab train --out {p} --resume'"
        )


def _read_png(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class RunDemo:
    """One run folder, loaded for the demo page (``weights``: ``"best"`` or ``"last"``).

    Attributes: ``name`` (the folder's name), ``model``, ``config``, ``spec``, ``kind`` (``image``,
    ``text``, ``audio``, ``density`` for 2-D vectors, ``vector``, or ``multimodal``), ``step`` (of the
    weights, or None). Every method is deterministic given its seed, so the page and a script give
    the same pictures."""

    def __init__(self, path: str | os.PathLike, weights: str = "best") -> None:
        check_demo_run(path)
        self.path = Path(path)
        self.name = self.path.resolve().name
        self.weights = weights
        try:
            self.model, self.config, self.spec = R.load_run(self.path, weights=weights)
        except (CheckpointError, ValueError) as e:  # a weights file that does not load or fit
            raise DemoError(str(e).splitlines()[0]) from None
        self.step = R.weights_step(self.path, weights)
        caps = self.model.capabilities
        if caps.modalities:
            self.kind = "multimodal"
        elif self.model.data_key == "text" or self.spec.kind == "tokens":
            self.kind = "text"
        elif self.spec.kind in ("image", "audio"):
            self.kind = self.spec.kind
        elif self.spec.kind == "vector" and tuple(self.spec.shape) == (2,):
            self.kind = "density"
        else:
            self.kind = "vector"
        self._tmp = tempfile.TemporaryDirectory(prefix="genlab-demo-")
        self._test: Any = None
        self._calls = 0

    # --- what the page offers ---------------------------------------------------------------
    @property
    def options(self) -> tuple[str, ...]:
        """The model's ``sample`` options (``temperature``, ``steps``, ``guidance``, ...)."""
        return tuple(self.model.capabilities.sample_options)

    @property
    def class_names(self) -> list[str]:
        """Display names of the classes of a conditional run ([] otherwise)."""
        from .viz import class_labels

        return class_labels(self.spec) if self.model.conditional else []

    @property
    def can_sample(self) -> bool:
        return bool(self.model.capabilities.sample)

    @property
    def can_encode(self) -> bool:
        """Reconstruction, latent sliders and interpolation: image data and ``encode`` + ``decode``."""
        caps = self.model.capabilities
        return self.kind == "image" and caps.encode and caps.decode

    def translations(self) -> list[tuple[str, str]]:
        """The (source, target) modality pairs a multimodal run can translate from a caption
        (``text``) or an image (``x``) to another of its modalities that the model produces (image,
        caption, ``audio``): e.g. text -> image, image -> caption, text -> audio."""
        caps = self.model.capabilities
        keys = caps.modalities
        pairs = [(s, t) for s in ("text", "x") for t in ("x", "text", "audio") if s != t]
        return [(s, t) for s, t in pairs if s in keys and t in keys and caps.generates(t)]

    def describe(self) -> str:
        """One Markdown line about the run: model, data, weights and step, likelihood, capabilities."""
        step = "" if self.step is None else f", step {self.step}"
        # what this run does: the family's 'conditional' only when the run was trained so
        caps = dataclasses.replace(self.model.capabilities, conditional=self.model.conditional)
        return (
            f"**{self.name}**: `{self.config['model']}` on `{self.config['data']}` "
            f"({self.kind} data, shape {tuple(self.spec.shape)}), {self.weights} weights{step}; "
            f"likelihood: {self.model.likelihood}; {caps.describe()}"
        )

    def _file(self, stem: str, suffix: str) -> Path:
        # a new name per call: the browser caches an image by its address
        self._calls += 1
        return Path(self._tmp.name) / f"{stem}-{self._calls}{suffix}"

    # --- sampling ---------------------------------------------------------------------------
    def sample(
        self,
        n: int = 16,
        seed: int = 0,
        temperature: float = 1.0,
        cls: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        mean: bool = False,
    ) -> Sample:
        """Draw ``n`` samples with ``torch.Generator().manual_seed(seed)`` (as ``genlab sample``
        does): an image grid titled with the run, weights, step and options (a column per class for
        a conditional run and ``cls`` None), text samples separated as in ``samples.txt``, a WAV of
        the clips 0.25 s apart, a 2-D histogram, or captioned multimodal examples. ``temperature``,
        ``steps`` (DDIM), ``guidance`` and ``mean`` (decoder means: a VAE's pictures without the
        pixel noise of its likelihood) apply where the model takes them."""
        from .viz import class_labels, column_labels, image_grid, sample_delimiter, save_samples, titled

        n, seed = int(n), int(seed)
        if n < 1:
            raise DemoError(f"number of samples must be >= 1; got {n}")
        if not 0 <= seed < 2**63:
            raise DemoError(f"seed must be an integer in 0..2**63-1; got {seed}")
        if not self.can_sample:
            raise DemoError(f"model {self.config['model']!r} cannot sample")
        kw: dict[str, Any] = {}
        if "temperature" in self.options:
            if not (math.isfinite(temperature) and temperature > 0):
                raise DemoError(f"temperature must be a finite number > 0; got {temperature}")
            kw["temperature"] = float(temperature)
        if steps is not None and "steps" in self.options:
            if int(steps) < 1:
                raise DemoError(f"DDIM steps must be >= 1; got {steps}")
            kw["steps"] = int(steps)
        if guidance is not None and "guidance" in self.options and self.model.conditional:
            kw["guidance"] = float(guidance)
        if mean and "mean" in self.options:
            kw["mean"] = True
        cond = None
        if self.model.conditional:
            k = self.spec.num_classes or 1
            if cls is not None and not 0 <= int(cls) < k:
                raise DemoError(f"class {cls} is not a class id of {self.spec.name!r} (0..{k - 1})")
            cond = torch.arange(n) % k if cls is None else torch.full((n,), int(cls), dtype=torch.long)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            x = self.model.sample(n, cond, generator=gen, **kw)
        title = f"{self.config['model']} {self.name}, {self.weights} weights"
        title += ("" if self.step is None else f", step {self.step}") + f", seed {seed}"
        if kw.get("temperature", 1.0) != 1.0:
            title += f", temperature {kw['temperature']:g}"
        if "steps" in kw:
            title += f", {kw['steps']} DDIM steps"
        if "guidance" in kw:
            title += f", guidance {kw['guidance']:g}"
        if kw.get("mean"):
            title += ", decoder means"
        if cls is not None:
            title += f", class {class_labels(self.spec)[int(cls)]}"
        if self.kind == "multimodal":
            return self._outputs(x, title)
        if self.kind == "text":
            from .data.text import tokens_to_text

            spec = self.spec.modality("text") if self.spec.kind == "multimodal" else self.spec
            texts = tokens_to_text(x.cpu().long(), spec)
            return Sample(None, "\n".join(f"{sample_delimiter(i)}\n{t}" for i, t in enumerate(texts, 1)), None)
        if self.kind == "image":
            nrow = (self.spec.num_classes or 1) if cond is not None and cls is None else None
            grid = image_grid(x.view(-1, *self.spec.shape), nrow, min_side=64)  # 8x8 digits readable on a page
            if nrow:
                grid = column_labels(grid, class_labels(self.spec), nrow)
            return Sample(titled(grid, title), None, None)
        written = save_samples(x, self.spec, self._file("samples", ".png"))
        if written is None:  # vectors of more than 2 dimensions: the numbers themselves
            rows = x.detach().cpu().double().numpy()[:n]
            return Sample(None, "\n".join(" ".join(f"{v:.4g}" for v in r) for r in rows), None)
        if written.suffix == ".wav":
            return Sample(None, None, str(written))
        return Sample(titled(_read_png(written), title), None, None)

    def _outputs(self, out: dict[str, Tensor], title: str, source_image: Tensor | None = None) -> Sample:
        """Generated modalities -> a captioned picture, the captions as text and a WAV of the clips."""
        from .viz import modality_texts, save_multimodal

        out = {k: v.detach().cpu() for k, v in out.items()}
        image = None
        if "x" in out or ("text" in out and source_image is not None):
            png = save_multimodal(
                {k: v for k, v in out.items() if k != "audio"},
                self.spec,
                self._file("mm", ".png"),
                title=title,
                source_image=source_image,
            )[0]
            image = _read_png(png)
        text = "\n".join(modality_texts(out["text"], self.spec)) if "text" in out else None
        wav = None
        if "audio" in out:
            from .data.audio import write_wav

            rate = int(self.spec.modality("audio").extra.get("sample_rate", 16000))
            wav = str(write_wav(self._file("audio", ".wav"), out["audio"], rate))
        return Sample(image, text, wav)

    # --- examples to encode -------------------------------------------------------------------
    def test_data(self) -> Any:
        """The run's test split (loaded on first use; None when its data cannot be loaded here, e.g.
        an image folder given by a relative path elsewhere: then only uploads work)."""
        if self._test is None:
            from . import load_dataset

            try:
                self._test = load_dataset(self.config["data"], "test", **R.saved_data_opts(self.config))
            except (OSError, ValueError, KeyError):
                self._test = False
        return self._test or None

    def num_test(self) -> int:
        data = self.test_data()
        return 0 if data is None else len(data)

    def image(self, index: int | None = None, upload: str | None = None) -> tuple[Tensor, int | None]:
        """An image to encode, [C, H, W] on the run's levels, and its label (None for an upload):
        the uploaded file ``upload`` (read, resized and converted as ``genlab translate --image``
        reads one), else test example ``index``."""
        spec = self.spec.modality("x") if self.spec.kind == "multimodal" else self.spec
        if upload:
            from .data.files import read_image_as

            return read_image_as(upload, spec), None
        data = self.test_data()
        if data is None:
            raise DemoError(f"the test split of {self.config['data']!r} cannot be loaded here; upload an image")
        index = int(index or 0)
        if not 0 <= index < len(data):
            raise DemoError(f"test example {index} is out of range 0..{len(data) - 1}")
        x = data.tensors["x"][index].float()
        y = data.tensors.get("y", data.tensors.get("cond"))
        return x, (None if y is None else int(y[index]))

    def _cond(self, label: int | None, cls: int | None) -> Tensor | None:
        if not self.model.conditional:
            return None
        c = cls if cls is not None else label
        return torch.tensor([0 if c is None else int(c)])

    # --- encode, reconstruct, sliders, interpolation -----------------------------------------
    def latent_dims(self) -> list[tuple[int, str]]:
        """The sliders: the ``MAX_SLIDERS`` most informative latents (by their KL to the prior on
        ``RANK_EXAMPLES`` test examples, as the traversal figure orders them) with their labels."""
        from .viz import latent_kl

        if not self.can_encode:
            return []
        data = self.test_data()
        if data is None:  # nothing to rank them on: the first ones
            with torch.no_grad():
                z_dim = int(self.model.encode(torch.zeros(1, *self.spec.shape), self._cond(0, None)).shape[1])
            return [(d, f"z{d}") for d in range(min(MAX_SLIDERS, z_dim))]
        x = data.tensors["x"][:RANK_EXAMPLES].float()
        y = data.tensors.get("y", data.tensors.get("cond"))
        cond = y[:RANK_EXAMPLES].long() if self.model.conditional and y is not None else None
        with torch.no_grad():
            score, is_kl = latent_kl(self.model, x, cond)
        order = [int(d) for d in torch.argsort(-score.cpu(), stable=True)][:MAX_SLIDERS]
        what = "KL {:.2f} nats" if is_kl else "var of mean {:.3g}"
        return [(d, f"z{d} ({what.format(float(score[d]))})") for d in order]

    @torch.no_grad()
    def encode(self, x: Tensor, label: int | None = None, cls: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``x`` [C, H, W] -> (its code z [z_dim] as float64, the picture *input | reconstruction*)."""
        from .viz import image_grid, titled

        if not self.can_encode:
            raise DemoError(f"model {self.config['model']!r} on {self.kind} data has no encoder and decoder to show")
        cond = self._cond(label, cls)
        z = self.model.encode(x[None], cond)
        rec = self.model.decode(z, cond, mean=True).view(1, *self.spec.shape)
        pic = titled(image_grid(torch.cat([x[None], rec]), nrow=2, min_side=96), "input | reconstruction")
        return z[0].double().cpu().numpy(), pic

    @torch.no_grad()
    def decode(self, z: Sequence[float], label: int | None = None, cls: int | None = None) -> np.ndarray:
        """The decoder mean of code ``z`` [z_dim], enlarged, as uint8 [H, W, 3]."""
        from .viz import image_grid

        zt = torch.as_tensor(np.asarray(z, dtype=np.float64), dtype=torch.float32)[None]
        return image_grid(
            self.model.decode(zt, self._cond(label, cls), mean=True).view(1, *self.spec.shape), min_side=192
        )

    def interpolate(
        self, a: Tensor, b: Tensor, steps: int = 10, label: int | None = None, cls: int | None = None
    ) -> np.ndarray:
        """Decoder means along the line from ``encode(a)`` to ``encode(b)`` (each [C, H, W]) in
        ``steps`` steps (:func:`genlab.viz.interpolation`)."""
        from .viz import interpolation

        if not self.can_encode:
            raise DemoError(f"model {self.config['model']!r} has no encoder and decoder to interpolate with")
        if not 2 <= int(steps) <= 32:
            raise DemoError(f"interpolation steps must be in 2..32; got {steps}")
        return _read_png(
            interpolation(
                self.model, a[None], b[None], self._file("interp", ".png"), int(steps), self._cond(label, cls)
            )
        )

    # --- translation ----------------------------------------------------------------------------
    def translate(
        self,
        source: str,
        target: str,
        *,
        text: str = "",
        index: int | None = None,
        upload: str | None = None,
        n: int = 8,
        seed: int = 0,
    ) -> Sample:
        """Translate a caption (``text``) to ``n`` images, or an image (test example ``index`` or the
        file ``upload``) to ``n`` captions, with ``model.translate`` and a seeded generator."""
        from .data.text import encode_text

        if (source, target) not in self.translations():
            raise DemoError(f"run {self.name!r} does not translate {source} -> {target}")
        if not 1 <= int(n) <= 64:
            raise DemoError(f"number of translations must be in 1..64; got {n}")
        src: dict[str, Tensor] = {}
        shown = None
        if source == "text":
            if not text.strip():
                raise DemoError("type a caption to translate")
            try:
                src["text"] = torch.from_numpy(encode_text(text, self.spec.modality("text")))[None]
            except ValueError as e:
                raise DemoError(f"caption {text!r}: {e}") from None
            title = f'from "{text}"'
        else:
            shown, _ = self.image(index, upload)
            src["x"] = shown[None]
            title = f"from {'the uploaded image' if upload else f'test image {int(index or 0)}'}"
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            out = self.model.translate(src, [target], n=int(n), generator=gen)
        return self._outputs(out, title, source_image=shown)

    # --- results ------------------------------------------------------------------------------
    def eval_rows(self) -> list[list[str]]:
        """The numbers of the run's ``eval.json`` as rows [metric, value, unit] (units from
        :func:`genlab.evaluate.metric_unit`: bits/dim of images, bits/char of char text, ...);
        [] when there is none."""
        from .checkpoint import read_json
        from .evaluate import metric_unit

        try:
            res = read_json(self.path / R.EVAL_FILE)
        except (CheckpointError, OSError):
            return []
        rows = []
        for k, v in res.items() if isinstance(res, dict) else ():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            rows.append(
                [k, f"{v:.4f}" if isinstance(v, float) else str(v), metric_unit(k, self.spec, self.model.data_key)]
            )
        return rows

    def curve(self) -> np.ndarray | None:
        """The validation curve of ``metrics.jsonl`` (``val_bpd`` where logged, else the first
        ``val_*`` metric) as a picture, or None before the first validation."""
        from .compare import shared_metric, val_curves
        from .viz import plot_curves

        curves = val_curves(self.path / R.METRICS_FILE)
        pick = shared_metric({self.name: curves})
        if pick is None:
            return None
        metric = pick[0]
        png = plot_curves(
            {self.name: curves[metric]}, self._file("curve", ".png"), f"{metric} vs step (validation)", "step", metric
        )
        return _read_png(png)


# --- the page -----------------------------------------------------------------------------------
def import_gradio() -> Any:
    """Import Gradio with its usage analytics off (no request leaves the machine); DemoError with
    :data:`INSTALL_HINT` when it is not installed."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise DemoError(INSTALL_HINT) from None
    return gr


def theme(gr: Any) -> Any:
    """Gradio's default theme on the system's fonts: its own loads Inter from Google Fonts, which an
    offline machine cannot reach (and a page should not ask for)."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif"],
        font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"],
    )


def _picture(gr: Any, label: str, **kw: Any) -> Any:
    """An output picture: lossless PNG (the grid's pixels as computed), no upload, download and
    full-screen buttons only (Gradio's share button would offer to upload it)."""
    return gr.Image(
        label=label, type="numpy", format="png", interactive=False, buttons=["download", "fullscreen"], **kw
    )


def _class_id(demo: RunDemo, choice: str | None) -> int | None:
    names = demo.class_names
    return names.index(choice) if choice in names else None


def _errors(gr: Any, fn: Any) -> Any:
    """Show a one-line error on the page (gr.Error) for what a user can fix."""

    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except (DemoError, ValueError, CheckpointError) as e:
            raise gr.Error(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    return wrapped


def _sample_panel(gr: Any, demo: RunDemo, i: int) -> None:
    opts = demo.options
    text_out = demo.kind in ("text", "vector") or (
        demo.kind == "multimodal" and "text" in demo.model.capabilities.modalities
    )
    image_out = demo.kind in ("image", "density", "multimodal")
    audio_out = demo.kind == "audio" or "audio" in demo.model.capabilities.modalities
    default_n = {"image": 64, "density": 2000, "text": 4, "audio": 4}.get(demo.kind, 16)
    if demo.model.conditional and demo.kind == "image":
        default_n = 8 * (demo.spec.num_classes or 1)
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id=f"seed-{i}")
            n = gr.Slider(
                1,
                5000 if demo.kind == "density" else 128,
                value=default_n,
                step=1,
                label="number of samples",
                elem_id=f"n-{i}",
            )
            temperature = gr.Slider(
                0.1,
                2.0,
                value=1.0,
                step=0.05,
                label="temperature",
                visible="temperature" in opts,
                elem_id=f"temperature-{i}",
            )
            cls = gr.Dropdown(
                [EVERY_CLASS, *demo.class_names],
                value=EVERY_CLASS,
                label="class",
                visible=bool(demo.class_names),
                elem_id=f"class-{i}",
            )
            default_steps = getattr(demo.model, "sample_steps", None)
            steps = gr.Slider(
                1,
                int(getattr(demo.model, "timesteps", 1000) or 1000),
                step=1,
                value=int(default_steps or 50),
                label="DDIM steps",
                visible="steps" in opts,
                elem_id=f"steps-{i}",
            )
            mean = gr.Checkbox(
                False,
                label="decoder means (without the likelihood's pixel noise)",
                visible="mean" in opts,
                elem_id=f"mean-{i}",
            )
            guidance = gr.Slider(
                0.0,
                10.0,
                step=0.1,
                value=float(getattr(demo.model, "guidance", 0.0) or 0.0),
                label="guidance scale",
                visible="guidance" in opts and demo.model.conditional,
                elem_id=f"guidance-{i}",
            )
            button = gr.Button("Sample", variant="primary", elem_id=f"sample-{i}")
        with gr.Column(scale=3):
            image = _picture(
                gr,
                "samples",
                visible=image_out,
                elem_id=f"sample-image-{i}",
            )
            text = gr.Textbox(
                label="samples", lines=12, interactive=False, visible=text_out, elem_id=f"sample-text-{i}"
            )
            audio = gr.Audio(
                label="samples (clips 0.25 s apart)",
                type="filepath",
                interactive=False,
                visible=audio_out,
                elem_id=f"sample-audio-{i}",
            )

    def run(seed_v: float, n_v: float, t: float, c: str, s: float, g: float, m: bool) -> tuple[Any, Any, Any]:
        out = demo.sample(
            int(n_v),
            int(seed_v or 0),
            float(t),
            _class_id(demo, c),
            int(s) if "steps" in opts else None,
            float(g) if "guidance" in opts else None,
            bool(m),
        )
        return out.image, out.text, out.audio

    button.click(_errors(gr, run), [seed, n, temperature, cls, steps, guidance, mean], [image, text, audio])


def _image_source(gr: Any, demo: RunDemo, i: int, label: str, default: int) -> tuple[Any, Any]:
    count = demo.num_test()
    with gr.Column(min_width=200):
        index = gr.Number(
            default if count else 0,
            label=f"{label}: test example (0..{max(count - 1, 0)})",
            precision=0,
            minimum=0,
            visible=count > 0,
            elem_id=f"{label.replace(' ', '-')}-index-{i}",
        )
        upload = gr.Image(
            type="filepath",
            label=f"{label}: or upload an image",
            sources=["upload"],
            elem_id=f"{label.replace(' ', '-')}-upload-{i}",
            height=160,
        )
    return index, upload


def _encode_panel(gr: Any, demo: RunDemo, i: int) -> None:
    dims = demo.latent_dims()
    gr.Markdown(
        "Encode a test example or your own image: its reconstruction, then move its most informative "
        "latents (ordered by KL to the prior) and see the decoder follow."
    )
    with gr.Row():
        index, upload = _image_source(gr, demo, i, "image", 0)
        cls = gr.Dropdown(
            ["the example's own label", *demo.class_names],
            value="the example's own label",
            label="condition on class",
            visible=bool(demo.class_names),
            elem_id=f"encode-class-{i}",
        )
        button = gr.Button("Encode", variant="primary", elem_id=f"encode-{i}")
    with gr.Row():
        recon = _picture(
            gr,
            "input | reconstruction",
            elem_id=f"recon-{i}",
        )
        decoded = _picture(
            gr,
            "decoded from the sliders",
            elem_id=f"decoded-{i}",
        )
    z_state = gr.State(None)
    label_state = gr.State(None)
    sliders = [gr.Slider(-4.0, 4.0, value=0.0, step=0.05, label=lab, elem_id=f"z-{d}-{i}") for d, lab in dims]

    def encode(idx: float, up: str | None, c: str) -> list[Any]:
        x, label = demo.image(int(idx or 0), up)
        z, pic = demo.encode(x, label, _class_id(demo, c))
        return [pic, z.tolist(), label, demo.decode(z, label, _class_id(demo, c))] + [
            float(np.clip(z[d], -4, 4)) for d, _ in dims
        ]

    def move(z: list[float] | None, label: int | None, c: str, *values: float) -> Any:
        if z is None:
            raise DemoError("encode an image first")
        z = list(z)
        for (d, _), v in zip(dims, values):
            z[d] = float(v)
        return demo.decode(z, label, _class_id(demo, c))

    button.click(_errors(gr, encode), [index, upload, cls], [recon, z_state, label_state, decoded, *sliders])
    for s in sliders:
        s.release(_errors(gr, move), [z_state, label_state, cls, *sliders], decoded)
    gr.Markdown("Interpolate: decoder means on the straight line between the codes of two images.")
    with gr.Row():
        a_index, a_upload = _image_source(gr, demo, i, "image a", 0)
        b_index, b_upload = _image_source(gr, demo, i, "image b", 1)
        steps = gr.Slider(2, 32, value=10, step=1, label="steps", elem_id=f"interp-steps-{i}")
        button_i = gr.Button("Interpolate", elem_id=f"interpolate-{i}")
    interp = _picture(
        gr,
        "interpolation",
        elem_id=f"interp-{i}",
    )

    def interpolate(ai: float, au: str | None, bi: float, bu: str | None, s: float, c: str) -> Any:
        a, la = demo.image(int(ai or 0), au)
        b, _ = demo.image(int(bi or 0), bu)
        return demo.interpolate(a, b, int(s), la, _class_id(demo, c))

    button_i.click(_errors(gr, interpolate), [a_index, a_upload, b_index, b_upload, steps, cls], interp)


def _translate_panel(gr: Any, demo: RunDemo, i: int) -> None:
    names = {"x": "image", "text": "caption", "audio": "audio"}
    for source, target in demo.translations():
        tag = f"{source}-{target}-{i}"
        gr.Markdown(f"### {names[source]} -> {names[target]}")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                if source == "text":
                    caption = gr.Textbox(label="caption", lines=2, elem_id=f"caption-{tag}")
                    index = upload = None
                else:
                    caption = None
                    index, upload = _image_source(gr, demo, i, f"{names[source]} source", 0)
                n = gr.Slider(1, 32, value=8, step=1, label=f"number of {names[target]}s", elem_id=f"n-{tag}")
                seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id=f"seed-{tag}")
                button = gr.Button("Translate", variant="primary", elem_id=f"translate-{tag}")
            with gr.Column(scale=3):
                image = _picture(
                    gr,
                    "translation",
                    visible=target != "audio",
                    elem_id=f"translation-{tag}",
                )
                audio = gr.Audio(
                    label="clips, 0.25 s apart",
                    type="filepath",
                    interactive=False,
                    visible=target == "audio",
                    elem_id=f"translation-audio-{tag}",
                )
                text = gr.Textbox(
                    label="captions", lines=6, interactive=False, visible=target == "text", elem_id=f"captions-{tag}"
                )

        def run(*args: Any, source: str = source, target: str = target) -> tuple[Any, Any, Any]:
            if source == "text":
                cap, n_v, seed_v = args
                out = demo.translate(source, target, text=cap or "", n=int(n_v), seed=int(seed_v or 0))
            else:
                idx, up, n_v, seed_v = args
                out = demo.translate(source, target, index=int(idx or 0), upload=up, n=int(n_v), seed=int(seed_v or 0))
            return out.image, out.text, out.audio

        inputs = [caption] if source == "text" else [index, upload]
        button.click(_errors(gr, run), [*inputs, n, seed], [image, text, audio])


def _results_panel(gr: Any, demo: RunDemo, i: int) -> None:
    rows = demo.eval_rows()
    if rows:
        gr.Markdown(f"`{demo.path / R.EVAL_FILE}`: what `genlab eval` measured, with units.")
        gr.Dataframe(rows, headers=["metric", "value", "unit"], interactive=False, elem_id=f"eval-{i}")
    else:
        gr.Markdown(f"No `{R.EVAL_FILE}` yet: `genlab eval {demo.path}` writes it.")
    curve = demo.curve()
    if curve is not None:
        _picture(gr, "validation curve", value=curve, elem_id=f"curve-{i}")
    else:
        gr.Markdown(f"No validation curve yet (`{R.METRICS_FILE}` has no `val_*` record).")


def build_app(demos: Sequence[RunDemo]) -> Any:
    """The Gradio page of ``demos``: a tab per run (when there are several), each with the panels the
    run's model supports (Sample, Encode, Translate) and its Results (eval.json and validation
    curve). Element ids end in the run's position (``sample-0``, ``sample-image-0``, ...), for
    tests and scripts that drive the page."""
    gr = import_gradio()
    with gr.Blocks(title="genlab demo", analytics_enabled=False) as app:
        gr.Markdown("## genlab demo\nEverything runs on this machine; nothing is sent anywhere.")
        for i, demo in enumerate(demos):
            outer = gr.Tab(demo.name, elem_id=f"run-{i}") if len(demos) > 1 else contextlib.nullcontext()
            with outer:
                gr.Markdown(demo.describe())
                with gr.Tabs():
                    if demo.can_sample:
                        with gr.Tab("Sample", elem_id=f"tab-sample-{i}"):
                            _sample_panel(gr, demo, i)
                    if demo.can_encode:
                        with gr.Tab("Encode", elem_id=f"tab-encode-{i}"):
                            _encode_panel(gr, demo, i)
                    if demo.translations():
                        with gr.Tab("Translate", elem_id=f"tab-translate-{i}"):
                            _translate_panel(gr, demo, i)
                    with gr.Tab("Results", elem_id=f"tab-results-{i}"):
                        _results_panel(gr, demo, i)
    return app


def serve(
    demos: Sequence[RunDemo], host: str = "127.0.0.1", port: int = 7860, open_browser: bool = False, block: bool = True
) -> str:
    """Start the page of ``demos`` on ``host``:``port`` (127.0.0.1: this machine only) and return its
    address; with ``block`` wait until Ctrl-C. Raises DemoError when the port is taken."""
    gr = import_gradio()
    app = build_app(demos)
    try:
        _, url, _ = app.launch(
            server_name=host,
            server_port=port,
            inbrowser=open_browser,
            prevent_thread_lock=True,
            quiet=True,
            share=False,
            ssr_mode=False,
            theme=theme(gr),
            footer_links=[],
            pwa=False,
            mcp_server=False,
        )
    except OSError as e:
        why = "is in use" if "empty port" in str(e) else f"cannot be opened ({str(e).splitlines()[0]})"
        raise DemoError(f"port {port} on {host} {why}; pass another --port") from None
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return url
