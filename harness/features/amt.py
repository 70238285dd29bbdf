"""AMT-S frame interpolation (Li et al., CVPR 2023) and VBench's motion smoothness on it.

AMT-S as VBench runs it (Vchitect/VBench@45e79ec, `vbench/motion_smoothness.py` and its vendored copy of
MCG-NKU/AMT under `vbench/third_party/amt`: `networks/AMT-S.py`, `networks/blocks/{feat_enc,ifrnet,multi_flow,
raft}.py`, `utils/flow_utils.py` `warp`, `utils/utils.py` `InputPadder`, `img2tensor`, `tensor2img`;
`cfgs/AMT-S.yaml`: corr_radius 3, corr_lvls 4, num_flows 3). Written here with upstream's module names, so the
released `amt-s.pth` (`{"state_dict": ...}`) loads strictly by name; the golden test checks the interpolated
frames, the flows and the per-video scores against VBench's own code on seeded weights.

Motion smoothness of one video (`MotionSmoothness.motion_score`):

1. every decoded frame (RGB uint8); the even ones (0, 2, 4, ...) are the input, each as float32 ``x / 255``;
2. VBench's frame scale: 1 on a CPU; on CUDA ``16 / floor(16 / sqrt(s))`` (capped at 1) with
   ``s = 1024 * 512 / (H * W) * sqrt((total GPU memory - 2500 MiB) / 1500 MiB)``, so only a large frame on a
   small GPU is shrunk (`vram_scale`); the frames are replicate-padded to a multiple of ``int(16 / scale)``;
3. AMT-S interpolates each consecutive pair at t = 1/2 (one pass); the outputs are unpadded and turned into
   uint8 by ``(x * 255).clip(0, 255).astype(uint8)`` (truncation, as `tensor2img`);
4. the score is ``(255 - mean_i mean|odd original i - interpolated i|) / 255``, over the interpolated frames
   (with an even frame count the last odd original has no interpolated partner and is not compared).

The dimension is the mean over videos.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ArbenchError
from harness.metrics import vbench as rules
from harness.weights import WeightSpec, register_weights

AMT_S = register_weights(WeightSpec(
    name="amt-s",
    filename="amt-s.pth",
    url="https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth",
    sha256=None,  # neither VBench nor MCG-NKU/AMT publishes one; the file's digest goes into the provenance
    license="CC-BY-NC-4.0 (MCG-NKU/AMT's LICENSE, as VBench vendors it; the weights are taken to share it)",
    description="AMT-S trained on Vimeo90K (a checkpoint dict with `state_dict`); VBench motion smoothness",
))
#: VBench's `initialization` on CUDA: anchor resolution, memory per anchor and memory bias (bytes).
ANCHOR_RESOLUTION, ANCHOR_MEMORY, ANCHOR_MEMORY_BIAS = 1024 * 512, 1500 * 1024 ** 2, 2500 * 1024 ** 2


# -- blocks (names as upstream's) ----------------------------------------------------------------------------------
def resize(x: torch.Tensor, scale_factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=False)


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp by `flow` in pixels (AMT's `flow_utils.warp`: border padding, align_corners)."""
    b, _, h, w = flow.shape
    xx = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(b, -1, h, -1)
    yy = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(b, -1, -1, w)
    grid = torch.cat([xx, yy], 1).to(img)
    flow_ = torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    return F.grid_sample(img, (grid + flow_).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=True)


def coords_grid(batch: int, ht: int, wd: int, device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(ht, device=device), torch.arange(wd, device=device), indexing="ij")
    return torch.stack([xs, ys], dim=0).float()[None].repeat(batch, 1, 1, 1)


