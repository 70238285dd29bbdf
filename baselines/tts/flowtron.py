"""Flowtron (Valle et al. 2020, arXiv 2005.05957): an autoregressive flow from mel frames to Gaussian noise.

Re-implemented from the paper and NVIDIA/flowtron@d149bc4 (`flowtron.py`, Apache-2.0) with upstream's
parameter names, so a released `state_dict` loads strictly. What runs:

- text: symbol embedding -> 3 x (conv k5 + instance norm + ReLU) -> bidirectional LSTM; the speaker
  embedding is appended to every text position (the attention's keys and values).
- each flow step (`flows.k`) is an affine autoregressive transform of the mel frames, conditioned on the
  previous frames (an LSTM over them: `attention_lstm`), a content-based additive attention over the text,
  a 2-layer LSTM and two tanh dense layers, and a zero-initialised 1x1 conv giving (log s, b) per frame.
  Odd steps run over time reversed (`AR_Back_Step`: upstream wraps them in `.ar_step`).
- the last step's gate (`gate_layer`) ends inference when sigmoid(gate) > `gate_threshold`.

Forward (training direction): z = exp(log s) * x + b per step, returning z and every step's log s.
Inference (the inverse): x_t = (z_t - b_t) / exp(log s_t), frame by frame, steps in reverse order.

Not implemented (not used by the released LJSpeech / LibriTTS models, whose config has `n_components: 0`,
`use_cumm_attention: false`): the Gaussian-mixture prior (`mel_encoder`, `gaussian_mixture`), cumulative
attention and the training-time attention prior / CTC loss. A checkpoint holding them is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class FlowtronConfig:
    """`model_config` of upstream's config.json (the released models use these values, LibriTTS with
    `n_speakers=123`)."""

    n_speakers: int = 1
    n_speaker_dim: int = 128
    n_text: int = 185
    n_text_dim: int = 512
    n_flows: int = 2
    n_mel_channels: int = 80
    n_attn_channels: int = 640
    n_hidden: int = 1024
    n_lstm_layers: int = 2
    use_gate_layer: bool = True
    encoder_convolutions: int = 3
    encoder_kernel_size: int = 5


class LinearNorm(nn.Module):
    """A linear layer held as `linear_layer` (upstream's name)."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.linear_layer = nn.Linear(n_in, n_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_layer(x)


class ConvNorm(nn.Module):
    """A 'same'-padded 1-D conv held as `conv` (upstream's name)."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(n_in, n_out, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MaskedInstanceNorm1d(nn.Module):
    """Instance norm (biased variance, eps 1e-5, affine) over the valid frames of each sequence.

    Written here because torch's `InstanceNorm1d` has no mask; without a mask it is `F.instance_norm`.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        mask = mask.to(x.dtype)
        count = mask.sum(-1)
        mean = (x * mask).sum(-1) / count
        var = (((x - mean[..., None]) * mask) ** 2).sum(-1) / count
        x = (x - mean[..., None]) / torch.sqrt(var[..., None] + self.eps)
        return x * self.weight[:, None] + self.bias[:, None]


def lengths_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor | None, batch_first: bool = False) -> torch.Tensor:
    """`lstm` over padded sequences (packed, so padding never reaches a valid step), or plainly without lengths."""
    if lengths is None:
        return lstm(x)[0]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=batch_first, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=batch_first)[0]


