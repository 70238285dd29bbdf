"""GenEval's networks without their weights: the detector's checkpoint compatibility and building blocks, the
colour classifier's plumbing on a small random-init CLIP with OpenAI's parameter names."""

from __future__ import annotations

import dataclasses
import re
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from harness.errors import ArbenchError, MissingAssetError
from harness.features import clip_color, geneval_detector as gd
from harness.metrics.geneval import COLORS, Detection


def mmdet_checkpoint_manifest() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of mmdet 2.x `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco` checkpoints,
    written out from the config (SwinTransformer, MSDeformAttnPixelDecoder, Mask2FormerHead, mmcv layers)."""
    m: dict[str, tuple[int, ...]] = {}

    def linear(name, cin, cout, bias=True):
        m[f"{name}.weight"] = (cout, cin)
        if bias:
            m[f"{name}.bias"] = (cout,)

    def norm(name, c):
        m[f"{name}.weight"] = m[f"{name}.bias"] = (c,)

    b = "backbone"
    m[f"{b}.patch_embed.projection.weight"], m[f"{b}.patch_embed.projection.bias"] = (96, 3, 4, 4), (96,)
    norm(f"{b}.patch_embed.norm", 96)
    for i, (depth, heads) in enumerate(zip((2, 2, 18, 2), (3, 6, 12, 24))):
        c = 96 * 2 ** i
        for j in range(depth):
            p = f"{b}.stages.{i}.blocks.{j}"
            norm(f"{p}.norm1", c)
            m[f"{p}.attn.w_msa.relative_position_bias_table"] = (169, heads)
            m[f"{p}.attn.w_msa.relative_position_index"] = (49, 49)
            linear(f"{p}.attn.w_msa.qkv", c, 3 * c)
            linear(f"{p}.attn.w_msa.proj", c, c)
            norm(f"{p}.norm2", c)
            linear(f"{p}.ffn.layers.0.0", c, 4 * c)
            linear(f"{p}.ffn.layers.1", 4 * c, c)
        if i < 3:
            norm(f"{b}.stages.{i}.downsample.norm", 4 * c)
            linear(f"{b}.stages.{i}.downsample.reduction", 4 * c, 2 * c, bias=False)
        norm(f"{b}.norm{i}", c)
    d = "panoptic_head.pixel_decoder"
    for i, cin in enumerate((768, 384, 192)):
        m[f"{d}.input_convs.{i}.conv.weight"], m[f"{d}.input_convs.{i}.conv.bias"] = (256, cin, 1, 1), (256,)
        norm(f"{d}.input_convs.{i}.gn", 256)
    for k in range(6):
        p = f"{d}.encoder.layers.{k}"
        linear(f"{p}.attentions.0.sampling_offsets", 256, 8 * 3 * 4 * 2)
        linear(f"{p}.attentions.0.attention_weights", 256, 8 * 3 * 4)
        linear(f"{p}.attentions.0.value_proj", 256, 256)
        linear(f"{p}.attentions.0.output_proj", 256, 256)
        linear(f"{p}.ffns.0.layers.0.0", 256, 1024)
        linear(f"{p}.ffns.0.layers.1", 1024, 256)
        norm(f"{p}.norms.0", 256)
        norm(f"{p}.norms.1", 256)
    m[f"{d}.level_encoding.weight"] = (3, 256)
    m[f"{d}.lateral_convs.0.conv.weight"] = (256, 96, 1, 1)
    norm(f"{d}.lateral_convs.0.gn", 256)
    m[f"{d}.output_convs.0.conv.weight"] = (256, 256, 3, 3)
    norm(f"{d}.output_convs.0.gn", 256)
    m[f"{d}.mask_feature.weight"], m[f"{d}.mask_feature.bias"] = (256, 256, 1, 1), (256,)
    t = "panoptic_head.transformer_decoder"
    for k in range(9):
        p = f"{t}.layers.{k}"
        for a in range(2):
            m[f"{p}.attentions.{a}.attn.in_proj_weight"], m[f"{p}.attentions.{a}.attn.in_proj_bias"] = (768, 256), (768,)
            linear(f"{p}.attentions.{a}.attn.out_proj", 256, 256)
        linear(f"{p}.ffns.0.layers.0.0", 256, 2048)
        linear(f"{p}.ffns.0.layers.1", 2048, 256)
        for n in range(3):
            norm(f"{p}.norms.{n}", 256)
    norm(f"{t}.post_norm", 256)
    for name in ("query_embed", "query_feat"):
        m[f"panoptic_head.{name}.weight"] = (100, 256)
    m["panoptic_head.level_embed.weight"] = (3, 256)
    linear("panoptic_head.cls_embed", 256, 81)
    for k in (0, 2, 4):
        linear(f"panoptic_head.mask_embed.{k}", 256, 256)
    return m


@pytest.fixture(scope="module")
def detector_model():
    torch.manual_seed(0)
    return gd.Mask2Former().eval()


def test_detector_has_the_official_checkpoint_names_and_shapes(detector_model):
    ours = {k: tuple(v.shape) for k, v in detector_model.state_dict().items()}
    assert ours == mmdet_checkpoint_manifest()
    params = sum(p.numel() for p in detector_model.parameters())
    assert 68e6 < params < 70e6  # mmdet's model zoo lists 69M for this model


def test_checkpoint_loads_strictly_and_safely(detector_model, tmp_path):
    state = {k: torch.zeros(shape) for k, shape in mmdet_checkpoint_manifest().items()}
    planted = ["panoptic_head.cls_embed.weight", "backbone.stages.2.blocks.17.attn.w_msa.qkv.weight",
               "panoptic_head.pixel_decoder.encoder.layers.5.attentions.0.sampling_offsets.bias"]
    for k in planted:
        state[k] = torch.randn(state[k].shape)
    for k in state:
        if k.endswith("relative_position_index"):
            state[k] = detector_model.state_dict()[k]
    path = tmp_path / "ckpt.pth"
    meta = {"mmdet_version": "2.25.0", "CLASSES": gd.COCO_CLASSES, "epoch": 50, "seed": np.int64(7),
            "hook_msgs": {"best_score": np.float64(0.46), "history": np.array([0.1, 0.2])}}
    torch.save({"meta": meta, "state_dict": state}, path)
    as_numpy1(path)
    loaded = gd.load_checkpoint(path, detector_model).state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in planted)
    # mmdet 3.x renamed the head (e.g. panoptic_head.transformer_decoder.layers.0.cross_attn...)
    renamed = {k.replace("attentions.0.attn", "cross_attn.attn"): v for k, v in state.items()
               if k.startswith("panoptic_head.transformer_decoder.layers.0.")}
    torch.save({"state_dict": renamed}, path)
    with pytest.raises(ArbenchError, match="not the mmdet 2.x Mask2Former"):
        gd.load_checkpoint(path, detector_model)
    torch.save({"meta": {"hook": Payload()}, "state_dict": {}}, path)
    with pytest.raises(ArbenchError, match="holds objects other than tensors"):
        gd.load_checkpoint(path, detector_model)
    assert not Payload.ran


def as_numpy1(path):
    """Rewrite a checkpoint's pickle to name numpy's module as numpy 1.x did (`numpy.core`)."""
    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                assert b"cnumpy._core.multiarray\nscalar" in data
                data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
            zout.writestr(info, data)


class Payload:
    """An object whose unpickling would run code."""

    ran = False

    def __reduce__(self):
        return (setattr, (Payload, "ran", True))


def test_missing_detector_weights_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    with pytest.raises(MissingAssetError, match="download.openmmlab.com/mmdetection/v2.0/mask2former"):
        gd.GenEvalDetector.from_pretrained()


def test_patch_merging_uses_unfold_channel_order():
    merge = gd.PatchMerging(2)
    with torch.no_grad():
        merge.norm.weight.fill_(1), merge.norm.bias.zero_()
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # (b, c, h, w)
    tokens = x.flatten(2).transpose(1, 2)
    unfolded = F.unfold(x, 2, stride=2).transpose(1, 2)
    # channel-major: c * 4 + kh * 2 + kw (the original Swin concatenates x0, x1, x2, x3 position-major)
    assert unfolded[0, 0].tolist() == [0, 1, 4, 5, 16, 17, 20, 21]
    out, hw = merge(tokens, (4, 4))
    assert hw == (2, 2)
    assert torch.allclose(out, merge.reduction(F.layer_norm(unfolded, (8,))), atol=1e-6)


def test_deformable_attention_matches_direct_bilinear_sampling():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (2, 2)]
    b, heads, d, nq, points = 1, 2, 4, 3, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), heads, d, generator=g)
    locations = torch.rand(b, nq, heads, len(shapes), points, 2, generator=g) * 1.2 - 0.1  # some outside
    weights = torch.rand(b, nq, heads, len(shapes), points, generator=g)
    out = gd.deformable_attention(value, shapes, locations, weights)

    def sample(v, x, y):  # v (h, w, d); pixel centres at integer + 0.5, zeros outside
        h, w, _ = v.shape
        px, py = x * w - 0.5, y * h - 0.5
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        total = torch.zeros(v.shape[-1])
        for xi, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            for yi, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                if 0 <= xi < w and 0 <= yi < h:
                    total += wx * wy * v[yi, xi]
        return total

    starts = np.cumsum([0] + [h * w for h, w in shapes])
    expected = torch.zeros(b, nq, heads, d)
    for q in range(nq):
        for hd in range(heads):
            for lvl, (h, w) in enumerate(shapes):
                v = value[0, starts[lvl]:starts[lvl + 1], hd].view(h, w, d)
                for p in range(points):
                    x, y = locations[0, q, hd, lvl, p].tolist()
                    expected[0, q, hd] += weights[0, q, hd, lvl, p] * sample(v, x, y)
    assert torch.allclose(out, expected.view(b, nq, heads * d), atol=1e-5)


def test_unshifted_window_attention_is_full_attention_with_relative_bias():
    torch.manual_seed(0)
    msa = gd.ShiftWindowMSA(8, 2, 3, 0)
    with torch.no_grad():
        msa.w_msa.relative_position_bias_table.normal_()
    x = torch.randn(1, 9, 8)
    q, k, v = msa.w_msa.qkv(x).view(1, 9, 3, 2, 4).permute(2, 0, 3, 1, 4)
    bias = msa.w_msa.relative_position_bias_table[msa.w_msa.relative_position_index.view(-1)].view(9, 9, 2)
    attn = (q @ k.transpose(-1, -2) / 2 + bias.permute(2, 0, 1)).softmax(-1)
    expected = msa.w_msa.proj((attn @ v).transpose(1, 2).reshape(1, 9, 8))
    assert torch.allclose(msa(x, (3, 3)), expected, atol=1e-6)
    # a shifted window over a map that is not a multiple of the window: output keeps the map's size
    shifted = gd.ShiftWindowMSA(8, 2, 3, 1)
    assert shifted(torch.randn(2, 4 * 5, 8), (4, 5)).shape == (2, 20, 8)


def test_sine_position_encoding_matches_its_formula():
    pos = gd.sine_position_encoding(1, 2, 3, 4, "cpu")
    assert pos.shape == (1, 8, 2, 3)
    y_norm = 2 / (2 + 1e-6) * 2 * np.pi  # last row, normalised
    expected_y = [np.sin(y_norm), np.cos(y_norm), np.sin(y_norm / 100), np.cos(y_norm / 100)]
    assert pos[0, :4, 1, 0].tolist() == pytest.approx(expected_y, abs=1e-5)


def test_preprocess_is_mmdets_test_pipeline():
    cfg = gd.Mask2FormerConfig()
    x, size = gd.preprocess(Image.new("RGB", (512, 512), (123, 116, 104)), cfg)
    assert x.shape == (1, 3, 800, 800) and size == (800, 800)
    expected = (np.array([123, 116, 104]) - np.array(cfg.mean)) / np.array(cfg.std)
    assert x[0, :, 400, 400].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    x, size = gd.preprocess(Image.new("RGB", (640, 480), (255, 0, 0)), cfg)
    assert size == (800, 1067) and x.shape == (1, 3, 800, 1088)
    # the config pads with 128 before Normalize: padded pixels are (128 - mean) / std (port v1 padded zeros)
    pad = (128 - np.array(cfg.mean)) / np.array(cfg.std)
    assert x[0, :, :, 1067:].amax((1, 2)).tolist() == pytest.approx(pad.tolist(), abs=1e-6)
    assert x[0, :, :, 1067:].amin((1, 2)).tolist() == pytest.approx(pad.tolist(), abs=1e-6)
    x, size = gd.preprocess(Image.new("RGB", (2000, 500)), cfg)
    assert size == (333, 1333)  # the long side bounds the scale


def test_instance_postprocess_scores_and_boxes():
    cls_logits = torch.full((2, 4), -10.0)
    cls_logits[0, 1] = 5.0  # query 0: class 1
    cls_logits[1, 2] = 5.0  # query 1: class 2
    masks = torch.full((2, 6, 8), -4.0)
    masks[0, 1:3, 2:5] = 2.0
    labels, scores, boxes, binary = gd.instance_postprocess(cls_logits, masks, max_per_image=6)
    best = scores.argmax()
    assert labels[best] == 1
    prob = torch.softmax(cls_logits[0], -1)[1]
    assert scores[best] == pytest.approx(float(prob * torch.sigmoid(torch.tensor(2.0))), rel=1e-5)
    assert boxes[best].tolist() == [2, 1, 5, 3]
    assert binary[best].sum() == 6
    empty = (labels == 2).nonzero()[0, 0]
    assert boxes[empty].tolist() == [0, 0, 0, 0] and scores[empty] == 0


def small_detector() -> gd.GenEvalDetector:
    cfg = dataclasses.replace(gd.Mask2FormerConfig(), embed_dims=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4),
                              feat_channels=64, pixel_decoder_layers=1, pixel_decoder_ffn=64, decoder_layers=2,
                              decoder_ffn=64, num_queries=10, max_per_image=10, scale=(200, 96))
    torch.manual_seed(0)
    return gd.GenEvalDetector(gd.Mask2Former(cfg))


def test_detector_runs_end_to_end_on_a_small_config():
    detector = small_detector()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    detections = detector.detect(image)
    found = [d for dets in detections.values() for d in dets]
    assert len(found) == 10 and set(detections) <= set(gd.COCO_CLASSES)
    for d in found:
        assert d.mask.shape == (60, 90) and 0 <= d.score <= 1
        if d.mask.any():
            ys, xs = np.nonzero(d.mask)
            assert d.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_batched_detection_equals_one_image_at_a_time():
    """Equal-size images share a pass, others get their own; each image's detections are those it gets alone."""
    detector = small_detector()
    rng = np.random.default_rng(1)
    shapes = [(60, 90), (60, 90), (50, 50), (60, 90)]  # 60x90 -> 64x96 input; 50x50 -> 96x96: two groups
    images = [Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)) for hw in shapes]
    calls = []
    forward = detector.model.forward
    detector.model.forward = lambda x: calls.append(x.shape[0]) or forward(x)
    batched = detector.detect_batch(images)
    assert sorted(calls) == [1, 3]
    for image, got in zip(images, batched):
        alone = detector.detect(image)
        assert list(got) == list(alone)  # same classes in the same order
        for name in alone:
            for a, b in zip(alone[name], got[name], strict=True):
                assert a.box == b.box and np.array_equal(a.mask, b.mask)
                assert b.score == pytest.approx(a.score, rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# colour classifier


@pytest.fixture(scope="module")
def classifier():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    small = CLIP(32, CLIPVisionCfg(layers=1, width=64, patch_size=14, image_size=28),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=False)
    state = small.state_dict()  # OpenAI's parameter names, as in ViT-L-14.pt
    state["input_resolution"] = torch.tensor(28)  # the extra entries of OpenAI's archives
    return clip_color.ColorClassifier.from_openai_state_dict(state), state


def test_openai_weights_load_into_a_quickgelu_model(classifier):
    from open_clip.transformer import QuickGELU

    clf, state = classifier
    acts = [type(m.mlp.gelu) for m in clf.model.transformer.resblocks] + [
        type(m.mlp.gelu) for m in clf.model.visual.transformer.resblocks]
    assert acts and all(a is QuickGELU for a in acts)
    loaded = clf.model.state_dict()
    # like open_clip's OpenAI loader (GenEval's path): matrices go through float16 (OpenAI ships them so), then fp32
    assert all(torch.equal(loaded[k], v) or torch.equal(loaded[k], v.half().float())
               for k, v in state.items() if k in loaded)
    assert not torch.equal(loaded["visual.proj"], state["visual.proj"])
    assert all(p.dtype == torch.float32 for p in clf.model.parameters())


def test_masked_crop_fills_grey_outside_the_mask():
    image = Image.new("RGB", (10, 8), (200, 10, 10))
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:6] = True
    crop = np.asarray(clip_color.masked_crop(image, Detection((2, 1, 7, 6), 0.9, mask)))
    assert crop.shape == (5, 5, 3)
    assert crop[1:4, 1:4].tolist() == [[[200, 10, 10]] * 3] * 3
    assert crop[0, 0].tolist() == [153, 153, 153] and crop[4, 4].tolist() == [153, 153, 153]