def bilinear_sampler(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    xgrid, ygrid = coords.split([1, 1], dim=-1)
    grid = torch.cat([2 * xgrid / (w - 1) - 1, 2 * ygrid / (h - 1) - 1], dim=-1)
    return F.grid_sample(img, grid, align_corners=True)


class BottleneckBlock(nn.Module):
    """RAFT's bottleneck residual block with instance norm (AMT-S's feature encoder; norms have no weights)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes // 4, kernel_size=1, padding=0)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(planes // 4, planes, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.norm1, self.norm2 = nn.InstanceNorm2d(planes // 4), nn.InstanceNorm2d(planes // 4)
        self.norm3 = nn.InstanceNorm2d(planes)
        self.downsample = None
        if stride != 1:
            self.norm4 = nn.InstanceNorm2d(planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm4)

    def forward(self, x):
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class SmallEncoder(nn.Module):
    """RAFT's small feature encoder (instance norm, output 84 channels at 1/8)."""

    def __init__(self, output_dim: int = 84):
        super().__init__()
        self.norm1 = nn.InstanceNorm2d(32)
        self.conv1 = nn.Conv2d(3, 32, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BottleneckBlock(32, 32, 1), BottleneckBlock(32, 32, 1))
        self.layer2 = nn.Sequential(BottleneckBlock(32, 64, 2), BottleneckBlock(64, 64, 1))
        self.layer3 = nn.Sequential(BottleneckBlock(64, 96, 2), BottleneckBlock(96, 96, 1))
        self.conv2 = nn.Conv2d(96, output_dim, kernel_size=1)

    def forward(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = torch.cat(images, dim=0)
        x = self.relu1(self.norm1(self.conv1(x)))
        x = self.conv2(self.layer3(self.layer2(self.layer1(x))))
        return torch.split(x, [len(images[0])] * len(images), dim=0)


def convrelu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
             padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True),
                         nn.PReLU(out_channels))


class ResBlock(nn.Module):
    """IFRNet's residual block that convolves the last `side_channels` channels separately."""

    def __init__(self, in_channels: int, side_channels: int):
        super().__init__()
        self.side_channels = side_channels
        self.conv1 = convrelu(in_channels, in_channels)
        self.conv2 = convrelu(side_channels, side_channels)
        self.conv3 = convrelu(in_channels, in_channels)
        self.conv4 = convrelu(side_channels, side_channels)
        self.conv5 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1, bias=True)
        self.prelu = nn.PReLU(in_channels)

    def forward(self, x):
        s = self.side_channels
        out = self.conv1(x)
        out = self.conv3(torch.cat([out[:, :-s], self.conv2(out[:, -s:])], 1))
        out = self.conv5(torch.cat([out[:, :-s], self.conv4(out[:, -s:])], 1))
        return self.prelu(x + out)


