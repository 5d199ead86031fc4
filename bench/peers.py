"""`d2v render` against the one-liners people use, timed as whole processes.

The same photo (examples/hubble.jpg), 1024x576, 96 frames (4 s at 24 fps), libx264 veryfast
crf 18, yuv420p, each command a fresh process (start-up, imports and writing the file
included), run in interleaved pairs so the noise of a shared machine falls on both sides:

    d2v           d2v render examples/hubble.jpg --path examples/paths/zoom_in.json --effect zoom_in
                  --no-cache -o out.mp4   (this checkout; its local store in a temporary directory)
    d2v@BASE      the same with another checkout's code (--baseline DIR: e.g. `git worktree add`
                  of main), for a before/after in the same run
    ffmpeg+scale  ffmpeg -loop 1 -i hubble.jpg -vf "scale=4000:-1,zoompan=z='min(zoom+0.0209,3)':
                  d=96:x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':s=1024x576:fps=24" -frames:v 96 ...
                  (the input scaled up first: the usual fix for zoompan's jitter)
    ffmpeg        the same zoompan without the scale-up
    depthflow     (--depth, when /work/peers/.venv has DepthFlow) DepthFlow's default move, headless
                  (Mesa's llvmpipe), given a depth map (its estimators download weights), h264
                  veryfast crf 18; beside `d2v render --depth MAP --effect dolly_zoom`

Each pair runs every command once, in an order that rotates from pair to pair; the table has
each command's median wall and CPU seconds (all its threads and children) and the median of
the per-pair wall ratios against ffmpeg+scale. The machine's load average is printed before
and after: on a shared machine, ratios are the numbers to read.

    python bench/peers.py [--pairs 7] [--baseline DIR] [--photo FILE] [--depth [--depth-frames 12] [--depth-only]]

(--photo: another photo than hubble.jpg for every command, e.g. a 12 MP one from a phone.)

DepthFlow renders through Mesa's llvmpipe at 8-12 s a frame on a loaded 2-core VM (13-20
minutes for the 96-frame clip), so --depth-frames shortens the depth pair's clip (both tools,
the same frame count) and --depth-only leaves out the zoompan rows; the depth rows' ratio
column is then against DepthFlow.

With --baseline, the last d2v and d2v@BASE videos are decoded and compared (max and mean
difference, PSNR between them and against the frames as rendered) to show the output is
today's.

Then where d2v's wall goes (`phases`): from each d2v round's manifest (its stage_seconds), the
process outside render_job (interpreter, imports, the CLI's checks, exit), render_job around the
encode, and the streamed render + encode (the path check beside it); against x264 alone on the
same 96 frames, as d2v drives it (`encode_mp4` of ready I420 planes, in this process) and as
ffmpeg does (raw frames from a file). Start-up plus x264 alone is the least a Python process
that renders and then encodes can take; what is left of ffmpeg's wall is what the render and
the path check may cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "examples" / "hubble.jpg"
PATH = REPO / "examples" / "paths" / "zoom_in.json"
FRAMES, FPS, SIZE = 96, 24, (1024, 576)
PEERS_VENV = Path("/work/peers/.venv")
ENCODE = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
ZOOMPAN = (f"zoompan=z='min(zoom+0.0209,3)':d={FRAMES}:x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
           f":s={SIZE[0]}x{SIZE[1]}:fps={FPS}")


def d2v_command(checkout: Path, out: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    """`d2v render ...` as a user types it: the installed entry point beside this Python
    (or `python -m d2v.cli`), with `checkout`'s code first on the path."""
    entry = Path(sys.executable).with_name("d2v")
    prog = [str(entry)] if entry.exists() else [sys.executable, "-m", "d2v.cli"]
    cmd = [*prog, "render", str(IMAGE), "--path", str(PATH), "--effect", "zoom_in", "--no-cache",
           "-o", str(out), *extra]
    return cmd, {"PYTHONPATH": str(checkout)}


def ffmpeg_command(out: Path, scale_up: bool) -> list[str]:
    chain = ("scale=4000:-1," if scale_up else "") + ZOOMPAN
    return ["ffmpeg", "-y", "-loglevel", "error", "-loop", "1", "-i", str(IMAGE), "-vf", chain,
            "-frames:v", str(FRAMES), *ENCODE, str(out)]


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole process, children included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def last_manifest(store: Path) -> dict:
    """The manifest of the only job in a d2v store (each d2v round renders the same job again)."""
    import json

    (found,) = store.glob("jobs/*/manifest.json")
    return json.loads(found.read_text())


