"""Real-ESRGAN's two generator architectures, so its published `.pth` files load here.

* `RRDBNet`: ESRGAN's Residual-in-Residual Dense Block network as BasicSR defines it
  (XPixelGroup/BasicSR, `basicsr/archs/rrdbnet_arch.py`, Apache-2.0). Published as
  RealESRGAN_x4plus.pth (scale 4, 23 blocks), RealESRNet_x4plus.pth,
  RealESRGAN_x4plus_anime_6B.pth (6 blocks) and RealESRGAN_x2plus.pth (scale 2: the
  input is pixel-unshuffled first, so `conv_first` takes 3 * 4 channels; scale 1 takes
  3 * 16).
* `SRVGGNetCompact`: Real-ESRGAN's compact VGG-style network (xinntao/Real-ESRGAN,
  `realesrgan/archs/srvgg_arch.py`, BSD-3-Clause). Published as realesr-general-x4v3.pth
  (32 convs), realesr-general-wdn-x4v3.pth and realesr-animevideov3.pth (16 convs).

The parameter names and shapes are those of the sources, so the files load with
`load_state_dict(strict=True)`; the forward passes do the same arithmetic. The code here
is written for d2v; the architectures are the authors'. `load_esrgan` takes the loaded
file (`{'params_ema': ...}`, `{'params': ...}` or the bare state dict) and works out
which network it is and its sizes from the key names and tensor shapes.

One addition: RRDBNet at scale 2 or 1 needs sides divisible by 2 or 4 for its
pixel-unshuffle; other sizes are reflect-padded on the right and bottom and the output
cropped back, which is what Real-ESRGAN's own inference (`RealESRGANer`, `mod_scale`)
does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output; the result
    scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in a residual, scaled by 0.2 as in ESRGAN."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """BasicSR's RRDBNet: (N, num_in_ch, h, w) -> (N, num_out_ch, scale h, scale w).
    Two nearest 2x upsamplings make 4x; scale 2 and 1 pixel-unshuffle the input by 2 and
    4 first."""

    def __init__(self, num_in_ch: int, num_out_ch: int, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        h, w = x.shape[-2:]
        r = self.unshuffle
        if r > 1:
            pad_h, pad_w = -h % r, -w % r
            if pad_h or pad_w:
                # reflect needs a pad smaller than the side; a side of 1-3 pixels is replicated
                mode = "reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
                x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            x = F.pixel_unshuffle(x, r)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out[..., : h * self.scale, : w * self.scale]


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "relu":
        return nn.ReLU(inplace=True)
    if act_type == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    raise ValueError(f"unknown activation {act_type!r} (prelu, relu, leakyrelu)")


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network: num_conv 3x3 convs at the input size, the last one
    making num_out_ch * upscale**2 channels, pixel-shuffled, plus the nearest-upsampled
    input (the network learns the residual)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4, act_type: str = "prelu"):
        super().__init__()
        self.upscale = upscale
        layers = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


# -- loading a published file ---------------------------------------------------------------

def _unwrap(state: Mapping) -> dict:
    """The state dict inside a loaded file: Real-ESRGAN stores it under 'params_ema'
    (the EMA weights it recommends) or 'params'."""
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict, got {type(state).__name__}")
    for key in ("params_ema", "params"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
            break
    sd = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError("no tensors in it")
    if all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _shape(sd: dict, key: str, ndim: int) -> tuple[int, ...]:
    t = sd.get(key)
    if t is None or t.ndim != ndim:
        raise ValueError(f"{key} is missing or not {ndim}-d")
    return tuple(t.shape)


def _rrdbnet_from(sd: dict) -> tuple[nn.Module, int]:
    num_feat, cin = _shape(sd, "conv_first.weight", 4)[:2]
    num_out_ch = _shape(sd, "conv_last.weight", 4)[0]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.rdb1\.conv1\.weight$", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise ValueError("RRDBNet body blocks are missing or not numbered 0..n-1")
    num_grow_ch = _shape(sd, "body.0.rdb1.conv1.weight", 4)[0]
    # The input has as many channels as the output (RGB in, RGB out); what conv_first
    # takes beyond that is the pixel-unshuffle, which says the scale.
    scale = {1: 4, 4: 2, 16: 1}.get(cin // num_out_ch if cin % num_out_ch == 0 else 0)
    if scale is None:
        raise ValueError(f"conv_first takes {cin} channels for {num_out_ch} out: not scale 4, 2 or 1")
    net = RRDBNet(num_out_ch, num_out_ch, scale=scale, num_feat=num_feat, num_block=len(blocks),
                  num_grow_ch=num_grow_ch)
    return net, scale


def _srvgg_from(sd: dict) -> tuple[nn.Module, int]:
    num_feat, num_in_ch = _shape(sd, "body.0.weight", 4)[:2]
    convs = sorted(int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.weight$", k)) and sd[k].ndim == 4)
    last = convs[-1]
    num_conv = (last - 2) // 2
    if last % 2 or num_conv < 0 or convs != list(range(0, last + 1, 2)):
        raise ValueError("SRVGGNetCompact convs are not at body.0, body.2, ... body.2n+2")
    if "body.1.weight" not in sd:
        raise ValueError("SRVGGNetCompact without PReLU weights (relu/leakyrelu variants are not supported)")
    out = _shape(sd, f"body.{last}.weight", 4)[0]
    upscale = round((out / num_in_ch) ** 0.5)
    if upscale < 1 or num_in_ch * upscale * upscale != out:
        raise ValueError(f"the last conv makes {out} channels: not {num_in_ch} x scale^2")
    net = SRVGGNetCompact(num_in_ch, num_in_ch, num_feat=num_feat, num_conv=num_conv, upscale=upscale,
                          act_type="prelu")
    return net, upscale


def load_esrgan(state: Mapping) -> tuple[nn.Module, int]:
    """A loaded Real-ESRGAN file -> (network in eval mode with its weights, scale).

    Which network and its sizes come from the key names and shapes: `conv_first` and
    `body.N.rdbK` mean RRDBNet (scale from conv_first's input channels, num_feat,
    num_block, num_grow_ch), `body.0` ... `body.2n+2` convs with PReLUs between mean
    SRVGGNetCompact (num_feat, num_conv = n, upscale from the last conv). Raises
    ValueError (TypeError for what is not a dict), saying why, for anything else (including a state dict whose keys or
    shapes do not then match exactly)."""
    sd = _unwrap(state)
    if "conv_first.weight" in sd:
        net, scale = _rrdbnet_from(sd)
        kind = "RRDBNet"
    elif "body.0.weight" in sd:
        net, scale = _srvgg_from(sd)
        kind = "SRVGGNetCompact"
    else:
        sample = ", ".join(sorted(sd)[:3])
        raise ValueError(f"not an RRDBNet or SRVGGNetCompact state dict (keys: {sample}, ...)")
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"looks like {kind} but does not match it: {detail[:300]}") from None
    return net.eval(), scale
