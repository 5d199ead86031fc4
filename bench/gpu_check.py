"""The GPU check of the generative bases (issue 25): one script, under 10 minutes on one H100/H200.

    python bench/gpu_check.py --wheels WHEELS/ [--out DIR]   # the GPU machine (no registry, no Ray)
    python bench/gpu_check.py --tiny [--out DIR]            # the same code on the CPU with tiny models (tests)

1. wheels: the GPU machine has torch (CUDA), transformers, accelerate, OpenCV and scikit-image
   but not diffusers, pydantic or PyAV; `--wheels DIR` installs them from files
   (`pip install --no-index --find-links DIR`). Ray is not needed: the library runs without it.
2. `pytest -m gpu` over the test files that hold CUDA tests (skipped with --tiny: no CUDA).
3. Each base's architecture with random weights (compute does not depend on weight values) at
   its native size: SVD-XT 1024x576 x 25 frames, LTX-Video 2B 768x512 x 121, Wan 2.2 TI2V-5B
   1280x704 x 121 (the transformers and VAEs at full size; the text encoders cut to one layer
   of the real width, as they run once per clip). Seconds per clip of d2v's path at strength 1
   (the same work as the pipeline) against the plain diffusers pipeline, in the same run.
4. Fractional sharing: two processes, each capped at half the GPU's memory
   (`torch.cuda.set_per_process_memory_fraction(0.5)`), render an LTX clip at once; both must
   finish, and their time is set against one alone.
5. NVENC: 96 frames through PyAV's h264_nvenc (and libx264 beside it).

Writes `gpu_check.json` and `gpu_check.md` (the table for bench/RESULTS.md) to --out; progress on
stderr. Stops starting new work after --budget-s (default 540 s): what would not fit is "skipped".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NEEDED = {"diffusers": "diffusers", "pydantic": "pydantic", "av": "av"}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# --- 1. wheels ----------------------------------------------------------------------------


def install_wheels(wheels: str | None) -> dict:
    import importlib.util

    missing = [pkg for mod, pkg in NEEDED.items() if importlib.util.find_spec(mod) is None]
    if not missing:
        return {"step": "wheels", "result": "all present"}
    if not wheels:
        return {"step": "wheels", "result": f"missing {', '.join(missing)} and no --wheels DIR"}
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, *missing]
    run = subprocess.run(cmd, capture_output=True, text=True)
    tail = (run.stdout + run.stderr).strip().splitlines()[-1:] or [""]
    return {"step": "wheels", "result": "installed " + ", ".join(missing) if run.returncode == 0 else
            f"pip failed: {tail[0][:200]}"}


# --- 2. pytest -m gpu ---------------------------------------------------------------------


def gpu_tests(tiny: bool, timeout_s: float) -> dict:
    if tiny:
        return {"step": "pytest -m gpu", "result": "skipped: --tiny (no CUDA)"}
    files = [str(p) for p in (REPO / "tests").glob("test_*.py") if "mark.gpu" in p.read_text()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
        last = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
        return {"step": "pytest -m gpu", "result": last, "rc": run.returncode}
    except subprocess.TimeoutExpired:
        return {"step": "pytest -m gpu", "result": f"timed out after {timeout_s:.0f} s"}


# --- 3. the bases at native size ----------------------------------------------------------


def build(base: str, tiny: bool, device: str, dtype):
    """The base's pipeline with random weights: the tiny one, or the full-size architecture built
    straight on the device (initialising billions of parameters on a CPU takes minutes)."""
    import torch

    if tiny:
        from d2v.bases.tiny import BUILDERS

        return BUILDERS[base](seed=0).to(device)
    from d2v.bases import tiny as t

    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are made in the run's dtype, on the device
    try:
        with torch.device(device):
            if base == "svd":
                from bench.svd_gpu import build_svd_xt

                return build_svd_xt(device, dtype)
            if base == "ltx":
                from diffusers import (
                    AutoencoderKLLTXVideo,
                    FlowMatchEulerDiscreteScheduler,
                    LTXConditionPipeline,
                    LTXVideoTransformer3DModel,
                )

                tokenizer = t.build_tokenizer(128)
                # diffusers' defaults of these two classes are LTX-Video 2B's transformer and VAE.
                return LTXConditionPipeline(
                    scheduler=FlowMatchEulerDiscreteScheduler(**t.LTX_SCHEDULER_CONFIG),
                    vae=AutoencoderKLLTXVideo().eval(), transformer=LTXVideoTransformer3DModel().eval(),
                    text_encoder=_text_encoder("t5", len(tokenizer)), tokenizer=tokenizer).to(device)
            from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel

            tokenizer = t.build_tokenizer(512)
            transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128,
                                                in_channels=48, out_channels=48, text_dim=4096, freq_dim=256,
                                                ffn_dim=14336, num_layers=30)  # Wan2.2-TI2V-5B transformer
            vae = AutoencoderKLWan(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4],
                                   num_res_blocks=2, temperal_downsample=[False, True, True], is_residual=True,
                                   in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                                   scale_factor_temporal=4, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
            return WanImageToVideoPipeline(
                tokenizer=tokenizer, text_encoder=_text_encoder("umt5", len(tokenizer)), vae=vae.eval(),
                scheduler=UniPCMultistepScheduler(**t.WAN_SCHEDULER_CONFIG), transformer=transformer.eval(),
                expand_timesteps=True).to(device)
    finally:
        torch.set_default_dtype(prev)


def _text_encoder(kind: str, vocab: int):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    shape = dict(vocab_size=vocab, d_model=4096, d_kv=64, d_ff=10240, num_layers=1, num_heads=64)
    return (T5EncoderModel(T5Config(**shape)) if kind == "t5" else UMT5EncoderModel(UMT5Config(**shape))).eval()


def wrap(base: str, pipe, device: str, dtype):
    """d2v's model object around the pipeline (what load_<base> returns after from_pretrained)."""
    if base == "svd":
        from d2v.bases.svd import SVDModel

        return SVDModel.from_pipeline(pipe, name=f"{base} (random)", device=device, dtype=dtype)
    from d2v.bases.ltx import LTXModel
    from d2v.bases.wan import WanModel

    cls = LTXModel if base == "ltx" else WanModel
    return cls(pipe, name=f"{base} (random)", device=device, dtype=dtype)