def test_colour_logits_equal_genevals_color_classification():
    """tests/golden/make_clip_color.py: GenEval's own `color_classification` (ImageCrops over #999, box crop,
    CLIP_benchmark's template-mean zero-shot classifier and 100 x cosine logits) on a small seeded CLIP with
    OpenAI's names. Upstream runs CLIP under float16 autocast on a GPU; the golden is float32 (amp=False), as
    ARBench computes, so the colours agree and the logits to float rounding."""
    from pathlib import Path

    from golden.golden_weights import seeded_fill
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with np.load(Path(__file__).parent / "golden" / "clip_color" / "golden.npz") as data:
        g = {k: data[k] for k in data.files}
    small = CLIP(32, CLIPVisionCfg(layers=1, width=64, patch_size=14, image_size=28),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)
    clf = clip_color.ColorClassifier.from_openai_state_dict(dict(seeded_fill(small, 80).state_dict()))
    image = Image.fromarray(g["image"])
    masks = [g["mask0"], None, g["mask2"]]
    dets = [Detection(tuple(float(v) for v in row[:4]), float(row[4]), m) for row, m in zip(g["boxes"], masks)]
    for k, name in enumerate(["fire hydrant", "car"]):
        np.testing.assert_allclose(clf.logits(image, dets, name).numpy(), g[f"logits{k}"], rtol=1e-5, atol=1e-4)
        assert clf.classify(image, dets, name) == g[f"colors{k}"].tolist()


