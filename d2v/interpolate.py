"""The interpolate stage: keyframes at one rate -> frames at the output rate.

Timing contract (DESIGN.md): output frame i shows time i / fps_out from the first input
frame, up to the last input frame's time. Input frames that land exactly on an output
time pass through unchanged (bit for bit). In between, one of:

* "flow" (default): optical-flow interpolation, `d2v.flow` (DIS flow both ways,
  forward/backward consistency, forward projection to time t with occluders winning,
  bidirectional backward warps blended). Flows are computed once per keyframe pair and
  reused for every in-between time in it.
* "learned": a RIFE-class model from a weights file, when D2V_INTERP_MODEL names one:
  - a published RIFE v4.x `flownet.pkl` (Practical-RIFE; also `.pth`, `.pt`, or
    `.safetensors` when safetensors is installed): a state dict, read with
    `torch.load(weights_only=True)` and loaded strictly into d2v's own IFNet
    (`d2v.nets.rife`: the v4.6 layout and the v4.14+ layouts with a feature encoder);
  - or a saved program: torch.export (`.pt2`, exported with dynamic H and W) or
    TorchScript (`torch.jit.save`), whose `forward(img0, img1, t)` takes two
    (1, 3, H, W) float tensors in [0, 1] and a (1, 1, 1, 1) tensor t and returns the
    (1, 3, H, W) frame at t: the calling convention of RIFE's `inference(img0, img1,
    timestep)`, and of `d2v.nets.rife.RIFEInterpolator`.
  Runs on CUDA when present; the frame goes back to uint8 there. Nothing is downloaded:
  the file is the user's (the tests build seeded random weights in the published layout).
* "blend": plain linear blending (the baseline the benchmark compares against).
* exact camera in-betweens: frames that came from the camera backend can be rendered
  again at interpolated cameras (`render_camera_inbetweens`); `d2v.stages.retime`
  does that when the Clip carries its cameras.

`loop=True` treats the input as a cycle (the last frame is followed by the first), so
the output covers [0, n_in / fps_in) and its end blends into its start: played on
repeat there is no jump.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from d2v.errors import InvalidRequestError, ModelNotConfiguredError, one_line

METHOD = "flow"
METHODS = ("flow", "blend", "learned")
MODEL_ENV = "D2V_INTERP_MODEL"


def output_count(n_in: int, fps_in: float, fps_out: float, *, loop: bool = False) -> int:
    """How many output frames fit in the input's time span: [0, (n_in - 1) / fps_in], or
    [0, n_in / fps_in) for a loop (the wrap-around back to frame 0 is not repeated)."""
    if n_in < 1:
        return 0
    if loop:
        return max(1, math.ceil(n_in / fps_in * fps_out - 1e-6))
    span = (n_in - 1) / fps_in
    return math.floor(span * fps_out + 1e-6) + 1


def source_positions(n_out: int, fps_in: float, fps_out: float, n_in: int, *, loop: bool = False) -> np.ndarray:
    """Fractional input index for each output frame (in [0, n_in) for a loop)."""
    pos = np.arange(n_out, dtype=np.float64) * (fps_in / fps_out)
    return np.clip(pos, 0.0, n_in if loop else n_in - 1)


def positions_for(n_in: int, fps_in: float, fps_out: float, n_out: int | None, loop: bool) -> np.ndarray:
    """Where each output frame sits on the input's frame axis. With `n_out` the output
    spans the input exactly (first = first, last = last; a loop: n_out steps around)."""
    if n_out is None:
        return source_positions(output_count(n_in, fps_in, fps_out, loop=loop), fps_in, fps_out, n_in, loop=loop)
    if n_out < 1:
        raise InvalidRequestError(f"n_out must be at least 1, got {n_out}")
    if loop:
        return np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    return np.linspace(0.0, n_in - 1, n_out) if n_out > 1 else np.zeros(1)


def positions_on_clock(times: np.ndarray, fps_out: float, n_out: int | None, loop: bool) -> np.ndarray:
    """`positions_for` for frames at uneven `times` (seconds, increasing): output frame i
    at time i / fps_out (or n_out spread over the span), placed between the input frames
    either side of it in time. A loop's last frame lasts the mean frame time."""
    t = np.asarray(times, np.float64) - times[0]
    n = len(t)
    if n < 2:
        return positions_for(n, 1.0, fps_out, n_out, loop)
    period = t[-1] * n / (n - 1)
    if n_out is None:
        out_t = np.arange(output_count(n, (n - 1) / t[-1], fps_out, loop=loop)) / fps_out
    elif n_out < 1:
        raise InvalidRequestError(f"n_out must be at least 1, got {n_out}")
    else:
        out_t = np.arange(n_out) * (period / n_out) if loop else np.linspace(0.0, t[-1], n_out)
    # Position n (the loop's wrap back to frame 0) is at `period`.
    return np.interp(out_t, np.append(t, period), np.arange(n + 1.0))


