"""Golden outputs of upstream AiM on seeded random weights (tests/golden/aim/), for tests/test_imagegen_aim.py.

Upstream: hp-l33/AiM @ 0a91c608723102074d785bf442167db71092d0aa (2024-08-27), run with its dependencies
state-spaces/mamba @ v2.2.2 (8ffd905c91d207f5c0cc84fc2a2fb748655094f0, the mamba-ssm release current when AiM
was published; AiM's requirements.txt pins no version) and Dao-AILab/causal-conv1d @ v1.4.0
(f8c246707eff3431b5cf2ce6defa4b7f309ea9fb), imported from source without compiling anything.
Usage: python tests/golden/make_aim.py AIM_CHECKOUT MAMBA_CHECKOUT CAUSAL_CONV1D_CHECKOUT

Stubs (everything else is upstream's code as it is, on CPU in float32):
1. `selective_scan_cuda` and `causal_conv1d_cuda`, the compiled CUDA extensions, are empty modules (imported at
   module top by mamba_ssm and causal_conv1d; AiM never calls them once the kernels below are replaced).
2. Every fused kernel is replaced by the pure-PyTorch reference function its own package ships:
   - `causal_conv1d_fn` / `causal_conv1d_update` -> causal_conv1d's `causal_conv1d_ref` / `causal_conv1d_update_ref`;
   - `selective_scan_fn` (used by mamba's `mamba_split_conv1d_scan_ref`) -> `selective_scan_ref`;
   - `mamba_split_conv1d_scan_combined` (Mamba2's training path) -> `mamba_split_conv1d_scan_ref`;
   - `mamba_chunk_scan_combined` (Mamba2's path for the prompt when decoding; needs the final state, which
     `ssd_chunk_scan_combined_ref` does not return) -> mamba's `ssd_minimal_discrete` (the paper's listing) on
     dt-scaled inputs plus the D skip, checked here against `ssd_chunk_scan_combined_ref` on the same inputs;
   - `selective_state_update` (Mamba2.step) -> `selective_state_update_ref`;
   - gated RMSNorm (`layernorm_gated.rmsnorm_fn`) -> `layernorm_gated.rms_norm_ref`;
   - fused add + RMSNorm (`layer_norm.layer_norm_fn`, `RMSNorm.forward`) -> `layer_norm.rms_norm_ref` with
     upcast and the residual kept in float32 as the kernel does.
3. transformers >= 5 no longer has `GreedySearchDecoderOnlyOutput` / `SampleDecoderOnlyOutput`, which AiM's
   generation.py imports as result containers: both are aliased to `GenerateDecoderOnlyOutput`.
4. `generate(..., fast=False)`: no CUDA graphs (the captured graph replays the same calls).
5. The VQ tokenizer `VQ_models['VQ-f16']` is built tiny (codebook 64 x 8, ch_mult (1, 1), one ResNet block,
   z 32; upstream's own classes) so the golden stays small; the label dropout of the teacher-forced (training)
   forward is 0 so the logits are deterministic.

Tiny AiM: d_model 64, 3 layers, Mamba2 d_state 16, headdim 16 (8 heads), vocabulary 64, 4x4 tokens, 10 classes;
once with per-block adaLN (AiM-B's form) and once with adaLN-group (2 groups; AiM-L/XL's form). Weights: every
tensor of the saved file drawn by tests/golden/golden_weights.py (seed 19 / 20) and saved with upstream's own
`save_pretrained` layout (config.json + model.safetensors, the tied lm_head dropped by safetensors), then read back
by upstream's `AiM.from_pretrained`. Only the layout and the outputs are stored; the test redraws the weights.

Outputs: teacher-forced logits (upstream `AiM.forward`), the guided logits of upstream's cached decoder fed given
tokens (`decode(teacher_outputs=...)`, cfg 5), a deterministic sample (top-k 1, cfg 5: per-step logits, tokens,
decoded image), and the names and shapes of AiM-B/L/XL as upstream builds them (meta device).
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import seeded_state  # noqa: E402

OUT = Path(__file__).resolve().parent / "aim"
UPSTREAM = "hp-l33/AiM@0a91c608723102074d785bf442167db71092d0aa + state-spaces/mamba@v2.2.2 + causal-conv1d@v1.4.0"
TINY = dict(d_model=64, n_layer=3, vocab_size=64, num_classes=10, num_tokens=16,
            ssm_cfg={"layer": "Mamba2", "d_state": 16, "headdim": 16})
VARIANTS = {"block": dict(adaln_group=False, seed=19), "group": dict(adaln_group=True, num_groups=2, seed=20)}


def install_stubs(mamba: str, conv: str) -> None:
    sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
    sys.modules["causal_conv1d_cuda"] = types.ModuleType("causal_conv1d_cuda")
    import transformers.generation as tg
    tg.GreedySearchDecoderOnlyOutput = tg.SampleDecoderOnlyOutput = tg.GenerateDecoderOnlyOutput
    sys.path[:0] = [conv, mamba]
    import causal_conv1d
    from causal_conv1d import causal_conv1d_interface as cci

    def conv_fn(x, weight, bias=None, seq_idx=None, activation=None, **kw):
        assert seq_idx is None
        return cci.causal_conv1d_ref(x, weight, bias, activation=activation, **kw)

    causal_conv1d.causal_conv1d_fn, causal_conv1d.causal_conv1d_update = conv_fn, cci.causal_conv1d_update_ref
    from mamba_ssm.ops import selective_scan_interface as ssi
    ssi.selective_scan_fn = ssi.selective_scan_ref
    from mamba_ssm.ops.triton import layer_norm, layernorm_gated, ssd_combined
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update_ref
    from mamba_ssm.modules import mamba2, ssd_minimal
    ssd_combined.causal_conv1d_fn = conv_fn
    ssd_combined.rmsnorm_fn = layernorm_gated.rms_norm_ref
    layernorm_gated.RMSNorm.forward = lambda self, x, z=None: layernorm_gated.rms_norm_ref(
        x, self.weight, self.bias, z=z, eps=self.eps, group_size=self.group_size, norm_before_gate=self.norm_before_gate)

    def layer_norm_fn(x, weight, bias, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False,
                      is_rms_norm=False, **kw):
        ref = layer_norm.rms_norm_ref if is_rms_norm else layer_norm.layer_norm_ref
        out = ref(x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, upcast=True)
        if not prenorm:
            return out
        return out[0], out[1].float() if residual_in_fp32 else out[1]

    layer_norm.layer_norm_fn = layer_norm_fn
    layer_norm.RMSNorm.forward = lambda self, x, residual=None, prenorm=False, residual_in_fp32=False: layer_norm_fn(
        x, self.weight, self.bias, residual=residual, eps=self.eps, prenorm=prenorm,
        residual_in_fp32=residual_in_fp32, is_rms_norm=True)

    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False, seq_idx=None,
                   cu_seqlens=None, return_final_states=False, return_varlen_states=False, **kw):
        assert z is None and seq_idx is None and cu_seqlens is None and not return_varlen_states and not kw
        pad = -x.shape[1] % chunk_size
        xp, dtp, Bp, Cp = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))  # whole chunks
        reference = ssd_combined.ssd_chunk_scan_combined_ref(xp, dtp, A, Bp, Cp, chunk_size, D=D, dt_bias=dt_bias,
                                                             dt_softplus=dt_softplus)
        delta = F.softplus(dt + dt_bias) if dt_softplus else dt + dt_bias
        heads = x.shape[2]
        rep = lambda t: t.repeat_interleave(heads // t.shape[2], dim=2)  # noqa: E731 - groups -> heads
        y, final = ssd_minimal.ssd_minimal_discrete(
            *(F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x * delta[..., None], A * delta, rep(B), rep(C))),
            block_len=chunk_size)
        y = y[:, :x.shape[1]] + x * D[:, None]
        torch.testing.assert_close(y, reference[:, :x.shape[1]], rtol=1e-5, atol=1e-5)
        return (y, final) if return_final_states else y

    mamba2.mamba_chunk_scan_combined = chunk_scan

    def split_scan(*args, seq_idx=None, **kwargs):  # the reference takes no seq_idx (None here)
        assert seq_idx is None
        return ssd_combined.mamba_split_conv1d_scan_ref(*args, **kwargs)

    mamba2.mamba_split_conv1d_scan_combined = split_scan
    mamba2.selective_state_update = selective_state_update_ref
    mamba2.causal_conv1d_fn, mamba2.causal_conv1d_update = conv_fn, cci.causal_conv1d_update_ref
    for name in ("models.stage2.block", "models.stage2.mixer_seq_simple"):
        __import__(name)
        sys.modules[name].layer_norm_fn = layer_norm_fn


def tiny_vq():
    from models.stage1 import vq_model
    vq = vq_model.VQModel(vq_model.VQConfig(n_embed=64, embed_dim=8, z_channels=32, ch_mult=[1, 1], num_res_blocks=1))
    return vq.eval()


def run_variant(tag: str, seed: int, adaln: dict, out: dict, layouts: dict) -> None:
    from models import aim as aim_module
    from models.stage2 import generation
    from models.stage2.config_mamba import MambaConfig

    aim_module.VQ_models["VQ-f16"] = tiny_vq
    with tempfile.TemporaryDirectory() as tmp:
        aim_module.AiM(MambaConfig(**TINY, **adaln)).save_pretrained(tmp)
        saved = load_file(f"{tmp}/model.safetensors")
        state = seeded_state(saved, seed)
        save_file(state, f"{tmp}/model.safetensors")
        config = json.loads(Path(tmp, "config.json").read_text())
        model = aim_module.AiM.from_pretrained(tmp).eval()
    layouts[tag] = {"config": config, "layout": {k: list(v.shape) for k, v in saved.items()}}
    assert model.mamba.lm_head.weight is model.mamba.backbone.embeddings.word_embeddings.weight
    model.mamba.backbone.cls_embed.dropout_prob = 0.0  # the training forward drops labels at random

    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([3, 7])
    tokens = torch.randint(0, 64, (2, 16), generator=gen)
    with torch.no_grad():
        out[f"{tag}_logits"] = model(tokens, labels)[0]
        # upstream's cached decoder fed the given tokens: guided logits at every step (cfg 5)
        model.mamba.cfg_scale = 5.0
        sos = torch.cat([labels.view(-1, 1), torch.full((2, 1), 10)])
        teacher = torch.cat([sos, torch.cat([tokens, tokens])], dim=1)
        scores = generation.decode(sos, model.mamba, 17, top_k=1, teacher_outputs=teacher, cond=sos).scores
        out[f"{tag}_decode_logits"] = torch.stack(scores, dim=1)[:2, :16]
        seen, original = [], generation.sample

        def recording(logits, **kwargs):
            seen.append(logits[:2].clone())
            return original(logits, **kwargs)

        decoded_tokens, decode_to_img = [], model.decode_to_img
        model.decode_to_img = lambda index, shape: decoded_tokens.append(index) or decode_to_img(index, shape)
        generation.sample = recording
        images = model.generate(labels, temperature=1.0, top_k=1, top_p=1.0, cfg_scale=5.0, fast=False)
        generation.sample = original
        out[f"{tag}_sample_logits"] = torch.stack(seen, dim=1)
        out[f"{tag}_sample_tokens"] = decoded_tokens[0]
        out[f"{tag}_sample_images"] = images
        out[f"{tag}_tokens"], out[f"{tag}_labels"] = tokens, labels
        out[f"{tag}_decoded"] = model.decode_to_img(tokens, (2, 8, 4, 4))


def main(aim: str, mamba: str, conv: str) -> None:
    sys.path.insert(0, aim)
    install_stubs(mamba, conv)
    torch.manual_seed(0)
    OUT.mkdir(exist_ok=True)
    out, layouts = {}, {}
    for tag, v in VARIANTS.items():
        v = dict(v)
        run_variant(tag, v.pop("seed"), v, out, layouts)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "outputs.safetensors", metadata={"upstream": UPSTREAM})
    from models import aim as aim_module
    from models.stage1.vq_model import VQ_f16
    aim_module.VQ_models["VQ-f16"] = VQ_f16
    shapes = {}
    for size, build in aim_module.AiM_models.items():
        with torch.device("meta"):
            model = build()
        shapes[size] = {k: list(v.shape) for k, v in model.state_dict().items()}
        shapes[size + " params"] = model.get_num_params()
    with gzip.GzipFile(OUT / "released_shapes.json.gz", "wb", mtime=0) as f:  # reproducible bytes
        f.write(json.dumps({"upstream": UPSTREAM, "tiny": layouts, "released": shapes}).encode())
    for k, v in out.items():
        print(k, tuple(v.shape), float(v.float().abs().mean()))
    for tag in VARIANTS:
        print(tag, "sample tokens", out[f"{tag}_sample_tokens"].tolist())


if __name__ == "__main__":
    main(*sys.argv[1:4])