def test_classify_is_per_crop_and_matches_the_logits(classifier):
    clf, _ = classifier
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    dets = [Detection((0, 0, 30, 40), 0.9, rng.random((64, 64)) > 0.5), Detection((20, 10, 64, 50), 0.8, None)]
    together = clf.classify(image, dets, "car")
    assert together == clf.classify(image, dets[:1], "car") + clf.classify(image, dets[1:], "car")
    assert all(c in COLORS for c in together) and clf.classify(image, [], "car") == []
    with torch.no_grad():
        crop = clf.preprocess(clip_color.masked_crop(image, dets[1]))[None]
        feature = F.normalize(clf.model.encode_image(crop), dim=-1)
    assert torch.allclose(clf.logits(image, dets[1:], "car"), 100 * feature @ clf.text_weights("car"), atol=1e-4)
    assert together[1] == COLORS[int((feature @ clf.text_weights("car")).argmax())]


def test_missing_clip_weights_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    with pytest.raises(MissingAssetError, match="openaipublic.azureedge.net/clip/models/b8cca3fd"):
        clip_color.ColorClassifier.from_pretrained()


# ---------------------------------------------------------------------------------------------------------------
# cross-check against an independent implementation of the same architecture


def transformers_to_mmdet(sd: dict) -> dict:
    """transformers' Mask2Former state dict (Detectron2-style names, original Swin) -> mmdet 2.x names."""
    new = {}
    for k, v in sd.items():
        m = re.match(r"model\.pixel_level_module\.encoder\.swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)", k)
        if m:
            i, j, rest = m.groups()
            p = f"backbone.stages.{i}.blocks.{j}."
            base = k[: -len(rest)]
            table = {"layernorm_before": "norm1", "layernorm_after": "norm2", "mlp.fc1": "ffn.layers.0.0",
                     "mlp.fc2": "ffn.layers.1", "attention.o_proj": "attn.w_msa.proj",
                     "attention.relative_position_bias.relative_position_bias_table": "attn.w_msa.relative_position_bias_table"}
            for a, b in table.items():
                if rest.startswith(a):
                    new[p + b + rest[len(a):]] = v
            if rest.startswith("attention.q_proj"):
                suf = rest[len("attention.q_proj"):]
                new[p + "attn.w_msa.qkv" + suf] = torch.cat([sd[base + f"attention.{x}_proj" + suf] for x in "qkv"])
            continue
        m = re.match(r"model\.pixel_level_module\.encoder\.swin\.encoder\.layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)", k)
        if m:
            i, part, kind = m.groups()
            c = v.shape[-1] // 4
            # HF concatenates positions (h0w0, h1w0, h0w1, h1w1) x C; mmdet unfolds C x (h0w0, h0w1, h1w0, h1w1)
            perm = torch.tensor([[0, 2, 1, 3][q] * c + ch for ch in range(c) for q in range(4)])
            new[f"backbone.stages.{i}.downsample.{part}.{kind}"] = v[..., perm]
            continue
        m = re.match(r"model\.pixel_level_module\.encoder\.hidden_states_norms\.stage(\d)\.(.*)", k)
        if m:
            new[f"backbone.norm{int(m.group(1)) - 1}.{m.group(2)}"] = v
            continue
        simple = [
            (r"model\.pixel_level_module\.encoder\.swin\.embeddings\.patch_embeddings\.projection", "backbone.patch_embed.projection"),
            (r"model\.pixel_level_module\.encoder\.swin\.embeddings\.norm", "backbone.patch_embed.norm"),
            (r"model\.pixel_level_module\.decoder\.input_projections\.(\d)\.0", r"panoptic_head.pixel_decoder.input_convs.\1.conv"),
            (r"model\.pixel_level_module\.decoder\.input_projections\.(\d)\.1", r"panoptic_head.pixel_decoder.input_convs.\1.gn"),
            (r"model\.pixel_level_module\.decoder\.encoder\.layers\.(\d)\.self_attn\.", r"panoptic_head.pixel_decoder.encoder.layers.\1.attentions.0."),
            (r"model\.pixel_level_module\.decoder\.encoder\.layers\.(\d)\.self_attn_layer_norm", r"panoptic_head.pixel_decoder.encoder.layers.\1.norms.0"),
            (r"model\.pixel_level_module\.decoder\.encoder\.layers\.(\d)\.final_layer_norm", r"panoptic_head.pixel_decoder.encoder.layers.\1.norms.1"),
            (r"model\.pixel_level_module\.decoder\.encoder\.layers\.(\d)\.fc1", r"panoptic_head.pixel_decoder.encoder.layers.\1.ffns.0.layers.0.0"),
            (r"model\.pixel_level_module\.decoder\.encoder\.layers\.(\d)\.fc2", r"panoptic_head.pixel_decoder.encoder.layers.\1.ffns.0.layers.1"),
            (r"model\.pixel_level_module\.decoder\.level_embed$", "panoptic_head.pixel_decoder.level_encoding.weight"),
            (r"model\.pixel_level_module\.decoder\.adapter_1\.0", "panoptic_head.pixel_decoder.lateral_convs.0.conv"),
            (r"model\.pixel_level_module\.decoder\.adapter_1\.1", "panoptic_head.pixel_decoder.lateral_convs.0.gn"),
            (r"model\.pixel_level_module\.decoder\.layer_1\.0", "panoptic_head.pixel_decoder.output_convs.0.conv"),
            (r"model\.pixel_level_module\.decoder\.layer_1\.1", "panoptic_head.pixel_decoder.output_convs.0.gn"),
            (r"model\.pixel_level_module\.decoder\.mask_projection", "panoptic_head.pixel_decoder.mask_feature"),
            (r"model\.transformer_module\.decoder\.layers\.(\d)\.cross_attn\.", r"panoptic_head.transformer_decoder.layers.\1.attentions.0.attn."),
            (r"model\.transformer_module\.decoder\.layers\.(\d)\.self_attn\.out_proj", r"panoptic_head.transformer_decoder.layers.\1.attentions.1.attn.out_proj"),
            (r"model\.transformer_module\.decoder\.layers\.(\d)\.cross_attn_layer_norm", r"panoptic_head.transformer_decoder.layers.\1.norms.0"),
            (r"model\.transformer_module\.decoder\.layers\.(\d)\.self_attn_layer_norm", r"panoptic_head.transformer_decoder.layers.\1.norms.1"),
            (r"model\.transformer_module\.decoder\.layers\.(\d)\.final_layer_norm", r"panoptic_head.transformer_decoder.layers.\1.norms.2"),
            (r"model\.transformer_module\.decoder\.layers\.(\d)\.fc1", r"panoptic_head.transformer_decoder.layers.\1.ffns.0.layers.0.0"),
            (r"model\.transformer_module\.decoder\.layers\.(\d)\.fc2", r"panoptic_head.transformer_decoder.layers.\1.ffns.0.layers.1"),
            (r"model\.transformer_module\.decoder\.layernorm", "panoptic_head.transformer_decoder.post_norm"),
            (r"model\.transformer_module\.decoder\.mask_predictor\.mask_embedder\.0\.0", "panoptic_head.mask_embed.0"),
            (r"model\.transformer_module\.decoder\.mask_predictor\.mask_embedder\.1\.0", "panoptic_head.mask_embed.2"),
            (r"model\.transformer_module\.decoder\.mask_predictor\.mask_embedder\.2\.0", "panoptic_head.mask_embed.4"),
            (r"model\.transformer_module\.level_embed", "panoptic_head.level_embed"),
            (r"model\.transformer_module\.queries_embedder", "panoptic_head.query_embed"),
            (r"model\.transformer_module\.queries_features", "panoptic_head.query_feat"),
            (r"class_predictor", "panoptic_head.cls_embed"),
        ]
        for pat, rep in simple:
            if re.match(pat, k):
                new[re.sub(pat, rep, k)] = v
                break
        m = re.match(r"model\.transformer_module\.decoder\.layers\.(\d)\.self_attn\.q_proj\.(weight|bias)", k)
        if m:
            i, kind = m.groups()
            base = f"model.transformer_module.decoder.layers.{i}.self_attn."
            name = "in_proj_weight" if kind == "weight" else "in_proj_bias"
            new[f"panoptic_head.transformer_decoder.layers.{i}.attentions.1.attn.{name}"] = torch.cat(
                [sd[base + f"{x}_proj.{kind}"] for x in "qkv"])
    return new