def _split(p: float, n_in: int, loop: bool) -> tuple[int, int, float]:
    """Position -> (left keyframe, right keyframe, fraction); fraction 0 = a keyframe."""
    lo = math.floor(p + 1e-9)
    w = p - lo
    if w < 1e-6:
        return lo % n_in, lo % n_in, 0.0
    if w > 1.0 - 1e-6:
        return (lo + 1) % n_in, (lo + 1) % n_in, 0.0
    hi = lo + 1
    if hi >= n_in:
        if not loop:
            return n_in - 1, n_in - 1, 0.0
        hi = 0
    return lo, hi, w


def method_from_env() -> str:
    return "learned" if os.environ.get(MODEL_ENV) else METHOD


def method_for_frames(method: str, height: int, width: int) -> str:
    """The method that runs on frames of this size: flow needs `MIN_FLOW_SIDE` pixels each
    way (OpenCV's DIS refuses, or crashes on, less), and frames that small show no motion
    to follow, so they blend."""
    from d2v.flow import MIN_FLOW_SIDE

    return "blend" if method == "flow" and min(height, width) < MIN_FLOW_SIDE else method


def interpolate_frames(
    frames: np.ndarray,
    fps_in: float,
    fps_out: float,
    n_out: int | None = None,
    *,
    loop: bool = False,
    method: str | None = None,
    times: np.ndarray | None = None,
) -> np.ndarray:
    """(N, H, W, 3) uint8 at fps_in -> (M, H, W, 3) uint8 at fps_out.

    `n_out` overrides the count (e.g. a clip's exact frame count when keyframes span it),
    and then the output spans the input exactly: frame 0 = first, last = last input frame.
    `method`: "flow" | "blend" | "learned" (default: learned when D2V_INTERP_MODEL is
    set, else flow; frames under 16 px a side blend, `method_for_frames`). `times`: each input
    frame's time in seconds where they are not evenly spaced at fps_in (a variable-frame-rate
    video, `d2v.encode.decode_video_times`); output frame i still shows time i / fps_out."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise InvalidRequestError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if not (fps_in > 0 and fps_out > 0 and math.isfinite(fps_in) and math.isfinite(fps_out)):
        raise InvalidRequestError(f"frame rates must be positive, got {fps_in} -> {fps_out}")
    method = method or method_from_env()
    if method not in METHODS:
        raise InvalidRequestError(f"unknown interpolation method {method!r}; choose one of: {', '.join(METHODS)}")
    n_in = len(frames)
    if n_in == 0:
        raise InvalidRequestError("no frames to interpolate")
    if times is not None and (len(times) != n_in or not np.all(np.diff(times) > 0)):
        raise InvalidRequestError(f"times must increase, one per frame ({n_in}), got {len(times)}")
    pos = positions_for(n_in, fps_in, fps_out, n_out, loop) if times is None else positions_on_clock(
        times, fps_out, n_out, loop)
    pair_fn = _pair_maker(method_for_frames(method, *frames.shape[1:3]))

    out = np.empty((len(pos),) + frames.shape[1:], dtype=np.uint8)
    splits = [_split(float(p), n_in, loop) for p in pos]
    # Positions increase, so each pair is needed once, in this order.
    pairs = list(dict.fromkeys((lo, hi) for lo, hi, w in splits if w))
    # The next pair's set-up (two flows) runs in a worker thread while this pair's
    # frames are warped: OpenCV releases the GIL, and the warps leave a core idle.
    # Only the worker builds pairs, so its flow estimator is never shared.
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = {}

        def prefetch(k: int) -> None:
            if k < len(pairs) and k not in futures:
                lo, hi = pairs[k]
                futures[k] = pool.submit(pair_fn, frames[lo], frames[hi])

        k, pair = -1, None
        for i, (lo, hi, w) in enumerate(splits):
            if w == 0.0:
                out[i] = frames[lo]  # keyframes pass through unchanged
                continue
            if k < 0 or pairs[k] != (lo, hi):
                k += 1
                prefetch(k)
                pair = futures.pop(k).result()
                prefetch(k + 1)
            out[i] = pair(w)
    return out


def _pair_maker(method: str):
    """method -> make(f0, f1) -> at(t) -> frame."""
    if method == "blend":
        def make(f0, f1):
            a, b = f0.astype(np.float32), f1.astype(np.float32)
            return lambda t: np.clip(a * (1.0 - t) + b * t + 0.5, 0, 255).astype(np.uint8)
        return make
    if method == "flow":
        from d2v.flow import PairInterpolator, make_dis

        dis = make_dis()
        return lambda f0, f1: PairInterpolator(f0, f1, dis).at
    model = load_interp_model()
    return lambda f0, f1: (lambda t: model(f0, f1, t))


# -- the learned interpolator -------------------------------------------------------------

_MODEL_CACHE: dict[str, LearnedInterpolator] = {}


class LearnedInterpolator:
    """A frame interpolator from a weights file (see the module docstring for the formats).
    Frames go to the device once per call and come back as uint8 (converted there)."""

    def __init__(self, path: str | Path, device: str | None = None):
        import torch

        self.path = Path(path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module, self.kind = load_interp_module(self.path, self.device)
        self.name = self.path.name

    def _tensor(self, frame: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None].float() / 255.0

    def __call__(self, f0: np.ndarray, f1: np.ndarray, t: float) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(self._tensor(f0), self._tensor(f1),
                              torch.full((1, 1, 1, 1), float(t), device=self.device))
            if tuple(out.shape) != (1, 3) + f0.shape[:2]:
                raise ModelNotConfiguredError(
                    f"interpolation model {self.name} returned shape {tuple(out.shape)}, expected "
                    f"(1, 3, {f0.shape[0]}, {f0.shape[1]})")
            # uint8 on the device: only a quarter of the bytes cross back.
            u8 = (out[0].clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0)
        return u8.cpu().numpy()


def load_interp_module(path: Path, device):
    """path -> (module called as module(img0, img1, t), a word on what it is). A saved
    program loads as one; anything else is read as a state dict and must be a RIFE
    IFNet's. ModelNotConfiguredError, in one line naming D2V_INTERP_MODEL, otherwise."""
    from d2v.nets import program_kind, read_state_dict
    from d2v.nets.rife import load_rife

    if kind := program_kind(path):
        try:
            return load_torch_program(path, device), kind
        except Exception as e:  # noqa: BLE001 -- a corrupt or foreign file: say which and why, in one line
            raise ModelNotConfiguredError(
                f"{MODEL_ENV}={path} is not a TorchScript or torch.export interpolation model ({one_line(e)})"
            ) from None
    try:
        state = read_state_dict(path, device)
    except Exception as e:  # noqa: BLE001 -- whatever torch.load or safetensors raise
        raise ModelNotConfiguredError(
            f"{MODEL_ENV}={path} is not a TorchScript or torch.export interpolation model, nor a readable "
            f"RIFE weights file ({one_line(e)})"
        ) from None
    try:
        model = load_rife(state)
    except (ValueError, TypeError) as e:
        raise ModelNotConfiguredError(
            f"{MODEL_ENV}={path} holds weights, but not those of a RIFE v4.x IFNet "
            f"(4.6 or 4.14+): {' '.join(str(e).split())}"
        ) from None
    return model.to(device), model.description


