"""NOVA text-to-image against upstream's code (tests/golden/nova, made by tests/golden/make_nova.py from
baaivision/NOVA@2cd254a on seeded random weights): the text-conditioning path (Phi states through transformers,
text tokens with the null rows), the temporal context, one set-by-set step of the image encoder, one denoising step
of the diffusion MLP, and a deterministic sample end to end (latents and decoded uint8 images) through the registered
method's loading path from a snapshot in the released layout; deliberate breaks that the golden data catches; the
released transformer names and shapes; clean refusals (missing files all named, a snapshot of another model)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from baselines.imagegen import nova
from baselines.imagegen.nova import (DiffusionMLPConfig, NOVAConfig, NOVATransformer, ViTConfig, image_context,
                                     mask_schedule, text_context)
from baselines.imagegen.nova_methods import NOVA_FILES, NOVA_T2I_METHODS
from harness.api import Request, build_config
from harness.errors import ArbenchError, MissingAssetError
from harness.registry import METHODS, register_method
from imagegen_fixtures import run_geneval_counting
from golden.golden_weights import seeded_state

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "nova"
SNAPSHOT = GOLDEN / "snapshot"
PROMPTS = ["a photo of a red bench", "a photo of two blue clocks"]  # make_nova.py PROMPTS
SEEDS = {"transformer": 11, "text_encoder": 12, "vae": 13}
SAMPLE = {"num_pred_steps": 6, "num_diffusion_steps": 4, "guidance_scale": 7.0, "precision": "fp32"}
TINY = NOVAConfig(ViTConfig(2, 64, 4), ViTConfig(4, 64, 4), DiffusionMLPConfig(2, 48), image_size=(64, 64),
                  text_token_dim=32, text_token_len=12, image_base_size=(4, 4), video_base_size=(1, 2, 2))
RTOL, ATOL = 1e-5, 1e-5  # float32 CPU; observed differences ~1e-6


@pytest.fixture(scope="module")
def golden():
    return {k: torch.from_numpy(v) if v.dtype != np.uint8 else v for k, v in np.load(GOLDEN / "golden.npz").items()
            if k != "upstream"}


def write_snapshot(folder: Path) -> Path:
    """The tiny model as a released snapshot: the golden configs and tokenizer, weights rebuilt from the seeds and
    written by upstream's file names (the text encoder as two shards with their index)."""
    from diffusers import AutoencoderKL
    from transformers import PhiConfig, PhiForCausalLM

    shutil.copytree(SNAPSHOT, folder)
    transformer = seeded_state(NOVATransformer(TINY).state_dict(), SEEDS["transformer"])
    save_file(transformer, str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    phi = PhiForCausalLM(PhiConfig.from_pretrained(str(folder / "text_encoder")))
    state = seeded_state(phi.state_dict(), SEEDS["text_encoder"])
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, part in halves.items():
        save_file({k: state[k].contiguous() for k in part}, str(folder / "text_encoder" / file))
    (folder / "text_encoder" / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, part in halves.items() for k in part}}))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae")))
    save_file(seeded_state(vae.state_dict(), SEEDS["vae"]), str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    return folder


class TinyNOVA(NOVA_T2I_METHODS[0]):
    """The registered 512 px method with the golden file's tiny architecture; everything else is the released path."""

    name = "nova-tiny-test"
    expected = {"image_size": [64, 64], "arch": ["vit_d2w64", "vit_d4w64", "mlp_d2w48"]}

    def transformer_config(self):
        raw = json.loads(self._path("transformer/config.json").read_text())
        assert raw["arch"] == self.expected["arch"]
        return TINY


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return write_snapshot(tmp_path_factory.mktemp("nova") / "nova-tiny")


@pytest.fixture(scope="module")
def method(snapshot):
    m = TinyNOVA(build_config(TinyNOVA.Config, {**SAMPLE, "model_dir": str(snapshot)}, "tiny"))
    m.load()
    return m


def close(a, b, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol)


def test_text_states_match_upstream(method, golden):
    """Phi-2 through transformers' PhiModel == upstream's PhiEncoderModel (same released names)."""
    states = method.prompt_states(PROMPTS)
    for i, s in enumerate(states):
        close(s, golden[f"text_states_{i}"])


def test_text_tokens_match_upstream(method, golden):
    for i in range(2):
        tokens = text_context(method._model, [golden[f"text_states_{i}"]], guided=True)
        close(tokens, golden[f"text_tokens_{i}"])  # prompt, then the null prompt (learned rows)
        assert (tokens[0] - tokens[1]).abs().mean() > 0.1


def test_temporal_context_matches_upstream(method, golden):
    context = image_context(method._model, golden["text_tokens_0"])
    close(context, golden["video_out_0"])
    other = image_context(method._model, golden["text_tokens_1"])
    close(other, golden["video_out_1"])
    assert (golden["video_out_0"] - golden["video_out_1"]).abs().mean() > 1e-2  # it reads the text


def test_one_set_step_matches_upstream(method, golden):
    """The image encoder for a given masked input, known set and temporal context (first set, and set 3)."""
    enc = method._model.image_encoder
    for i in range(2):
        for j in (0, 2):
            known = golden[f"image_known_{i}_{j}"].long()
            out = enc(golden[f"image_in_{i}_{j}"], golden[f"video_out_{i}"], known)
            close(out, golden[f"image_out_{i}_{j}"])
    assert golden["image_known_0_2"].shape[1] == 2  # the later set had patches known


def test_one_denoising_step_matches_upstream(method, golden):
    """The diffusion MLP's velocity for the step's patches (upstream computes all and keeps these)."""
    mlp, pe = method._model.image_decoder, method._model.image_encoder.patch_embed
    for i in range(2):
        ids = golden[f"mlp_ids_{i}"].long()
        gather = lambda t: t.gather(1, ids.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        out = mlp(gather(pe.patchify(golden[f"mlp_x_{i}"])), golden[f"mlp_t_{i}"], gather(golden[f"mlp_z_{i}"]))
        close(out, gather(golden[f"mlp_out_{i}"]))


def test_deterministic_sample_matches_upstream(method, golden):
    """End to end from the prompt text through the registered method: latents and uint8 images of each request
    equal upstream's (batches of one, generators seeded 0 and 1); the images are decoded by diffusers'
    AutoencoderKL on upstream's VAE names."""
    requests = [Request(i, f"{i:05d}/0000", i, {"prompt": p}) for i, p in enumerate(PROMPTS)]
    from baselines.imagegen.sampling import request_generators
    for i in range(2):
        latents = nova.generate_image(method._model, method._scheduler, method.prompt_states(PROMPTS[i:i + 1]),
                                      request_generators([i]), 6, 4, 7.0)
        close(latents, golden[f"latents_{i}"])
        image = method.generate(requests[i:i + 1])
        assert image.dtype == np.uint8 and image.shape == (1, 16, 16, 3)
        diff = np.abs(image[0].astype(int) - golden[f"images_{i}"][0].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02  # truncation to uint8 at a float boundary
    # in a batch, each request keeps its own draws; only float reordering of batched kernels differs (amplified
    # by guidance 7 over 24 flow steps on these random weights: observed 1.5e-3 on latents of scale 2)
    batched = method.generate(requests)
    for i in range(2):
        assert np.abs(batched[i].astype(int) - golden[f"images_{i}"][0].astype(int)).max() <= 2


def test_deliberate_breaks_fail(method, golden, monkeypatch):
    """Plausible re-implementation slips; each one must be caught by the golden data."""
    model = method._model

    def differs(a, b):
        return not torch.allclose(a.float(), b.float(), rtol=RTOL, atol=ATOL)

    with torch.no_grad():
        # 1. the null prompt as zeros instead of the learned rows of the text embedding's buffer
        states = [golden["text_states_0"]]
        x = torch.cat([model.text_embed.fill(states), torch.zeros_like(model.text_embed.fill(states))])
        assert differs(model.text_embed(x), golden["text_tokens_0"])
        # 2. pre-norm blocks (x + f(norm(x))) instead of upstream's x + norm(f(x))
        monkeypatch.setattr(nova.Block, "forward",
                            lambda self, x: (lambda y: y + self.mlp(self.norm2(y)))(x + self.attn(self.norm1(x))))
        assert differs(model.image_encoder(golden["image_in_0_2"], golden["video_out_0"],
                                           golden["image_known_0_2"].long()), golden["image_out_0_2"])
        monkeypatch.undo()
        # 3. all blocks over all patches (no known-only first half)
        enc = model.image_encoder
        full = enc(golden["image_in_0_2"], golden["video_out_0"], None)
        assert differs(full, golden["image_out_0_2"])
        # 4. timestep embedding as [sin, cos] (upstream: [cos, sin])
        original = nova.TimeCondEmbed.forward

        def sin_cos(self, timestep, z):
            half = self.freq_dim // 2
            freq = torch.exp(torch.arange(half, dtype=torch.float32) * (-np.log(10000) / half))
            a = timestep.float().unsqueeze(-1) * freq
            return self.condition_proj(z) + self.timestep_proj(torch.cat([a.sin(), a.cos()], -1)).unsqueeze(1)

        monkeypatch.setattr(nova.TimeCondEmbed, "forward", sin_cos)
        ids = golden["mlp_ids_0"].long()
        gather = lambda t: t.gather(1, ids.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        out = model.image_decoder(gather(enc.patch_embed.patchify(golden["mlp_x_0"])), golden["mlp_t_0"],
                                  gather(golden["mlp_z_0"]))
        assert differs(out, gather(golden["mlp_out_0"]))
        monkeypatch.setattr(nova.TimeCondEmbed, "forward", original)


def test_mask_schedule_is_upstreams(golden):
    assert mask_schedule(6, 16) == [1, 1, 3, 3, 4, 4]
    assert int(golden["num_sets_0"]) == 6 and golden["mlp_ids_0"].shape[1] == 3  # set 3 predicts 3 patches
    steps = mask_schedule(128, 32 * 32)  # the 512 px GenEval setting: every patch exactly once
    assert sum(steps) == 1024 and len(steps) <= 128


def test_released_names_and_shapes():
    """NOVATransformer built from each released training config has upstream's state-dict names and shapes."""
    with gzip.open(GOLDEN / "released_shapes.json.gz") as f:
        released = json.load(f)
    assert len(released) == 4
    for name, entry in released.items():
        with torch.device("meta"):
            ours = NOVATransformer(NOVAConfig.from_upstream(entry["config"]))
        assert {k: list(v.shape) for k, v in ours.state_dict().items()} == entry["state"], name
    assert any(k.startswith("motion_embed.") for k in released["nova_d48w1024_osp480"]["state"])


def test_methods_registered_with_upstream_defaults():
    names = [m.name for m in NOVA_T2I_METHODS]
    assert names == ["nova-d48w1024-sd512", "nova-d48w768-sdxl1024", "nova-d48w1024-sdxl1024", "nova-d48w1536-sdxl1024"]
    for name in names:
        cls = METHODS.get(name)
        c = cls.Config()
        assert cls.modality == "text-to-image"
        assert (c.num_pred_steps, c.num_diffusion_steps, c.guidance_scale, c.precision) == (128, 25, 7.0, "fp16")
        assert [s.filename.split("/", 1)[1] for s in cls.specs] == list(NOVA_FILES)
        assert all("Apache-2.0" in s.license and s.url.startswith("https://huggingface.co/BAAI/" + name) for s in cls.specs)


def test_missing_files_are_all_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingAssetError) as info:
        METHODS.get("nova-d48w1024-sd512")().checkpoint_sha256()
    for name in NOVA_FILES:
        assert f"nova-d48w1024-sd512/{name}" in str(info.value)


def test_geneval_refusal_names_method_and_scorer_files(tmp_path, monkeypatch):
    from tasks.geneval import GenEval
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingAssetError) as info:
        GenEval().check_method(METHODS.get("nova-d48w1536-sdxl1024")())
    for name in ("transformer/diffusion_pytorch_model.safetensors", "model-00002-of-00002.safetensors",
                 "mask2former", "geneval_evaluation"):
        assert name in str(info.value)


def test_snapshot_of_another_model_is_refused(snapshot):
    cls = METHODS.get("nova-d48w768-sdxl1024")
    m = cls(build_config(cls.Config, {"model_dir": str(snapshot), "precision": "fp32"}, "x"))
    with pytest.raises(ArbenchError, match="not the nova-d48w768-sdxl1024 transformer.*image_size"):
        m.load()
    with pytest.raises(ArbenchError, match="rotary_pos_embed"):
        NOVAConfig.from_upstream({**json.loads((SNAPSHOT / "transformer" / "config.json").read_text()),
                                  "rotary_pos_embed": True})


def test_fp16_on_cpu_is_refused(snapshot):
    m = TinyNOVA(build_config(TinyNOVA.Config, {"model_dir": str(snapshot)}, "tiny"))
    with pytest.raises(ArbenchError, match="precision=fp16"):
        m.load()


@register_method("nova-tiny-runner-test")
class RegisteredTinyNOVA(TinyNOVA):
    """The tiny method under a registered name, for the runner."""


def test_geneval_run_writes_all_553_prompts(snapshot, tmp_path, monkeypatch, results_dir):
    """`arbench run geneval <nova>` through the real runner and GenEval's folder writer and reader; the detector and
    CLIP (no weights here) are replaced by a count of what was read. One image per prompt keeps it fast."""
    samples = run_geneval_counting("nova-tiny-runner-test", {
        **SAMPLE, "num_pred_steps": 2, "num_diffusion_steps": 1, "model_dir": str(snapshot), "images_per_prompt": 1}, tmp_path, monkeypatch, results_dir)
    first = np.asarray(Image.open(samples[0].path))
    assert first.shape == (16, 16, 3) and first.dtype == np.uint8


def test_512_px_method_reads_its_config_and_refuses_other_vits(tmp_path):
    """The 512 px model declares its image size and ViTs; the diffusion MLP and base sizes come from its config."""
    folder = write_snapshot(tmp_path / "nova-d48w1024-sd512")
    cls = METHODS.get("nova-d48w1024-sd512")
    m = cls(build_config(cls.Config, {"model_dir": str(folder), "precision": "fp32"}, "x"))
    config = {"image_dim": 4, "image_size": 512, "image_stride": 8, "text_token_dim": 2560, "text_token_len": 256,
              "image_base_size": [32, 32], "video_base_size": [1, 16, 16], "rotary_pos_embed": False,
              "arch": ["vit_d16w1024", "vit_d32w1024", "mlp_d3w1280"]}
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    got = m.transformer_config()
    assert (got.image_encoder, got.image_decoder, got.latent_size, got.num_patches) == (
        ViTConfig(32, 1024, 16), DiffusionMLPConfig(3, 1280), (64, 64), 1024)
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "arch": ["vit_d16w768", "vit_d32w768",
                                                                                       "mlp_d6w768"]}))
    with pytest.raises(ArbenchError, match="arch is"):
        m.transformer_config()
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "image_base_size": [64, 64]}))
    with pytest.raises(ArbenchError, match="not the patch grid"):
        m.transformer_config()
