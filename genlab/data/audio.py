"""Audio: 8-bit mu-law companding, a WAV writer/reader (stdlib ``wave``) and ``tones``, a procedural
data set of short melodies for WaveNet-style models.

Mu-law (ITU-T G.711; as used by WaveNet, van den Oord et al. 2016): compress a signal s in [-1, 1]
with F(s) = sign(s) ln(1 + mu |s|) / ln(1 + mu), mu = L - 1, then quantize F(s) to L uniform
levels. Quiet samples get finer steps than loud ones, which matches hearing and makes a 256-way
categorical output enough for speech and music.

``tones``: each clip is a melody of notes drawn from a pentatonic scale (A3..A5), each note a
sine with a second harmonic, an attack/decay envelope, a random gain, plus white noise. Every
value is stored on the 8-bit mu-law grid (x = decode(encode(s))), so the data set *is* 8-bit
mu-law audio and a model's probability of the codes is an exact likelihood of the data.
"""

from __future__ import annotations

import math
import os
import wave
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import InvalidDataError, TensorDataset, check_split
from .spec import DataSpec

#: Default clip sizes per split (the generator is procedural, so any size is possible).
DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 200}
_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}
#: A minor pentatonic over two octaves, in Hz (A3 = 220 Hz .. A5 = 880 Hz).
PENTATONIC = tuple(220.0 * 2 ** (s / 12) for s in (0, 3, 5, 7, 10, 12, 15, 17, 19, 22, 24))


def mu_law_encode(x: Tensor, levels: int = 256) -> Tensor:
    """Signal in [-1, 1] (clipped) -> long codes 0..L-1: companding with mu = L - 1, then
    rounding to L uniform levels of the companded value."""
    mu = levels - 1
    x = x.clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)  # in [-1, 1]
    return torch.round((y + 1) / 2 * mu).long().clamp_(0, mu)


def mu_law_decode(codes: Tensor, levels: int = 256, dtype: torch.dtype = torch.float32) -> Tensor:
    """Codes 0..L-1 -> signal in [-1, 1] (the inverse of the companding at each level's centre)."""
    mu = levels - 1
    # In float64, then rounded: float32 pow differs by an ulp between vectorised and tail lanes, so
    # the same code decoded in batches of different sizes would not give bit-identical clips.
    wide = torch.float32 if codes.device.type == "mps" else torch.float64  # MPS has no float64
    y = codes.to(wide) / mu * 2 - 1
    return (torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu).to(dtype)


def write_wav(path: str | os.PathLike, audio: Tensor | np.ndarray, sample_rate: int, gap: float = 0.25) -> Path:
    """Write audio in [-1, 1] as a 16-bit mono PCM WAV file; [T] is one clip, [N, T] writes the
    clips one after another with ``gap`` seconds of silence between them. Returns the path."""
    a = audio.detach().cpu().double().numpy() if isinstance(audio, Tensor) else np.asarray(audio, dtype=np.float64)
    if a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"write_wav expects audio [T] or [N, T]; got shape {a.shape}")
    if a.ndim == 2:
        silence = np.zeros((a.shape[0], int(gap * sample_rate)))
        a = np.concatenate([a, silence], 1).reshape(-1)
    pcm = np.round(np.clip(a, -1.0, 1.0) * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return path


def read_wav(path: str | os.PathLike, *, mono: bool = False) -> tuple[np.ndarray, int]:
    """An 8- or 16-bit PCM WAV file -> (float64 samples [T] in [-1, 1] of its first channel, sample
    rate). ``mono=True`` refuses files with more than one channel. A file that is missing, not a PCM
    WAV, of another sample width, truncated or empty raises a one-line InvalidDataError naming it."""
    name = str(path)
    try:
        with wave.open(name, "rb") as w:
            width, channels, rate, frames = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            if width not in (1, 2):
                raise InvalidDataError(f"WAV file {name!r} has {8 * width}-bit samples; expected 8- or 16-bit PCM")
            if mono and channels != 1:
                raise InvalidDataError(f"WAV file {name!r} has {channels} channels; expected mono")
            raw = w.readframes(frames)
    except InvalidDataError:
        raise
    except (wave.Error, EOFError, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidDataError(f"WAV file {name!r} cannot be read ({reason}); expected 8- or 16-bit PCM") from None
    if frames == 0 or len(raw) < frames * width * channels:
        held = len(raw) // (width * channels)
        raise InvalidDataError(f"WAV file {name!r} is empty or truncated: it declares {frames} frames, holds {held}")
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    else:
        samples = np.frombuffer(raw, dtype="<i2") / 32767.0
    return np.clip(samples.reshape(-1, channels)[:, 0], -1.0, 1.0), rate


def synth_tones(
    n: int, length: int, sample_rate: int, note_length: int, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """[n, length] float64 melodies in [-1, 1] (before quantization); see the module docstring."""
    n_notes = math.ceil(length / note_length)
    freqs = np.array(PENTATONIC)[rng.integers(0, len(PENTATONIC), (n, n_notes))]  # (n, notes)
    gains = rng.uniform(0.3, 0.8, (n, n_notes))
    phases = rng.uniform(0, 2 * np.pi, (n, n_notes))
    t = np.arange(note_length) / sample_rate  # (note,)
    env = np.minimum(1.0, t / 0.005) * np.exp(-t / 0.08)  # 5 ms attack, 80 ms decay
    arg = 2 * np.pi * freqs[..., None] * t + phases[..., None]  # (n, notes, note)
    notes = (np.sin(arg) + 0.3 * np.sin(2 * arg)) / 1.3 * env * gains[..., None]
    clip = notes.reshape(n, -1)[:, :length]
    return np.clip(clip + noise * rng.standard_normal(clip.shape), -1.0, 1.0)


def load_tones(
    split: str = "train",
    n: int | None = None,
    length: int = 1024,
    sample_rate: int = 4000,
    note_length: int = 256,
    noise: float = 0.01,
    seed: int = 0,
) -> TensorDataset:
    """One split of ``tones``: ``"x"`` float32 [N, length] in [-1, 1] on the 8-bit mu-law grid.

    Defaults: 2,000 / 200 / 200 clips of 1,024 samples at 4 kHz (0.256 s: four 64 ms notes);
    splits come from different seeds. Spec: kind "audio", shape (length,), value_range (-1, 1),
    ``levels=None`` (the grid is not uniform), ``extra`` = sample_rate and encoding "mu-law-8bit".
    """
    check_split(split)
    for key, val in {"length": length, "sample_rate": sample_rate, "note_length": note_length}.items():
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise InvalidDataError(f"{key}={val!r} is invalid; expected a positive integer")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise InvalidDataError(f"number of clips n={n!r} is invalid; expected a positive integer")
    if split == "all":
        parts = [
            load_tones(s, None, length, sample_rate, note_length, noise, seed).tensors["x"]
            for s in ("train", "val", "test")
        ]
        x = torch.cat(parts)[: n or None]
    else:
        rng = np.random.default_rng([seed, _SPLIT_SEED[split]])
        raw = torch.from_numpy(synth_tones(n or DEFAULT_SIZES[split], length, sample_rate, note_length, noise, rng))
        x = mu_law_decode(mu_law_encode(raw), dtype=torch.float32)
    spec = DataSpec(
        name="tones",
        kind="audio",
        shape=(int(length),),
        value_range=(-1.0, 1.0),
        extra={"sample_rate": int(sample_rate), "encoding": "mu-law-8bit"},
    )
    return TensorDataset({"x": x}, spec, split)