NATIVE = {"svd": (1024, 576, None), "ltx": (768, 512, 121), "wan": (1280, 704, 121)}
TINY = {"svd": (96, 64, None), "ltx": (96, 64, 9), "wan": (96, 64, 9)}


def bench_base(base: str, args, device: str, dtype) -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image

    from d2v.bases.common import make_guide, model_frame_for
    from d2v.models import parse_request
    from d2v.render import CameraRenderer

    w, h, frames = (TINY if args.tiny else NATIVE)[base]
    log(f"{base}: building ({'tiny' if args.tiny else 'full size'}, random weights)")
    pipe = build(base, args.tiny, device, dtype)
    model = wrap(base, pipe, device, dtype)
    frames = frames or model.clip_frames
    request = parse_request({"path": [{"x": 0.3 * w, "y": 0.6 * h}, {"x": 0.7 * w, "y": 0.4 * h}], "effect": "pan",
                             "duration_s": max(0.5, (frames - 1) / 24), "fps": 24, "width": w, "height": h,
                             "backend": base, "guidance_strength": 1.0, "num_inference_steps": args.steps,
                             "seed": 0, "auto_correct": False, "prompt": "slow push in toward a harbour at dusk"})
    frame = model_frame_for(request, model)
    photo = (np.random.default_rng(0).random((h * 2, w * 2, 3)) * 255).astype(np.uint8)
    guide = make_guide(CameraRenderer(photo), request, frames, frame)
    cw, ch = frame.width, frame.height
    rows = []

    def timed(label, fn):
        try:
            if not args.tiny:
                fn()  # warm-up (cuDNN's search, lazy inits)
                sync(device)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            fn()
            sync(device)
            s = time.perf_counter() - t
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
            rows.append({"base": base, "variant": label, "size": f"{cw}x{ch}x{frames}", "steps": args.steps,
                         "seconds": round(s, 3), "peak_gib": round(peak, 2) if peak else None})
            log(f"{base}: {label}: {s:.2f} s")
        except torch.cuda.OutOfMemoryError as e:
            rows.append({"base": base, "variant": label, "size": f"{cw}x{ch}x{frames}", "note": "out of memory"})
            log(f"{base}: {label}: out of memory: {str(e).splitlines()[0]}")
            torch.cuda.empty_cache()

    gen = torch.Generator(device)
    image = Image.fromarray(guide.frames[0])
    if base == "svd":
        plain = lambda: pipe(image, height=ch, width=cw, num_frames=frames, num_inference_steps=args.steps,  # noqa: E731
                             generator=gen.manual_seed(0), output_type="np")
    elif base == "ltx":
        from diffusers import LTXPipeline

        t2v = LTXPipeline(**{k: getattr(pipe, k) for k in ("scheduler", "vae", "text_encoder", "tokenizer",
                                                           "transformer")})
        t2v.set_progress_bar_config(disable=True)
        plain = lambda: t2v(prompt=request.prompt, height=ch, width=cw, num_frames=frames,  # noqa: E731
                            num_inference_steps=args.steps, generator=gen.manual_seed(0), output_type="np")
    else:
        embeds = model._text(["", request.prompt])  # the pipeline's own text path needs ftfy
        plain = lambda: pipe(image=image, prompt_embeds=embeds[1:], negative_prompt_embeds=embeds[:1],  # noqa: E731
                             height=ch, width=cw, num_frames=frames, num_inference_steps=args.steps,
                             generator=gen.manual_seed(0), output_type="np")
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    timed("diffusers pipeline", plain)
    timed("d2v, strength 1", lambda: model.generate(photo, guide.frames, request, guide.cameras))
    timed("d2v, strength 0.5", lambda: model.generate(
        photo, guide.frames, request.model_copy(update={"guidance_strength": 0.5}), guide.cameras))
    base_s = next((r["seconds"] for r in rows if r["variant"] == "diffusers pipeline" and "seconds" in r), None)
    for r in rows:
        if base_s and "seconds" in r:
            r["vs_pipeline"] = round(r["seconds"] / base_s, 3)
    del model, pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- 4. fractional sharing ----------------------------------------------------------------


