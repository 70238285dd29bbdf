"""Golden outputs of LLMVoX and its WavTokenizer decoder from upstream's own code (issue 22).

Upstream: mbzuai-oryx/LLMVoX@c6d26c0c95519e1fa898d848b2bac8f8782f5265 (CC BY-NC-SA 4.0), including its vendored
WavTokenizer (MIT).

    python tests/golden/make_llmvox.py /path/to/LLMVoX-checkout

Runs on the project's venv (torch, transformers). What runs is upstream's code:
- `src/model.py`'s `GPT` (nanoGPT decoder) at a small size (2 layers, 4 heads, width 64 + 512, 64 positions, vocab
  512, bias=False) on seeded weights;
- `WavTokenizer/decoder/models.py`'s `VocosBackbone` and `heads.py`'s `ISTFTHead` at a small size (width 64, 2
  ConvNeXt blocks, n_fft 64, hop 16) on seeded weights, with a seeded 512 x 512 codebook, driven by
  `WavTokenizer.codes_to_features` and `WavTokenizer.decode` (their source taken from `decoder/pretrained.py`);
- `smart_tokenizer_and_embedding_resize` (from `inference/model_handler.py`) on a tiny T5ForConditionalGeneration
  (vocab 384, d_model 64) with seeded embeddings: the two added rows of the text embedding;
- `audio_generator_sync` (from `streaming_server.py`) in a thread, fed the LLM tokens "Hello", "world",
  "speech<|eot_id|>", with initial_dump_size 4 and max_dump_size 36: every chunk it streams and every token it
  decodes (recorded by wrapping `codes_to_features`).

Functions are taken from upstream's files by name (ast) and executed in a namespace holding what their modules
import, because importing those modules pulls in servers, Whisper and the training stack. Stubbed (import-only,
not the compared code): `torchaudio.functional.functional` (heads.py imports two mel helpers for another head);
`EncodecFeatures` (only the class `codes_to_features` asserts; the stand-in holds the codebook at upstream's
attribute path `feature_extractor.encodec.quantizer.vq.layers[0].codebook`). The tokenizer is transformers'
`ByT5Tokenizer()` where upstream loads `google/byt5-small` from the hub (the same byte tokenizer; no network here).

Random weights never emit the end-of-audio token 453 on their own, so decoding would not end: the position
table rows from step 30 on get a large component along a seeded direction and `lm_head` row 453 points along it
(`force_end`, which the test applies too), so the decode ends there.
"""

from __future__ import annotations

import ast
import queue
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import layout, save_golden, seeded_fill, seeded_tensor  # noqa: E402

UPSTREAM = "mbzuai-oryx/LLMVoX@c6d26c0c95519e1fa898d848b2bac8f8782f5265"
OUT = Path(__file__).resolve().parent / "llmvox"
SEED = 22
TEXT_DIM, VOCAB, BLOCK, END_AT = 64, 512, 64, 30
LLM_TOKENS = ["Hello", "world", "speech<|eot_id|>"]
INITIAL_DUMP, MAX_DUMP = 4, 36
EOS = "<|eot_id|>"


def force_end(state: dict, end_at: int = END_AT, seed: int = SEED) -> dict:
    """Make greedy decoding emit token 453 from step `end_at` on: a seeded unit direction is added, x 50, to the
    position rows `end_at`.., and `lm_head` row 453 is that direction x 0.3 (everything else stays seeded)."""
    state = dict(state)
    wpe, head = state["transformer.wpe.weight"].clone(), state["lm_head.weight"].clone()
    u = seeded_tensor("force_end.direction", (1, wpe.shape[1]), seed)[0]
    u = u - u.mean()
    u = u / u.norm()
    wpe[end_at:] += 50 * u
    head[453] = 0.3 * u
    state["transformer.wpe.weight"], state["lm_head.weight"] = wpe, head
    return state


def upstream_function(path: Path, name: str, namespace: dict, cls: str | None = None):
    """A function (or a method of class `cls`) defined in an upstream file, executed in `namespace`."""
    tree = ast.parse(path.read_text())
    body = tree.body
    if cls is not None:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    node = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == name)
    node.decorator_list = []
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
    return namespace[name]


