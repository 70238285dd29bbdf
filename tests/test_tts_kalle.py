"""KALL-E against upstream's own code (tests/golden/make_kalle.py, xkx-hub/KALL-E@12b0c94) on seeded weights, read
through the method's normal loading path from files in upstream's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from baselines.tts.kalle import FlowVAE, FlowVAEConfig, KalleLM, llama_config
from baselines.tts.kalle_method import KallE, KalleSettings
from harness.api import Request
from harness.errors import ArbenchError, InputError, MissingAssetError

GOLDEN = Path(__file__).resolve().parent / "golden" / "kalle"
SMALL_VAE = FlowVAEConfig(upsample_initial_channel=64, downsample_channels=(12, 16, 16, 16, 32, 32, 32))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The small networks' many little convolutions are 15x slower on two contended threads than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN / "golden.npz"))


def close(ours, theirs, rtol=1e-5, atol=1e-5):
    ours = ours.detach().float().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


def seeded(layout: dict, seed: int, buffers: dict) -> dict[str, torch.Tensor]:
    import sys

    sys.path.insert(0, str(GOLDEN.parent))
    from golden_weights import seeded_tensor

    return {k: buffers[k].clone() if k in buffers else seeded_tensor(k, shape, seed) for k, shape in layout.items()}


def model_dir(tmp: Path, g: dict, stopping: bool) -> Path:
    """Upstream's layout: ckpt/model.pt (Kalle's state dict, tied lm_head), ckpt/flowvae.pt ({'generator': ...},
    weight-normalised, with the flow), tokenizer_dir/ (the golden's small tokenizer)."""
    import shutil

    seed = int(g["seed"])
    folder = tmp / ("stop" if stopping else "plain")
    (folder / "ckpt").mkdir(parents=True)
    shutil.copytree(GOLDEN / "tokenizer_dir", folder / "tokenizer_dir")
    filters = {k: v for k, v in FlowVAE(SMALL_VAE).state_dict().items() if k.endswith("filter")}
    torch.save({"generator": seeded(json.loads(str(g["layout_small_flowvae"])), seed, filters)},
               folder / "ckpt" / "flowvae.pt")
    lm = seeded(json.loads(str(g["layout_small_kalle"])), seed + 1, {})
    lm["base_model.lm_head.weight"] = lm["base_model.model.embed_tokens.weight"]
    if stopping:
        lm["distribution_linear.weight"] = lm["distribution_linear.weight"] * float(g["alpha"])
        lm["distribution_linear.bias"] = lm["distribution_linear.bias"] + 1.0
    torch.save(lm, folder / "ckpt" / "model.pt")
    return folder


class SmallKallE(KallE):
    flowvae_config = SMALL_VAE
    llama_overrides = {"num_hidden_layers": 1, "intermediate_size": 64}


def small(folder: Path, g: dict, **settings) -> KallE:
    vocab = json.loads(str(g["layout_small_kalle"]))["base_model.model.embed_tokens.weight"][0]
    cls = type("SmallKallE", (SmallKallE,), {"llama_overrides": {**SmallKallE.llama_overrides, "vocab_size": vocab}})
    return cls(KalleSettings(**{"precision": "fp32", "max_frames": int(g["max_length"]), "model_dir": str(folder),
                                **settings}))


@pytest.fixture(scope="module")
def methods(golden, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kalle")
    folders = {"stop": model_dir(tmp, golden, True), "cut": model_dir(tmp, golden, False)}
    return {case: small(folder, golden) for case, folder in folders.items()}


def request(seed: int, prompt: bool = True, uid: str = "u1", text: str = "Hello, have a nice day!") -> Request:
    condition = {"text": text, "prompt_wav": str(GOLDEN / "prompt.wav") if prompt else "",
                 "prompt_text": "oh that's crazy!" if prompt else ""}
    return Request(0, uid, seed, condition)


def test_released_layout_is_upstreams(golden):
    """At the released sizes every parameter name and shape is upstream's (weight norm folded, the training-only
    flow and the tied lm_head left out)."""
    upstream = json.loads(str(golden["layout_flowvae"]))
    folded = {k[:-2]: v for k, v in upstream.items() if k.endswith("weight_v")}
    folded.update({k: v for k, v in upstream.items() if not k.endswith(("weight_v", "weight_g"))})
    expected = {k: v for k, v in folded.items() if not k.startswith("flow.")}
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in FlowVAE(FlowVAEConfig()).state_dict().items()}
        lm = {k: list(v.shape) for k, v in KalleLM(llama_config()).state_dict().items()}
    assert ours == expected
    kalle = json.loads(str(golden["layout_kalle"]))
    assert lm == {k: v for k, v in kalle.items() if k != "base_model.lm_head.weight"}
    # Llama-3.2-1B's 1,235,814,400 parameters, 8 added token rows, audio_linear and distribution_linear
    assert sum(np.prod(v) for v in lm.values()) == 1_235_814_400 + 8 * 2048 + (512 * 2048 + 2048) + (2048 * 1024 + 1024)


def test_text_ids(golden, methods):
    _, _, tokenizer = methods["stop"].load()
    method = methods["stop"]
    assert method.text_ids(tokenizer, "Hello, have a nice day!", "oh that's crazy!") == golden["stop_ids"].tolist()
    assert method.text_ids(tokenizer, "Hello, have a nice day!", None) == golden["free_ids"].tolist()


def test_prompt_latents_and_first_step(golden, methods):
    method = methods["stop"]
    lm, vae, _ = method.load()
    audio = method.prompt_audio(str(GOLDEN / "prompt.wav"))
    close(vae.extract_latents(audio.reshape(1, 1, -1)), golden["stop_prompt_stats"])
    latents = vae.prompt_latents(audio, torch.Generator().manual_seed(int(golden["seed"]) + 7))
    close(latents, golden["stop_prompt_latents"])
    ids = torch.tensor(golden["stop_ids"])
    with torch.no_grad():
        embeds = torch.cat((lm.base_model.model.embed_tokens(ids[None]), lm.audio_linear(latents)), dim=1)
        first = lm.step_distribution(lm.base_model.model(inputs_embeds=embeds).last_hidden_state)
    close(first, golden["stop_first_distribution"])


@pytest.mark.parametrize("case", ["stop", "cut", "free"])
def test_decode_and_waveform(golden, methods, case):
    """The whole pipeline: predicted distributions (a decode the KL rule ends, one cut at max_frames, one with no
    prompt), the decoder's waveform from them, and upstream's int16 file."""
    method = methods["cut" if case == "cut" else "stop"]
    lm, vae, tokenizer = method.load()
    seed = int(golden["seed"]) + 7
    generator = torch.Generator().manual_seed(seed)
    prompt = case != "free"
    latents = vae.prompt_latents(method.prompt_audio(str(GOLDEN / "prompt.wav")), generator) if prompt else None
    ids = torch.tensor(method.text_ids(tokenizer, "Hello, have a nice day!", "oh that's crazy!" if prompt else None))
    distributions = lm.infer(ids, latents, generator, 0.5, int(golden["max_length"]))
    assert distributions.shape == golden[f"{case}_distributions"].shape
    close(distributions, golden[f"{case}_distributions"])
    with torch.no_grad():
        waveform = vae.inference_from_latents(distributions, generator)
    close(waveform, golden[f"{case}_waveform"], rtol=1e-4, atol=1e-5)
    audio, rate = method.generate([request(seed, prompt)])[0]
    assert rate == 16000
    close(audio, golden[f"{case}_waveform"].reshape(-1), rtol=1e-4, atol=1e-5)
    assert np.abs((audio * 32767.0).astype(np.int16).astype(int) - golden[f"{case}_int16"].astype(int)).max() <= 1


def test_stop_rule_and_lengths(golden):
    """The KL rule ended one decode before max_length; the other ran to it and lost its last frame."""
    assert golden["stop_distributions"].shape[-1] < int(golden["max_length"]) - 1
    assert golden["cut_distributions"].shape[-1] == int(golden["max_length"]) - 1
    assert golden["stop_waveform"].shape[-1] == 1280 * golden["stop_distributions"].shape[-1]


def test_batching_never_changes_a_waveform(methods):
    method = methods["stop"]
    one = method.generate([request(3, uid="a")])[0][0]
    two = method.generate([request(4, uid="b", text="The birch canoe slid."), request(3, uid="a")])
    np.testing.assert_array_equal(two[1][0], one)
    assert not np.array_equal(method.generate([request(5, uid="a")])[0][0][:1280], one[:1280])


def test_bad_requests_are_refused_before_synthesis(methods, tmp_path):
    method = methods["stop"]
    bad = [request(1, uid="empty", text="  "), Request(1, "notext", 1, {"text": "Hi there", "prompt_wav":
                                                                      str(GOLDEN / "prompt.wav"), "prompt_text": ""}),
           Request(2, "gone", 1, {"text": "Hi", "prompt_wav": str(tmp_path / "gone.wav"), "prompt_text": "x"})]
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    sf.write(str(tmp_path / "short.wav"), np.zeros(2000, dtype=np.float32), 16000)
    bad += [Request(3, name, 1, {"text": "Hi", "prompt_wav": str(tmp_path / f"{name}.wav"), "prompt_text": "x"})
            for name in ("junk", "short")]
    refused = (r"5 requests cannot.*empty: empty text.*notext: .*no prompt_text.*gone: .*missing.*junk: .*unreadable"
               r".*short: .* is 0.125 s long; KALL-E needs at least 0.16 s")
    with pytest.raises(InputError, match=refused):
        method.generate(bad)


def test_missing_weights_are_named_at_once(tmp_path):
    with pytest.raises(MissingAssetError, match=r"needs 5 files") as info:
        KallE(KalleSettings(model_dir=str(tmp_path), precision="fp32")).checkpoint_sha256()
    for name in ("model.pt", "flowvae.pt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert name in str(info.value)


def test_fp16_autocast_needs_cuda(golden, methods):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ArbenchError, match="needs a CUDA device"):  # refused when built, before any file is read
        small(Path(methods["stop"].config.model_dir), golden, precision="fp16-autocast")


def test_seed_tts_requests_drive_the_method(methods, tmp_path):
    """A Seed-TTS-eval list (prompt paths relative to it) through the task's requests and shard writer."""
    import shutil

    from tasks.tts import SeedTTSEnglish, TTSConfig

    (tmp_path / "prompt-wavs").mkdir()
    shutil.copy(GOLDEN / "prompt.wav", tmp_path / "prompt-wavs" / "p1.wav")
    (tmp_path / "meta.lst").write_text("utt1|oh that's crazy!|prompt-wavs/p1.wav|Hello, have a nice day!\n")
    task = SeedTTSEnglish(TTSConfig(list_path=str(tmp_path / "meta.lst"), utmos=False))
    requests = task.requests()
    outputs = methods["stop"].generate(requests)
    task.write_shard(outputs, requests, tmp_path)
    audio, rate = sf.read(str(tmp_path / "utt1.wav"), dtype="float32")
    frames, rest = divmod(len(audio), 1280)
    assert rate == 16000 and rest == 0 and 4 <= frames <= methods["stop"].config.max_frames
    same = methods["stop"].generate([request(requests[0].seed, uid="utt1")])[0][0]
    np.testing.assert_array_equal(audio, same)


def test_rotary_table_stays_float32_under_fp16(methods, monkeypatch):
    """Upstream's float16 Llama keeps its rotary inv_freq in float32; so must the fp16-autocast load (checked on the
    CPU by letting the CUDA check pass: only the dtypes are looked at, nothing is run)."""
    import baselines.tts.kalle_method as km

    monkeypatch.setattr(km, "precision_context", lambda *args: None)
    folder = methods["stop"].config.model_dir
    method = type(methods["stop"])(km.KalleSettings(precision="fp16-autocast", model_dir=folder))
    lm, vae, _ = method.load()
    assert lm.base_model.model.embed_tokens.weight.dtype == torch.float16
    assert lm.base_model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert lm.audio_linear.weight.dtype == lm.distribution_linear.weight.dtype == torch.float32
    assert next(vae.parameters()).dtype == torch.float32