class Encoder(nn.Module):
    """Text encoder: convolutions (`convolutions.i.0.conv`, norm `convolutions.i.1`) and a BiLSTM."""

    def __init__(self, dim: int, n_convolutions: int, kernel_size: int):
        super().__init__()
        self.convolutions = nn.ModuleList(
            nn.Sequential(ConvNorm(dim, dim, kernel_size), MaskedInstanceNorm1d(dim)) for _ in range(n_convolutions))
        self.lstm = nn.LSTM(dim, dim // 2, 1, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, L) embeddings -> (B, L, C). With lengths and a batch > 1, padding is zeroed before every conv
        and left out of the norm's statistics (upstream's rule; one sequence is normalised over all of it)."""
        mask = lengths_mask(lengths, x.size(2))[:, None] if lengths is not None and x.size(0) > 1 else None
        for conv, norm in self.convolutions:
            if mask is not None:
                x = x.masked_fill(~mask, 0.0)
            x = F.relu(norm(conv(x), mask))
        return run_lstm(self.lstm, x.transpose(1, 2), lengths, batch_first=True)


class Attention(nn.Module):
    """Additive (tanh) attention from the attention-LSTM state over the text + speaker features."""

    def __init__(self, n_query: int, n_key: int, n_attn: int):
        super().__init__()
        self.query = LinearNorm(n_query, n_attn, bias=False)
        self.key = LinearNorm(n_key, n_attn, bias=False)
        self.value = LinearNorm(n_key, n_attn, bias=False)
        self.v = LinearNorm(n_attn, 1, bias=False)

    def forward(self, queries: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (T, B, H), text (L, B, C), mask (B, L) True on padding -> context (T, B, A), weights (B, T, L)."""
        keys = self.key(text).transpose(0, 1)
        values = self.value(text).transpose(0, 1)
        queries = self.query(queries).transpose(0, 1)
        scores = self.v(torch.tanh(queries[:, :, None] + keys[:, None]))[..., 0] / temperature
        if mask is not None:
            scores = scores.masked_fill(mask[:, None], float("-inf"))
        weights = torch.softmax(scores, dim=2)
        return torch.bmm(weights, values).transpose(0, 1), weights