def share_worker(args) -> int:
    """One of the two sharing processes: half the GPU's memory, one LTX clip, JSON on stdout."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_per_process_memory_fraction(args.fraction)
    rows = bench_base("ltx", args, device, torch.bfloat16 if device == "cuda" else torch.float32)
    print(json.dumps(rows))
    return 0


def sharing(args, device: str) -> dict:
    if not device.startswith("cuda"):
        return {"step": "sharing", "result": "skipped: no CUDA"}
    cmd = [sys.executable, __file__, "--share-worker", "--fraction", "0.5", "--steps", str(min(args.steps, 4))]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=max(60.0, args.budget_s - (time.perf_counter() - T0))) for p in procs]
    wall = time.perf_counter() - t
    results = []
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            results.append({"rc": p.returncode, "error": (err.strip().splitlines() or [""])[-1][:300]})
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))
    ok = all(isinstance(r, list) for r in results)
    return {"step": "sharing", "result": "both finished" if ok else "failed", "wall_s": round(wall, 1),
            "processes": results}


# --- 5. NVENC -----------------------------------------------------------------------------


def nvenc(tiny: bool) -> list[dict]:
    import numpy as np

    try:
        import av
    except ImportError:
        return [{"codec": "h264_nvenc", "result": "skipped: no PyAV"}]
    w, h, n = (320, 192, 24) if tiny else (1024, 576, 96)
    frames = (np.random.default_rng(0).random((8, h, w, 3)) * 255).astype(np.uint8)
    rows = []
    for codec in ("libx264", "h264_nvenc"):
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_check_{codec}.mp4"
        try:
            t = time.perf_counter()
            with av.open(str(path), "w") as out:
                stream = out.add_stream(codec, rate=24)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                for i in range(n):
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frames[i % 8], format="rgb24")):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
            s = time.perf_counter() - t
            rows.append({"codec": codec, "result": f"{n / s:.0f} fps at {w}x{h}", "bytes": path.stat().st_size})
        except Exception as e:  # no NVENC in this FFmpeg build or on this GPU
            rows.append({"codec": codec, "result": f"not available: {type(e).__name__}: {str(e)[:120]}"})
    return rows


# --- main ---------------------------------------------------------------------------------


def table(report: dict) -> str:
    lines = [f"GPU check ({report['device']}, {report['python']}), total {report['total_s']:.0f} s", "",
             "| base | variant | size | steps | seconds | vs pipeline | peak GiB |", "|---|---|---|---|---|---|---|"]
    for r in report["bases"]:
        lines.append(f"| {r['base']} | {r['variant']} | {r.get('size', '')} | {r.get('steps', '')} | "
                     f"{r.get('seconds', r.get('note', ''))} | {r.get('vs_pipeline', '')} | {r.get('peak_gib') or ''} |")
    lines.append("")
    for step in report["steps"]:
        lines.append(f"- {step['step']}: {step['result']}" + (f" ({step['wall_s']} s)" if "wall_s" in step else ""))
    for r in report["nvenc"]:
        lines.append(f"- encode {r['codec']}: {r['result']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU (a smoke test; the tests run it)")
    ap.add_argument("--wheels", default=None, help="a folder of wheels to install offline (diffusers, pydantic, av)")
    ap.add_argument("--out", default=".", help="where gpu_check.json and gpu_check.md go")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per clip (default 10; 2 with --tiny)")
    ap.add_argument("--bases", default="svd,ltx,wan")
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--share-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fraction", type=float, default=0.5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 10)
    if args.share_worker:
        return share_worker(args)

    steps = [install_wheels(args.wheels)]
    log(steps[-1]["result"])
    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    steps.append(gpu_tests(args.tiny or device == "cpu", timeout_s=150))
    log(f"pytest -m gpu: {steps[-1]['result']}")
    rows: list[dict] = []
    for base in args.bases.split(","):
        if time.perf_counter() - T0 > args.budget_s * 0.7:
            rows.append({"base": base, "variant": "skipped: time budget"})
            continue
        try:
            rows += bench_base(base, args, device, dtype)
        except Exception as e:  # one base failing to build or run: reported, the others go on
            import traceback

            traceback.print_exc()
            rows.append({"base": base, "variant": f"failed: {type(e).__name__}: {str(e)[:200]}"})
            log(rows[-1]["variant"])
    steps.append(sharing(args, device))
    log(f"sharing: {steps[-1]['result']}")
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or 'cpu'})",
              "python": platform.python_version(), "bases": rows, "steps": steps, "nvenc": nvenc(args.tiny),
              "total_s": time.perf_counter() - T0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(table(report))
    print(table(report))
    return 0 if all("failed" not in str(r.get("variant", "")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
