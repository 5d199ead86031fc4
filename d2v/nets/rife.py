"""RIFE v4.x frame interpolation (IFNet), so Practical-RIFE's `flownet.pkl` files load here.

The architecture is Practical-RIFE's IFNet_HDv3 (hzwer/Practical-RIFE, `train_log/
IFNet_HDv3.py` and `model/warplayer.py`, MIT; RIFE: Huang et al., ECCV 2022), written
for d2v with the same parameter names, shapes and arithmetic. Each release's network
was read from the ports in HolyWu/vs-rife (`vsrife/IFNet_HDv3_v4_*.py`, MIT), which keep
one file per release. Two layouts are covered, told apart by the keys:

* v4.6 (the main target): four IFBlocks (192, 128, 96, 64 channels) on the images and t
  alone; the mask logits add up from block to block.
* v4.14 and later (read from the 4.14, 4.18, 4.20, 4.22, 4.25 and 4.26 ports): a feature
  `encode` Head (cnn0..cnn3) whose outputs are warped along with the images; four or five
  IFBlocks (scales 8..1 or 16..1); each block's mask replaces the last; from 4.22 on
  (`lastconv` of 4*13 channels) each block also hands 8 feature channels to the next.

Block count, widths and the Head's channels are read from the state dict. Layouts with
an `encode.0`, `encode.1`, ... Sequential encoder (e.g. 4.7-4.12, whose encoders differ) are
refused with a ValueError rather than guessed at.

`RIFEInterpolator(flownet)` is the calling convention d2v uses: (img0, img1, t) -> the
frame at t, all in [0, 1]. It pads the frames with zeros on the right and bottom, as
the reference scripts do, to the multiple the network needs (32 for four blocks, 64 for
five, as vs-rife; Practical-RIFE's inference_video.py pads to 128, which changes pixels
near the padded edges slightly), and crops back. At t = 0 and t = 1 it returns the input
frames themselves: the reference pipelines never run the network at the keyframes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

# Parts of a training checkpoint that inference does not use; dropped before the strict load.
TRAINING_ONLY = ("teacher.", "caltime.")


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(x) = img(x + flow(x)), bilinear, clamped at the border
    (Practical-RIFE's warplayer: grid_sample with align_corners=True, flow in pixels)."""
    n, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, h, 1).expand(n, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, w).expand(n, h, w)
    gx = xs + flow[:, 0] / ((img.shape[3] - 1.0) / 2.0)
    gy = ys + flow[:, 1] / ((img.shape[2] - 1.0) / 2.0)
    grid = torch.stack((gx, gy), dim=3)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _conv(in_planes: int, out_planes: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=True), nn.LeakyReLU(0.2, True))


class ResConv(nn.Module):
    """A 3x3 conv with a learned per-channel gain `beta`, added to its input."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x):
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One coarse-to-fine step: at 1/scale of the frame, /4 again inside, predicts a flow
    update (4: to frame 0 and to frame 1), a mask logit and (`out_ch` > 6) features."""

    def __init__(self, in_planes: int, c: int, out_ch: int = 6):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 2), _conv(c // 2, c, 2))
        self.convblock = nn.Sequential(*(ResConv(c) for _ in range(8)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * out_ch, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x, flow, scale: float):
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        tmp = self.lastconv(self.convblock(self.conv0(x)))
        tmp = F.interpolate(tmp, scale_factor=scale, mode="bilinear", align_corners=False)
        return tmp[:, :4] * scale, tmp[:, 4:5], tmp[:, 5:]


class Head(nn.Module):
    """The v4.14+ feature encoder: three convs (the first at stride 2) and a transposed
    conv back to full size."""

    def __init__(self, hidden: int = 32, out: int = 8):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, out, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x):
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class IFNet(nn.Module):
    """IFNet: (img0, img1, timestep) -> the frame at t, inputs (N, 3, H, W) in [0, 1] with
    H and W multiples of `modulo`, timestep (N, 1, H, W).

    widths: the IFBlocks' channels (v4.6: 192, 128, 96, 64). head: (hidden, out) channels
    of the feature encoder, None for v4.6. block_out: channels each block predicts, 6
    (flow, mask, one unused) or 13 (v4.22+: 8 of them features for the next block)."""

    def __init__(self, widths=(192, 128, 96, 64), head: tuple[int, int] | None = None, block_out: int = 6):
        super().__init__()
        enc = head[1] if head else 0
        self.feat_ch = block_out - 5 if block_out > 6 else 0
        self.n_blocks = len(widths)
        for i, c in enumerate(widths):
            # block0: both frames, their features, t; later: the warped frames and
            # features, t, the mask so far, the previous block's features (+ the flow, 4)
            in_planes = 7 + 2 * enc if i == 0 else 8 + 2 * enc + self.feat_ch + 4
            setattr(self, f"block{i}", IFBlock(in_planes, c, block_out))
        self.encode = Head(*head) if head else None
        self.scale_list = [2.0 ** (self.n_blocks - 1 - i) for i in range(self.n_blocks)]
        # the coarsest block works at 1/scale of the frame and halves it twice more
        self.modulo = int(4 * self.scale_list[0])

    def forward(self, img0, img1, timestep, scale: float = 1.0):
        f0 = f1 = None
        if self.encode is not None:
            f0, f1 = self.encode(img0), self.encode(img1)
        warped0, warped1 = img0, img1
        flow = mask = feat = None
        for i in range(self.n_blocks):
            block = getattr(self, f"block{i}")
            s = self.scale_list[i] / scale
            if flow is None:
                parts = [img0, img1] + ([f0, f1] if f0 is not None else []) + [timestep]
                flow, mask, feat = block(torch.cat(parts, 1), None, s)
            else:
                parts = [warped0, warped1]
                if f0 is not None:
                    parts += [warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])]
                parts += [timestep, mask]
                if self.feat_ch:
                    parts.append(feat)
                d_flow, d_mask, feat = block(torch.cat(parts, 1), flow, s)
                flow = flow + d_flow
                # v4.6 refines the mask logit; the encoder versions replace it
                mask = d_mask if f0 is not None else mask + d_mask
            warped0 = warp(img0, flow[:, :2])
            warped1 = warp(img1, flow[:, 2:4])
        mask = torch.sigmoid(mask)
        return warped0 * mask + warped1 * (1 - mask)