def load_torch_program(path: str | Path, device):
    """A saved torch program: torch.export (`.pt2`) or TorchScript (anything else).
    Both run without the Python class that defined the model, which is what lets a
    weights file stand alone here."""
    import torch

    path = Path(path)
    if path.suffix == ".pt2":
        module = torch.export.load(str(path)).module()
        return module.to(device)
    return torch.jit.load(str(path), map_location=device).eval()


def load_interp_model(path: str | Path | None = None) -> LearnedInterpolator:
    """The model D2V_INTERP_MODEL names (or `path`); a clear error when none is set or the
    file is missing."""
    path = path or os.environ.get(MODEL_ENV)
    if not path:
        raise ModelNotConfiguredError(
            f"learned interpolation needs a model: set {MODEL_ENV} to a RIFE flownet.pkl, a .pt2 or a "
            f"TorchScript file (see d2v.interpolate)")
    p = Path(path)
    if not p.is_file():
        raise ModelNotConfiguredError(
            f"{MODEL_ENV}={p}: no such file (a RIFE flownet.pkl, .pt2 or TorchScript interpolation model)")
    key = str(p.resolve())
    if key not in _MODEL_CACHE:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ModelNotConfiguredError(
                f"{MODEL_ENV} is set but torch is not installed (pip install torch)") from None
        _MODEL_CACHE[key] = LearnedInterpolator(p)
    return _MODEL_CACHE[key]