def x264_alone(video: Path, tmp: Path, repeats: int = 3) -> tuple[float, float]:
    """Median wall of x264 on a video's frames, ready as I420 planes: through d2v.encode in this
    process, and through ffmpeg reading them raw from a file."""
    sys.path.insert(0, str(REPO))
    from d2v.encode import I420, decode_video, encode_mp4, Yuv420

    rgb, _ = decode_video(video)
    to_yuv = Yuv420(SIZE[0], SIZE[1])
    planes = []
    for frame in rgb:
        p = I420(*SIZE)
        p.buffer[:] = to_yuv(frame)
        planes.append(p)
    raw = tmp / "frames.yuv"
    raw.write_bytes(b"".join(p.buffer.tobytes() for p in planes))
    ours, theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encode_mp4(planes, tmp / "alone.mp4", FPS, crf=18, preset="veryfast")
        ours.append(time.perf_counter() - t0)
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s",
               f"{SIZE[0]}x{SIZE[1]}", "-r", str(FPS), "-i", str(raw), *ENCODE, str(tmp / "alone-ff.mp4")]
        theirs.append(timed(cmd, {}, tmp)[0])
    return statistics.median(ours), statistics.median(theirs)


def phases(parts: dict[str, list[float]], ffmpeg_wall: float, video: Path, tmp: Path) -> None:
    alone, alone_ff = x264_alone(video, tmp)
    outside, around, streamed = (statistics.median(parts[k]) for k in ("outside", "around", "streamed"))
    print("\nwhere d2v's wall goes (medians over the d2v rounds, from each job's stage_seconds):\n")
    print("| part | s |")
    print("|---|---|")
    print(f"| outside render_job: interpreter, imports, the CLI's checks, exit | {outside:.3f} |")
    print(f"| render_job around the encode: photo, job claim, store, poster, manifest | {around:.3f} |")
    print(f"| render + encode, streamed (the path check beside it) | {streamed:.3f} |")
    print(f"| x264 alone on the same frames, as d2v drives it (ready I420 planes, in-process) | {alone:.3f} |")
    print(f"| x264 alone on the same frames, ffmpeg reading them raw (a whole process) | {alone_ff:.3f} |")
    print(f"| ffmpeg+scale, the whole process | {ffmpeg_wall:.3f} |")
    floor = outside + around + alone
    print(f"\nd2v's floor (outside + around + x264 alone, a render and check that cost nothing): {floor:.3f} s, "
          f"{floor / ffmpeg_wall:.2f}x ffmpeg+scale; the render and the path check add {streamed - alone:.3f} s")


def depth_map(path: Path) -> None:
    """A stand-in for an estimated depth map of the photo (the models download weights):
    its blurred luminance, brighter = nearer, as a 16-bit PNG both tools read."""
    import cv2

    grey = cv2.cvtColor(cv2.imread(str(IMAGE)), cv2.COLOR_BGR2GRAY)
    depth = cv2.GaussianBlur(grey, (0, 0), 8)
    cv2.imwrite(str(path), (depth.astype("uint16") * 257))


def depthflow_command(depth: Path, out: Path, frames: int = FRAMES) -> list[str] | None:
    exe = PEERS_VENV / "bin" / "depthflow"
    if not exe.exists():
        return None
    return [str(exe), "input", "-i", str(IMAGE), "-d", str(depth), "h264", "--preset", "veryfast", "--crf", "18",
            "main", "-w", str(SIZE[0]), "-h", str(SIZE[1]), "-f", str(FPS), "-t", str(frames / FPS), "-o", str(out)]


