"""Orthus (baselines/imagegen/orthus.py) against upstream zhijie-group/Orthus@609d968 on seeded random weights
(tests/golden/make_orthus.py): the released parameter layout, the Chameleon backbone (delegated to transformers)
with the soft VQ embedding on a mixed text + image batch, the diffusion head and its guided DDIM sampling, a short
deterministic text-to-image sample through the cached generation loop, and the VQ pixel decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.imagegen.checkpoints import load_into
from baselines.imagegen.orthus import DDIM_CONFIG, Orthus, Prompts, generate_latents, to_uint8
from golden.golden_weights import seeded_state

GOLDEN = Path(__file__).parent / "golden" / "orthus"
SEED, HEAD_WIDTH, HEAD_DEPTH, CFG = 21, 96, 2, 5.0  # as make_orthus.py


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN / "golden.npz"))


@pytest.fixture(scope="module")
def model(golden):
    from transformers import ChameleonConfig

    raw = json.loads((GOLDEN / "config.json").read_text())
    net = Orthus(ChameleonConfig(**raw), raw["vq_config"], head_width=HEAD_WIDTH, head_depth=HEAD_DEPTH)
    released = {k: torch.zeros(v) for k, v in json.loads(str(golden["state_names"])).items()}
    load_into(net, Orthus.split_state(seeded_state(released, SEED)), "golden Orthus")  # every name and shape checked
    return net.eval()


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**DDIM_CONFIG)


def test_backbone_mixed_text_and_image(model, golden):
    ids, mask = torch.as_tensor(golden["mixed_ids"]), torch.as_tensor(golden["mixed_mask"])
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        hidden = model.backbone(model.embed(ids, torch.as_tensor(golden["mixed_latents"])), mask, positions)
        logits = model.lm_head(hidden[:, -1])
    valid = mask.bool().numpy()
    np.testing.assert_allclose(hidden.numpy()[valid], golden["mixed_hidden"][valid], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(logits.numpy(), golden["mixed_last_logits"], atol=2e-5, rtol=1e-4)


def test_diffusion_head_and_guided_ddim(model, golden):
    with torch.no_grad():
        out = model.mlp_head(*(torch.as_tensor(golden[k]) for k in ("head_x", "head_t", "head_z")))
        np.testing.assert_allclose(out.numpy(), golden["head_out"], atol=1e-5, rtol=1e-4)
        ids, mask = torch.as_tensor(golden["mixed_ids"]), torch.as_tensor(golden["mixed_mask"])
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        z = model.backbone(model.embed(ids, torch.as_tensor(golden["mixed_latents"])), mask, positions)[:, -1]
        noise = torch.randn(1, 256, generator=torch.Generator().manual_seed(5))
        sample = model.head_sample(z, noise, scheduler(), CFG, 100)
    np.testing.assert_allclose(sample.numpy(), golden["head_sample"], atol=2e-3, rtol=1e-4)


def test_short_text_to_image_sample(model, golden):
    """The cached loop: prompt + <boi> prefill, then feature by feature through the soft embedding, per-request
    noise from a generator seeded as upstream's global one."""
    rows = [[int(t) for t, m in zip(r, k) if m] + [8197] for r, k in zip(golden["sample_ids"], golden["sample_mask"])]
    ids = torch.full((2, max(map(len, rows))), 1)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, ids.shape[1] - len(r):], mask[i, ids.shape[1] - len(r):] = torch.as_tensor(r), 1
    gen = torch.Generator().manual_seed(7)
    latents = generate_latents(model, Prompts(ids, mask), lambda k: torch.randn(1, 256, generator=gen), scheduler(),
                               CFG, 100, num_tokens=len(golden["sample"]))
    np.testing.assert_allclose(latents[0].numpy(), golden["sample"], atol=5e-3, rtol=1e-4)


def test_pixel_decoder(model, golden):
    feats = torch.randn(1024, 256, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        pixels = model.decode(feats[None])
    np.testing.assert_allclose(pixels.numpy(), golden["decode_pixels"], atol=1e-4, rtol=1e-4)
    images = to_uint8(pixels, {"image_mean": [1.0] * 3, "image_std": [1.0] * 3, "rescale_factor": 0.0078})
    expected = golden["decode_uint8"].transpose(0, 2, 3, 1)
    assert np.mean(np.abs(images.astype(int) - expected.astype(int)) > 1) < 0.001  # truncation at float ties
