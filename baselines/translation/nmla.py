"""NMLA: non-monotonic latent alignment objectives for CTC translators (Shao & Feng, NeurIPS 2022).

CTC training marginalises over *monotonic* alignments to the reference. NMLA instead rewards the CTC output
distribution for the n-grams it shares with the reference, wherever they occur: the expected count of each
reference n-gram in the collapsed output is computed in closed form, clipped at its reference count (as
BLEU clips), and the loss is minus the F-measure-like ratio

    loss = -2 * sum_g min(E[count_g(output)], count_g(ref)) / (#ref n-grams + E[#output n-grams])

Two objectives, as upstream's `compute_ctc_1gram_loss` and `compute_ctc_bigram_loss`
(ictnlp/NMLA-NAT@62c4d87, fairseq/criterions/nat_loss.py) define them; the bigram one is what upstream's
README fine-tunes a CTC model with (`--use-ngram --ngram-size 2`, no CTC term):

* **bag of words** (n = 1): the expected number of times a frame starts a new run of word v,
  p_0(v) + sum_{t>0} p_t(v) (1 - p_{t-1}(v)) (blank excluded), against the reference word counts; the L1
  distance between the two bags over (#ref + E[#output]) words.
* **bag of bigrams** (n = 2): word a at frame i followed by word b at frame j > i with blanks in between,
  p_i(a) prod_{i<k<j} p_k(blank) p_j(b); for a == b the adjacent pairs (j = i + 1, merged by CTC's collapse)
  are subtracted. The expected output length counts frames t > 0 only, as upstream does
  (`probs[:, 1:] * (1 - probs[:, :-1])`), and the normaliser is (#ref + E[length] - 2).

Both are batch ratios like upstream's (mean of the numerator over the mean of the denominator). Written
here rather than imported: upstream is a fairseq 0.9 plugin (GPU-only `.cuda()` calls, the blank fixed at
id 4, padding counted as reference n-grams). Differences that cannot change a loss on upstream's own inputs
(a batch of equal-length targets without padding, all frames valid): the blank and padding ids are
arguments, padded target positions form no n-grams, and padded frames are read as certain blanks, so
padding changes neither a sentence's expected matches nor its expected length (nor its reference length). `tests/test_translation_nmla.py` checks
the losses and their gradients against upstream's functions (`tests/golden/make_nmla.py`).
"""

from __future__ import annotations

from collections import Counter

import torch

from baselines.translation.methods import CTCTranslator
from harness.registry import register_method


def _frame_probs(log_probs: torch.Tensor, blank: int, frame_padding: torch.Tensor | None) -> torch.Tensor:
    """log-probabilities (B, T, V) -> probabilities, padded frames replaced by a certain blank."""
    if frame_padding is None:
        return log_probs
    certain_blank = torch.full_like(log_probs[0, 0], float("-inf"))
    certain_blank[blank] = 0.0
    return torch.where(frame_padding.unsqueeze(-1), certain_blank, log_probs)


def _target_rows(targets: torch.Tensor, pad: int | None) -> list[list[int]]:
    rows = targets.tolist()
    return rows if pad is None else [[t for t in row if t != pad] for row in rows]


def bag_of_words_loss(log_probs: torch.Tensor, targets: torch.Tensor, blank: int, pad: int | None = None,
                      frame_padding: torch.Tensor | None = None) -> torch.Tensor:
    """NMLA's 1-gram loss: L1 distance between the expected bag of output words and the reference's.

    log_probs (B, T, V) frame log-probabilities; targets (B, L) ids, right-padded with `pad`
    (None: no padding, as upstream); frame_padding (B, T) True at padded frames.

    >>> import torch
    >>> frames = torch.tensor([[[0.0, 50, 0], [50, 0, 0]]]).log_softmax(-1)  # frames "1", blank
    >>> round(bag_of_words_loss(frames, torch.tensor([[1]]), blank=0).item(), 4)  # output == reference
    0.0
    """
    log_probs = _frame_probs(log_probs, blank, frame_padding)
    batch, _, vocab_size = log_probs.shape
    probs = log_probs.exp()
    bow = probs[:, 0] + (probs[:, 1:] * (1 - probs[:, :-1])).sum(1)
    bow = bow.index_fill(1, torch.tensor([blank], device=bow.device), 0.0)
    rows = _target_rows(targets, pad)
    ref = torch.zeros(batch, vocab_size, dtype=probs.dtype, device=probs.device)
    for b, row in enumerate(rows):
        for t in row:
            ref[b, t] += 1
    ref_length = sum(len(r) for r in rows) / batch
    expected_length = bow.sum() / batch
    return (bow - ref).abs().sum(-1).mean() / (ref_length + expected_length)