@pytest.mark.parametrize("height, width", [(128, 96), (136, 104)])  # the second has odd sizes to pad and merge
def test_port_matches_transformers_mask2former(height, width):
    """transformers' Mask2Former (ported from Detectron2's, which mmdet re-implements) with random weights, mapped
    to mmdet's names, gives the same class and mask logits as our port: every block, including shifted and padded
    windows and PatchMerging's channel order, computes the same function."""
    transformers = pytest.importorskip("transformers")
    swin = transformers.SwinConfig(embed_dim=32, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4], window_size=2,
                                   drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(backbone_config=swin, feature_size=64, mask_feature_size=64, hidden_dim=64,
                                            encoder_feedforward_dim=64, dim_feedforward=96, decoder_layers=4,
                                            encoder_layers=2, num_queries=10, num_labels=80, num_attention_heads=8)
    torch.manual_seed(0)
    reference = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        for p in reference.parameters():  # some start at zero; make every parameter matter
            p.add_(torch.randn_like(p) * 0.05)
    cfg = dataclasses.replace(gd.Mask2FormerConfig(), embed_dims=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4),
                              window_size=2, feat_channels=64, pixel_decoder_layers=2, pixel_decoder_ffn=64,
                              decoder_layers=3, decoder_ffn=96, num_queries=10)
    ours = gd.Mask2Former(cfg).eval()
    state = transformers_to_mmdet(reference.state_dict())
    state.update({k: v for k, v in ours.state_dict().items() if k.endswith("relative_position_index")})
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(pixel_values=x)
        cls, masks = ours(x)
    assert torch.allclose(cls, expected.class_queries_logits, atol=2e-5)
    assert torch.allclose(masks, expected.masks_queries_logits, atol=2e-5)
