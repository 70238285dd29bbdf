"""LLMVoX (Shikhar et al., ACL 2025 Findings, arXiv 2503.04724; mbzuai-oryx/LLMVoX): a 30M-parameter streaming
TTS for the text of any LLM, here as the registered method `llmvox`.

The network, with upstream's names (`src/model.py`, `inference/model_handler.py`, `streaming_server.py`):

* text: ByT5's byte tokenizer (`google/byt5-small`, here transformers' `ByT5Tokenizer`, which needs no file) with
  two added tokens, `[PAD]` = 384 and `EOS` = 385; each word is tokenized on its own (bytes + `</s>` = 1, as
  upstream's training data and its per-LLM-token streaming do) and the sentence ends with 385. The ids are
  embedded by the *frozen* input embedding of CharsiuG2P's ByT5 (`charsiu/g2p_multilingual_byT5_tiny_16_layers_100`,
  `encoder.embed_tokens`), whose two new rows upstream fills with the mean of the rows before them;
* speech: WavTokenizer tokens (one 4096-entry codebook, 75 tokens/s, 24 kHz; `baselines/tts/wavtokenizer.py`);
* the decoder: nanoGPT without a token embedding (4 layers, 8 heads, width 768, no biases, learned positions up
  to 8192). Step i reads L2-normalise([text embedding of text id i ; codebook vector of speech token i-1]) (zeros
  for the first step; the text id is `[PAD]` once the text has run out) and predicts speech token i. Decoding is
  greedy (`probs.argmax`, upstream has no sampling); it ends with token 453 (`eoa_token_id`, an ordinary
  codebook entry that training appends to every utterance), which is kept in the last chunk as upstream does;
* streaming: tokens are decoded to audio in chunks of `initial_dump_size` tokens, each next chunk 3x the last up
  to `max_dump_size` (upstream's defaults 10 and 1280 for its first TTS replica, 160 for the second, which takes
  every other sentence); each chunk goes through the WavTokenizer decoder on its own (no overlap), so the waveform
  is the concatenation of the chunks, exactly what upstream's server streams. Text is split into sentences at
  words ending in "." (as upstream's producer alternates replicas), each sentence decoded from a fresh state.

The decoder is written here with upstream's names (see `LLMVoXDecoder` for why not transformers' GPT2Model);
the ByT5 tokenizer is transformers'.

Single voice: LLMVoX has no speaker prompt (trained on one synthetic voice of VoiceAssistant-400K), so it belongs
to `tts-closed-speaker` (SIM against held-out clips of its own voice); on `seed-tts-en`/`librispeech-pc` its
SIM-o measures how far its fixed voice is from the prompt speaker, not cloning.

Deterministic: greedy decoding draws no random numbers, so the request seed changes nothing (it is still recorded)
and batching never changes a waveform.

Licence: CC BY-NC-SA 4.0 (code and released weights: non-commercial); WavTokenizer MIT; the CharsiuG2P model
page states no licence (its repository's licence was not checked here).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.imagegen.checkpoints import combined_sha256, load_checkpoint_file, load_into
from baselines.tts.wavtokenizer import CODEBOOK_KEY, WavTokenizerConfig, WavTokenizerDecoder
from harness.api import Method, Request
from harness.errors import ArbenchError, InputError
from harness.registry import register_method
from harness.settings import Annotated, Field, PositiveInt
from harness.weights import WeightSpec, register_weights, require_all

UPSTREAM = "mbzuai-oryx/LLMVoX@c6d26c0c95519e1fa898d848b2bac8f8782f5265"
LICENSE = "CC BY-NC-SA 4.0 (mbzuai-oryx/LLMVoX code and weights: non-commercial, share-alike)"
PAD_TOKEN_ID, TEXT_EOS_ID, EOA_TOKEN_ID = 384, 385, 453
SPEECH_DIM = 512

LLMVOX_WEIGHTS = register_weights(WeightSpec(
    "llmvox-english-tiny", "ckpt_english_tiny.pt",
    "https://huggingface.co/MBZUAI/LLMVoX/resolve/main/ckpt_english_tiny.pt", None, LICENSE,
    "LLMVoX English decoder (453 MB nanoGPT training checkpoint: 'model', 'model_args', optimizer state)"))
WAVTOKENIZER_WEIGHTS = register_weights(WeightSpec(
    "wavtokenizer-large-speech-75", "wavtokenizer_large_speech_320_24k.ckpt",
    "https://huggingface.co/MBZUAI/LLMVoX/resolve/main/wavtokenizer_large_speech_320_24k.ckpt",
    None, "MIT (jishengpeng/WavTokenizer)",
    "WavTokenizer large, speech, 75 tokens/s, 24 kHz (1.75 GB Lightning checkpoint beside LLMVoX's; only the decoder "
    "and the codebook are read)"))
CHARSIU_WEIGHTS = register_weights(WeightSpec(
    "charsiu-g2p-byt5-tiny", "charsiu_g2p_multilingual_byT5_tiny_16_layers_100.bin",
    "https://huggingface.co/charsiu/g2p_multilingual_byT5_tiny_16_layers_100/resolve/main/pytorch_model.bin",
    None, "no licence stated on the model page; CharsiuG2P (lingjzhu/CharsiuG2P) - not verified here",
    "CharsiuG2P multilingual ByT5-tiny (82.7 MB; model.safetensors also works): LLMVoX takes only its input "
    "embedding"))


# -- text front end ---------------------------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """Upstream's `clean_text` (streaming_server.py), applied to every LLM token there and to the whole text here."""
    text = text.strip().replace("**", "").replace("-", " ")
    text = re.sub(r"(\d)\.(?=\s|$)", r"\1", text)
    text = re.sub(r"\*", "", text)
    text = re.sub(r"#", " number ", text)
    text = re.sub(r"&", " and ", text)
    text = re.sub(r"@", " at ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\.{3,}", " pause ", text)
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    text = re.sub(r"\/+", " slash ", text)
    return re.sub(r"\\+", " backslash ", text)