# -- exact in-betweens from the camera ----------------------------------------------------

def camera_inbetweens(cameras: list, positions: np.ndarray, *, loop: bool = False) -> list:
    """The camera at each fractional keyframe position (`camera.interpolate_camera`
    between the neighbouring keyframe cameras; keyframe cameras themselves unchanged)."""
    from d2v.camera import interpolate_camera

    n = len(cameras)
    out = []
    for p in positions:
        lo, hi, w = _split(float(p), n, loop)
        out.append(cameras[lo] if w == 0.0 else interpolate_camera(cameras[lo], cameras[hi], w))
    return out


def render_camera_inbetweens(renderer, trajectory, positions: np.ndarray, *, loop: bool = False) -> np.ndarray:
    """Frames at fractional positions of `trajectory` (the keyframes' cameras), rendered
    by `renderer` (a `d2v.render.CameraRenderer` of the same image): exact, not guessed.
    The first position should be 0 so a depth warp keeps the trajectory's reference camera."""
    cams = camera_inbetweens(trajectory.frames, positions, loop=loop)
    cams = [c.model_copy(update={"index": i}) for i, c in enumerate(cams)]
    sub = trajectory.model_copy(update={"frames": cams})
    out = np.empty((len(cams), trajectory.height, trajectory.width, 3), np.uint8)
    for i, frame in enumerate(renderer.render(sub)):
        out[i] = frame
    return out


def interpolate_camera_frames(
    renderer, trajectory, fps_in: float, fps_out: float, n_out: int | None = None, *, loop: bool = False
) -> np.ndarray:
    """Like `interpolate_frames` for keyframes the camera backend rendered from
    `trajectory`: same positions and count, every frame rendered at its exact camera."""
    pos = positions_for(len(trajectory.frames), fps_in, fps_out, n_out, loop)
    return render_camera_inbetweens(renderer, trajectory, pos, loop=loop)
