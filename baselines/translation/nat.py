"""Vanilla non-autoregressive Transformer (Gu et al., 2018) with length prediction, as in fairseq's
`nonautoregressive_transformer`: the target length is classified from the mean-pooled encoder states
(`decoder.embed_length`), the decoder input is a uniform copy of the source token embeddings, and all
target tokens are predicted in one parallel pass. A length beam decodes the `length_beam` most likely
lengths and keeps the candidate with the highest mean token log-probability (no AR reranking).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.translation.ar import label_smoothed_nll, shared_embedding
from baselines.translation.layers import Decoder, Encoder, TransformerConfig
from baselines.translation.vocab import SPECIALS, Vocabulary

#: Weight of the length-prediction loss (fairseq's `--length-loss-factor` default).
LENGTH_LOSS_FACTOR = 0.1


def add_length_predictor(decoder: Decoder, cfg: TransformerConfig) -> None:
    """fairseq's `decoder.embed_length`: one embedding row per target length, scored against the pooled source."""
    decoder.embed_length = nn.Embedding(cfg.max_positions, cfg.embed_dim)
    nn.init.normal_(decoder.embed_length.weight, mean=0.0, std=cfg.embed_dim ** -0.5)


def length_logits(embed_length: nn.Embedding, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
    """Scores of every target length (B, max_positions) from the mean of the non-padding encoder states."""
    keep = (~memory_padding).unsqueeze(-1).to(memory.dtype)
    pooled = (memory * keep).sum(1) / keep.sum(1).clamp(min=1)
    logits = F.linear(pooled, embed_length.weight)
    logits[:, 0] = float("-inf")  # a translation has at least one token
    return logits


def top_lengths(logits: torch.Tensor, beam: int) -> torch.Tensor:
    """The `beam` most likely lengths per sentence, (B, beam)."""
    return logits.topk(beam, dim=-1).indices


def length_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """(B, T) True at padding positions for the given lengths."""
    max_length = int(lengths.max()) if max_length is None else max_length
    return torch.arange(max_length, device=lengths.device)[None, :] >= lengths[:, None]


def uniform_copy(source_embedding: torch.Tensor, source_padding: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """fairseq's `uniform_assignment`: target position j copies source position round(j * (S-1) / (T-1))."""
    source_lengths = (~source_padding).sum(1).float()
    max_length = int(lengths.max())
    steps = (source_lengths - 1) / (lengths.float() - 1).clamp(min=1)
    index = (torch.arange(max_length, device=lengths.device)[None, :].float() * steps[:, None]).round().long()
    index = index.clamp(max=source_embedding.shape[1] - 1)
    return source_embedding.gather(1, index.unsqueeze(-1).expand(-1, -1, source_embedding.shape[-1]))


def pick_by_mean_log_prob(tokens: torch.Tensor, token_log_probs: torch.Tensor, lengths: torch.Tensor,
                          batch: int, beam: int) -> list[list[int]]:
    """For (batch * beam) candidates, the tokens of the one with the best mean log-probability."""
    padding = length_mask(lengths, tokens.shape[1])
    mean = token_log_probs.masked_fill(padding, 0.0).sum(1) / lengths.float()
    best = mean.view(batch, beam).argmax(1)
    rows = torch.arange(batch, device=tokens.device) * beam + best
    return [tokens[r, :int(lengths[r])].tolist() for r in rows.tolist()]


def word_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over words only (special symbols cannot be output by a NAT decoder)."""
    logits = logits.float().clone()
    logits[..., :len(SPECIALS)] = float("-inf")
    return F.log_softmax(logits, dim=-1)


class VanillaNAT(nn.Module):
    """Encoder, length predictor, and a bidirectional decoder fed with the copied source embeddings."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        embedding = shared_embedding(cfg)
        self.encoder = Encoder(embedding, cfg)
        self.decoder = Decoder(embedding, cfg, causal=False)
        add_length_predictor(self.decoder, cfg)

    def decode(self, src: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor,
               lengths: torch.Tensor) -> torch.Tensor:
        """Token logits (B, T, V) for the given target lengths."""
        source_embedding = self.encoder.embed_tokens(src) * self.cfg.embed_dim ** 0.5
        copied = uniform_copy(source_embedding, memory_padding, lengths)
        padding = length_mask(lengths)
        return self.decoder(self.decoder.embed(vectors=copied), padding, memory, memory_padding)

    def loss(self, src: torch.Tensor, tgt: torch.Tensor, vocab: Vocabulary, epsilon: float = 0.1) -> torch.Tensor:
        """Token loss (label-smoothed) + LENGTH_LOSS_FACTOR * length loss; `tgt` is right-padded, no </s>."""
        memory, memory_padding = self.encoder(src)
        lengths = tgt.ne(vocab.pad).sum(1)
        token_loss = label_smoothed_nll(self.decode(src, memory, memory_padding, lengths), tgt, vocab.pad, epsilon)
        length_loss = F.cross_entropy(length_logits(self.decoder.embed_length, memory, memory_padding), lengths)
        return token_loss + LENGTH_LOSS_FACTOR * length_loss

    @torch.inference_mode()
    def translate(self, src: torch.Tensor, length_beam: int = 1) -> list[list[int]]:
        """One parallel decoding pass per candidate length; returns target ids."""
        batch = src.shape[0]
        memory, memory_padding = self.encoder(src)
        lengths = top_lengths(length_logits(self.decoder.embed_length, memory, memory_padding), length_beam)
        lengths = lengths.view(-1)
        src = src.repeat_interleave(length_beam, dim=0)
        memory = memory.repeat_interleave(length_beam, dim=0)
        memory_padding = memory_padding.repeat_interleave(length_beam, dim=0)
        log_probs = word_log_probs(self.decode(src, memory, memory_padding, lengths))
        best, tokens = log_probs.max(-1)
        return pick_by_mean_log_prob(tokens, best, lengths, batch, length_beam)