class RIFEInterpolator(nn.Module):
    """(img0, img1, t) -> frame at t. img0, img1: (N, 3, H, W) in [0, 1], any H and W;
    t: a number, a scalar tensor, or (N, 1, 1, 1). `scale` < 1 runs the flow at lower
    resolution (Practical-RIFE's --scale, 0.5 for 4K)."""

    def __init__(self, flownet: IFNet, scale: float = 1.0):
        super().__init__()
        self.flownet = flownet
        self.scale = scale

    def forward(self, img0, img1, t):
        n, _, h, w = img0.shape
        m = max(self.flownet.modulo, int(self.flownet.modulo / self.scale))
        ph, pw = -(-h // m) * m, -(-w // m) * m
        x0 = F.pad(img0, (0, pw - w, 0, ph - h))
        x1 = F.pad(img1, (0, pw - w, 0, ph - h))
        t = torch.as_tensor(t, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        timestep = t.expand(n, 1, ph, pw)
        out = self.flownet(x0, x1, timestep, self.scale)[:, :, :h, :w]
        # the keyframes themselves at the ends, as the reference pipelines give them
        return torch.where(t == 0, img0, torch.where(t == 1, img1, out))


# -- loading a published flownet.pkl ---------------------------------------------------------

def _shape(sd: dict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"{key} is missing")
    return tuple(sd[key].shape)


def ifnet_config(sd: Mapping) -> dict:
    """IFNet's constructor arguments for a state dict (without 'module.'), from its keys
    and shapes; ValueError when it is not a layout this module implements."""
    n = len({int(m.group(1)) for k in sd if (m := re.match(r"block(\d+)\.conv0\.0\.0\.weight$", k))})
    if n not in (4, 5) or any(f"block{i}.conv0.0.0.weight" not in sd for i in range(n)):
        raise ValueError("no IFNet blocks (block0..block3/4 .conv0.0.0.weight)")
    widths = tuple(_shape(sd, f"block{i}.conv0.1.0.weight")[0] for i in range(n))
    block_out = _shape(sd, "block0.lastconv.0.weight")[1] // 4
    head = None
    if any(k.startswith("encode.") for k in sd):
        if "encode.cnn0.weight" not in sd:
            raise ValueError("an encoder of a RIFE version before 4.14 (encode.0/encode.1): not supported")
        head = (_shape(sd, "encode.cnn0.weight")[0], _shape(sd, "encode.cnn3.weight")[1])
    if block_out not in (6, 13) or (block_out == 13 and head is None):
        raise ValueError(f"blocks predicting {block_out} channels: not a RIFE 4.6 / 4.14+ layout")
    return {"widths": widths, "head": head, "block_out": block_out}


def describe(config: dict) -> str:
    """A short name for the layout, for messages."""
    if config["head"] is None:
        return f"RIFE v4.6 layout ({len(config['widths'])} blocks)"
    era = "v4.22+" if config["block_out"] == 13 else "v4.14-4.21"
    return f"RIFE {era} layout ({len(config['widths'])} blocks, {config['head'][1]}-channel encoder)"


def load_rife(state: Mapping, scale: float = 1.0) -> RIFEInterpolator:
    """A loaded flownet.pkl -> RIFEInterpolator in eval mode. The published files' keys
    carry the `module.` prefix of the DataParallel they were saved from; it is stripped,
    training-only parts (TRAINING_ONLY) are dropped, and the rest must match exactly
    (strict load). ValueError (TypeError for what is not a dict), saying why, otherwise."""
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict, got {type(state).__name__}")
    sd = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError("no tensors in it")
    if any(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items() if k.startswith("module.")}
    sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY)}
    config = ifnet_config(sd)
    net = IFNet(**config)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"looks like {describe(config)} but does not match it: {detail[:300]}") from None
    model = RIFEInterpolator(net, scale).eval()
    model.description = describe(config)
    return model
