"""Conditional masked language model with Mask-Predict decoding (Ghazvininejad et al., 2019),
as fairseq's `cmlm_transformer`.

Training masks a uniformly drawn number of target tokens and predicts them from the rest (plus the
length loss of the vanilla NAT). Decoding starts from `length_beam` candidate lengths with every token
masked; iteration t predicts all masked tokens, then re-masks the n = N * (T - t) / T tokens with the
lowest probability, for T `iterations`; the candidate with the best mean log-probability wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.translation.ar import label_smoothed_nll, shared_embedding
from baselines.translation.layers import Decoder, Encoder, TransformerConfig
from baselines.translation.nat import (LENGTH_LOSS_FACTOR, add_length_predictor, length_logits, length_mask,
                                       pick_by_mean_log_prob, top_lengths, word_log_probs)
from baselines.translation.vocab import Vocabulary


def random_mask(tgt: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """True at the positions to mask: for each sentence of length N, n ~ U{1..N} random positions."""
    lengths = tgt.ne(pad).sum(1)
    scores = torch.rand(tgt.shape, generator=generator, device=tgt.device).masked_fill(tgt.eq(pad), 2.0)
    counts = (torch.rand(lengths.shape, generator=generator, device=tgt.device) * lengths).long() + 1
    ranks = scores.argsort(1).argsort(1)
    return ranks < counts[:, None]


def remask_lowest(probs: torch.Tensor, padding: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """True at the `counts[b]` lowest-probability non-padding positions of each row."""
    ranks = probs.masked_fill(padding, float("inf")).argsort(1).argsort(1)
    return ranks < counts[:, None]


class CMLM(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        embedding = shared_embedding(cfg)
        self.encoder = Encoder(embedding, cfg)
        self.decoder = Decoder(embedding, cfg, causal=False)
        add_length_predictor(self.decoder, cfg)

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
        padding = tokens.eq(self.cfg.padding_idx)
        return self.decoder(self.decoder.embed(tokens), padding, memory, memory_padding)

    def loss(self, src: torch.Tensor, tgt: torch.Tensor, vocab: Vocabulary, epsilon: float = 0.1,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss on the masked tokens + LENGTH_LOSS_FACTOR * length loss; `tgt` right-padded, no </s>."""
        memory, memory_padding = self.encoder(src)
        masked = random_mask(tgt, vocab.pad, generator)
        logits = self.decode(tgt.masked_fill(masked, vocab.mask), memory, memory_padding)
        token_loss = label_smoothed_nll(logits, tgt.masked_fill(~masked, vocab.pad), vocab.pad, epsilon)
        lengths = tgt.ne(vocab.pad).sum(1)
        length_loss = F.cross_entropy(length_logits(self.decoder.embed_length, memory, memory_padding), lengths)
        return token_loss + LENGTH_LOSS_FACTOR * length_loss

    @torch.inference_mode()
    def translate(self, src: torch.Tensor, iterations: int = 10, length_beam: int = 3) -> list[list[int]]:
        batch = src.shape[0]
        memory, memory_padding = self.encoder(src)
        lengths = top_lengths(length_logits(self.decoder.embed_length, memory, memory_padding), length_beam)
        lengths = lengths.view(-1)
        memory = memory.repeat_interleave(length_beam, dim=0)
        memory_padding = memory_padding.repeat_interleave(length_beam, dim=0)
        padding = length_mask(lengths)
        tokens = torch.full(padding.shape, Vocabulary.mask, dtype=torch.long, device=src.device)
        tokens = tokens.masked_fill(padding, Vocabulary.pad)
        probs = torch.zeros(padding.shape, device=src.device)
        masked = ~padding
        for t in range(1, iterations + 1):
            new_probs, new_tokens = word_log_probs(self.decode(tokens, memory, memory_padding)).max(-1)
            tokens = torch.where(masked, new_tokens, tokens)
            probs = torch.where(masked, new_probs, probs)
            if t == iterations:
                break
            counts = (lengths.float() * (iterations - t) / iterations).long()
            masked = remask_lowest(probs, padding, counts)
            tokens = tokens.masked_fill(masked, Vocabulary.mask)
        return pick_by_mean_log_prob(tokens, probs, lengths, batch, length_beam)
