"""The upscale stage: frames -> exactly the output size.

When the aspect ratio changes, the largest centred crop with the target's aspect is
taken first ("cover"), so nothing is stretched; the crop is then resized to exactly
(width, height), whatever the ratio of the two sides.

* Learned super-resolution when D2V_SR_MODEL names a weights file:
  - a saved torch program: torch.export `.pt2` (dynamic H and W) or TorchScript
    (input (1, 3, h, w) in [0, 1], output (1, 3, s h, s w); s is measured on a probe);
  - or a state dict (.pth / .pt / .safetensors): loaded with `spandrel` (Real-ESRGAN,
    SwinIR, ...) when it is installed and imports, else with d2v's own architectures
    (`d2v.nets.esrgan`: Real-ESRGAN's published RRDBNet files RealESRGAN_x4plus,
    _x2plus, _x4plus_anime_6B, and SRVGGNetCompact files realesr-general-x4v3,
    realesr-animevideov3), read with `torch.load(weights_only=True)`.
  The model's fixed scale is followed by an exact resize to the target. Runs on CUDA
  when present; uint8 conversion happens on the device.
* Otherwise classical: area averaging when shrinking (no aliasing), Lanczos (8x8 taps)
  when enlarging, then an optional mild unsharp mask (`sharpen`, 0 = off up to
  `MAX_SHARPEN`, default `DEFAULT_SHARPEN`; measured on real footage in
  bench/interp_bench.py: a 2x enlargement gains PSNR over plain bicubic). With CUDA, the same is done in torch
  (antialiased bicubic) on the GPU.
"""

from __future__ import annotations

import numbers
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from d2v.camera import cover_crop
from d2v.errors import InvalidRequestError, ModelNotConfiguredError, one_line

MODEL_ENV = "D2V_SR_MODEL"
DEFAULT_SHARPEN = 0.3  # unsharp-mask amount after enlarging (0 = off)
MAX_SHARPEN = 3.0  # past this the mask only rings and clips: edges go to black and white
SHARPEN_SIGMA = 1.0  # its Gaussian, in output pixels
MAX_SIDE = 8192


def check_size(width: int, height: int) -> None:
    if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))):
        raise InvalidRequestError(f"size must be whole pixels, got {width}x{height}")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise InvalidRequestError(f"size {width}x{height} is out of range (1..{MAX_SIDE} per side)")


def check_sharpen(amount: float | None) -> float:
    """The unsharp amount to use: the default for None, else `amount` once checked (a NaN
    would turn every frame white, a huge one binarise it, a negative one do nothing)."""
    if amount is None:
        return DEFAULT_SHARPEN
    if not (isinstance(amount, numbers.Real) and 0.0 <= amount <= MAX_SHARPEN):
        raise InvalidRequestError(f"sharpen must be a number in 0..{MAX_SHARPEN:g} (0 = off), got {amount}")
    return float(amount)


def method_for(src_w: int, src_h: int, width: int, height: int) -> str:
    if (src_w, src_h) == (width, height):
        return "none"
    if os.environ.get(MODEL_ENV) and width * height > src_w * src_h:
        return f"sr: {Path(os.environ[MODEL_ENV]).name}"
    return "area" if width * height < src_w * src_h else "lanczos"


def crop_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer (x0, y0, cw, ch) of the cover crop of a w x h frame for width x height."""
    u0, v0, cw, ch = cover_crop(w, h, width, height)
    # int(round()): round() of a numpy float is a numpy float on numpy < 2
    cw_i, ch_i = max(1, min(w, int(round(cw)))), max(1, min(h, int(round(ch))))  # noqa: RUF046
    x0, y0 = min(int(round(u0)), w - cw_i), min(int(round(v0)), h - ch_i)  # noqa: RUF046
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
        out = sharpen(out, check_sharpen(sharpen_amount))
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
        amount = check_sharpen(sharpen_amount)
        if enlarge and amount > 0:
            x = x + amount * (x - _gaussian_blur(x, SHARPEN_SIGMA))
    return (x.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)


def _gaussian_blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    r = max(1, int(round(3 * sigma)))  # noqa: RUF046
    k = torch.exp(-(torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def nvidia_driver_present() -> bool:
    """Whether this Linux machine has an NVIDIA driver loaded (its /proc entry or a device node)."""
    return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def _cuda_available() -> bool:
    """Whether torch sees a CUDA device. Asked of torch only where one could be: torch already
    loaded, or (Linux) an NVIDIA driver present; importing torch just to hear "no" costs a CPU
    machine's `d2v upscale` a second (about a quarter of its run)."""
    torch = sys.modules.get("torch")
    if torch is None:
        if sys.platform.startswith("linux") and not nvidia_driver_present():
            return False
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
    check_sharpen(sharpen_amount)
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

