"""``shapes-av``: ``shapes-captions`` with a third modality, a short clip whose sound encodes the
factors of the same example, and :func:`decode_audio`, which reads them back (as ``parse_caption``
does for the caption), so cross-modal coherence can be measured for every pair of modalities.

Each clip is 1,000 samples at 4 kHz (0.25 s) of 8-bit mu-law audio in [-1, 1], like ``tones``:

- colour -> pitch: fundamentals 165, 196, 233, 277, 330, 392, 466 Hz (red ... white), three
  semitones apart (ratio 2^(1/4) = 1.19), so a +-1.5 % pitch jitter stays far from the next one;
- shape -> waveform, band-limited (harmonics k*f below 1,800 Hz, i.e. 0.9 x Nyquist): square ->
  square wave (odd harmonics, amplitude 1/k), ellipse -> sine (the fundamental alone), heart ->
  sawtooth (every harmonic, 1/k);
- scale -> loudness: RMS 0.35 * 0.6^(5 - scale), i.e. 0.027, 0.045, 0.076, 0.13, 0.21, 0.35
  (steps of 4.4 dB, each far above the ~40 dB signal-to-quantization ratio of 8-bit mu-law);
- horizontal region -> envelope, a temporal "pan": left fades out (1 -> ~0.25 over the clip),
  centre is flat, right fades in (~0.25 -> 1). Orientation and the vertical position are not heard.

Per-example jitter, seeded by the example's grid index (and the ``seed`` option) through a
counter-based hash, so a clip depends on its example alone, not on the split or ``n``: loudness
+-8 %, each harmonic's amplitude +-10 %, the envelope's far end 0.2..0.3, and white noise of
standard deviation 0.002. With ``phase="random"`` also pitch +-1.5 % and each harmonic's phase.

Why phases are fixed by default: a decoder that models each sample given the latent (the multimodal
VAEs' factorized mu-law likelihood) can only reproduce what the factors predict sample by sample.
With a random phase per harmonic (and a pitch jitter that drifts by half a period over the clip), the
conditional mean of every sample is near silence whatever the pitch and timbre, so such a decoder
learns loudness and envelope but never pitch or waveform: cross-modal generation into audio cannot
be coherent in colour or shape. ``phase="random"`` keeps that harder, more natural variant (for
phase-invariant models, e.g. autoregressive ones). :func:`decode_audio` uses one FFT (Hann
window): pitch from the spectral peak, waveform from the 2nd and 3rd harmonic amplitude ratios,
loudness from the RMS, envelope from the RMS of the first against the last quarter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from .audio import mu_law_decode, mu_law_encode
from .base import InvalidDataError, TensorDataset
from .shapes import CAPTION_FACTOR_NAMES, CAPTION_FACTOR_SIZES, CAPTION_GRID, caption_factors, load_shapes_captions
from .spec import DataSpec

SAMPLE_RATE = 4000
AUDIO_LEN = 1000
#: What a clip determines: the captioned factors except the vertical region (same names and sizes).
AUDIO_FACTOR_NAMES: tuple[str, ...] = CAPTION_FACTOR_NAMES[:4]  # shape, scale, colour, region_x
AUDIO_FACTOR_SIZES: tuple[int, ...] = CAPTION_FACTOR_SIZES[:4]
#: Fundamental frequency (Hz) per colour index (red, green, blue, yellow, magenta, cyan, white).
COLOUR_PITCH_HZ: tuple[float, ...] = (165.0, 196.0, 233.0, 277.0, 330.0, 392.0, 466.0)
#: Waveform per shape index (square, ellipse, heart).
SHAPE_WAVEFORMS: tuple[str, ...] = ("square", "sine", "sawtooth")
#: RMS level per scale index (tiny ... giant).
SCALE_RMS: tuple[float, ...] = tuple(0.35 * 0.6 ** (5 - k) for k in range(6))
#: Envelope per horizontal region (left, centre, right).
REGION_ENVELOPES: tuple[str, ...] = ("fade-out", "flat", "fade-in")

_MAX_HARMONIC = 10  # 10 x 165 Hz = 1,650 Hz: every harmonic below the band edge of the lowest pitch
_BAND_EDGE = 0.45  # harmonics kept below 0.45 x the sample rate (0.9 x Nyquist): band-limited
_PITCH_JITTER, _LEVEL_JITTER, _HARMONIC_JITTER, _NOISE = 0.015, 0.08, 0.10, 0.002
_ENV_END = (0.2, 0.3)
#: Values of the ``phase`` option of ``shapes-av``.
PHASE_MODES: tuple[str, ...] = ("fixed", "random")
_TABLE = 512  # samples per period of the wavetable (a power of 2: positions wrap by a bit mask)
_CHUNK = 1024
# Decoder thresholds, halfway (in ratio) between the encoded classes: a sawtooth has a2/a1 = 1/2,
# square and sine 0; a square has a3/a1 = 1/3, a sine 0. Fade-out gives RMS(first quarter) /
# RMS(last quarter) ~ 2.5, flat 1, fade-in ~ 0.4.
_SAW_R2, _SQUARE_R3, _ENV_RATIO = 0.25, 0.15, 1.6
_PITCH_BAND_HZ = (120.0, 560.0)


# --- a counter-based hash: per-example random numbers, independent of the split ---------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (Steele et al. 2014): a bijection that scrambles bits."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))  # uint64 arithmetic wraps modulo 2^64, as the algorithm needs


def _uniform(keys: np.ndarray, stream: int, count: int) -> np.ndarray:
    """Uniform numbers in [0, 1) [N, count]: value j of stream ``stream`` of each example's key."""
    with np.errstate(over="ignore"):
        ctr = np.uint64(stream) * np.uint64(1 << 32) + np.arange(count, dtype=np.uint64)
        z = _splitmix64(keys[:, None] ^ _splitmix64(ctr)[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _normal(keys: np.ndarray, stream: int, count: int) -> np.ndarray:
    """Approximately standard normal numbers [N, count]: the sum of the four 16-bit quarters of one
    hash each (Irwin-Hall with 4 terms, rescaled to unit variance; tails end at +-3.5)."""
    with np.errstate(over="ignore"):
        ctr = np.uint64(stream) * np.uint64(1 << 32) + np.arange(count, dtype=np.uint64)
        z = _splitmix64(keys[:, None] ^ _splitmix64(ctr)[None, :])
    mask = np.uint64(0xFFFF)
    total = sum(((z >> np.uint64(16 * i)) & mask).astype(np.float32) for i in range(4))  # mean 4 x 32767.5
    return (total * np.float32(2.0**-16) - np.float32(2.0)) * np.float32(np.sqrt(3.0))


def _example_keys(grid_index: np.ndarray, seed: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _splitmix64(_splitmix64(np.asarray(grid_index, dtype=np.uint64)) ^ np.uint64(seed))


# --- encoding -----------------------------------------------------------------------------------------


def audio_factors(factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Caption-set factor rows [N, 6] -> the factors a clip encodes [N, 4] int64
    (:data:`AUDIO_FACTOR_NAMES`: shape, scale, colour, region_x)."""
    return caption_factors(factors)[:, :4]


def synth_audio(factors: np.ndarray | Sequence[Sequence[int]], seed: int = 0, phase: str = "fixed") -> np.ndarray:
    """Caption-set factor rows [N, 6] -> clips float32 [N, 1000] on the 8-bit mu-law grid in [-1, 1]
    (see the module docstring; ``phase``: "fixed" or "random" harmonic phases and pitch jitter).
    Deterministic given each row (its grid index), ``seed`` and ``phase``."""
    f = CAPTION_GRID.check_factors(factors)
    if phase not in PHASE_MODES:
        raise InvalidDataError(f"phase={phase!r}; expected one of {', '.join(map(repr, PHASE_MODES))}")
    keys = _example_keys(CAPTION_GRID.factors_to_index(f), seed)
    out = np.empty((len(f), AUDIO_LEN), dtype=np.float32)
    for start in range(0, len(f), _CHUNK):
        raw = _synth_chunk(audio_factors(f[start : start + _CHUNK]), keys[start : start + _CHUNK], phase == "random")
        out[start : start + _CHUNK] = mu_law_decode(mu_law_encode(torch.from_numpy(raw))).numpy()
    return out


def _synth_chunk(af: np.ndarray, keys: np.ndarray, random_phase: bool) -> np.ndarray:
    n, length, K = len(af), AUDIO_LEN, _MAX_HARMONIC
    shape, scale, colour, region_x = af.T
    u = _uniform(keys, 0, 4 + 2 * K) * 2 - 1  # [n, ...] in [-1, 1): scalar jitters, then per harmonic
    if not random_phase:  # the same draws for the other jitters, so both modes share them
        u[:, 0], u[:, 4 + K :] = 0.0, 0.0
    pitch = np.array(COLOUR_PITCH_HZ)[colour] * (1 + _PITCH_JITTER * u[:, 0])
    level = np.array(SCALE_RMS)[scale] * (1 + _LEVEL_JITTER * u[:, 1])
    env_end = _ENV_END[0] + (_ENV_END[1] - _ENV_END[0]) * (u[:, 2] + 1) / 2
    k = np.arange(1, K + 1)
    amp = np.where(k[None] % 2 == 1, 1.0 / k[None], 0.0)  # square: odd harmonics 1/k
    amp = np.where((shape == 2)[:, None], 1.0 / k[None], amp)  # sawtooth: all harmonics 1/k
    amp = np.where((shape == 1)[:, None], (k[None] == 1).astype(np.float64), amp)  # sine
    amp = amp * (1 + _HARMONIC_JITTER * u[:, 4 : 4 + K]) * (k[None] * pitch[:, None] < _BAND_EDGE * SAMPLE_RATE)
    phase = np.pi * u[:, 4 + K : 4 + 2 * K]
    # One period of each example's waveform, sum_k amp_k sin(2 pi k p + phase_k) at p = j / _TABLE,
    # by one inverse FFT; the clip reads it at phase f t (mod 1) with linear interpolation, whose
    # error (< 3e-4 of the amplitude at the 10th harmonic) is far below the 8-bit mu-law steps.
    spectrum = np.zeros((n, _TABLE // 2 + 1), dtype=np.complex128)
    spectrum[:, 1 : K + 1] = amp * np.exp(1j * (phase - np.pi / 2)) * (_TABLE / 2)
    table = np.fft.irfft(spectrum, _TABLE, axis=1).ravel()  # [n * _TABLE]: one period per example
    pos = pitch[:, None] * (np.arange(length) * (_TABLE / SAMPLE_RATE))[None]  # [n, T] in table steps
    j = pos.astype(np.int64)
    frac = pos - j
    base = (np.arange(n) * _TABLE)[:, None]
    wave = table[base + (j & (_TABLE - 1))] * (1 - frac) + table[base + ((j + 1) & (_TABLE - 1))] * frac
    ramp = np.linspace(0.0, 1.0, length)[None]
    fade_out = 1 - (1 - env_end[:, None]) * ramp
    env = np.where((region_x == 0)[:, None], fade_out, np.where((region_x == 2)[:, None], fade_out[:, ::-1], 1.0))
    s = wave * env
    s *= (level / np.sqrt((s * s).mean(1)))[:, None]
    return np.clip(s + _NOISE * _normal(keys, 1, length), -1.0, 1.0)


# --- decoding -----------------------------------------------------------------------------------------


def audio_features(clips: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """The measurements :func:`decode_audio_batch` classifies, each [N], for clips [N, T] (or [T]):

    ``pitch_hz``: the largest peak of the Hann-windowed magnitude spectrum between 120 and 560 Hz,
    refined by a parabola through the log magnitudes of its bin and the two beside it; ``r2``,
    ``r3``: the largest magnitude within +-2 bins of 2 and 3 times the pitch over that of the pitch;
    ``rms``: the clip's RMS; ``envelope_ratio``: RMS of its first quarter over RMS of its last."""
    x = clips.detach().cpu().double().numpy() if isinstance(clips, torch.Tensor) else np.asarray(clips, np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 64:
        raise InvalidDataError(f"audio clips have shape {x.shape}; expected [N, T] or [T] with T >= 64 samples")
    if not np.isfinite(x).all():
        raise InvalidDataError("audio clips hold NaN or inf values; expected finite samples in [-1, 1]")
    n, length = x.shape
    mag = np.abs(np.fft.rfft(x * np.hanning(length)[None], axis=1))  # [N, F]
    bin_hz = sample_rate / length
    lo, hi = (int(np.ceil(b / bin_hz)) for b in _PITCH_BAND_HZ)
    lo, hi = max(lo, 1), min(hi, mag.shape[1] - 2)
    peak = lo + mag[:, lo : hi + 1].argmax(1)
    rows = np.arange(n)
    ya, yb, yc = (np.log(mag[rows, peak + d] + 1e-12) for d in (-1, 0, 1))
    denom = ya - 2 * yb + yc
    offset = np.where(np.abs(denom) > 1e-12, 0.5 * (ya - yc) / np.where(denom == 0, 1, denom), 0.0)
    f0 = (peak + np.clip(offset, -0.5, 0.5)) * bin_hz

    def harmonic(k: int) -> np.ndarray:  # largest magnitude within +-2 bins of k * f0
        centre = np.round(k * f0 / bin_hz).astype(np.int64)
        idx = np.clip(centre[:, None] + np.arange(-2, 3)[None], 0, mag.shape[1] - 1)
        return mag[rows[:, None], idx].max(1)

    a1 = harmonic(1) + 1e-12
    q = length // 4
    return {
        "pitch_hz": f0,
        "r2": harmonic(2) / a1,
        "r3": harmonic(3) / a1,
        "rms": np.sqrt((x * x).mean(1)),
        "envelope_ratio": (np.sqrt((x[:, :q] ** 2).mean(1)) + 1e-9) / (np.sqrt((x[:, -q:] ** 2).mean(1)) + 1e-9),
    }


def decode_audio_batch(clips: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Clips [N, T] (or one clip [T]) -> decoded factors int64 [N, 4] (:data:`AUDIO_FACTOR_NAMES`),
    from :func:`audio_features`: colour = the colour pitch nearest ``pitch_hz`` (in log frequency);
    shape = sawtooth (heart) if ``r2`` > 0.25, else square if ``r3`` > 0.15, else sine (ellipse);
    scale = the level nearest ``rms`` (in log); region_x = left (fade-out) if ``envelope_ratio`` >
    1.6, right (fade-in) if < 1/1.6, else centre. Any finite input gets an answer (silence decodes
    to the quietest level), so generated clips can be scored."""
    feats = audio_features(clips, sample_rate)
    colour = np.abs(np.log(feats["pitch_hz"])[:, None] - np.log(COLOUR_PITCH_HZ)[None]).argmin(1)
    shape = np.where(feats["r2"] > _SAW_R2, 2, np.where(feats["r3"] > _SQUARE_R3, 0, 1))
    scale = np.abs(np.log(feats["rms"] + 1e-12)[:, None] - np.log(SCALE_RMS)[None]).argmin(1)
    ratio = feats["envelope_ratio"]
    region_x = np.where(ratio > _ENV_RATIO, 0, np.where(ratio < 1 / _ENV_RATIO, 2, 1))
    return np.stack([shape, scale, colour, region_x], 1).astype(np.int64)


def decode_audio(clip: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> dict[str, int]:
    """One clip [T] -> its factors, a dict with keys :data:`AUDIO_FACTOR_NAMES` (factor indices, the
    same names and values as :func:`~genlab.data.shapes.parse_caption` gives for those factors)."""
    arr = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    if arr.ndim != 1:
        raise InvalidDataError(f"audio clip has shape {arr.shape}; expected one clip [T] (decode_audio_batch: [N, T])")
    row = decode_audio_batch(arr, sample_rate)[0]
    return {name: int(v) for name, v in zip(AUDIO_FACTOR_NAMES, row)}


# --- the data set -------------------------------------------------------------------------------------


def load_shapes_av(
    split: str = "train", n: int | None = None, seed: int = 0, size: int = 32, phase: str = "fixed"
) -> TensorDataset:
    """One split of ``shapes-av``: the examples of ``shapes-captions`` with the same split, options and
    tensors (``"x"`` image, ``"text"`` caption tokens, ``"factors"``, ``"y"``) plus ``"audio"`` float32
    [N, 1000], each clip encoding its example's shape, scale, colour and horizontal region (see the
    module docstring; :func:`decode_audio` reads them back; ``phase``: "fixed" (default) or "random"
    harmonic phases and pitch jitter, the module docstring says why). ``spec.modalities`` describes
    ``"x"``, ``"text"`` and ``"audio"``."""
    if phase not in PHASE_MODES:
        raise InvalidDataError(f"phase={phase!r}; expected one of {', '.join(map(repr, PHASE_MODES))}")
    base = load_shapes_captions(split, n, seed, size)
    audio = torch.from_numpy(synth_audio(base.tensors["factors"].numpy(), seed, phase))
    audio_spec = DataSpec(
        name="audio",
        kind="audio",
        shape=(AUDIO_LEN,),
        value_range=(-1.0, 1.0),
        extra={"sample_rate": SAMPLE_RATE, "encoding": "mu-law-8bit"},
    )
    spec = dataclasses.replace(
        base.spec,
        name="shapes-av",
        extra={
            **base.spec.extra,
            "audio_factor_names": list(AUDIO_FACTOR_NAMES),
            "audio_factor_sizes": list(AUDIO_FACTOR_SIZES),
            "audio_phase": phase,
        },
        modalities={**base.spec.modalities, "audio": audio_spec},
    )
    return TensorDataset({**base.tensors, "audio": audio}, spec, split)
