"""GPU benchmark of the svd backend (issue 4): seconds per clip and achieved TFLOP/s.

The full-size SVD-XT architecture with random weights (the compute does not depend on
the weight values; the configs below are SVD-XT's published ones, so nothing is
downloaded) at 1024x576, 25 frames, 25 steps with classifier-free guidance, timed in
one run, each the median of --repeats after a warm-up:

    (a) diffusers       StableVideoDiffusionPipeline with its defaults: fp16, its default
                        (SDPA) attention, all 25 frames decoded at once
    (b) d2v g=1         d2v's path (SVDModel.from_pipeline: what load_svd applies) at
                        guidance_strength 1: plain SVD, the same work as (a)
    (b) d2v g=0.6       d2v's path at a typical strength: trajectory, camera render of the
                        keyframes, VAE-encode, the partial schedule (15 of 25 steps),
                        decode in chunks of 8
    (c) d2v+compile     (b) at g=0.6 with torch.compile of the UNet (compile time reported
                        apart); skipped with --no-compile or when the time budget is short
    (d) channels_last   (b) with the UNet and VAE weights channels-last
    (e) max-autotune    (d) compiled in max-autotune mode (CUDA graphs), VAE decoder too
    (f) bf16            (d) in bfloat16 instead of float16 (CUDA only)
    encode              96 output frames through libx264 and, where it opens, h264_nvenc

plus the two big kernels alone: one guided UNet step and the temporal VAE decode.
FLOPs are counted, not guessed: torch.utils.flop_counter on meta-device copies of the
same models (no compute), about 160 TFLOP per guided step and 174 TFLOP per decode at
full size; TFLOP/s = the clip's counted FLOPs / its seconds (CLIP's ~0.3 TFLOP left out).

    python bench/svd_gpu.py                    # one CUDA GPU; about 5 minutes on an H100
    python bench/svd_gpu.py --tiny --steps 1   # the same code, tiny model, CPU (tests run this)

Prints a table (markdown) to stdout, progress to stderr; --json PATH saves the numbers.
The script keeps within --budget-s (default 540 s) of its own time: a variant that would
not fit is reported as skipped, never left half-run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from d2v.images import load_image  # noqa: E402
from d2v.models import parse_request  # noqa: E402
from d2v.render import CameraRenderer  # noqa: E402
from d2v.svd import SVDModel, cover_frame, keyframe_indices, model_size  # noqa: E402
from d2v.tiny_svd import CLIP_IMAGE_PROCESSOR_CONFIG, SVD_SCHEDULER_CONFIG, build_tiny_svd  # noqa: E402
from d2v.trajectory import plan_trajectory  # noqa: E402

# stabilityai/stable-video-diffusion-img2vid-xt, {unet,vae,image_encoder}/config.json.
SVD_XT_UNET_CONFIG = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    "up_block_types": ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": (5, 10, 20, 20),
    "num_frames": 25,
}
SVD_XT_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
SVD_XT_CLIP_VISION_CONFIG = {  # OpenCLIP ViT-H/14 vision tower
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "projection_dim": 1024,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
PUBLISHED_TFLOP = {"unet_step": 160.0, "decode": 174.0}  # DESIGN.md, for SVD-XT at 576x1024x25

PATH = {"canvas": {"width": 1024, "height": 576},
        "points": [{"x": 300, "y": 380}, {"x": 450, "y": 330}, {"x": 620, "y": 250}]}  # fmt: skip


def log(msg: str) -> None:
    print(f"[svd_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_svd_xt(device: str, dtype: torch.dtype):
    """The SVD-XT pipeline from configs, random weights, built directly on `device`
    (initialising 2.2 B parameters on a CPU would take minutes)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**SVD_XT_UNET_CONFIG).to(dtype)
        vae = AutoencoderKLTemporalDecoder(**SVD_XT_VAE_CONFIG).to(dtype)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_XT_CLIP_VISION_CONFIG)).to(dtype)
    pipe = StableVideoDiffusionPipeline(
        vae=vae.eval(), image_encoder=image_encoder.eval(), unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
        feature_extractor=CLIPImageProcessor(**CLIP_IMAGE_PROCESSOR_CONFIG),
    )  # fmt: skip
    return pipe.to(device)  # buffers made by torch.Tensor([...]) ignore the device context