_SR_CACHE: dict[str, SRModel] = {}


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
    """The model D2V_SR_MODEL (or `path`) names. Saved programs (.pt2, TorchScript) load
    with torch; a state dict (.pth / .safetensors) with spandrel when it imports, else
    with `d2v.nets.esrgan`. Clear errors for a missing file, missing packages, unknown
    formats."""
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
    from d2v.nets import program_kind

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if program_kind(p):
        model = _load_program(p, device)
    else:
        model = _load_weights(p, device)
    _SR_CACHE[key] = model
    return model


def _load_program(p: Path, device) -> SRModel:
    """A saved torch SR program, its scale measured on a small probe."""
    import torch

    from d2v.interpolate import load_torch_program

    try:
        module = load_torch_program(p, device)
    except Exception as e:  # noqa: BLE001 -- one line, whatever torch raises
        raise ModelNotConfiguredError(
            f"{MODEL_ENV}={p.name} is not a loadable torch.export or TorchScript program ({one_line(e)})"
        ) from None
    try:
        with torch.inference_mode():
            probe = module(torch.zeros(1, 3, 32, 32, device=device))
    except Exception as e:  # noqa: BLE001 -- e.g. a program with another signature
        raise ModelNotConfiguredError(
            f"{MODEL_ENV}={p.name} does not run as an SR model on a (1, 3, 32, 32) image ({one_line(e)})"
        ) from None
    scale = probe.shape[-1] // 32
    if probe.ndim != 4 or scale < 1 or tuple(probe.shape[-2:]) != (32 * scale, 32 * scale):
        raise ModelNotConfiguredError(f"{p.name}: output {tuple(probe.shape)} for a 32x32 input is not an SR scale")
    return SRModel(module, scale, p.name, device)


def _load_weights(p: Path, device) -> SRModel:
    """A state dict: spandrel first (it knows many architectures) when it imports, then
    d2v's Real-ESRGAN architectures. The error names what each said."""
    tried = []
    try:
        import spandrel
    except Exception as e:  # noqa: BLE001 -- not installed, or its torchvision does not load beside this torch
        tried.append(f"spandrel does not import ({one_line(e)})")
    else:
        try:
            desc = spandrel.ModelLoader(device=device).load_from_file(str(p))
            if not isinstance(desc, spandrel.ImageModelDescriptor):
                raise TypeError(f"not a single-image model ({type(desc).__name__})")
            desc.model.eval()
            return SRModel(desc, desc.scale, p.name, device)  # a descriptor is callable: (N, 3, h, w) -> (N, 3, sh, sw)
        except Exception as e:  # noqa: BLE001 -- any failure: fall back to d2v's own architectures
            tried.append(f"spandrel cannot load it ({one_line(e)})")

    from d2v.nets import read_state_dict
    from d2v.nets.esrgan import load_esrgan

    try:
        state = read_state_dict(p, device)
    except Exception as e:  # noqa: BLE001 -- whatever torch.load or safetensors raise
        tried.append(f"it is not a readable weights file ({one_line(e)})")
    else:
        try:
            module, scale = load_esrgan(state)
            return SRModel(module.to(device), scale, p.name, device)
        except (ValueError, TypeError) as e:
            tried.append(f"d2v.nets.esrgan: {' '.join(str(e).split())}")
    raise ModelNotConfiguredError(
        f"{MODEL_ENV}={p.name} is not a saved torch program (.pt2, TorchScript) and no loader takes its "
        f"weights: {'; '.join(tried)}")