class DenseLayer(nn.Module):
    def __init__(self, dim: int, n_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(LinearNorm(dim, dim) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.layers:
            x = torch.tanh(linear(x))
        return x


class ARStep(nn.Module):
    """One affine autoregressive flow step over time (upstream's `AR_Step`)."""

    def __init__(self, cfg: FlowtronConfig, add_gate: bool):
        super().__init__()
        n_mel, n_hidden, n_attn = cfg.n_mel_channels, cfg.n_hidden, cfg.n_attn_channels
        self.n_mel = n_mel
        self.conv = nn.Conv1d(n_hidden, 2 * n_mel, 1)
        self.lstm = nn.LSTM(n_hidden + n_attn, n_hidden, cfg.n_lstm_layers)
        self.attention_lstm = nn.LSTM(n_mel, n_hidden)
        self.attention_layer = Attention(n_hidden, cfg.n_text_dim + cfg.n_speaker_dim, n_attn)
        self.dense_layer = DenseLayer(n_hidden)
        self.gate_layer = LinearNorm(n_hidden + n_attn, 1) if add_gate else None

    def affine(self, lstm_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, B, H) -> log s, b, each (T, B, n_mel)."""
        out = self.conv(self.dense_layer(lstm_hidden).permute(1, 2, 0)).permute(2, 0, 1)
        return out[..., :self.n_mel], out[..., self.n_mel:]

    def forward(self, mel: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None,
                lengths: torch.Tensor | None):
        """Teacher-forced: mel (T, B, n_mel) -> z, log s, gate logits (T, B, 1) or None, attention (B, T, L)."""
        previous = torch.cat([mel.new_zeros(1, *mel.shape[1:]), mel[:-1]], 0)
        attention_hidden = run_lstm(self.attention_lstm, previous, lengths)
        context, weights = self.attention_layer(attention_hidden, text, text_mask)
        decoder_input = torch.cat([attention_hidden, context], -1)
        gates = self.gate_layer(decoder_input) if self.gate_layer is not None else None
        log_s, b = self.affine(run_lstm(self.lstm, decoder_input, lengths))
        return torch.exp(log_s) * mel + b, log_s, gates, weights

    def infer(self, residual: torch.Tensor, text: torch.Tensor, gate_threshold: float,
              temperature: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Invert frame by frame: residual (T, 1, n_mel) -> frames (T', 1, n_mel), T' <= T where the gate fires."""
        frame = residual.new_zeros(1, 1, self.n_mel)
        state = state1 = None
        outputs, weights_all = [], []
        for i in range(residual.size(0)):
            attention_hidden, state = self.attention_lstm(frame, state)
            context, weights = self.attention_layer(attention_hidden, text, None, temperature)
            weights_all.append(weights)
            decoder_input = torch.cat([attention_hidden, context], -1)
            lstm_hidden, state1 = self.lstm(decoder_input, state1)
            log_s, b = self.affine(lstm_hidden)
            frame = (residual[i:i + 1] - b) / torch.exp(log_s)
            outputs.append(frame)
            if self.gate_layer is not None and bool(torch.sigmoid(self.gate_layer(decoder_input)) > gate_threshold):
                break
        return torch.cat(outputs, 0), weights_all


class ARBackStep(nn.Module):
    """A flow step over reversed time (upstream's `AR_Back_Step`, parameters under `ar_step`)."""

    def __init__(self, cfg: FlowtronConfig, add_gate: bool):
        super().__init__()
        self.ar_step = ARStep(cfg, add_gate)

    def forward(self, mel, text, text_mask, lengths):
        mel = torch.flip(mel, (0,))
        if lengths is not None:  # after the flip, padding is in front: roll each sequence to start at frame 0
            mel = torch.stack([mel[:, k].roll(int(n), 0) for k, n in enumerate(lengths)], 1)
        z, log_s, gates, weights = self.ar_step(mel, text, text_mask, lengths)
        if lengths is not None:
            z = torch.stack([z[:, k].roll(-int(n), 0) for k, n in enumerate(lengths)], 1)
        return torch.flip(z, (0,)), log_s, gates, weights

    def infer(self, residual, text, gate_threshold, temperature):
        frames, weights = self.ar_step.infer(torch.flip(residual, (0,)), text, gate_threshold, temperature)
        return torch.flip(frames, (0,)), weights


class Flowtron(nn.Module):
    def __init__(self, cfg: FlowtronConfig = FlowtronConfig()):
        super().__init__()
        self.cfg = cfg
        self.speaker_embedding = nn.Embedding(cfg.n_speakers, cfg.n_speaker_dim)
        self.embedding = nn.Embedding(cfg.n_text, cfg.n_text_dim)
        self.encoder = Encoder(cfg.n_text_dim, cfg.encoder_convolutions, cfg.encoder_kernel_size)
        self.flows = nn.ModuleList(
            (ARStep if k % 2 == 0 else ARBackStep)(cfg, add_gate=cfg.use_gate_layer and k == cfg.n_flows - 1)
            for k in range(cfg.n_flows))

    def encode(self, speaker_ids: torch.Tensor, text: torch.Tensor,
               text_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(L, B, n_text_dim + n_speaker_dim): encoded text with the speaker vector appended at every position."""
        encoded = self.encoder(self.embedding(text).transpose(1, 2), text_lengths).transpose(0, 1)
        speaker = self.speaker_embedding(speaker_ids)[None].expand(encoded.size(0), -1, -1)
        return torch.cat([encoded, speaker], 2)

    def forward(self, mel: torch.Tensor, speaker_ids: torch.Tensor, text: torch.Tensor, text_lengths: torch.Tensor,
                mel_lengths: torch.Tensor | None):
        """Teacher-forced pass: mel (B, n_mel, T) -> z (T, B, n_mel), [log s per step], last gate logits,
        [attention per step]. Padding of `mel` is at the end; `mel_lengths` None for unpadded batch-1 input."""
        text = self.encode(speaker_ids, text, text_lengths)
        text_mask = ~lengths_mask(text_lengths, text.size(0))
        z = mel.permute(2, 0, 1)
        log_s_all, attentions, gates = [], [], None
        for flow in self.flows:
            z, log_s, gates, weights = flow(z, text, text_mask, mel_lengths)
            log_s_all.append(log_s)
            attentions.append(weights)
        return z, log_s_all, gates, attentions

    @torch.no_grad()
    def infer(self, residual: torch.Tensor, speaker_ids: torch.Tensor, text: torch.Tensor,
              gate_threshold: float = 0.5, temperature: float = 1.0) -> tuple[torch.Tensor, list]:
        """One utterance: residual z (1, n_mel, N) -> mel (1, n_mel, T <= N), attention weights per step.
        The steps run last to first; the gate sits on the last step, so it decides T in the first one run."""
        text = self.encode(speaker_ids, text)
        frames = residual.permute(2, 0, 1)
        attentions = []
        for flow in reversed(self.flows):
            frames, weights = flow.infer(frames, text, gate_threshold, temperature)
            attentions.append(weights)
        return frames.permute(1, 2, 0), attentions