def compare(new: Path, old: Path) -> str:
    """How far this checkout's video is from the baseline's, and each from the frames as rendered."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from d2v.encode import decode_video

    a, _ = decode_video(new)
    b, _ = decode_video(old)
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float((d.astype(np.float64) ** 2).mean())
    psnr = 10 * np.log10(255**2 / mse) if mse else float("inf")
    bias = (a.astype(np.float64) - b).mean(axis=(0, 1, 2))
    return (f"this checkout vs baseline, decoded: {len(a)} frames, mean |diff| {d.mean():.3f}, PSNR {psnr:.2f} dB, "
            f"mean colour difference (R, G, B) {np.round(bias, 3).tolist()}")


def main() -> None:
    global IMAGE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--baseline", type=Path, default=None, help="another d2v checkout to time beside this one")
    ap.add_argument("--depth", action="store_true", help="also d2v's dolly_zoom with a depth map against DepthFlow")
    ap.add_argument("--depth-frames", type=int, default=FRAMES, help=f"the depth pair's clip length (default {FRAMES})")
    ap.add_argument("--depth-only", action="store_true", help="with --depth: only the depth pair")
    ap.add_argument("--photo", type=Path, default=None, help=f"the photo (default {IMAGE.relative_to(REPO)})")
    args = ap.parse_args()
    if args.photo is not None:
        IMAGE = args.photo.resolve()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not on PATH (Debian: apt-get install ffmpeg)")

    with tempfile.TemporaryDirectory(prefix="d2v-peers-") as tmp:
        tmp = Path(tmp)
        store = {"D2V_DATA_DIR": str(tmp / "store")}
        rows: dict[str, tuple[list[str], dict[str, str], Path]] = {}
        if not (args.depth and args.depth_only):
            cmd, env = d2v_command(REPO, tmp / "d2v.mp4")
            rows["d2v"] = (cmd, {**env, **store}, REPO)
            if args.baseline is not None:
                cmd, env = d2v_command(args.baseline.resolve(), tmp / "base.mp4")
                rows["d2v@baseline"] = (cmd, {**env, "D2V_DATA_DIR": str(tmp / "store-base")}, args.baseline.resolve())
            rows["ffmpeg+scale"] = (ffmpeg_command(tmp / "ff-scale.mp4", True), {}, tmp)
            rows["ffmpeg"] = (ffmpeg_command(tmp / "ff.mp4", False), {}, tmp)
        if args.depth:
            depth = tmp / "depth.png"
            depth_map(depth)
            flow = depthflow_command(depth, tmp / "depthflow.mp4", args.depth_frames)
            cmd, env = d2v_command(REPO, tmp / "d2v-depth.mp4", "--depth", str(depth),
                                   "--duration", f"{args.depth_frames / FPS:g}")
            cmd[cmd.index("zoom_in")] = "dolly_zoom"
            cmd[cmd.index(str(PATH))] = str(REPO / "examples" / "paths" / "dolly_zoom.json")
            rows["d2v dolly_zoom+depth"] = (cmd, {**env, **store}, REPO)
            if flow is None:
                print(f"(no DepthFlow in {PEERS_VENV}: its row is left out)")
            else:
                rows["depthflow"] = (flow, {"PATH": f"{PEERS_VENV / 'bin'}:{os.environ['PATH']}"}, tmp)
            print(f"depth pair: {args.depth_frames} frames ({args.depth_frames / FPS:g} s)")

        # Bytecode, as an installed d2v has it (pip compiles it; where PYTHONDONTWRITEBYTECODE is
        # set, as on the project's VMs, every run would otherwise compile d2v from source).
        for checkout in {REPO, *( [args.baseline.resolve()] if args.baseline else [])}:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(checkout / "d2v")], check=True)
        names = list(rows)
        for name in names:  # warm the disk cache; not counted
            timed(*rows[name])
        load_before = os.getloadavg()
        walls: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}
        parts: dict[str, list[float]] = {"outside": [], "around": [], "streamed": []}  # d2v's, per round
        for k in range(args.pairs):
            order = names[k % len(names):] + names[: k % len(names)]
            for name in order:
                w, c = timed(*rows[name])
                walls[name].append(w)
                cpus[name].append(c)
                if name == "d2v":
                    seconds = last_manifest(tmp / "store")["stage_seconds"]
                    parts["outside"].append(w - seconds["total"])
                    parts["around"].append(seconds["total"] - seconds["render_encode_wall"])
                    parts["streamed"].append(seconds["render_encode_wall"])
            print(f"round {k + 1}/{args.pairs}: " + ", ".join(f"{n} {walls[n][-1]:.2f}s" for n in names), flush=True)
        load_after = os.getloadavg()

        ref_name = "ffmpeg+scale" if "ffmpeg+scale" in walls else "depthflow" if "depthflow" in walls else names[0]
        ref = walls[ref_name]
        print(f"\n{platform.node()}: {os.cpu_count()} cores, {platform.python_implementation()} "
              f"{platform.python_version()}; load average (1, 5, 15 min) before "
              f"{', '.join(f'{x:.1f}' for x in load_before)}, after {', '.join(f'{x:.1f}' for x in load_after)}")
        print(f"{args.pairs} interleaved rounds; wall and CPU are medians, the ratio is the median of the "
              f"per-round wall ratios against {ref_name}\n")
        print(f"| command | wall (s) | CPU (s) | wall / {ref_name} |")
        print("|---|---|---|---|")
        for name in names:
            ratios = [w / r for w, r in zip(walls[name], ref)]
            print(f"| {name} | {statistics.median(walls[name]):.2f} | {statistics.median(cpus[name]):.2f} | "
                  f"{statistics.median(ratios):.2f}x |")
        if args.baseline is not None:
            print("\n" + compare(tmp / "d2v.mp4", tmp / "base.mp4"))
        if parts["streamed"] and "ffmpeg+scale" in walls:
            phases(parts, statistics.median(walls["ffmpeg+scale"]), tmp / "d2v.mp4", tmp)


if __name__ == "__main__":
    main()