def count_flops(pipe, frames: int, h: int, w: int) -> dict[str, float]:
    """FLOPs of one guided UNet step, one temporal decode of all frames and one VAE encode
    of one frame, counted on meta-device copies of the models (shapes only, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    lat = pipe.vae.config.latent_channels
    with torch.device("meta"):
        unet = type(pipe.unet).from_config(pipe.unet.config).to("meta").half()
        vae = type(pipe.vae).from_config(pipe.vae.config).to("meta").half()
        emb_dim = pipe.unet.config.cross_attention_dim
        out = {}
        with FlopCounterMode(display=False) as fc:
            unet(torch.randn(2, frames, 2 * lat, h // f, w // f, dtype=torch.float16), torch.tensor(1.0),
                 encoder_hidden_states=torch.randn(2, 1, emb_dim, dtype=torch.float16),
                 added_time_ids=torch.randn(2, 3, dtype=torch.float16))
        out["unet_step"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            vae.decode(torch.randn(frames, lat, h // f, w // f, dtype=torch.float16), num_frames=frames)
        out["decode"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            vae.encode(torch.randn(1, 3, h, w, dtype=torch.float16))
        out["encode_frame"] = fc.get_total_flops()
    return out


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def timed_runs(fn, repeats: int, device: str, budget: Budget, label: str) -> tuple[list[float], float]:
    """fn() `repeats` times; seconds per run and the peak device memory (GiB)."""
    seconds = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for i in range(repeats):
        if seconds and budget.left() < 1.2 * max(seconds):
            log(f"{label}: stopping after {i} runs (time budget)")
            break
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - t0)
        log(f"{label}: run {i + 1}/{repeats} {seconds[-1]:.2f} s")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return seconds, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model on the CPU (a smoke test)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--strength", type=float, default=0.5, help="d2v's guidance_strength for (b) to (f)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 2; 1 with --tiny)")
    ap.add_argument("--decode-chunk", type=int, default=8, help="d2v's decode_chunk_size")
    ap.add_argument("--compile", dest="compile", action="store_true", default=None,
                    help="run (c) with torch.compile (default: on CUDA, unless --tiny)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop starting new work after this")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.tiny else 2
    budget = Budget(args.budget_s)
    t_start = time.perf_counter()

    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("svd_gpu: no CUDA GPU here; run with --tiny for the CPU smoke test", file=sys.stderr)
        return 2
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    do_compile = args.compile if args.compile is not None else (device.startswith("cuda") and not args.tiny)

    # 1. The model: SVD-XT from its configs, or the tiny one.
    log(f"building {'tiny SVD' if args.tiny else 'SVD-XT (random weights)'} on {device}")
    if args.tiny:
        pipe = build_tiny_svd().to(device)
        for component in (pipe.unet, pipe.vae, pipe.image_encoder):
            if component.dtype != dtype:  # (--tiny --device cuda)
                component.to(dtype=dtype)
        name = "tiny SVD (random weights)"
    else:
        pipe = build_svd_xt(device, dtype)
        name = "SVD-XT architecture (random weights)"
    pipe.set_progress_bar_config(disable=True)
    frames = int(pipe.unet.config.num_frames)

    # 2. The request, the photo, the size the model renders at.
    request = parse_request({"path": PATH, "effect": "zoom_in", "duration_s": 4, "fps": 24, "width": 1024,
                             "height": 576, "backend": "svd", "guidance_strength": args.strength,
                             "num_inference_steps": args.steps, "seed": 0})  # fmt: skip
    photo = load_image(REPO / "examples/hubble.jpg").rgb
    # SVDModel's constructor changes nothing (from_pipeline applies d2v's settings): here
    # it only answers model_size before (a) runs on the untouched pipeline.
    geometry = SVDModel(pipe, name=name, device=device, dtype=dtype, unet=pipe.unet,
                        decode_chunk_size=args.decode_chunk, compiled=False)  # fmt: skip
    w, h = model_size(request, geometry)
    flops = count_flops(pipe, frames, h, w)
    log(f"{w}x{h}, {frames} frames; counted TFLOP: guided step {_tf(flops['unet_step'])}, "
        f"decode {_tf(flops['decode'])}, encode/frame {_tf(flops['encode_frame'])}")

    from PIL import Image

    cond_image = Image.fromarray(cover_frame(photo, w, h))  # the pipeline gets d2v's conditioning frame
    rows: list[dict] = []

    def add_row(variant, steps_run, seconds, peak, flop, note=""):
        row = {"variant": variant, "denoise_steps": steps_run, "seconds": seconds, "peak_gib": peak,
               "tflop": flop / 1e12, "note": note}  # fmt: skip
        if seconds:
            med = statistics.median(seconds)
            row.update(median_s=med, min_s=min(seconds), tflops=flop / 1e12 / med)
        rows.append(row)

    def run_variant(variant, steps_run, flop, warmup, fn, est_s):
        if budget.left() < est_s:
            log(f"{variant}: skipped (needs about {est_s:.0f} s, {budget.left():.0f} s left)")
            add_row(variant, steps_run, [], None, flop, "skipped: time budget")
            return
        try:
            t0 = time.perf_counter()
            warmup()
            sync(device)
            warm = time.perf_counter() - t0
            log(f"{variant}: warm-up {warm:.1f} s")
            seconds, peak = timed_runs(fn, args.repeats, device, budget, variant)
            add_row(variant, steps_run, seconds, peak, flop, f"warm-up {warm:.1f} s")
        except torch.cuda.OutOfMemoryError as e:
            log(f"{variant}: out of memory: {str(e).splitlines()[0]}")
            add_row(variant, steps_run, [], None, flop, "out of memory")
            torch.cuda.empty_cache()
        except Exception as e:  # e.g. torch.compile failing on this machine: report, go on
            log(f"{variant}: failed: {type(e).__name__}: {e}")
            add_row(variant, steps_run, [], None, flop, f"failed: {type(e).__name__}")

    def clip_flops(steps_run, encoded_frames):
        return steps_run * flops["unet_step"] + flops["decode"] + encoded_frames * flops["encode_frame"]

    # 3. (a) the diffusers pipeline with its defaults. Runs before d2v's settings touch the
    #    shared modules (d2v keeps the VAE encoder in fp32).
    def plain(steps):
        return pipe(cond_image, height=h, width=w, num_frames=frames, num_inference_steps=steps,
                    generator=torch.Generator(device).manual_seed(0), output_type="np").frames  # fmt: skip

    run_variant("(a) diffusers pipeline, defaults", args.steps, clip_flops(args.steps, 1),
                lambda: plain(min(2, args.steps)), lambda: plain(args.steps), est_s=0)  # fmt: skip
    per_step = _per_step_estimate(rows[-1], args.steps)

    # 4. (b) d2v's path: the settings load_svd applies, then what the svd backend does per
    #    clip: plan the trajectory, render the keyframes with the camera backend, generate.
    model = SVDModel.from_pipeline(pipe, name=name, device=device, dtype=dtype,
                                   decode_chunk_size=args.decode_chunk)  # fmt: skip
    renderer = CameraRenderer(photo)
    render_s: list[float] = []

    def d2v_clip(m: SVDModel, strength: float, steps: int):
        req = request.model_copy(update={"guidance_strength": strength, "num_inference_steps": steps})
        t0 = time.perf_counter()
        traj = plan_trajectory(req.model_copy(update={"width": w, "height": h}), photo.shape[1], photo.shape[0])
        keys = keyframe_indices(len(traj), frames)
        guides = np.stack([renderer.render_frame(traj.frames[i], w, h) for i in keys])
        render_s.append(time.perf_counter() - t0)
        return m.generate(photo, guides, req, traj)

    def denoise_steps(strength: float, steps: int) -> int:  # the schedule from sigma(g) down (d2v.svd)
        req = request.model_copy(update={"guidance_strength": strength, "num_inference_steps": steps})
        return model.settings_for(req, plan_trajectory(req.model_copy(update={"width": w, "height": h}),
                                                       photo.shape[1], photo.shape[0]))["denoise_steps"]

    for strength in (1.0, args.strength):
        run_steps = denoise_steps(strength, args.steps)
        encoded = 1 + (frames if 0 < run_steps < args.steps else 0)
        run_variant(f"(b) d2v, guidance_strength {strength:g}", run_steps, clip_flops(run_steps, encoded),
                    lambda s=strength: d2v_clip(model, s, min(5, args.steps)),  # g 0.6: 3 of 5 steps
                    lambda s=strength: d2v_clip(model, s, args.steps),
                    est_s=(args.repeats + 1) * (per_step * run_steps + 5))  # fmt: skip

    # 5. (c) the same with the UNet compiled (compile time is the warm-up).
    run_steps = denoise_steps(args.strength, args.steps)
    if do_compile:
        compiled = SVDModel.from_pipeline(pipe, name=name, device=device, dtype=dtype, compile_unet=True,
                                          decode_chunk_size=args.decode_chunk)  # fmt: skip
        run_variant(f"(c) d2v + torch.compile, strength {args.strength:g}", run_steps,
                    clip_flops(run_steps, 1 + frames),
                    lambda: d2v_clip(compiled, args.strength, args.steps),
                    lambda: d2v_clip(compiled, args.strength, args.steps),
                    est_s=240 + args.repeats * (per_step * run_steps + 5))  # fmt: skip

    # 6. GPU tunings, each a row at the same strength (they build on each other, in this order:
    #    each changes the shared modules in place): channels-last weights; torch.compile in
    #    max-autotune mode (CUDA graphs: static shapes) with the VAE decoder compiled too; bf16.
    cuda = device.startswith("cuda")
    tuned = SVDModel.from_pipeline(pipe, name=name, device=device, dtype=dtype, channels_last=True,
                                   decode_chunk_size=args.decode_chunk)  # fmt: skip
    run_variant(f"(d) d2v + channels_last, strength {args.strength:g}", run_steps, clip_flops(run_steps, 1 + frames),
                lambda: d2v_clip(tuned, args.strength, min(2, args.steps)),
                lambda: d2v_clip(tuned, args.strength, args.steps),
                est_s=(args.repeats + 1) * (per_step * run_steps + 5))  # fmt: skip
    if do_compile:
        autotuned = SVDModel.from_pipeline(pipe, name=name, device=device, dtype=dtype, compile_unet=True,
                                           compile_mode="max-autotune", compile_vae=True, channels_last=True,
                                           decode_chunk_size=args.decode_chunk)  # fmt: skip
        run_variant("(e) + compile max-autotune (CUDA graphs) + VAE", run_steps, clip_flops(run_steps, 1 + frames),
                    lambda: d2v_clip(autotuned, args.strength, args.steps),
                    lambda: d2v_clip(autotuned, args.strength, args.steps),
                    est_s=300 + args.repeats * (per_step * run_steps + 5))  # fmt: skip
    else:
        add_row("(e) + compile max-autotune (CUDA graphs) + VAE", run_steps, [], None,
                clip_flops(run_steps, 1 + frames), "skipped: no compile (--no-compile, --tiny or no CUDA)")
    if cuda and dtype != torch.bfloat16:
        pipe.to(dtype=torch.bfloat16)
        bf16 = SVDModel.from_pipeline(pipe, name=name, device=device, dtype=torch.bfloat16, channels_last=True,
                                      decode_chunk_size=args.decode_chunk)  # fmt: skip
        run_variant("(f) d2v + channels_last in bf16 (vs fp16 in (d))", run_steps, clip_flops(run_steps, 1 + frames),
                    lambda: d2v_clip(bf16, args.strength, min(2, args.steps)),
                    lambda: d2v_clip(bf16, args.strength, args.steps),
                    est_s=(args.repeats + 1) * (per_step * run_steps + 5))  # fmt: skip
    else:
        add_row("(f) d2v + channels_last in bf16", run_steps, [], None, clip_flops(run_steps, 1 + frames),
                "skipped: CUDA only (the CPU runs fp32)")

    # 7. Encoding the clip: libx264 on the CPU against NVENC on the GPU (PyAV), when present.
    encode_rows = bench_encode(frames, h, w)

    # 8. The two big kernels alone.
    kernel_rows = bench_kernels(model, frames, h, w, flops, device, budget)

    print_table(name, device, dtype, w, h, frames, args, flops, rows, kernel_rows, render_s,
                time.perf_counter() - t_start)  # fmt: skip
    print()
    print(f"| {'encode (H.264, 1024x576 frames)':<44} | {'frames':>6} | {'seconds':>8} | {'fps':>8} | note")
    print(f"|{'-' * 46}|{'-' * 8}|{'-' * 10}|{'-' * 10}|------")
    for e in encode_rows:
        print(f"| {e['encoder']:<44} | {e['frames']:>6} | {_fmt(e.get('seconds'), '8.3f')} | "
              f"{_fmt(e.get('fps'), '8.1f')} | {e.get('note', '')}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": name, "device": _device_name(device), "dtype": str(dtype), "width": w, "height": h,
            "frames": frames, "steps": args.steps, "strength": args.strength, "flops": flops,
            "variants": rows, "kernels": kernel_rows, "render_s": render_s,
        }, indent=2, default=str))  # fmt: skip
    return 0


def bench_encode(frames: int, h: int, w: int) -> list[dict]:
    """The encode stage's share: 96 output frames (4 s at 24 fps, the output size) through
    libx264 (veryfast, the default) and through h264_nvenc where it opens."""
    import tempfile

    from d2v.encode import encode_mp4, nvenc_available

    rng = np.random.default_rng(0)
    base = (rng.random((576 // 8, 1024 // 8, 3)) * 255).astype(np.uint8)
    clip = [np.roll(np.kron(base, np.ones((8, 8, 1), np.uint8)), 4 * i, axis=1) for i in range(96)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for codec, label in (("libx264", "libx264 veryfast (CPU)"), ("h264_nvenc", "h264_nvenc p3 (GPU)")):
            if codec == "h264_nvenc" and not nvenc_available():
                rows.append({"encoder": label, "frames": len(clip), "note": "skipped: no NVENC here"})
                continue
            encode_mp4(iter(clip[:8]), Path(tmp) / "warm.mp4", 24, codec=codec)
            t0 = time.perf_counter()
            encode_mp4(iter(clip), Path(tmp) / f"{codec}.mp4", 24, codec=codec)
            sec = time.perf_counter() - t0
            rows.append({"encoder": label, "frames": len(clip), "seconds": sec, "fps": len(clip) / sec})
    return rows


def _per_step_estimate(row: dict, steps: int) -> float:
    """Seconds per step from run (a), to decide what still fits the budget."""
    return row["median_s"] / max(steps, 1) if row.get("median_s") else 1.0


def bench_kernels(model: SVDModel, frames, h, w, flops, device, budget) -> list[dict]:
    """One guided UNet step (batch 2 x frames) and the temporal decode, chunked and whole."""
    f = model.vae_scale_factor
    lat = model.latent_channels
    out = []
    if budget.left() < 30:
        return out
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(2, frames, 2 * lat, h // f, w // f, generator=g, device=device).to(model.dtype)
    emb = torch.randn(2, 1, model.pipe.unet.config.cross_attention_dim, generator=g, device=device).to(model.dtype)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * 2, device=device, dtype=model.dtype)
    t = torch.tensor(0.25 * np.log(10.0), device=device, dtype=torch.float32)  # sigma 10
    z = torch.randn(1, frames, lat, h // f, w // f, generator=g, device=device).to(model.dtype)

    def unet_step():
        model.pipe.unet(x, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)

    def decode(chunk):
        def run():
            model.pipe.decode_latents(z, frames, chunk)

        return run

    for label, fn, flop in (
        (f"guided UNet step (2 x {frames} frames)", unet_step, flops["unet_step"]),
        (f"temporal VAE decode, chunks of {model.decode_chunk_size}", decode(model.decode_chunk_size), flops["decode"]),
        (f"temporal VAE decode, all {frames} at once", decode(frames), flops["decode"]),
    ):
        try:
            with torch.inference_mode():
                fn()  # warm-up
                seconds, peak = timed_runs(fn, 3, device, budget, label)
            med = statistics.median(seconds)
            out.append({"kernel": label, "median_s": med, "tflops": flop / 1e12 / med, "peak_gib": peak,
                        "tflop": flop / 1e12})  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            out.append({"kernel": label, "note": "out of memory", "tflop": flop / 1e12})
            torch.cuda.empty_cache()
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _tf(flop: float) -> str:
    """TFLOP with three significant digits (the tiny model's are tiny)."""
    return f"{flop / 1e12:.3g}"


def _fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def print_table(name, device, dtype, w, h, frames, args, flops, rows, kernel_rows, render_s, total_s):
    print(f"svd benchmark: {name}, {w}x{h}, {frames} frames, {args.steps} steps, CFG 1->3, "
          f"{str(dtype).removeprefix('torch.')} on {_device_name(device)}")
    print(f"torch {torch.__version__}, diffusers {__import__('diffusers').__version__}; median of "
          f"{args.repeats} after a warm-up; whole run {total_s:.0f} s")
    pub = "" if args.tiny else (f" (published: ~{PUBLISHED_TFLOP['unet_step']:.0f} and "
                                f"~{PUBLISHED_TFLOP['decode']:.0f})")
    print(f"counted FLOPs: guided UNet step {_tf(flops['unet_step'])} TFLOP, temporal VAE decode "
          f"{_tf(flops['decode'])} TFLOP{pub}, VAE encode {_tf(flops['encode_frame'])} TFLOP/frame")
    print()
    print(f"| {'variant':<44} | {'steps':>5} | {'s/clip':>8} | {'min s':>8} | {'TFLOP/clip':>10} "
          f"| {'TFLOP/s':>8} | {'peak GiB':>8} | note")
    print(f"|{'-' * 46}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 12}|{'-' * 10}|{'-' * 10}|------")
    base = rows[0].get("median_s") if rows else None
    for r in rows:
        note = r["note"]
        if base and r.get("median_s") and r is not rows[0]:
            note = f"speed-up vs (a) {base / r['median_s']:.2f}x; " + note
        print(f"| {r['variant']:<44} | {r['denoise_steps']:>5} | {_fmt(r.get('median_s'), '8.2f')} "
              f"| {_fmt(r.get('min_s'), '8.2f')} | {r['tflop']:10.3g} | {_fmt(r.get('tflops'), '8.3g')} "
              f"| {_fmt(r['peak_gib'], '8.1f')} | {note}")
    if render_s:
        print(f"\n(b)/(c) include planning the trajectory and the camera render of the keyframes: "
              f"median {statistics.median(render_s):.3f} s per clip")
    if kernel_rows:
        print()
        print(f"| {'kernel':<44} | {'seconds':>8} | {'TFLOP':>8} | {'TFLOP/s':>8} | {'peak GiB':>8} |")
        print(f"|{'-' * 46}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
        for k in kernel_rows:
            print(f"| {k['kernel']:<44} | {_fmt(k.get('median_s'), '8.3f')} | {k['tflop']:8.3g} "
                  f"| {_fmt(k.get('tflops'), '8.3g')} | {_fmt(k.get('peak_gib'), '8.1f')} | {k.get('note', '')}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