def byt5_tokenizer():
    """google/byt5-small's tokenizer with upstream's two added tokens: `[PAD]` -> 384, `EOS` -> 385."""
    from transformers import ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_special_tokens({"pad_token": "EOS"})
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "EOS"]) == [PAD_TOKEN_ID, TEXT_EOS_ID]
    return tokenizer


def sentences(text: str) -> list[list[str]]:
    """Words of the cleaned text, split after every word that ends in '.' (upstream switches replicas there)."""
    out, current = [], []
    for word in clean_text(text).split(" "):
        if word:
            current.append(word)
            if word.endswith("."):
                out.append(current)
                current = []
    return out + ([current] if current else [])


def text_ids(words: Sequence[str], tokenizer) -> list[int]:
    """Each word's byte ids with its `</s>`, then 385 (upstream's `src/data.py` and per-token streaming)."""
    return [i for ids in tokenizer(list(words))["input_ids"] for i in ids] + [TEXT_EOS_ID]


def resized_text_embedding(base: torch.Tensor) -> torch.Tensor:
    """ByT5's embedding (384 rows) with `[PAD]` and `EOS` appended as upstream's
    `smart_tokenizer_and_embedding_resize` does: each new row is the mean of all rows before it."""
    first = torch.cat([base, base.mean(0, keepdim=True)])
    return torch.cat([first, first.mean(0, keepdim=True)])


