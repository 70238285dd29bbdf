"""Golden outputs of KALL-E from upstream's own code (issue 22).

Upstream: xkx-hub/KALL-E@12b0c94d800e7e3f76285884c109c6273af3f7cf (no licence file in the repository).

    python tests/golden/make_kalle.py /path/to/KALL-E-checkout

Runs in a venv with upstream's pinned `transformers==4.49.0`, `alias-free-torch` (0.0.6), `librosa` and
`pyyaml` on top of the project's (ARBench itself runs transformers 5).

What runs is upstream's `infer_tools.infer` (infer.py), `Kalle` (model.py) and `FlowVAE` (flowvae.py), on CPU:
- the tokenizer folder is a tiny byte-level BPE written here in the layout of upstream's `tokenizer_dir/`
  (Llama 3's `<|begin_of_text|>` template, upstream's 8 added tags, upstream's tokenizer_config.json fields);
  the real `tokenizer.json` (the Llama 3 vocabulary) is not in the stored mirror of the repository;
- the Flow-VAE at a small width (decoder 64 channels, encoder 12-16-16-16-32-32-32; released rates, kernels,
  latent size 512, causal, SnakeBeta) and Kalle with a 1-layer Llama (MLP width 64) of upstream's width 2048 (its
  `audio_linear` and `distribution_linear` sizes are hard-coded), both on seeded weights in the released
  layout (the Flow-VAE weight-normalised, `{'generator': ...}`; Kalle's tied `lm_head` equal to the
  embeddings, as a saved tied model has it). For the decode that must stop, `distribution_linear`'s weight is
  scaled by ALPHA and its bias moved by +1 (towards the end distribution N(1, e^2)), so the KL rule ends it
  mid-way; the test applies the same change;
- upstream's config builds the Llama in float16 (`torch_dtype`; `from_config` honours it) and runs it on CUDA
  under fp16 autocast; on the CPU, with autocast inactive, float16 weights cannot meet float32 inputs, so the
  small config here says float32 (ARBench's `precision=fp16-autocast` keeps upstream's float16 backbone);
- `infer_tools` is built without its `__init__` (which loads files onto `cuda:0`): its attributes are set to
  the modules above on the CPU; `torch.autocast(device_type="cuda")` is then inactive, so everything runs in
  float32. `Kalle.infer`'s `max_length` default is lowered to MAX_LENGTH (1000 upstream) so the decode that
  never meets the end distribution stays short. Nothing else is changed; the inputs and outputs of
  `Kalle.infer` and `FlowVAE.inference_from_latents` are recorded by wrapping them.

Stored (tests/test_tts_kalle.py compares): text ids with and without a prompt; the prompt's encoder output and
sampled prompt latents; the first step's distribution; the predicted distributions of a decode that stops
and of one cut at MAX_LENGTH; the float waveform and upstream's int16 output; the parameter names and shapes of
both networks at the released sizes (built on the meta device).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.distributions as D

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden, seeded_module_state  # noqa: E402

UPSTREAM = "xkx-hub/KALL-E@12b0c94d800e7e3f76285884c109c6273af3f7cf"
OUT = Path(__file__).resolve().parent / "kalle"
SEED = 22
ALPHAS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0)  # the first that ends the decode mid-way with a margin is kept
MAX_LENGTH = 12
TAGS = ["<|TEXT_GENERATION_START|>", "<|TEXT_GENERATION_END|>", "<|TEXT_UNDERSTANDING_START|>",
        "<|TEXT_UNDERSTANDING_END|>", "<|SPEECH_GENERATION_START|>", "<|SPEECH_GENERATION_END|>",
        "<|SPEECH_UNDERSTANDING_START|>", "<|SPEECH_UNDERSTANDING_END|>"]
CORPUS = ["KALL-E is a text-to-speech system that predicts continuous speech representations.",
          "oh that's crazy!", "Hello, have a nice day!", "The birch canoe slid on the smooth planks."]
PROMPT_TEXT = "oh that's crazy!"
TARGET_TEXT = "Hello, have a nice day!"
#: The Flow-VAE at a small width (released: upsample_initial_channel 1536, channels 12 ... 768, flow 512).
SMALL_VAE = {"upsample_initial_channel": 64, "downsample_channels": [12, 16, 16, 16, 32, 32, 32],
             "flow_hidden_channels": 16}
#: Kalle's Llama with one layer and a narrow MLP (released: 16 layers, intermediate 8192, vocabulary 128264).
SMALL_LLAMA = {"num_hidden_layers": 1, "intermediate_size": 64}


def write_tokenizer(folder: Path) -> int:
    """A byte-level BPE in the layout of upstream's tokenizer_dir; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|begin_of_text|>", "<|eot_id|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tok.add_tokens(TAGS)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    decoder = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                         "single_word": False, "special": True}
               for t in ("<|begin_of_text|>", "<|eot_id|>")}
    decoder.update({str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": True, "rstrip": False,
                                              "single_word": False, "special": False} for t in TAGS})
    config = {"added_tokens_decoder": decoder, "bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True,
              "eos_token": "<|eot_id|>", "extra_special_tokens": {},
              "model_input_names": ["input_ids", "attention_mask"],
              "model_max_length": 2048, "pad_token": "<|eot_id|>", "padding_side": "right",
              "tokenizer_class": "PreTrainedTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": {"content": "<|begin_of_text|>", "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False},
               "eos_token": {"content": "<|eot_id|>", "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False}, "pad_token": "<|eot_id|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return tok.get_vocab_size()


def prompt_audio() -> np.ndarray:
    """0.45 s of a 16 kHz test signal: two partials, a glide and noise (int16 on disk)."""
    t = np.arange(7200) / 16000
    gen = np.random.default_rng(SEED)
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * (500 + 800 * t) * t)
         + 0.05 * gen.standard_normal(t.size))
    return np.round(x * 32767).astype(np.int16)


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    import infer as upstream_infer  # noqa: E402  upstream
    import model as upstream_model  # noqa: E402  upstream
    from flowvae import FlowVAE  # noqa: E402  upstream

    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(OUT / "tokenizer_dir")
    sf.write(str(OUT / "prompt.wav"), prompt_audio(), 16000, subtype="PCM_16")
    config_path = Path(checkout) / "configs" / "flowvae_dim1024_12p5hz.json"
    released_h = upstream_infer.AttrDict(json.loads(config_path.read_text()))
    h = upstream_infer.AttrDict({**released_h, **SMALL_VAE})

    generator = FlowVAE(h)
    vae_state = seeded_module_state(generator, SEED)
    generator.load_state_dict(vae_state, strict=True)
    generator.eval()
    generator.remove_weight_norm()

    llama = upstream_model.LlamaConfig(**{**upstream_model.default_llama_config.to_dict(), **SMALL_LLAMA,
                                          "vocab_size": vocab, "torch_dtype": "float32"})
    kalle = upstream_model.Kalle(config=llama)
    lm_state = seeded_module_state(kalle, SEED + 1)
    lm_state["base_model.lm_head.weight"] = lm_state["base_model.model.embed_tokens.weight"]

    def stopping_state(alpha: float) -> dict:
        state = dict(lm_state)
        state["distribution_linear.weight"] = lm_state["distribution_linear.weight"] * alpha
        state["distribution_linear.bias"] = lm_state["distribution_linear.bias"] + 1.0
        return state

    tools = object.__new__(upstream_infer.infer_tools)
    tools.device = "cpu"
    tools.h = h
    tools.generator = generator
    tools.tokenizer_path = str(OUT / "tokenizer_dir")
    tools.init_tokenizer()
    tools.model = kalle
    upstream_model.Kalle.infer.__wrapped__.__defaults__ = (0.5, MAX_LENGTH)  # under its no_grad wrapper

    seen: dict[str, object] = {}
    model_infer, vae_infer = kalle.infer, generator.inference_from_latents

    def record_infer(input_ids, audio_latents, *args, **kwargs):
        seen.update(input_ids=input_ids.clone(), audio_latents=None if audio_latents is None else audio_latents.clone())
        out = model_infer(input_ids, audio_latents, *args, **kwargs)
        seen["distributions"] = out.clone()
        return out

    def record_vae(x, do_sample=True):
        out = vae_infer(x, do_sample=do_sample)
        seen["waveform"] = out.clone()
        return out

    kalle.infer = record_infer
    generator.inference_from_latents = record_vae
    extract = generator.extract_latents

    def record_extract(x):
        out = extract(x)
        seen["prompt_stats"] = out.clone()
        return out

    generator.extract_latents = record_extract
    steps: list[torch.Tensor] = []  # every step's distribution, the last (stopping) one included
    kalle.distribution_linear.register_forward_hook(lambda module, args, out: steps.append(out.detach().clone()))

    def end_kl(distribution: torch.Tensor) -> float:  # upstream's rule, as in Kalle.infer
        mean, logs = distribution.chunk(2, dim=2)
        end = D.Normal(torch.ones_like(mean), torch.exp(torch.ones_like(logs)))
        return float(D.kl_divergence(D.Normal(mean, torch.exp(logs)), end).sum(2) / mean.shape[2])

    def run(state: dict, prompt: bool):
        kalle.load_state_dict(state, strict=True)
        steps.clear()
        torch.manual_seed(SEED + 7)
        if prompt:
            return tools.infer(TARGET_TEXT, PROMPT_TEXT, str(OUT / "prompt.wav"))
        return tools.infer(TARGET_TEXT)

    cwd = os.getcwd()
    tmp = tempfile.TemporaryDirectory()
    os.chdir(tmp.name)  # infer_tools.infer writes output.wav into the working directory
    for alpha in ALPHAS:
        run(stopping_state(alpha), True)
        kls = [end_kl(d) for d in steps[4:]]
        margin = min(abs(k - 0.5) for k in kls)
        print(f"alpha {alpha}: {len(steps) - 1} frames, KL from step 4: {[round(k, 4) for k in kls]}")
        if 6 <= len(steps) - 1 <= MAX_LENGTH - 3 and margin > 1e-3:
            break
    else:
        sys.exit("no alpha ends the decode mid-way")
    stopping = stopping_state(alpha)
    arrays: dict[str, np.ndarray] = {"alpha": np.array(alpha), "max_length": np.array(MAX_LENGTH),
                                     "seed": np.array(SEED), "stop_kl_margin": np.array(margin)}
    try:
        for case, state, prompt in (("stop", stopping, True), ("cut", lm_state, True), ("free", stopping, False)):
            audio = run(state, prompt)
            arrays[f"{case}_ids"] = seen["input_ids"].numpy()
            arrays[f"{case}_distributions"] = seen["distributions"].numpy()
            arrays[f"{case}_waveform"] = seen["waveform"].numpy()
            arrays[f"{case}_int16"] = np.asarray(audio)
            if prompt:
                arrays[f"{case}_prompt_stats"] = seen["prompt_stats"].numpy()
                arrays[f"{case}_prompt_latents"] = seen["audio_latents"].numpy()
            print(case, "frames", seen["distributions"].shape[-1])
    finally:
        os.chdir(cwd)
        tmp.cleanup()
    # the first step's distribution, from upstream's modules on the recorded inputs
    kalle.load_state_dict(stopping, strict=True)
    with torch.no_grad():
        ids = torch.from_numpy(arrays["stop_ids"])
        embeds = torch.cat((kalle.base_model.model.embed_tokens(ids[None]),
                            kalle.audio_linear(torch.from_numpy(arrays["stop_prompt_latents"]))), dim=1)
        hidden = kalle.base_model.model(inputs_embeds=embeds)[0][:, -1:, :]
        arrays["stop_first_distribution"] = kalle.distribution_linear(hidden).numpy()

    with torch.device("meta"):
        released_vae = FlowVAE(released_h)
        released_lm = upstream_model.Kalle()
    arrays["layout_flowvae"] = np.array(json.dumps({k: list(v.shape) for k, v in released_vae.state_dict().items()}))
    arrays["layout_kalle"] = np.array(json.dumps({k: list(v.shape) for k, v in released_lm.state_dict().items()}))
    arrays["layout_small_flowvae"] = np.array(json.dumps({k: list(v.shape) for k, v in vae_state.items()}))
    arrays["layout_small_kalle"] = np.array(json.dumps({k: list(v.shape) for k, v in lm_state.items()}))
    save_golden(OUT, UPSTREAM, arrays)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
