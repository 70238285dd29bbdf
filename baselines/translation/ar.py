"""The autoregressive Transformer translator (Vaswani et al., 2017): greedy and beam search, with a KV cache.

The decoder caches every layer's keys and values, so a decoding step costs one token's worth of
compute: the AR baseline in the latency table is an optimised one, not the weak baseline that inflates
NAT speedups (Kasai et al., 2021; Helcl et al., 2022).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.translation.layers import Decoder, Encoder, TransformerConfig
from baselines.translation.vocab import SPECIALS, Vocabulary


def shared_embedding(cfg: TransformerConfig) -> nn.Embedding:
    """The joint source/target embedding, initialised as in fairseq (normal, std dim^-0.5, zero padding row)."""
    embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.padding_idx)
    nn.init.normal_(embedding.weight, mean=0.0, std=cfg.embed_dim ** -0.5)
    with torch.no_grad():
        embedding.weight[cfg.padding_idx].zero_()
    return embedding


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, epsilon: float) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over non-ignored positions (fairseq's label_smoothed_cross_entropy)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=ignore_index,
                           label_smoothing=epsilon)


class ARTransformer(nn.Module):
    """Encoder-decoder Transformer; decoder input is `<s>` followed by the target, output ends with `</s>`."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        embedding = shared_embedding(cfg)
        self.encoder = Encoder(embedding, cfg)
        self.decoder = Decoder(embedding, cfg, causal=True)

    def forward(self, src: torch.Tensor, prev_output_tokens: torch.Tensor) -> torch.Tensor:
        memory, memory_padding = self.encoder(src)
        padding = prev_output_tokens.eq(self.cfg.padding_idx)
        return self.decoder(self.decoder.embed(prev_output_tokens), padding, memory, memory_padding)

    def loss(self, src: torch.Tensor, tgt: torch.Tensor, vocab: Vocabulary, epsilon: float = 0.1) -> torch.Tensor:
        """Teacher-forced loss for `tgt` = ids + </s> (right-padded)."""
        prev = torch.cat([torch.full_like(tgt[:, :1], vocab.bos), tgt[:, :-1]], dim=1)
        prev = prev.masked_fill(prev.eq(vocab.eos), vocab.pad)
        return label_smoothed_nll(self(src, prev), tgt, vocab.pad, epsilon)

    def max_lengths(self, src: torch.Tensor) -> torch.Tensor:
        """Per-sentence output limits (1.5 * source length + 10 tokens, </s> included), so that an output
        never depends on which other sentences share its batch."""
        source_lengths = src.ne(self.cfg.padding_idx).sum(1)
        return (source_lengths * 3 // 2 + 10).clamp(max=self.cfg.max_positions - 1)

    @torch.inference_mode()
    def greedy(self, src: torch.Tensor) -> list[list[int]]:
        """Greedy decoding of a batch of right-padded source ids; returns target ids without </s>."""
        memory, memory_padding = self.encoder(src)
        cache = [dict() for _ in self.decoder.layers]
        batch = src.shape[0]
        tokens = torch.full((batch, 1), Vocabulary.bos, dtype=torch.long, device=src.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
        limits = self.max_lengths(src)
        for step in range(int(limits.max())):
            log_probs = self.next_log_probs(tokens, step, memory, memory_padding, cache, limits)
            next_token = log_probs.argmax(-1).masked_fill(finished, Vocabulary.pad)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            finished |= next_token.eq(Vocabulary.eos)
            if bool(finished.all()):
                break
        return [_strip(row[1:].tolist()) for row in tokens]

    def next_log_probs(self, tokens: torch.Tensor, step: int, memory: torch.Tensor, memory_padding: torch.Tensor,
                       cache: list, limits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the next token given the last one (earlier ones are in `cache`);
        </s> is forced where a sentence reaches its limit."""
        x = self.decoder.embed(tokens[:, -1:], offset=step)
        logits = self.decoder(x, None, memory, memory_padding, cache)[:, -1].float()
        eos = logits[:, Vocabulary.eos].clone()
        logits[:, :len(SPECIALS)] = float("-inf")  # only words or </s> can be generated
        logits[:, Vocabulary.eos] = eos
        log_probs = F.log_softmax(logits, dim=-1)
        at_limit = limits.le(step + 1)
        if bool(at_limit.any()):
            eos_only = torch.full_like(log_probs, float("-inf"))
            eos_only[:, Vocabulary.eos] = log_probs[:, Vocabulary.eos]
            log_probs = torch.where(at_limit[:, None], eos_only, log_probs)
        return log_probs

    @torch.inference_mode()
    def beam_search(self, src: torch.Tensor, beam: int = 4, length_penalty: float = 1.0) -> list[list[int]]:
        """Beam search (fairseq's: a sentence is done once `beam` hypotheses have ended; scores are
        sum of log-probs / length ** length_penalty)."""
        if beam == 1:
            return self.greedy(src)
        batch = src.shape[0]
        memory, memory_padding = self.encoder(src)
        memory = memory.repeat_interleave(beam, dim=0)
        memory_padding = memory_padding.repeat_interleave(beam, dim=0)
        cache = [dict() for _ in self.decoder.layers]
        tokens = torch.full((batch * beam, 1), Vocabulary.bos, dtype=torch.long, device=src.device)
        scores = torch.full((batch, beam), float("-inf"), device=src.device)
        scores[:, 0] = 0.0  # every beam starts identical: expand only the first
        finalized: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        limits = self.max_lengths(src).repeat_interleave(beam)
        for step in range(int(limits.max())):
            log_probs = self.next_log_probs(tokens, step, memory, memory_padding, cache, limits)
            vocab_size = log_probs.shape[-1]
            candidates = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab_size)
            top_scores, top_index = candidates.topk(2 * beam, dim=1)
            origin, word = top_index // vocab_size, top_index % vocab_size
            keep_origin = torch.zeros(batch, beam, dtype=torch.long, device=src.device)
            keep_word = torch.full((batch, beam), Vocabulary.pad, dtype=torch.long, device=src.device)
            new_scores = torch.full((batch, beam), float("-inf"), device=src.device)
            for b in range(batch):
                kept = 0
                for rank, (score, o, w) in enumerate(zip(top_scores[b].tolist(), origin[b].tolist(),
                                                         word[b].tolist())):
                    if score == float("-inf"):
                        break
                    if w == Vocabulary.eos:
                        # as fairseq: an ending counts only if it ranks among the best `beam` candidates
                        if rank < beam and len(finalized[b]) < beam:
                            hypothesis = tokens[b * beam + o, 1:].tolist()
                            finalized[b].append((score / (len(hypothesis) + 1) ** length_penalty, hypothesis))
                    elif kept < beam and len(finalized[b]) < beam:
                        keep_origin[b, kept], keep_word[b, kept], new_scores[b, kept] = o, w, score
                        kept += 1
            if all(len(f) >= beam for f in finalized):
                break
            select = (torch.arange(batch, device=src.device)[:, None] * beam + keep_origin).view(-1)
            tokens = torch.cat([tokens[select], keep_word.view(-1, 1)], dim=1)
            scores = new_scores
            for layer_cache in cache:
                for key in ("k", "v"):
                    layer_cache["self"][key] = layer_cache["self"][key][select]
        return [max(f, key=lambda item: item[0])[1] if f else [] for f in finalized]


def _strip(ids: list[int]) -> list[int]:
    return ids[:ids.index(Vocabulary.eos)] if Vocabulary.eos in ids else [i for i in ids if i != Vocabulary.pad]