# -- the network ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LLMVoXConfig:
    """The checkpoint's `model_args` (upstream's `GPTConfig`) and the text embedding width."""

    n_layer: int = 4
    n_head: int = 8
    n_embd: int = 768
    block_size: int = 8192
    bias: bool = False
    vocab_size: int = 4096
    text_dim: int = 256

    def __post_init__(self):
        if self.n_embd != self.text_dim + SPEECH_DIM:
            raise ArbenchError(f"LLMVoX's input is [text embedding ({self.text_dim}) ; speech vector ({SPEECH_DIM})], "
                               f"which is not n_embd={self.n_embd}: the checkpoint does not fit this text embedding.")


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with an optional bias (eps 1e-5)."""

    def __init__(self, dim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: LLMVoXConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=1), torch.cat([cache[1], v], dim=1)
        heads = lambda z: z.view(b, z.shape[1], self.n_head, c // self.n_head).transpose(1, 2)  # noqa: E731
        # one new position per step attends to every cached one; a longer first input is causal
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=cache is None and t > 1)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: LLMVoXConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # nanoGPT's new_gelu


class Block(nn.Module):
    def __init__(self, cfg: LLMVoXConfig):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(cfg.n_embd, cfg.bias), CausalSelfAttention(cfg)
        self.ln_2, self.mlp = LayerNorm(cfg.n_embd, cfg.bias), MLP(cfg)

    def forward(self, x: torch.Tensor, cache=None):
        h, cache = self.attn(self.ln_1(x), cache)
        x = x + h
        return x + self.mlp(self.ln_2(x)), cache


class LLMVoXDecoder(nn.Module):
    """Upstream's `GPT` (nanoGPT without a token embedding), same parameter names, with a key-value cache.

    Own code rather than transformers' `GPT2Model` (the same network, about as fast here): the checkpoint then
    loads by its own names with a strict check, where GPT2Model needs zero-filled biases (bias=False) and
    transposed `Conv1D` weights, and its cache argument is being renamed (`past_key_values` deprecated in
    transformers 5.25, to be removed in 5.40); the network is thirty lines."""

    def __init__(self, cfg: LLMVoXConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias)))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)

    def step(self, x: torch.Tensor, cache: list | None = None) -> tuple[torch.Tensor, list]:
        """Logits of the last position for input vectors `x` (B, T, n_embd) placed after the `cache`d ones."""
        start = 0 if cache is None else cache[0][0].shape[1]
        if start + x.shape[1] > self.cfg.block_size:
            raise ArbenchError(f"LLMVoX's position table ends at {self.cfg.block_size} steps; lower max_seconds.")
        x = x + self.transformer.wpe(torch.arange(start, start + x.shape[1], device=x.device))
        caches = []
        for i, block in enumerate(self.transformer.h):
            x, c = block(x, None if cache is None else cache[i])
            caches.append(c)
        return self.lm_head(self.transformer.ln_f(x[:, -1])), caches

    def load_upstream(self, state: dict[str, torch.Tensor], what: str) -> None:
        """Load a nanoGPT state dict (`_orig_mod.` from torch.compile stripped, the unused causal-mask buffers
        `attn.bias` of torch < 2 dropped)."""
        state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
        own = set(self.state_dict())
        state = {k: v for k, v in state.items() if k in own or not k.endswith(".attn.bias")}
        load_into(self, state, what)


@dataclass
class LLMVoXModels:
    decoder: LLMVoXDecoder
    text_embedding: torch.Tensor  # (386, text_dim)
    wavtokenizer: WavTokenizerDecoder


@dataclass
class ChunkSchedule:
    """One TTS replica's chunk size: x3 after every chunk and at every sentence end, up to `largest`
    (upstream's `dump_size` updates in `audio_generator_sync`)."""

    size: int
    largest: int

    def grow(self) -> None:
        if self.size < self.largest:
            self.size = min(self.size * 3, self.largest)


def stream_tokens_to_audio(models: LLMVoXModels, ids: Sequence[int], schedule: ChunkSchedule, max_tokens: int,
                           pad_token_id: int = PAD_TOKEN_ID, eoa_token_id: int = EOA_TOKEN_ID
                           ) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Greedy decoding of one sentence, yielding (audio chunk, its tokens) as upstream's `audio_generator_sync`
    does: a chunk when `schedule.size` tokens have accumulated, the rest, end-of-audio token included, when 453
    appears. `max_tokens` caps the sentence (upstream has no working cap: its `max_audio_length` counts only the
    tokens since the last chunk, and the position table ends at `block_size`)."""
    device = models.text_embedding.device
    speech = torch.zeros(1, 1, SPEECH_DIM, device=device)
    cache, pending = None, []
    for step in range(max_tokens):
        text_id = ids[step] if step < len(ids) else pad_token_id
        x = F.normalize(torch.cat([models.text_embedding[text_id].view(1, 1, -1), speech], dim=2), p=2, dim=2,
                        eps=1e-8)
        logits, cache = models.decoder.step(x, cache)
        token = int(logits.argmax(dim=-1))
        pending.append(token)
        if len(pending) >= schedule.size:
            chunk, pending = pending[:schedule.size], pending[schedule.size:]
            schedule.grow()
            yield decode_tokens(models.wavtokenizer, chunk), chunk
        elif eoa_token_id in pending:
            chunk, pending = pending, []
            schedule.grow()
            yield decode_tokens(models.wavtokenizer, chunk), chunk
        if token == eoa_token_id:
            schedule.grow()
            return
        speech = models.wavtokenizer.codes_to_features(torch.tensor([[token]], device=device)).transpose(1, 2)
    if pending:  # the cap was reached: what is left is still spoken
        yield decode_tokens(models.wavtokenizer, pending), pending
    schedule.grow()


def decode_tokens(wavtokenizer: WavTokenizerDecoder, tokens: Sequence[int]) -> np.ndarray:
    codes = torch.tensor([list(tokens)], device=wavtokenizer.codebook.device)
    audio = wavtokenizer.decode(wavtokenizer.codes_to_features(codes), bandwidth_id=0)
    return audio[0].float().cpu().numpy()


# -- loading ----------------------------------------------------------------------------------------------------
def read_llmvox_checkpoint(path: Path) -> tuple[LLMVoXConfig, dict[str, torch.Tensor]]:
    saved = load_checkpoint_file(path, "an LLMVoX checkpoint")
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict) or not isinstance(
            saved.get("model_args"), dict):
        raise ArbenchError(f"{path} is not an LLMVoX checkpoint: expected a dict with 'model' (the state dict) and "
                           "'model_args' (n_layer, n_head, n_embd, block_size, bias, vocab_size), as train.py saves.")
    args = saved["model_args"]
    missing = [k for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size") if k not in args]
    if missing:
        raise ArbenchError(f"{path}: model_args lacks {missing}.")
    shape = {k: args[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")}
    return LLMVoXConfig(**shape, text_dim=int(args["n_embd"]) - SPEECH_DIM), saved["model"]


def read_wavtokenizer_state(path: Path) -> dict[str, torch.Tensor]:
    """The decoder's tensors of a WavTokenizer checkpoint (Lightning's {'state_dict': ...} or a flat dict)."""
    saved = load_checkpoint_file(path, "a WavTokenizer checkpoint")
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ArbenchError(f"{path} holds no WavTokenizer state dict.")
    return {k: v for k, v in state.items()
            if (k.startswith("backbone.") or k.startswith("head.out.") or k == CODEBOOK_KEY)}


def read_text_embedding(path: Path) -> torch.Tensor:
    saved = load_checkpoint_file(path, "the CharsiuG2P ByT5 checkpoint")
    for key in ("encoder.embed_tokens.weight", "shared.weight"):
        if isinstance(saved, dict) and isinstance(saved.get(key), torch.Tensor):
            base = saved[key].float()
            if base.shape[0] < PAD_TOKEN_ID:
                raise ArbenchError(f"{path}: {key} has {base.shape[0]} rows; ByT5's vocabulary has {PAD_TOKEN_ID}.")
            return resized_text_embedding(base[:PAD_TOKEN_ID])  # upstream's resize to 385 keeps the first 384
    raise ArbenchError(f"{path} has no encoder.embed_tokens.weight or shared.weight (not a T5 checkpoint).")


def load_llmvox(llmvox: Path, wavtokenizer: Path, charsiu: Path, device: str = "cpu",
                wav_cfg: WavTokenizerConfig = WavTokenizerConfig()) -> LLMVoXModels:
    cfg, state = read_llmvox_checkpoint(llmvox)
    text = read_text_embedding(charsiu)
    if text.shape[1] != cfg.text_dim:
        raise ArbenchError(f"the ByT5 embedding is {text.shape[1]} wide but the LLMVoX checkpoint expects "
                           f"{cfg.text_dim} (= n_embd - {SPEECH_DIM}); check the CharsiuG2P file.")
    decoder = LLMVoXDecoder(cfg)
    decoder.load_upstream(state, f"LLMVoX ({llmvox.name})")
    vocoder = WavTokenizerDecoder(wav_cfg)
    load_into(vocoder, read_wavtokenizer_state(wavtokenizer), f"WavTokenizer ({wavtokenizer.name})")
    return LLMVoXModels(decoder.to(device).eval(), text.to(device), vocoder.to(device).eval())


# -- the method -------------------------------------------------------------------------------------------------
@dataclass
class LLMVoXSettings:
    """Upstream's streaming defaults (configs/inference_config.py): first chunk 10 tokens (replica 1; replica 2,
    which takes every other sentence, starts at 160), growing x3 to 1280; `max_seconds` caps a sentence (ours:
    upstream decodes until token 453 or its block size); weight paths are not in the signature."""

    initial_dump_size_1: Annotated[PositiveInt, Field(le=8192)] = 10
    initial_dump_size_2: Annotated[PositiveInt, Field(le=8192)] = 160
    max_dump_size: Annotated[PositiveInt, Field(le=8192)] = 1280
    max_seconds: Annotated[float, Field(gt=0, le=100)] = 30.0
    llmvox_weights: str = ""
    wavtokenizer_weights: str = ""
    charsiu_weights: str = ""


@register_method("llmvox")
class LLMVoX(Method):
    description = ("LLMVoX English (30M nanoGPT over WavTokenizer tokens, ByT5 byte embeddings; one fixed voice, "
                   "greedy, streaming chunks 10 -> x3 -> 1280 tokens)")
    modality = "tts"
    family = "codec-ar"
    weights_license = LICENSE
    Config = LLMVoXSettings
    #: Yields audio chunks as they are ready (`stream`): the TTS tasks measure first-packet latency and chunk RTF.
    streaming = True

    def __init__(self, config: Any = None, device: str = "cpu", models: LLMVoXModels | None = None):
        super().__init__(config, device)
        self._models = models
        self._sha: str | None = None
        self.tokenizer = byt5_tokenizer()

    def settings(self) -> dict[str, Any]:
        keep = {k: v for k, v in asdict(self.config).items() if not k.endswith("_weights")}
        return {**keep, "sample_rate": WavTokenizerConfig.sample_rate, "decoding": "greedy", "upstream": UPSTREAM}

    def weight_files(self) -> list[tuple[Path, str]]:
        c = self.config
        wanted = [(LLMVOX_WEIGHTS, c.llmvox_weights), (WAVTOKENIZER_WEIGHTS, c.wavtokenizer_weights),
                  (CHARSIU_WEIGHTS, c.charsiu_weights)]
        return require_all([lambda s=s, e=e: s.locate(e) for s, e in wanted], f"method {self.name}")

    def checkpoint_sha256(self) -> str | None:
        if self._sha is None:
            self._sha = "given-models" if self._models is not None else combined_sha256(
                digest for _, digest in self.weight_files())
        return self._sha

    def models(self) -> LLMVoXModels:
        if self._models is None:
            (llmvox, _), (wavtokenizer, _), (charsiu, _) = self.weight_files()
            self._models = load_llmvox(llmvox, wavtokenizer, charsiu, self.device)
        return self._models

    @torch.no_grad()
    def stream(self, request: Request) -> Iterator[tuple[np.ndarray, int]]:
        """(audio chunk, sample rate) as each chunk is ready; their concatenation is `generate`'s waveform."""
        models = self.models()
        text = str(request.condition.get("text", ""))
        parts = sentences(text)
        if not parts:
            raise InputError(f"llmvox: request {request.id!r} has no words to speak; give it some text.")
        # one CPU thread: a 30M-parameter network stepping one token at a time loses more to thread hand-offs than
        # it gains (20 steps of a 2-layer copy: 0.3 s on one thread, 6.8 s on two busy ones); restored at the end
        threads = torch.get_num_threads()
        if torch.device(self.device).type == "cpu":
            torch.set_num_threads(1)
        try:
            yield from self._stream(models, parts)
        finally:
            torch.set_num_threads(threads)

    def _stream(self, models: LLMVoXModels, parts: list[list[str]]) -> Iterator[tuple[np.ndarray, int]]:
        c = self.config
        rate = models.wavtokenizer.cfg.sample_rate
        max_tokens = min(models.decoder.cfg.block_size,
                         max(1, int(c.max_seconds * rate / models.wavtokenizer.cfg.hop_length)))
        replicas = [ChunkSchedule(c.initial_dump_size_1, c.max_dump_size),
                    ChunkSchedule(c.initial_dump_size_2, c.max_dump_size)]
        for k, words in enumerate(parts):
            for audio, _ in stream_tokens_to_audio(models, text_ids(words, self.tokenizer), replicas[k % 2],
                                                   max_tokens):
                yield audio, rate

    def generate(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        outputs = []
        for request in requests:
            chunks = list(self.stream(request))
            outputs.append((np.concatenate([a for a, _ in chunks]).astype(np.float32), chunks[0][1]))
        return outputs
