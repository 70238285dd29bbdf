"""CTC non-autoregressive translator (Libovický & Helcl, 2018).

Each encoder state is projected into `upsample` decoder states (`decoder.upsample_proj`), a stack of
bidirectional decoder layers (self-attention + attention to the encoder) predicts one symbol or the
blank per state, and the output is read with the CTC collapse rule: merge repeated symbols, then drop
blanks. Training marginalises over all alignments with `torch.nn.functional.ctc_loss`, so no length
predictor is needed; the output can be at most `upsample` times the source length.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.translation.ar import shared_embedding
from baselines.translation.layers import Decoder, Encoder, TransformerConfig
from baselines.translation.vocab import SPECIALS, Vocabulary


def ctc_collapse(ids: Sequence[int], blank: int) -> list[int]:
    """The CTC reading of a frame sequence: merge runs of the same symbol, then remove blanks."""
    out: list[int] = []
    previous = None
    for i in ids:
        if i != previous and i != blank:
            out.append(i)
        previous = i
    return out


class CTCNAT(nn.Module):
    def __init__(self, cfg: TransformerConfig, upsample: int = 2):
        super().__init__()
        self.cfg = cfg
        self.upsample = upsample
        embedding = shared_embedding(cfg)
        self.encoder = Encoder(embedding, cfg)
        self.decoder = Decoder(embedding, cfg, causal=False)
        self.decoder.upsample_proj = nn.Linear(cfg.embed_dim, upsample * cfg.embed_dim)

    def frame_log_probs(self, src: torch.Tensor, words_only: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities (B, S*k, V), frame padding mask (B, S*k)).

        With `words_only` the other special symbols get probability 0 (decoding). Training keeps them
        finite: -inf entries in the CTC lattice turn its gradients into NaN."""
        memory, memory_padding = self.encoder(src)
        batch, length, dim = memory.shape
        states = self.decoder.upsample_proj(memory).view(batch, length * self.upsample, dim)
        padding = memory_padding.repeat_interleave(self.upsample, dim=1)
        logits = self.decoder(self.decoder.embed(vectors=states), padding, memory, memory_padding).float()
        if not words_only:
            return F.log_softmax(logits, dim=-1), padding
        blank = logits[..., Vocabulary.blank].clone()
        logits[..., :len(SPECIALS)] = float("-inf")
        logits[..., Vocabulary.blank] = blank
        return F.log_softmax(logits, dim=-1), padding

    def loss(self, src: torch.Tensor, tgt: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
        """CTC loss (mean over sentences of the per-target-token loss); `tgt` is right-padded, no </s>."""
        log_probs, padding = self.frame_log_probs(src, words_only=False)
        input_lengths = (~padding).sum(1)
        target_lengths = tgt.ne(vocab.pad).sum(1)
        return F.ctc_loss(log_probs.transpose(0, 1), tgt, input_lengths, target_lengths, blank=vocab.blank,
                          reduction="mean", zero_infinity=True)

    @torch.inference_mode()
    def translate(self, src: torch.Tensor) -> list[list[int]]:
        """Best-path decoding: the argmax frame sequence, collapsed."""
        log_probs, padding = self.frame_log_probs(src)
        frames = log_probs.argmax(-1)
        lengths = (~padding).sum(1).tolist()
        return [ctc_collapse(row[:n], Vocabulary.blank) for row, n in zip(frames.tolist(), lengths)]