def main(root: Path) -> None:
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    sys.path[:0] = [str(root), str(root / "WavTokenizer")]
    stubs = {name: types.ModuleType(name) for name in
             ("torchaudio", "torchaudio.functional", "torchaudio.functional.functional")}
    stubs["torchaudio.functional.functional"]._hz_to_mel = stubs["torchaudio.functional.functional"]._mel_to_hz = None
    sys.modules.update(stubs)
    from decoder.heads import ISTFTHead
    from decoder.models import VocosBackbone
    from src.model import GPT, GPTConfig

    for name in stubs:
        del sys.modules[name]

    # -- the decoder (nanoGPT) --
    gpt = GPT(GPTConfig(block_size=BLOCK, vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=TEXT_DIM + 512,
                        dropout=0.0, bias=False, is_train=False))
    seeded_fill(gpt, SEED)
    gpt.load_state_dict(force_end(gpt.state_dict()))
    gpt.eval()

    # -- WavTokenizer's decoder --
    class EncodecFeatures(torch.nn.Module):
        pass

    wav = torch.nn.Module()
    wav.backbone = VocosBackbone(input_channels=512, dim=64, intermediate_dim=96, num_layers=2,
                                 adanorm_num_embeddings=4)
    wav.head = ISTFTHead(dim=64, n_fft=64, hop_length=16, padding="same")
    seeded_fill(wav, SEED + 1)
    codebook = seeded_tensor("feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed", (VOCAB, 512), SEED + 2)
    layer = types.SimpleNamespace(codebook=codebook)
    wav.feature_extractor = EncodecFeatures()
    wav.feature_extractor.encodec = types.SimpleNamespace(
        quantizer=types.SimpleNamespace(bins=VOCAB, vq=types.SimpleNamespace(layers=[layer])))
    pretrained = root / "WavTokenizer" / "decoder" / "pretrained.py"
    ns = {"torch": torch, "EncodecFeatures": EncodecFeatures, "Any": object}
    codes_to_features = upstream_function(pretrained, "codes_to_features", ns, cls="WavTokenizer")
    decode = upstream_function(pretrained, "decode", ns, cls="WavTokenizer")
    looked_up: list[list[int]] = []  # every codes_to_features call; those followed by decode() are chunks
    chunk_codes: list[list[int]] = []

    class Vocoder:
        def codes_to_features(self, codes):
            looked_up.append(codes.reshape(-1).tolist())
            return codes_to_features(wav, codes)

        def decode(self, features, **kwargs):
            chunk_codes.append(looked_up.pop())
            return decode(wav, features, **kwargs)

    # -- the text embedding: CharsiuG2P's T5 with upstream's two added tokens --
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=384, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                             num_decoder_layers=1, num_heads=2))
    base = seeded_tensor("shared.weight", (384, TEXT_DIM), SEED + 3)
    with torch.no_grad():
        t5.shared.weight.copy_(base)
    tokenizer = ByT5Tokenizer()
    resize = upstream_function(root / "inference" / "model_handler.py", "smart_tokenizer_and_embedding_resize", {})
    for tokens in (dict(pad_token="[PAD]"), dict(pad_token="EOS")):
        resize(special_tokens_dict=tokens, tokenizer=tokenizer, model=t5)
    embed = t5.encoder.embed_tokens.eval()

    # -- one step's logits on a fixed input, and the vocoder on fixed codes --
    gen = torch.Generator().manual_seed(SEED)
    step_input = F.normalize(torch.randn(1, 7, TEXT_DIM + 512, generator=gen), dim=2)
    codes = torch.randint(0, VOCAB, (1, 20), generator=gen)
    with torch.no_grad():  # upstream's inference path: one new vector per call, the sequence so far, a kv cache
        cache, step_logits = None, []
        for i in range(1, step_input.shape[1] + 1):
            logits, _, cache = gpt(step_input[:, :i], kvcache=cache)
            step_logits.append(logits[0, -1])
        audio = Vocoder().decode(Vocoder().codes_to_features(codes), bandwidth_id=torch.tensor([0]))
    looked_up.clear()
    chunk_codes.clear()

    # -- upstream's streaming loop --
    config = {"max_audio_length": 8000, "eos_token": EOS, "pad_token_id": 384, "eoa_token_id": 453,
              "max_dump_size": MAX_DUMP}
    ns = {"torch": torch, "F": F, "time": time, "config": config, "print": lambda *a, **k: None}
    loop = upstream_function(root / "streaming_server.py", "audio_generator_sync", ns)
    handler = types.SimpleNamespace(tokenizer=tokenizer, llm_model=embed, model=gpt, wavtokenizer=Vocoder(),
                                    device=torch.device("cpu"))
    text_q, audio_q = queue.Queue(), queue.Queue()
    for token in LLM_TOKENS:
        text_q.put(token)
    threading.Thread(target=loop, args=(0, INITIAL_DUMP, handler, text_q, audio_q), daemon=True).start()
    chunks = []
    while (item := audio_q.get(timeout=300)) != "end":
        if not isinstance(item, bytes):
            raise SystemExit(f"upstream signalled {item!r} after tokens {looked_up}, chunks {chunk_codes}")
        chunks.append(np.frombuffer(item, dtype=np.float32).copy())
    fed_back = [c[0] for c in looked_up]
    assert sum(len(c) for c in chunk_codes) == len(fed_back) + 1 and fed_back[-1] != 453, "unexpected decode"
    tokens = fed_back + [chunk_codes[-1][-1]]
    assert tokens[-1] == 453, tokens
    text_ids = [i for t in LLM_TOKENS for i in tokenizer(t.replace(EOS, ""))["input_ids"]] + [385]

    with torch.device("meta"):  # the released sizes (configs/train_config.py, the WavTokenizer yaml)
        released_gpt = GPT(GPTConfig(block_size=8192, vocab_size=4096, n_layer=4, n_head=8, n_embd=768, bias=False,
                                     is_train=False))
        released_wav = torch.nn.Module()
        released_wav.backbone = VocosBackbone(input_channels=512, dim=768, intermediate_dim=2304, num_layers=12,
                                              adanorm_num_embeddings=4)
        released_wav.head = ISTFTHead(dim=768, n_fft=1280, hop_length=320, padding="same")
    arrays = {
        "gpt_layout_released": np.array(layout(released_gpt)), "wav_layout_released": np.array(layout(released_wav)),
        "gpt_layout": np.array(layout(gpt)), "wav_layout": np.array(layout(wav)),
        "added_text_rows": embed.weight[384:].detach().numpy(),
        "step_input": step_input.numpy(), "step_logits": torch.stack(step_logits).numpy(),
        "codes": codes.numpy(), "audio": audio[0].numpy(),
        "llm_tokens": np.array(LLM_TOKENS), "text_ids": np.array(text_ids), "tokens": np.array(tokens),
        "chunk_sizes": np.array([len(c) for c in chunk_codes]), "stream_audio": np.concatenate(chunks),
        "settings": np.array([TEXT_DIM, VOCAB, BLOCK, END_AT, INITIAL_DUMP, MAX_DUMP, SEED]),
    }
    print(f"{len(tokens)} tokens, chunks {[len(c) for c in chunk_codes]}, text ids {len(text_ids)}")
    save_golden(OUT, UPSTREAM, arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/up-llmvox"))
