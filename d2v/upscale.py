"""The upscale stage: frames -> exactly the output size.

When the aspect ratio changes, the largest centred crop with the target's aspect is
taken first ("cover"), so nothing is stretched; the crop is then resized to exactly
(width, height), whatever the ratio of the two sides.

* Learned super-resolution when D2V_SR_MODEL names a weights file: loaded with
  `spandrel` (Real-ESRGAN, SwinIR, ... from .pth / .safetensors) when it is installed,
  or a saved torch program: torch.export `.pt2` (dynamic H and W) or TorchScript
  (input (1, 3, h, w) in [0, 1], output (1, 3, s h, s w)). The model's fixed scale is followed by an exact resize to the
  target. Runs on CUDA when present; uint8 conversion happens on the device.
* Otherwise classical: area averaging when shrinking (no aliasing), Lanczos (8x8 taps)
  when enlarging, then an optional mild unsharp mask (`sharpen`, default
  `DEFAULT_SHARPEN`; measured on real footage in bench/interp_bench.py: a 2x
  enlargement gains PSNR over plain bicubic). With CUDA, the same is done in torch
  (antialiased bicubic) on the GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from d2v.camera import cover_crop
from d2v.errors import InvalidRequestError, ModelNotConfiguredError

MODEL_ENV = "D2V_SR_MODEL"
DEFAULT_SHARPEN = 0.3  # unsharp-mask amount after enlarging (0 = off)
SHARPEN_SIGMA = 1.0  # its Gaussian, in output pixels
MAX_SIDE = 8192


def check_size(width: int, height: int) -> None:
    if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))):
        raise InvalidRequestError(f"size must be whole pixels, got {width}x{height}")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise InvalidRequestError(f"size {width}x{height} is out of range (1..{MAX_SIDE} per side)")


def method_for(src_w: int, src_h: int, width: int, height: int) -> str:
    if (src_w, src_h) == (width, height):
        return "none"
    if os.environ.get(MODEL_ENV) and width * height > src_w * src_h:
        return f"sr: {Path(os.environ[MODEL_ENV]).name}"
    return "area" if width * height < src_w * src_h else "lanczos"


def crop_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer (x0, y0, cw, ch) of the cover crop of a w x h frame for width x height."""
    u0, v0, cw, ch = cover_crop(w, h, width, height)
    cw_i, ch_i = max(1, min(w, int(round(cw)))), max(1, min(h, int(round(ch))))
    x0, y0 = min(int(round(u0)), w - cw_i), min(int(round(v0)), h - ch_i)
    return x0, y0, cw_i, ch_i


def sharpen(frame: np.ndarray, amount: float, sigma: float = SHARPEN_SIGMA) -> np.ndarray:
    """Unsharp mask: frame + amount (frame - blur(frame)), saturated to uint8."""
    if amount <= 0:
        return frame
    blur = cv2.GaussianBlur(frame, (0, 0), sigma)
    return cv2.addWeighted(frame, 1.0 + amount, blur, -amount, 0.0)


def resize_frame(frame: np.ndarray, width: int, height: int, *, sharpen_amount: float | None = None) -> np.ndarray:
    """One (h, w, 3) uint8 frame -> (height, width, 3) uint8 (cover crop, then resize)."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    x0, y0, cw, ch = crop_box(w, h, width, height)
    crop = frame[y0 : y0 + ch, x0 : x0 + cw]
    if (cw, ch) == (width, height):
        return np.ascontiguousarray(crop)
    enlarge = width * height > cw * ch
    out = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA)
    if enlarge:
        out = sharpen(out, DEFAULT_SHARPEN if sharpen_amount is None else sharpen_amount)
    return out


def resize_tensor(x, width: int, height: int, *, sharpen_amount: float | None = None):
    """Torch version for frames already on a device: (N, 3, h, w) float in [0, 1] or
    uint8 -> (N, height, width, 3) uint8 tensor on the same device (cover crop,
    antialiased bicubic, the same unsharp mask). The uint8 conversion happens there."""
    import torch
    import torch.nn.functional as F

    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    h, w = x.shape[-2:]
    x0, y0, cw, ch = crop_box(w, h, width, height)
    x = x[..., y0 : y0 + ch, x0 : x0 + cw]
    if (cw, ch) != (width, height):
        enlarge = width * height > cw * ch
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=not enlarge)
        amount = DEFAULT_SHARPEN if sharpen_amount is None else sharpen_amount
        if enlarge and amount > 0:
            x = x + amount * (x - _gaussian_blur(x, SHARPEN_SIGMA))
    return (x.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)


def _gaussian_blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def upscale_frames(
    frames: np.ndarray, width: int, height: int, *, sharpen_amount: float | None = None, device: str | None = None
) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, height, width, 3) uint8.

    device: None = automatic (CUDA when present, else OpenCV on the CPU), "cpu" (OpenCV),
    or a torch device string ("cuda", "cuda:1", "cpu-torch" for the torch code on CPU)."""
    check_size(width, height)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise InvalidRequestError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1:3] == (height, width):
        return frames
    src_h, src_w = frames.shape[1:3]
    if os.environ.get(MODEL_ENV) and width * height > src_w * src_h:
        return load_sr_model().upscale(frames, width, height)
    if device is None:
        device = "cuda" if _cuda_available() else "cpu"
    if device == "cpu":
        return np.stack([resize_frame(f, width, height, sharpen_amount=sharpen_amount) for f in frames])
    import torch

    dev = torch.device("cpu" if device == "cpu-torch" else device)
    out = np.empty((len(frames), height, width, 3), np.uint8)
    batch = max(1, int(64e6 // (width * height * 3 * 4)))  # about 64 MB of output floats at a time
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i : i + batch]).to(dev).permute(0, 3, 1, 2)
        out[i : i + batch] = resize_tensor(x, width, height, sharpen_amount=sharpen_amount).cpu().numpy()
    return out