class Encoder(nn.Module):
    """The 4-level image pyramid (`pyramid1..4`, each two stride-2/stride-1 conv + PReLU)."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.channels = channels
        prev = 3
        for idx, ch in enumerate(channels, 1):
            self.register_module(f"pyramid{idx}", nn.Sequential(convrelu(prev, ch, 3, 2, 1), convrelu(ch, ch)))
            prev = ch

    def forward(self, x):
        features = []
        for idx in range(len(self.channels)):
            x = getattr(self, f"pyramid{idx + 1}")(x)
            features.append(x)
        return features


class InitDecoder(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, skip_ch: int):
        super().__init__()
        self.convblock = nn.Sequential(convrelu(in_ch * 2 + 1, in_ch * 2), ResBlock(in_ch * 2, skip_ch),
                                       nn.ConvTranspose2d(in_ch * 2, out_ch + 4, 4, 2, 1, bias=True))

    def forward(self, f0, f1, embt):
        h, w = f0.shape[2:]
        out = self.convblock(torch.cat([f0, f1, embt.repeat(1, 1, h, w)], 1))
        flow0, flow1 = torch.chunk(out[:, :4], 2, 1)
        return flow0, flow1, out[:, 4:]


class IntermediateDecoder(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, skip_ch: int):
        super().__init__()
        self.convblock = nn.Sequential(convrelu(in_ch * 3 + 4, in_ch * 3), ResBlock(in_ch * 3, skip_ch),
                                       nn.ConvTranspose2d(in_ch * 3, out_ch + 4, 4, 2, 1, bias=True))

    def forward(self, ft_, f0, f1, flow0_in, flow1_in):
        out = self.convblock(torch.cat([ft_, warp(f0, flow0_in), warp(f1, flow1_in), flow0_in, flow1_in], 1))
        flow0, flow1 = torch.chunk(out[:, :4], 2, 1)
        flow0 = flow0 + 2.0 * resize(flow0_in, scale_factor=2.0)
        flow1 = flow1 + 2.0 * resize(flow1_in, scale_factor=2.0)
        return flow0, flow1, out[:, 4:]


class MultiFlowDecoder(nn.Module):
    def __init__(self, in_ch: int, skip_ch: int, num_flows: int = 3):
        super().__init__()
        self.num_flows = num_flows
        self.convblock = nn.Sequential(convrelu(in_ch * 3 + 4, in_ch * 3), ResBlock(in_ch * 3, skip_ch),
                                       nn.ConvTranspose2d(in_ch * 3, 8 * num_flows, 4, 2, 1, bias=True))

    def forward(self, ft_, f0, f1, flow0, flow1):
        n = self.num_flows
        out = self.convblock(torch.cat([ft_, warp(f0, flow0), warp(f1, flow1), flow0, flow1], 1))
        delta_flow0, delta_flow1, mask, img_res = torch.split(out, [2 * n, 2 * n, n, 3 * n], 1)
        flow0 = delta_flow0 + 2.0 * resize(flow0, scale_factor=2.0).repeat(1, n, 1, 1)
        flow1 = delta_flow1 + 2.0 * resize(flow1, scale_factor=2.0).repeat(1, n, 1, 1)
        return flow0, flow1, torch.sigmoid(mask), img_res


def multi_flow_combine(comb_block, img0, img1, flow0, flow1, mask, img_res, mean):
    """Warp both frames by each of the flows, blend by the masks, add the residuals; average plus `comb_block`."""
    b, c, h, w = flow0.shape
    n = c // 2
    flow0, flow1 = flow0.reshape(-1, 2, h, w), flow1.reshape(-1, 2, h, w)
    mask, img_res = mask.reshape(-1, 1, h, w), img_res.reshape(-1, 3, h, w)
    img0 = torch.stack([img0] * n, 1).reshape(-1, 3, h, w)
    img1 = torch.stack([img1] * n, 1).reshape(-1, 3, h, w)
    mean = torch.stack([mean] * n, 1).reshape(-1, 1, 1, 1)
    warps = mask * warp(img0, flow0) + (1 - mask) * warp(img1, flow1) + mean + img_res
    warps = warps.reshape(b, n, 3, h, w)
    return warps.mean(1) + comb_block(warps.view(b, -1, h, w))


class SmallUpdateBlock(nn.Module):
    def __init__(self, cdim: int, hidden_dim: int, flow_dim: int, corr_dim: int, fc_dim: int, corr_levels: int = 4,
                 radius: int = 3, scale_factor: int | None = None):
        super().__init__()
        cor_planes = corr_levels * (2 * radius + 1) ** 2
        self.scale_factor = scale_factor
        self.convc1 = nn.Conv2d(2 * cor_planes, corr_dim, 1, padding=0)
        self.convf1 = nn.Conv2d(4, flow_dim * 2, 7, padding=3)
        self.convf2 = nn.Conv2d(flow_dim * 2, flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(corr_dim + flow_dim, fc_dim, 3, padding=1)

        def head(out_dim: int, in_dim: int = hidden_dim) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_dim, hidden_dim, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                 nn.Conv2d(hidden_dim, out_dim, 3, padding=1))

        self.gru = head(hidden_dim, fc_dim + 4 + cdim)
        self.feat_head = head(cdim)
        self.flow_head = head(4)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, net, flow, corr):
        if self.scale_factor is not None:
            net = resize(net, 1 / self.scale_factor)
        cor = self.lrelu(self.convc1(corr))
        flo = self.lrelu(self.convf2(self.lrelu(self.convf1(flow))))
        inp = self.lrelu(self.conv(torch.cat([cor, flo], dim=1)))
        out = self.gru(torch.cat([inp, flow, net], dim=1))
        delta_net, delta_flow = self.feat_head(out), self.flow_head(out)
        if self.scale_factor is not None:
            delta_net = resize(delta_net, scale_factor=self.scale_factor)
            delta_flow = self.scale_factor * resize(delta_flow, scale_factor=self.scale_factor)
        return delta_net, delta_flow


class BidirCorrBlock:
    """All-pairs correlation of two 1/8 feature maps and its transpose, pooled to `num_levels`, looked up in a
    ``(2r + 1)^2`` window around coordinates in each direction."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4):
        self.num_levels, self.radius = num_levels, radius
        batch, dim, ht, wd = fmap1.shape
        corr = torch.matmul(fmap1.view(batch, dim, ht * wd).transpose(1, 2), fmap2.view(batch, dim, ht * wd))
        corr = corr.view(batch, ht, wd, 1, ht, wd) / torch.sqrt(torch.tensor(dim).float())
        corr_t = corr.clone().permute(0, 4, 5, 3, 1, 2).reshape(batch * ht * wd, 1, ht, wd)
        corr = corr.reshape(batch * ht * wd, 1, ht, wd)
        self.pyramid, self.pyramid_t = [corr], [corr_t]
        for _ in range(num_levels - 1):
            corr, corr_t = F.avg_pool2d(corr, 2, stride=2), F.avg_pool2d(corr_t, 2, stride=2)
            self.pyramid.append(corr)
            self.pyramid_t.append(corr_t)

    def __call__(self, coords0: torch.Tensor, coords1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.radius
        coords0, coords1 = coords0.permute(0, 2, 3, 1), coords1.permute(0, 2, 3, 1)
        batch, h1, w1, _ = coords0.shape
        out, out_t = [], []
        for i in range(self.num_levels):
            d = torch.linspace(-r, r, 2 * r + 1, device=coords0.device)
            delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
            lvl0 = coords0.reshape(batch * h1 * w1, 1, 1, 2) / 2 ** i + delta
            lvl1 = coords1.reshape(batch * h1 * w1, 1, 1, 2) / 2 ** i + delta
            out.append(bilinear_sampler(self.pyramid[i], lvl0).view(batch, h1, w1, -1))
            out_t.append(bilinear_sampler(self.pyramid_t[i], lvl1).view(batch, h1, w1, -1))
        return (torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float(),
                torch.cat(out_t, dim=-1).permute(0, 3, 1, 2).contiguous().float())


class AMTS(nn.Module):
    """AMT-S (`networks/AMT-S.py` `Model` with `cfgs/AMT-S.yaml`: corr_radius 3, corr_lvls 4, num_flows 3)."""

    def __init__(self, corr_radius: int = 3, corr_lvls: int = 4, num_flows: int = 3,
                 channels: tuple[int, ...] = (20, 32, 44, 56), skip_channels: int = 20):
        super().__init__()
        self.radius, self.corr_levels, self.num_flows = corr_radius, corr_lvls, num_flows
        self.feat_encoder = SmallEncoder(output_dim=84)
        self.encoder = Encoder(list(channels))
        self.decoder4 = InitDecoder(channels[3], channels[2], skip_channels)
        self.decoder3 = IntermediateDecoder(channels[2], channels[1], skip_channels)
        self.decoder2 = IntermediateDecoder(channels[1], channels[0], skip_channels)
        self.decoder1 = MultiFlowDecoder(channels[0], skip_channels, num_flows)
        self.update4 = self._update_block(44)
        self.update3 = self._update_block(32, 2)
        self.update2 = self._update_block(20, 4)
        self.comb_block = nn.Sequential(nn.Conv2d(3 * num_flows, 6 * num_flows, 3, 1, 1), nn.PReLU(6 * num_flows),
                                        nn.Conv2d(6 * num_flows, 3, 3, 1, 1))

    def _update_block(self, cdim: int, scale_factor: int | None = None) -> SmallUpdateBlock:
        return SmallUpdateBlock(cdim=cdim, hidden_dim=76, flow_dim=20, corr_dim=64, fc_dim=68,
                                scale_factor=scale_factor, corr_levels=self.corr_levels, radius=self.radius)

    def _corr_scale_lookup(self, corr_fn, coord, flow0, flow1, embt, downsample: int = 1):
        # t -> 0 and t -> 1 flows turned into 0 -> 1 and 1 -> 0 (linear motion), looked up at 1/8
        t1_scale, t0_scale = 1.0 / embt, 1.0 / (1.0 - embt)
        if downsample != 1:
            inv = 1 / downsample
            flow0, flow1 = inv * resize(flow0, scale_factor=inv), inv * resize(flow1, scale_factor=inv)
        corr0, corr1 = corr_fn(coord + flow1 * t1_scale, coord + flow0 * t0_scale)
        return torch.cat([corr0, corr1], dim=1), torch.cat([flow0, flow1], dim=1)

    def _refine(self, update, corr_fn, coord, flow0, flow1, ft_, embt, downsample):
        corr, flow = self._corr_scale_lookup(corr_fn, coord, flow0, flow1, embt, downsample)
        delta_ft, delta_flow = update(ft_, flow, corr)
        delta0, delta1 = torch.chunk(delta_flow, 2, 1)
        return flow0 + delta0, flow1 + delta1, ft_ + delta_ft

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: torch.Tensor, scale_factor: float = 1.0,
                flows: bool = False) -> dict[str, torch.Tensor]:
        """The frame at time `embt` between `img0` and `img1` (float ``[B, 3, H, W]`` in 0..1, H and W multiples
        of ``16 / scale_factor``): ``{"imgt_pred"}``, plus the full-size flows ``flow0_pred``/``flow1_pred``
        ``[B, num_flows, 2, H, W]`` when `flows`."""
        mean_ = torch.cat([img0, img1], 2).mean(1, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
        img0, img1 = img0 - mean_, img1 - mean_
        img0_ = resize(img0, scale_factor) if scale_factor != 1.0 else img0
        img1_ = resize(img1, scale_factor) if scale_factor != 1.0 else img1
        b, _, h, w = img0_.shape
        coord = coords_grid(b, h // 8, w // 8, img0.device)
        fmap0, fmap1 = self.feat_encoder([img0_, img1_])
        corr_fn = BidirCorrBlock(fmap0, fmap1, radius=self.radius, num_levels=self.corr_levels)
        f0_1, f0_2, f0_3, f0_4 = self.encoder(img0_)
        f1_1, f1_2, f1_3, f1_4 = self.encoder(img1_)

        flow0, flow1, ft_ = self.decoder4(f0_4, f1_4, embt)
        flow0, flow1, ft_ = self._refine(self.update4, corr_fn, coord, flow0, flow1, ft_, embt, 1)
        flow0, flow1, ft_ = self.decoder3(ft_, f0_3, f1_3, flow0, flow1)
        flow0, flow1, ft_ = self._refine(self.update3, corr_fn, coord, flow0, flow1, ft_, embt, 2)
        flow0, flow1, ft_ = self.decoder2(ft_, f0_2, f1_2, flow0, flow1)
        flow0, flow1, ft_ = self._refine(self.update2, corr_fn, coord, flow0, flow1, ft_, embt, 4)
        flow0, flow1, mask, img_res = self.decoder1(ft_, f0_1, f1_1, flow0, flow1)
        if scale_factor != 1.0:
            inv = 1.0 / scale_factor
            flow0, flow1 = resize(flow0, scale_factor=inv) * inv, resize(flow1, scale_factor=inv) * inv
            mask, img_res = resize(mask, scale_factor=inv), resize(img_res, scale_factor=inv)
        imgt = multi_flow_combine(self.comb_block, img0, img1, flow0, flow1, mask, img_res, mean_)
        out = {"imgt_pred": torch.clamp(imgt, 0, 1)}
        if flows:
            full = flow0.shape[-2:]
            out["flow0_pred"] = flow0.reshape(len(flow0), self.num_flows, 2, *full)
            out["flow1_pred"] = flow1.reshape(len(flow1), self.num_flows, 2, *full)
        return out


def load_amt_s(path: str | None = None, device: str = "cpu") -> AMTS:
    """AMT-S from the released checkpoint (a dict with `state_dict`, as AMT's trainer writes it next to `epoch` and
    `optim`; a bare state dict is taken too), read with `weights_only=True` (VBench unpickles it fully)."""
    resolved = AMT_S.resolve(path)
    try:
        checkpoint = torch.load(resolved, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # never unpickled in full: a checkpoint is untrusted
        raise ArbenchError(f"{resolved} holds objects other than tensors and plain containers, so ARBench will not "
                           f"unpickle it ({str(exc).splitlines()[0][:200]}). Where you trust the file, keep only its "
                           f"weights: torch.save(torch.load(path, weights_only=False)['state_dict'], 'amt-s-weights"
                           f".pth'), and pass that file as amt_weights.") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    model = AMTS()
    try:
        if state is None:
            raise RuntimeError(f"a {type(checkpoint).__name__}, not a dict")
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArbenchError(f"{path or AMT_S.cache_path} is not the AMT-S checkpoint VBench uses (amt-s.pth from "
                           f"{AMT_S.url}): {str(exc)[:300]}") from exc
    return model.eval().to(device)


# -- VBench's motion smoothness ----------------------------------------------------------------------------------
def vram_scale(height: int, width: int, total_memory: int | None) -> float:
    """VBench's frame scale for AMT-S: 1 with `total_memory` None (VBench on a CPU: "do not resize"), else
    ``16 / floor(16 / sqrt(s))`` capped at 1, ``s = 1024 * 512 / (H * W) * sqrt((memory - 2500 MiB) / 1500 MiB)``
    (`MotionSmoothness.initialization` and `motion_score` on CUDA; H, W the frames' size before padding).

    >>> vram_scale(480, 768, 80 * 2 ** 30), vram_scale(1080, 1920, 16 * 2 ** 30)
    (1.0, 0.8888888888888888)
    """
    if total_memory is None:
        return 1.0
    s = ANCHOR_RESOLUTION / (height * width) * np.sqrt((total_memory - ANCHOR_MEMORY_BIAS) / ANCHOR_MEMORY)
    s = 1 if s > 1 else s
    return float(1 / np.floor(1 / np.sqrt(s) * 16) * 16)


def device_memory(device: str) -> int | None:
    """The GPU's total memory in bytes for a CUDA device (what VBench's scale reads), else None."""
    if not str(device).startswith("cuda"):
        return None
    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)


def replicate_pad(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, list[int]]:
    """AMT's `InputPadder(dims, divisor).pad`: replicate padding to a multiple of `divisor`, split evenly;
    returns the padded tensor and ``[left, right, top, bottom]``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (((h // divisor) + 1) * divisor - h) % divisor, (((w // divisor) + 1) * divisor - w) % divisor
    pad = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
    return F.pad(x, pad, mode="replicate"), pad


@torch.no_grad()
def interpolate_even_frames(model: AMTS, frames: np.ndarray, device: str = "cpu", scale: float = 1.0,
                            batch_size: int = 1) -> np.ndarray:
    """The uint8 ``[ceil(T/2) - 1, H, W, 3]`` frames AMT-S puts between consecutive even frames of a uint8
    ``[T, H, W, 3]`` RGB video at t = 1/2. VBench feeds one pair at a time (`batch_size` 1, the default, gives its
    bytes); larger batches change only rounding (every op of AMT-S is per sample), which can move a pixel of the
    truncated uint8 output by one grey level."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 3:
        raise ValueError(f"motion smoothness needs uint8 [T>=3, H, W, 3] frames, got shape {frames.shape}")
    # as VBench's `img2tensor` + `InputPadder.pad`, frame by frame: the permuted (channels-last) layout is kept,
    # so the convolutions run the same kernels and round as upstream's do
    inputs = [replicate_pad(torch.from_numpy(f).permute(2, 0, 1).unsqueeze(0) / 255.0, int(16 / scale))
              for f in frames[0::2]]
    pad = inputs[0][1]
    padded = [x for x, _ in inputs]
    embt = torch.tensor(1 / 2).float().view(1, 1, 1, 1).to(device)
    h, w = padded[0].shape[-2:]
    out = []
    for i in range(0, len(padded) - 1, batch_size):
        j = min(i + batch_size, len(padded) - 1)
        img0, img1 = torch.cat(padded[i:j]).to(device), torch.cat(padded[i + 1:j + 1]).to(device)
        pred = model(img0, img1, embt.expand(len(img0), -1, -1, -1), scale_factor=scale)["imgt_pred"].cpu()
        out.append(pred[..., pad[2]:h - pad[3], pad[0]:w - pad[1]])
    return (torch.cat(out) * 255.0).permute(0, 2, 3, 1).numpy().clip(0, 255).astype(np.uint8)


def motion_smoothness(model: AMTS, frames: np.ndarray, device: str = "cpu", scale: float = 1.0,
                      batch_size: int = 1) -> float:
    """VBench's per-video motion smoothness: ``(255 - mean_i mean|odd_i - AMT-S(even_i, even_i+1)|) / 255``.

    Args:
        model: AMT-S (`load_amt_s`).
        frames: every decoded frame, uint8 ``[T, H, W, 3]`` RGB, T >= 3.
        device: where AMT-S runs.
        scale: VBench's frame scale (`vram_scale`; 1 on a CPU).
        batch_size: frame pairs per forward pass (1: VBench's arithmetic).

    Returns:
        The score in [0, 1]; 1 when every odd frame is exactly the interpolation of its neighbours.
    """
    return rules.motion_smoothness(frames, interpolate_even_frames(model, frames, device, scale, batch_size))
