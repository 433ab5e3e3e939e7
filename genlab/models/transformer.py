"""A causal transformer language model (GPT) with KV-cache sampling and embedding prefixes.

Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (self-attention); Radford et al.,
"Language Models are Unsupervised Multitask Learners", 2019 (GPT-2: decoder-only, pre-LayerNorm,
learned positions, tied input/output embeddings); Holtzman et al., "The Curious Case of Neural
Text Degeneration", ICLR 2020 (top-p / nucleus sampling). Layout after Karpathy's nanoGPT.

    log p(x | prefix) = sum_t log p(x_t | prefix, x_<t)        (chain rule, exact, in nats)

The input sequence is ``[prefix_embeds (P), <start>, x_1 .. x_{T-1}]``: a learned start vector
lets the model predict x_1 with or without a prefix, so a prefix (e.g. image features mapped by
an adapter, for a frozen LM) can be added in front of any token sequence. Class-conditional
models put a class embedding first in the prefix. Sampling feeds one token at a time and keeps
each layer's keys and values (KV cache): O(T) work per token instead of O(T^2) for re-running.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..distributions import sample_categorical
from ..protocol import Capabilities, GenerativeModel

KVCache = list[dict[str, Tensor]]  # one {"k": (B, nh, S, hs), "v": ...} per layer

#: Dropout of ``dropout=None`` where the data is small (or its size unknown): without dropout a
#: 146 kB text overfits after step 800 of 1,500 (issue 17; ``benchmarks/lm_defaults.py``).
#: nanoGPT's character model on 1 MB of Shakespeare uses 0.2.
SMALL_DATA_DROPOUT = 0.2


def dropout_for_tokens(n_tokens: int | None) -> float:
    """The default dropout for ``n_tokens`` training tokens: ``SMALL_DATA_DROPOUT`` (0.2) up to 1M
    tokens, then falling linearly in log10(n_tokens) to 0.1 at 10M and 0.0 from 100M on (large
    data regularizes itself; GPT-style models trained on billions of tokens use none).

    Non-increasing in ``n_tokens`` and within [0, 0.2]; None (the size is unknown) gives 0.2, as a
    user's text file on a CPU is small far more often than it is large."""
    if n_tokens is None:
        return SMALL_DATA_DROPOUT
    if isinstance(n_tokens, bool) or n_tokens < 0:
        raise ValueError(f"n_tokens must be a count >= 0 or None; got {n_tokens!r}")
    decades = math.log10(max(int(n_tokens), 1) / 1e6)  # decades above 1M tokens
    return SMALL_DATA_DROPOUT * min(1.0, max(0.0, 1.0 - decades / 2.0))


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, cache: dict[str, Tensor] | None = None, dropout: bool | None = None) -> Tensor:
        b, s, d = x.shape  # (B, S, d): S new positions
        q, k, v = (t.view(b, s, self.n_heads, -1).transpose(1, 2) for t in self.qkv(x).split(d, -1))  # (B, nh, S, hs)
        past = 0
        if cache is not None:
            if "k" in cache:
                past = cache["k"].shape[2]
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        mask = None
        if past and s > 1:  # new queries see all cached keys and the new ones causally
            mask = torch.ones(s, past + s, dtype=torch.bool, device=x.device).tril(past)
        p = self.dropout if (self.training if dropout is None else dropout) else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=past == 0 and s > 1)
        return self.proj(y.transpose(1, 2).reshape(b, s, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    ``dropout`` in :meth:`forward` switches dropout (attention weights, both residual branches) on
    or off; None follows the module's training mode (``torch``'s usual rule)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.p = dropout
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor, cache: dict[str, Tensor] | None = None, dropout: bool | None = None) -> Tensor:
        on = self.training if dropout is None else dropout
        x = x + F.dropout(self.attn(self.ln1(x), cache, on), self.p, on)
        return x + F.dropout(self.mlp(self.ln2(x)), self.p, on)