# -- learned super-resolution -------------------------------------------------------------

_SR_CACHE: dict[str, "SRModel"] = {}


class SRModel:
    """A super-resolution network and its scale. `upscale` runs it on the cover crop of
    each frame, then resizes exactly to the target (area down or Lanczos up)."""

    def __init__(self, module, scale: int, name: str, device):
        self.module, self.scale, self.name, self.device = module, int(scale), name, device

    def upscale(self, frames: np.ndarray, width: int, height: int) -> np.ndarray:
        import torch

        out = np.empty((len(frames), height, width, 3), np.uint8)
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            x0, y0, cw, ch = crop_box(w, h, width, height)
            crop = np.ascontiguousarray(frame[y0 : y0 + ch, x0 : x0 + cw])
            with torch.inference_mode():
                x = torch.from_numpy(crop).to(self.device).permute(2, 0, 1)[None].float() / 255.0
                y = self.module(x)
                if y.ndim != 4 or y.shape[1] != 3:
                    raise ModelNotConfiguredError(f"SR model {self.name} returned shape {tuple(y.shape)}")
                u8 = (y[0].clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            sh, sw = u8.shape[:2]
            if (sw, sh) == (width, height):
                out[i] = u8
            else:
                interp = cv2.INTER_AREA if sw * sh > width * height else cv2.INTER_LANCZOS4
                out[i] = cv2.resize(u8, (width, height), interpolation=interp)
        return out


def load_sr_model(path: str | Path | None = None) -> SRModel:
    """The model D2V_SR_MODEL (or `path`) names. Saved programs (.pt2, TorchScript) load with torch;
    anything else (a .pth / .safetensors state dict) with spandrel, which detects the
    architecture. Clear errors for a missing file, missing packages, unknown formats."""
    path = path or os.environ.get(MODEL_ENV)
    if not path:
        raise ModelNotConfiguredError(f"learned upscaling needs a model: set {MODEL_ENV} to a weights file")
    p = Path(path)
    if not p.is_file():
        raise ModelNotConfiguredError(f"{MODEL_ENV}={p}: no such file (a super-resolution weights file)")
    key = str(p.resolve())
    if key in _SR_CACHE:
        return _SR_CACHE[key]
    try:
        import torch
    except ImportError:
        raise ModelNotConfiguredError(f"{MODEL_ENV} is set but torch is not installed") from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _load_torchscript(p, device) or _load_spandrel(p, device)
    _SR_CACHE[key] = model
    return model


def _load_torchscript(p: Path, device) -> SRModel | None:
    """A saved torch SR program, its scale measured on a small probe; None if it is not one."""
    import torch

    import zipfile

    from d2v.interpolate import load_torch_program

    if not zipfile.is_zipfile(p):
        return None
    try:
        module = load_torch_program(p, device)
    except Exception:
        return None  # a zip but not a program (e.g. a torch.save'd state dict): spandrel's
    with torch.inference_mode():
        probe = module(torch.zeros(1, 3, 32, 32, device=device))
    scale = probe.shape[-1] // 32
    if probe.ndim != 4 or scale < 1 or tuple(probe.shape[-2:]) != (32 * scale, 32 * scale):
        raise ModelNotConfiguredError(f"{p.name}: output {tuple(probe.shape)} for a 32x32 input is not an SR scale")
    return SRModel(module, scale, p.name, device)


def _load_spandrel(p: Path, device) -> SRModel:
    try:
        import spandrel
    except Exception as e:  # not installed, or its torchvision does not load
        raise ModelNotConfiguredError(
            f"{MODEL_ENV}={p.name} is not a saved torch program (.pt2, TorchScript), and loading it as "
            f"weights needs spandrel (pip install spandrel): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    try:
        desc = spandrel.ModelLoader(device=device).load_from_file(str(p))
    except Exception as e:
        raise ModelNotConfiguredError(f"{MODEL_ENV}={p.name}: spandrel cannot load it ({e})") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise ModelNotConfiguredError(f"{MODEL_ENV}={p.name} is not a single-image model (spandrel: {type(desc).__name__})")
    desc.model.eval()
    return SRModel(desc, desc.scale, p.name, device)  # a descriptor is callable: (N, 3, h, w) -> (N, 3, sh, sw)