def _blank_runs(log_probs: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, T, T): entry (i, j) = prod_{i<k<j} p_k(blank) for j > i, else 0."""
    batch, length, _ = log_probs.shape
    cumsum = log_probs[:, :, blank].cumsum(-1)
    between = cumsum.unsqueeze(1) - cumsum.unsqueeze(2)  # [i, j] = sum_{i<k<=j}
    between = torch.cat((torch.zeros_like(between[:, :, :1]), between[:, :, :-1]), dim=-1)  # sum_{i<k<j}
    upper = torch.ones(length, length, dtype=torch.bool, device=log_probs.device).triu(1)
    return torch.where(upper, between, torch.full_like(between, float("-inf"))).exp()


def bag_of_bigrams_loss(log_probs: torch.Tensor, targets: torch.Tensor, blank: int, pad: int | None = None,
                        frame_padding: torch.Tensor | None = None) -> torch.Tensor:
    """NMLA's bigram loss (the fine-tuning objective): clipped expected bigram matches, F-measure-like.

    Arguments as `bag_of_words_loss`. Invariant to rearranging a reference that keeps its bag of bigrams.

    >>> import torch
    >>> frames = torch.tensor([[[0.0, 50, 0], [50, 0, 0], [0, 0, 50]]]).log_softmax(-1)  # "1", blank, "2"
    >>> round(bag_of_bigrams_loss(frames, torch.tensor([[1, 2]]), blank=0).item(), 4)  # the bigram, matched
    -2.0

    (-2, not -1: upstream's expected length skips frame 0, here the first word.)
    """
    log_probs = _frame_probs(log_probs, blank, frame_padding)
    batch, length, _ = log_probs.shape
    probs = log_probs.exp()
    starts = probs[:, 1:] * (1 - probs[:, :-1])
    starts[:, :, blank] = 0
    expected_length = starts.sum() / batch
    rows = _target_rows(targets, pad)
    grams = [Counter(zip(row, row[1:])) for row in rows]
    width = max(1, max(len(g) for g in grams))
    first = torch.zeros(batch, width, dtype=torch.long)  # unused slots: gram (0, 0), count 0
    second = torch.zeros(batch, width, dtype=torch.long)
    count = torch.zeros(batch, width, dtype=probs.dtype)
    for b, bag in enumerate(grams):
        for g, ((x, y), c) in enumerate(bag.items()):
            first[b, g], second[b, g], count[b, g] = x, y, c
    first, second, count = first.to(probs.device), second.to(probs.device), count.to(probs.device)
    p_first = probs.gather(-1, first.unsqueeze(1).expand(-1, length, -1)).transpose(1, 2)  # (B, G, T)
    p_second = probs.gather(-1, second.unsqueeze(1).expand(-1, length, -1)).transpose(1, 2)
    expected = torch.einsum("bgi,bij,bgj->bg", p_first, _blank_runs(log_probs, blank), p_second)
    merged = (p_first[:, :, 1:] * p_first[:, :, :-1]).sum(-1)  # a a on adjacent frames collapses to one a
    expected = expected - torch.where(first == second, merged, torch.zeros_like(merged))
    matches = torch.minimum(expected, count).sum() / batch
    ref_length = sum(len(r) for r in rows) / batch
    return -2 * matches / (ref_length + expected_length - 2)


OBJECTIVES = {1: bag_of_words_loss, 2: bag_of_bigrams_loss}


def nmla_loss(model, src: torch.Tensor, tgt: torch.Tensor, vocab, ngram: int = 2) -> torch.Tensor:
    """The NMLA fine-tuning loss of a `CTCNAT` on a batch (`tgt` right-padded, no </s>), as upstream's
    criterion with `--use-ngram --ngram-size N` and without `--use-word` (no CTC term)."""
    if ngram not in OBJECTIVES:
        raise ValueError(f"NMLA defines the bag-of-words (1) and bag-of-bigrams (2) objectives, not n = {ngram}.")
    log_probs, padding = model.frame_log_probs(src, words_only=False)
    return OBJECTIVES[ngram](log_probs, tgt, vocab.blank, vocab.pad, frame_padding=padding)


@register_method("nmla-ctc")
class NMLATranslator(CTCTranslator):
    """The CTC NAT fine-tuned with NMLA's bigram objective; decoded as `ctc-nat` (best path, CTC collapse)."""

    description = "CTC NAT fine-tuned with NMLA's bag-of-bigrams objective (Shao & Feng 2022), best-path CTC"
    kind = "nmla"

    def settings(self):
        training = self.meta["training"]
        return {**super().settings(), "fine_tuning": training.get("objective", "none"),
                "fine_tuning_steps": training.get("steps")}