class TransformerLM(GenerativeModel):
    """Causal transformer language model (GPT-2 style) over token ids, with a KV cache.

    Args (the config; vocabulary and length come from ``spec``):
        d_model, n_layers, n_heads: width, depth and attention heads.
        dropout: dropout on the embeddings, attention weights and residual branches of the training
            loss (in training mode; every other method is deterministic). 0 by default: measured on
            a 146 kB text (2026-12-02, ``benchmarks/lm_defaults.py``), 0.2 slows the default 500-step
            run (validation 3.25 vs 2.93 bits/char at step 400). None: :func:`dropout_for_tokens` of
            the training tokens (as the Trainer reports them, :meth:`on_train_data`, or
            ``spec.extra["train_tokens"]``; 0.2 until known), and 0 on captions (``source="text"``).
        max_prefix: the most prefix positions (class embedding + ``prefix_embeds``) allowed.
        source: the batch key of the tokens: ``"x"`` (token data sets, e.g. a .txt file) or
            ``"text"`` (the captions of ``shapes-captions``).
        conditional: condition on the class (``batch["y"]``) through a one-position prefix.
        context_words: 0 (default) trains on the plain NLL; k > 0 puts, at every training step, a
            random number 0..k of each sequence's own tokens (special tokens excluded, random order)
            in front as ``prefix_embeds`` (:meth:`context_loss`), so the LM learns to read a prefix --
            what a frozen LM needs before images can steer it through one (``frozen``). Validation and
            ``log_prob`` stay the plain NLL.
    """

    likelihood = "exact"
    capabilities = Capabilities(
        encode=True,
        conditional=True,
        sample_options=("temperature", "top_k", "top_p", "length", "prefix_embeds", "use_cache"),
        figures=("samples",),
        notes="KV-cache sampling; prefix_embeds in log_prob/sample/encode; encode: mean hidden state",
    )
    #: Training settings for a ~1-minute CPU run, applied by ``genlab train`` under the user's own.
    #: nanoGPT's small-data recipe (``--set weight_decay=0.1 --set schedule=cosine --set warmup=100
    #: --set grad_clip=1``) was measured on a 146 kB text (2026-12-02, ``benchmarks/lm_defaults.py``):
    #: validation 2.39 bits/char after 500 steps instead of 2.52, but test 2.95 against 2.96, and
    #: 2.86 against 2.87 on the Vim manual; not a default until a held-out gain shows (issue 17).
    train_defaults = {"steps": 500, "batch_size": 32, "lr": 2e-3, "eval_every": 100}
    #: ``log_prob`` takes any T <= seq_len and is causal: the first k tokens' log-probability is the
    #: sum of the first k terms (``genlab.evaluate.stream_log_prob`` relies on it).
    variable_length = True

    def __init__(
        self,
        spec: DataSpec,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        dropout: float | None = 0.0,
        max_prefix: int = 16,
        source: str = "x",
        conditional: bool = False,
        context_words: int = 0,
    ) -> None:
        super().__init__(spec)
        if isinstance(context_words, bool) or not 0 <= context_words <= max_prefix:
            raise ValueError(f"context_words must be an integer 0..max_prefix ({max_prefix}); got {context_words!r}")
        if context_words and conditional:
            raise ValueError("context_words > 0 puts context in the prefix: it cannot be used with conditional=True")
        self.context_words = int(context_words)
        if source == "x" and spec.kind != "tokens":
            raise ValueError(
                "the transformer models token ids; "
                f"data set {spec.name!r} has kind {spec.kind!r} (captions: source='text')"
            )
        if source == "text" and not (spec.vocab and "text_len" in spec.extra):
            raise ValueError(f"source='text' needs a data set with captions ('text' tokens); {spec.name!r} has none")
        if source not in ("x", "text"):
            raise ValueError(f"source must be 'x' or 'text'; got {source!r}")
        if source == "text" and conditional:
            raise ValueError(
                "conditional=True with source='text' is not supported yet (needs a data-key hook in the trainer)"
            )
        self._init_conditioning(conditional)
        # dropout=None: from the data size, now if the spec records it, else when a Trainer reports
        # it (on_train_data). Captions (source="text") come from a procedural grid: nothing to fight.
        self._auto_dropout = dropout is None and source == "x"
        if dropout is None:
            dropout = 0.0 if source == "text" else dropout_for_tokens(spec.extra.get("train_tokens"))
        if isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) or None (from the data size); got {dropout!r}")
        self.dropout = float(dropout)
        if d_model % n_heads or min(d_model, n_layers, n_heads) < 1 or max_prefix < 0:
            raise ValueError(
                "need d_model divisible by n_heads, positive sizes and max_prefix >= 0; "
                f"got {d_model}, {n_layers}, {n_heads}, {max_prefix}"
            )
        self.source, self.discrete = source, True
        self.data_key = source  # the batch key this model scores (for a trainer that asks)
        self.vocab_size = len(spec.vocab) if source == "text" else int(spec.levels or spec.vocab_size or 0)
        self.seq_len = int(spec.extra["text_len"]) if source == "text" else spec.shape[0]
        if self.vocab_size < 2:
            raise ValueError(f"token data set {spec.name!r} needs levels (vocabulary size) >= 2")
        self.d_model, self.max_prefix = d_model, max_prefix
        self.tok_emb = nn.Embedding(self.vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_prefix + self.seq_len + 1, d_model)  # prefix, <start>, x_1..x_T
        self.start = nn.Parameter(torch.zeros(d_model))
        self.cls_emb = nn.Embedding(spec.num_classes, d_model) if conditional else None
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layers))

    def on_train_data(self, n: int) -> None:
        """Told the number ``n`` of training sequences (of T tokens) by the Trainer: with
        ``dropout=None`` the dropout becomes :func:`dropout_for_tokens` of n * T (a user's value stays)."""
        if self._auto_dropout:
            self.dropout = dropout_for_tokens(int(n) * self.seq_len)
            for m in self.modules():
                if isinstance(m, Block):
                    m.p = m.attn.dropout = self.dropout

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    # --- the network --------------------------------------------------------------------------
    def head(self, h: Tensor) -> Tensor:
        """Logits [..., V] from hidden states [..., d]: the output layer is the token embedding
        (tied, GPT-2), applied functionally so checkpoints hold no shared tensors."""
        return F.linear(h, self.tok_emb.weight)

    def _prefix(self, n: int, cond: Tensor | None, prefix_embeds: Tensor | None) -> Tensor:
        """[n, P+1, d]: class embedding (conditional), ``prefix_embeds``, then the <start> vector."""
        parts = []
        c = self.cond_embedding(cond, self.start)  # (n, K) one-hot, or None
        if c is not None:  # the class embedding: one-hot times the table (a lookup for class ids)
            parts.append((c @ self.cls_emb.weight)[:, None])  # (n, 1, d)
        if prefix_embeds is not None:
            if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != n or prefix_embeds.shape[2] != self.d_model:
                raise ValueError(f"prefix_embeds must be [{n}, P, {self.d_model}]; got {tuple(prefix_embeds.shape)}")
            parts.append(prefix_embeds.to(self.start.dtype))
        if sum(p.shape[1] for p in parts) > self.max_prefix:
            raise ValueError(
                f"prefix of {sum(p.shape[1] for p in parts)} positions exceeds max_prefix={self.max_prefix}"
            )
        parts.append(self.start.expand(n, 1, -1))
        return torch.cat(parts, 1)

    def _run(self, h: Tensor, pos0: int = 0, cache: KVCache | None = None, dropout: bool = False) -> Tensor:
        """Final hidden states [B, S, d] of input embeddings ``h`` [B, S, d] at positions pos0..

        Dropout (on the embeddings and in every block) only with ``dropout=True``, which the training
        loss alone passes: ``log_prob``, ``sample``, ``encode`` and PPLM steering (which calls this
        directly) are deterministic in training mode too, e.g. on a freshly built model."""
        pos = torch.arange(pos0, pos0 + h.shape[1], device=h.device)
        h = F.dropout(h + self.pos_emb(pos), self.dropout, dropout)
        for i, block in enumerate(self.blocks):
            h = block(h, None if cache is None else cache[i], dropout)
        return self.ln_f(h)

    def forward(
        self, x: Tensor, cond: Tensor | None = None, prefix_embeds: Tensor | None = None, dropout: bool = False
    ) -> Tensor:
        """Teacher-forced logits [B, T, V]: row t holds log-odds of p(x_t | prefix, x_<t); dropout
        only with ``dropout=True`` (the training loss)."""
        pre = self._prefix(x.shape[0], cond, prefix_embeds)  # (B, P+1, d)
        h = self._run(torch.cat([pre, self.tok_emb(x[:, :-1])], 1), dropout=dropout)  # (B, P+T, d)
        return self.head(h[:, pre.shape[1] - 1 :])  # (B, T, V)

    # --- the protocol -------------------------------------------------------------------------
    def condition(self, batch: dict[str, Tensor]) -> Tensor | None:
        # The trainer and likelihood metrics call log_prob(batch["x"], model.condition(batch)). On
        # captions "x" is the image, so the caption tokens travel as cond (see log_prob) until the
        # trainer can ask a model which batch key it models.
        return batch["text"] if self.source == "text" else super().condition(batch)

    def _check(self, x: Tensor) -> Tensor:
        if x.is_floating_point() or x.dim() != 2 or x.shape[1] > self.seq_len:
            raise ValueError(f"expected token ids long [B, T <= {self.seq_len}]; got {x.dtype} {tuple(x.shape)}")
        return x.long()

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean NLL per *token* in nats ("loss"), and the same in bits ("bits_per_token"); in training
        mode with ``context_words > 0``, the NLL with a context prefix (:meth:`context_loss`)."""
        if self.context_words and self.training:
            return self.context_loss(batch, self.context_words)
        x = self._check(batch[self.source])
        logits = self(x, None if self.source == "text" else self.condition(batch), dropout=self.training)
        nll = F.cross_entropy(logits.reshape(-1, self.vocab_size), x.reshape(-1))
        return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}

    def context_loss(self, batch: dict[str, Tensor], max_words: int) -> dict[str, Tensor]:
        """The NLL per token (nats "loss", and "bits_per_token") with a textual context in front:
        k ~ U{0..max_words} (one k per batch) of each sequence's own tokens (special tokens only to
        fill), in random order, as token embeddings in ``prefix_embeds``; k = 0 is the plain loss.

        A prefix can steer only an LM that reads its context; one trained on captions alone never
        needs to (their factors are independent, so each word's law is fixed by its slot). This
        objective gives it the in-context reading a web-text LM has, and robustness to prefix
        lengths (Tsimpoukelli et al. 2021 rely on both)."""
        t = self._check(batch[self.source])  # (B, T)
        k = min(int(torch.randint(0, max_words + 1, ())), self.max_prefix, t.shape[1])
        pre = None
        if k:
            vocab = tuple(self.spec.vocab or ())
            special = torch.tensor([i for i, w in enumerate(vocab) if w in ("<pad>", "<bos>", "<eos>", "<unk>")])
            keys = torch.rand(t.shape, device=t.device).masked_fill(torch.isin(t, special.to(t.device)), 2.0)
            pre = self.tok_emb(t.gather(1, keys.argsort(1)[:, :k]))  # (B, k, d): words first, specials only to fill
        logits = self(t, prefix_embeds=pre, dropout=self.training)
        nll = F.cross_entropy(logits.reshape(-1, self.vocab_size), t.reshape(-1))
        return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}

    def log_prob(self, x: Tensor, cond: Tensor | None = None, prefix_embeds: Tensor | None = None) -> Tensor:
        """[B] log p(x | cond, prefix) in nats, summed over the T tokens (bits/token: -lp / (T ln 2))."""
        if self.source == "text" and x.is_floating_point() and cond is not None:
            x, cond = cond, None  # the image came as x and the captions as cond (see condition)
        x = self._check(x)
        logp = self(x, cond, prefix_embeds).log_softmax(-1)  # (B, T, V)
        return logp.gather(-1, x[..., None])[..., 0].sum(-1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        prefix_embeds: Tensor | None = None,
        length: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """[n, length] token ids (long; length = the data's T by default) drawn one at a time.

        ``use_cache=False`` re-runs the whole sequence for every token (the naive sampler); with the
        same ``generator`` state both give identical tokens.
        """
        length = self.seq_len if length is None else length
        if not 1 <= length <= self.seq_len:
            raise ValueError(f"length must be in 1..{self.seq_len}; got {length}")
        pre = self._prefix(n, cond, prefix_embeds)  # (n, P+1, d)
        out = torch.zeros(n, length, dtype=torch.long, device=pre.device)
        cache: KVCache | None = [{} for _ in self.blocks] if use_cache else None
        h = self._run(pre, 0, cache)[:, -1]  # (n, d): predicts x_1
        for t in range(length):
            out[:, t] = sample_categorical(self.head(h), generator, temperature, top_k, top_p)
            if t + 1 == length:
                break
            if use_cache:  # only the new token goes through the network
                h = self._run(self.tok_emb(out[:, t : t + 1]), pre.shape[1] + t, cache)[:, -1]
            else:
                h = self._run(torch.cat([pre, self.tok_emb(out[:, : t + 1])], 1))[:, -1]
        return out

    @torch.no_grad()
    def encode(self, x: Tensor, cond: Tensor | None = None, prefix_embeds: Tensor | None = None) -> Tensor:
        """[B, d_model] mean of the final hidden states at the positions of x_1..x_T (a sentence
        feature; a language model has no latent variable, this is a representation only)."""
        if self.source == "text" and x.is_floating_point() and cond is not None:
            x, cond = cond, None
        x = self._check(x)
        pre = self._prefix(x.shape[0], cond, prefix_embeds)
        h = self._run(torch.cat([pre, self.tok_emb(x)], 1))
        return h[:, pre.shape[1] :].mean(1)
