"""Golden outputs of upstream RAR (generator, guidance schedule, sampler) and its MaskGIT-VQ decoder.

Upstream: bytedance/1d-tokenizer@942a96fbdd873780179d1b78d5462911528bf8c8 (`modeling/rar.py`,
`modeling/modules/base_model.py`, `modeling/modules/maskgit_vqgan.py`, and `modeling/titok.py`'s
`PretrainedTokenizer`, whose decode is `clamp(decoder(quantize.get_codebook_entry(codes)), 0, 1)`).
Run against a checkout:

    python tests/golden/make_rar.py /path/to/1d-tokenizer

Stubbed: the package `modeling.modules` (its __init__ imports the training losses, LPIPS and discriminator), which is
replaced by a module holding the real `base_model.BaseModel`, and omegaconf's config objects, replaced by an
attribute dict with `.get`. `PretrainedTokenizer` itself needs omegaconf and a weights file, so its three parts are
built here as it builds them (same classes, same call) at a small size. Sizes: RAR dim 64, 2 layers, 4 heads,
intermediate 128, 16 tokens, codebook 16, 10 classes (upstream's spare table rows +1024 / +100 kept);
VQ hidden 32, channel_mult (1, 2), z 32. Weights: `golden_weights.seeded_fill` (RAR seed 40, VQ seed 41).

Recorded: teacher-forced logits (`forward_fn`, raster orders); the softmax input of `generate` at every step
(guided logits / temperature) and the tokens at temperature 1e-3 (greedy), for two guidance settings; upstream's
guidance scale per step for the four released (scale, power) settings at 256 tokens, read by running `generate`
with `forward_fn` replaced by one returning 1 for the conditional and 0 for the unconditional half (so the
guided logit is the scale); and the VQ decoder's images for fixed codes.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, save_golden, seeded_fill  # noqa: E402

UPSTREAM = "bytedance/1d-tokenizer@942a96fbdd873780179d1b78d5462911528bf8c8"
OUT = Path(__file__).parent / "rar"
GENERATOR = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_seq_len=16,
                 condition_num_classes=10, dropout=0.0, attn_drop=0.0)
CODEBOOK = 16
SAMPLERS = [(4.0, 2.75, 1e-3), (0.0, 0.0, 1e-3)]  # (guidance_scale, guidance_scale_pow, randomize_temperature)
RELEASED = [(16.0, 2.75), (15.5, 2.5), (6.9, 1.5), (8.0, 1.2), (4.0, 0.0)]
LABELS = [3, 7]


class Conf(dict):
    __getattr__ = dict.__getitem__


def load_upstream(checkout: Path):
    sys.path.insert(0, str(checkout))
    spec = importlib.util.spec_from_file_location("modeling.modules.base_model",
                                                  checkout / "modeling" / "modules" / "base_model.py")
    base_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base_model)
    import modeling

    modules = types.ModuleType("modeling.modules")
    modules.BaseModel = base_model.BaseModel
    modules.__path__ = [str(checkout / "modeling" / "modules")]
    sys.modules["modeling.modules"] = modeling.modules = modules
    from modeling import rar
    from modeling.modules import maskgit_vqgan

    return rar, maskgit_vqgan


def main(checkout: Path) -> None:
    rar_module, maskgit = load_upstream(checkout)
    config = Conf(model=Conf(generator=Conf(GENERATOR), vq_model=Conf(codebook_size=CODEBOOK)))
    model = seeded_fill(rar_module.RAR(config), 40)
    labels = torch.tensor(LABELS)
    n = GENERATOR["image_seq_len"]
    tokens = torch.randint(0, CODEBOOK, (len(LABELS), n), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        teacher = model.forward_fn(tokens, model.preprocess_condition(labels.clone()))[:, :-1]
        other = model.forward_fn(torch.roll(tokens, 1, 1), model.preprocess_condition(labels.clone()))[:, :-1]
    assert (teacher - other)[:, 1:].abs().max() > 0.01 * teacher.abs().max(), "logits ignore the tokens"
    out = {"labels": labels.numpy(), "tokens": tokens.numpy(), "teacher_logits": teacher.numpy(),
           "rar_layout": np.array(layout(model))}

    seen: list[torch.Tensor] = []

    class RecordingF(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def softmax(x, dim=None):
            seen.append(x.detach().clone())
            return torch.nn.functional.softmax(x, dim=dim)

    rar_module.F = RecordingF("F")
    for k, (scale, power, temperature) in enumerate(SAMPLERS):
        seen.clear()
        torch.manual_seed(0)
        ids = model.generate(labels.clone(), scale, temperature, power)
        out[f"sample{k}_setting"] = np.array([scale, power, temperature])
        out[f"sample{k}_tokens"] = ids.numpy()
        out[f"sample{k}_softmax_inputs"] = torch.stack(seen, 1).numpy()  # (B, steps, V)

    config256 = Conf(model=Conf(generator=Conf(GENERATOR, image_seq_len=256, num_hidden_layers=1),
                                vq_model=Conf(codebook_size=4)))
    probe = rar_module.RAR(config256).eval()

    def cond_one_uncond_zero(input_ids, condition, orders=None, is_sampling=False):
        half = condition.shape[0] // 2
        logits = torch.zeros(condition.shape[0], input_ids.shape[1] + 1, 4)
        logits[:half] = 1.0
        return logits

    probe.forward_fn = cond_one_uncond_zero
    schedules = []
    for scale, power in RELEASED:
        seen.clear()
        probe.generate(torch.tensor([0]), scale, 1.0, power)
        schedules.append(torch.stack([s[0, 0] for s in seen]).numpy())
    out["released_settings"] = np.array(RELEASED)
    out["released_schedules"] = np.stack(schedules)  # (settings, 256): guided logit = upstream's cfg_scale
    rar_module.F = torch.nn.functional

    conf = Conf(channel_mult=[1, 2], num_resolutions=2, dropout=0.0, hidden_channels=32, num_channels=3,
                num_res_blocks=2, resolution=16, z_channels=32)
    vq = torch.nn.Module()
    vq.encoder, vq.decoder = maskgit.Encoder(conf), maskgit.Decoder(conf)
    vq.quantize = maskgit.VectorQuantizer(num_embeddings=CODEBOOK, embedding_dim=32, commitment_cost=0.25)
    seeded_fill(vq, 41)
    codes = torch.randint(0, CODEBOOK, (2, 4, 4), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        images = torch.clamp(vq.decoder(vq.quantize.get_codebook_entry(codes)), 0.0, 1.0)
    assert 0.05 < (images > 0).float().mean() < 0.95 and 0.0 < (images < 1).float().mean(), "images saturate"
    out.update(vq_layout=np.array(layout(vq)), codes=codes.numpy(), vq_images=images.numpy())
    save_golden(OUT, UPSTREAM, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
