"""Batch rendering: a JSONL file of render requests -> videos in the store, one manifest.

    python -m d2v.batch JOBS.jsonl [--concurrency N] [--num-cpus 1] [--num-gpus 0]
    ray job submit --working-dir DIR -- python -m d2v.batch JOBS.jsonl

One JSON object per line: a render request (d2v.models.RenderRequest) plus `image` (a
path relative to the working directory, or s3://bucket/key), optional `depth` (a depth
map, the same; or the request's depth mode, "auto" or "none") and optional `id` (the
job id; derived from the image and request when absent). A `preset` fills the fields the
line leaves out; a `look` ending in .cube is a 3D LUT file, a path or s3://bucket/key read
like `image`, that travels with the job as its look.cube.
Results land under jobs/{id}/ like any job; the batch's manifest, one line per item
(id, line, status, keys, seconds, error), under batches/{JOBS file stem}/manifest.jsonl.

Execution path: one Ray task per item, each running `d2v.pipeline.render_job`, the same
stage code as `d2v render` and the Serve app's stages, in one process per item (render
and encode stream on two threads; no clip is held whole or shipped between processes).
Why tasks, not the Serve app's handles or Ray Data:
  * A batch must not depend on a running Serve app, nor compete with its interactive
    traffic; tasks need only a Ray cluster (or none: `ray.init()` starts one).
  * Per-item failure and resumability are per-task facts: each task returns its item's
    row (a bad item is a failed row, never an exception that stops the batch), and the
    store, not Ray, says what is done. Ray Data's map_batches would stop the dataset on
    the first exception unless every UDF caught it, and its per-stage actor pools would
    materialise clips between stages that render_job streams.
  * Pending tasks are resource demand the autoscaler sees: on cluster.yaml's cluster, a
    batch with `--num-gpus 0.5` grows the GPU worker types and they shrink when it ends.
  * Ray retries a task whose worker or node died (max_retries); a user error is not
    retried (it would fail again).
The driver keeps at most `--concurrency` items in flight (bounded memory: local images
are read only when their item is submitted) and reads local images itself, so tasks run
on any node; s3:// images are read by the task, from the store's S3 endpoint.

`--no-ray` runs the items one after another in this process (debugging, tiny batches).
Exit status: 0 when every item succeeded or was already done, 1 when any failed, 2 when
the batch itself cannot start (no such file, store unreachable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from d2v.errors import D2VError, InvalidRequestError, ObjectNotFoundError, StoreUnavailableError, one_line
from d2v.models import DEPTH_MODES, LUT_SUFFIX, RenderRequest, parse_request
from d2v.store import Store, batch_manifest_key, store_from_env, store_settings, validate_job_id

# Keys of a batch line that are not part of the render request.
ITEM_KEYS = ("id", "image", "depth")
# Ray retries an item whose worker or node died this many times (a spot GPU node going
# away mid-item); a user error is never retried.
MAX_RETRIES = 2
# The manifest is rewritten at most this often while the batch runs (and at the end), so
# a large batch costs O(items) uploads, not O(items^2) bytes.
MANIFEST_EVERY_S = 5.0


@dataclass
class Item:
    """One line of the batch file, parsed as far as the driver can without the image."""

    line: int
    id: str | None = None  # the explicit id, when the line has a valid one
    image: str | None = None
    depth: str | None = None
    lut: str | None = None  # the look's .cube file (a path or s3:// key), when the look names one
    request: RenderRequest | None = None
    error: str | None = None  # the line is bad: the item fails without running

    @property
    def label(self) -> str:
        """How reports name the item before its id is known (derived ids come from the image)."""
        return self.id or f"line-{self.line}"


@dataclass
class Row:
    """One item's line in the batch manifest."""

    id: str
    line: int
    status: str  # pending | succeeded | skipped (results were already in the store) | failed
    keys: dict[str, str] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None
    fidelity: str | None = None  # the path check's verdict: followed | missed | unmeasured

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


# ---------------------------------------------------------------------------- reading


def parse_line(line_no: int, text: str) -> Item:
    item = Item(line=line_no)
    try:
        data = json.loads(text)
    except ValueError as e:
        item.error = f"line {line_no} is not JSON: {e}"
        return item
    if not isinstance(data, dict):
        item.error = f"line {line_no}: expected a JSON object, got {type(data).__name__}"
        return item
    raw_id = data.get("id")
    try:
        if raw_id is not None:
            item.id = validate_job_id(str(raw_id))
        image = data.get("image")
        if not isinstance(image, str) or not image:
            raise InvalidRequestError("'image' is required: a path relative to the working directory or s3://bucket/key")
        depth = data.get("depth")
        if depth is not None and (not isinstance(depth, str) or not depth):
            raise InvalidRequestError("'depth' must be a path, s3://bucket/key, 'auto' or 'none'")
        mode = {"depth": depth} if depth in DEPTH_MODES else {}  # the request's field, not a file
        item.image, item.depth = image, (None if mode else depth)
        fields = {k: v for k, v in data.items() if k not in ITEM_KEYS}
        look = fields.get("look")
        if isinstance(look, str) and look.lower().endswith(LUT_SUFFIX):  # the file is read, its name kept
            item.lut, fields["look"] = look, look.rsplit("/", 1)[-1]
        item.request = parse_request({**fields, **mode})
    except D2VError as e:
        item.error = str(e)
    return item


def read_items(path: Path) -> list[Item]:
    """Every non-blank line, numbered from 1; a later line reusing an id fails alone."""
    items: list[Item] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            item = parse_line(line_no, text)
            if item.id is not None:
                if item.id in first_line and item.error is None:
                    item.error = f"duplicate id {item.id!r} (first on line {first_line[item.id]})"
                first_line.setdefault(item.id, line_no)
            items.append(item)
    return items


def read_ref(ref: str, store: Store, base_dir: Path, what: str = "image") -> bytes:
    """An item's `image`, `depth` or look file: s3://bucket/key through the store's S3
    endpoint, or a local path relative to `base_dir`. Named errors, so the item fails with
    a reason that says which of its files (`what`) it was."""
    if ref.startswith("s3://"):
        bucket, _, key = ref[len("s3://"):].partition("/")
        if not bucket or not key:
            raise InvalidRequestError(f"invalid S3 reference {ref!r}: use s3://bucket/key")
        client = getattr(store, "client", None)
        if client is None:
            raise StoreUnavailableError(f"{ref} needs an S3 endpoint: set D2V_S3_ENDPOINT (and its keys)")
        from minio.error import S3Error

        try:
            response = client.get_object(bucket, key)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                raise ObjectNotFoundError(f"{what} {ref} not found ({e.code})") from None
            raise StoreUnavailableError(f"cannot read {ref}: {e.code}: {e.message}") from None
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()
    path = base_dir / ref
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # Not base_dir itself: under `ray job submit` it is a long path in Ray's session dir.
        raise ObjectNotFoundError(f"{what} {ref!r} not found (paths are relative to the batch's working "
                                  "directory)") from None
    except (IsADirectoryError, PermissionError) as e:
        raise InvalidRequestError(f"cannot read {what} {ref!r}: {e.strerror}") from None


# ---------------------------------------------------------------------------- one item

_stores: dict[tuple, Store] = {}


def _store(settings: dict[str, str]) -> Store:
    """One store per settings per process: Ray reuses task workers, so later items skip
    the S3 client's set-up and bucket check."""
    key = tuple(sorted(settings.items()))
    if key not in _stores:
        _stores[key] = store_from_env(settings)
    return _stores[key]


_capped: list[float] = []


def cap_gpu_memory(fraction: float) -> None:
    """A task holding a fraction of a GPU keeps to that share of its memory (once per worker
    process, as the Serve replicas do): two half-GPU svd items must not starve each other."""
    if not 0.0 < fraction < 1.0 or _capped:
        return
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(float(fraction), torch.device("cuda", 0))  # Ray's one GPU
        _capped.append(fraction)


def render_item(item: dict[str, Any], settings: dict[str, str], image_bytes: bytes | None,
                depth_bytes: bytes | None, lut_bytes: bytes | None = None) -> dict[str, Any]:
    """Render one item (in a Ray task, or in-process); never raises for the item's own
    faults: the returned row says failed and why, so one bad item fails alone."""
    from d2v.lifecycle import process_owner
    from d2v.pipeline import render_job

    t0 = time.perf_counter()
    row = Row(id=item["label"], line=item["line"], status="failed")
    try:
        cap_gpu_memory(item.get("gpu_fraction") or 0.0)
        store = _store(settings)
        base_dir = Path(item["base_dir"])
        if image_bytes is None:
            image_bytes = read_ref(item["image"], store, base_dir)
        if depth_bytes is None and item.get("depth"):
            depth_bytes = read_ref(item["depth"], store, base_dir, "depth map")
        if lut_bytes is None and item.get("lut"):
            lut_bytes = read_ref(item["lut"], store, base_dir, "look")
        stages: list[str] = []
        manifest = render_job(image_bytes, RenderRequest.model_validate(item["request"]), store,
                              depth_bytes=depth_bytes, lut_bytes=lut_bytes, job_id=item.get("id"),
                              owner=process_owner("batch"),
                              progress=lambda stage, fraction: stages.append(stage) if stage == "cached" else None)
        row.id, row.keys = manifest.job_id, dict(manifest.keys)
        row.fidelity = manifest.fidelity.verdict if manifest.fidelity else None
        row.status = "skipped" if "cached" in stages else "succeeded"
    except D2VError as e:
        row.error = str(e)
    except Exception as e:  # a bug, or the store failing: still this item's row, not the batch's end
        row.error = f"internal error: {type(e).__name__}: {e}"
    row.seconds = round(time.perf_counter() - t0, 3)
    return row.__dict__


# ---------------------------------------------------------------------------- progress


class Progress:
    """A tqdm bar in a terminal; one line per finished item otherwise (job logs)."""

    def __init__(self, total: int, name: str):
        self.total, self.done = total, 0
        self.counts = {"succeeded": 0, "skipped": 0, "failed": 0}
        self.tty = sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=name, unit="item", file=sys.stderr)
        else:
            print(f"[d2v.batch] {name}: {total} items", flush=True)

    def finished(self, row: Row) -> None:
        self.done += 1
        self.counts[row.status] = self.counts.get(row.status, 0) + 1
        what = f"{row.status} {row.id} (line {row.line})" + (f": {row.error}" if row.error else "")
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)
            if row.status == "failed":
                self.bar.write(f"FAILED {row.id} (line {row.line}): {row.error}", file=sys.stderr)
        else:
            secs = f" {row.seconds:.1f}s" if row.seconds is not None else ""
            print(f"[d2v.batch] {self.done}/{self.total}{secs} {what}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------- the batch


@dataclass
class Options:
    concurrency: int | None = None  # items in flight; None = twice what the cluster runs at once
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    use_ray: bool = True
    address: str | None = None


def run_batch(jobs_file: str | Path, env: dict[str, str] | None = None, options: Options | None = None,
              base_dir: str | Path | None = None) -> list[Row]:
    """Run every item of `jobs_file`; returns the manifest rows (in line order), which are
    also in the store at batches/{stem}/manifest.jsonl.

    `env` holds the D2V_* store settings (default: this process's environment); they,
    not a Store object, travel to the tasks, which open the same store from them.
    """
    options = options or Options()
    jobs_file = Path(jobs_file)
    base_dir = Path(base_dir or Path.cwd()).resolve()
    settings = store_settings(env)
    store = _store(settings)
    items = read_items(jobs_file)
    manifest_key = batch_manifest_key(jobs_file.stem)
    rows = {item.line: Row(id=item.label, line=item.line, status="pending") for item in items}
    progress = Progress(len(items), jobs_file.name)
    last_write = [0.0]

    def write_manifest(force: bool = False) -> None:
        if force or time.monotonic() - last_write[0] >= MANIFEST_EVERY_S:
            body = "".join(rows[line].to_json() + "\n" for line in sorted(rows))
            store.put_bytes(manifest_key, body.encode())
            last_write[0] = time.monotonic()

    def finish(row: Row) -> None:
        rows[row.line] = row
        progress.finished(row)
        write_manifest()

    def runnable() -> Iterator[tuple[dict, bytes | None, bytes | None, bytes | None]]:
        """Items to render, lazily (their local images are read only now); bad lines,
        unreadable local images and items already in the store finish here."""
        from d2v.pipeline import cached_manifest
        from d2v.subjects import attach_masks, mask_names

        for item in items:
            if item.error is not None:
                finish(Row(id=item.label, line=item.line, status="failed", error=item.error))
                continue
            if item.id is not None and (done := cached_manifest(store, item.id)) is not None:
                finish(Row(id=item.id, line=item.line, status="skipped", keys=dict(done.keys), seconds=0.0,
                           fidelity=done.fidelity.verdict if done.fidelity else None))
                continue
            payload = {"line": item.line, "label": item.label, "id": item.id, "image": item.image,
                       "depth": item.depth, "lut": item.lut, "request": item.request.model_dump(mode="json"),
                       "base_dir": str(base_dir)}
            try:
                image = None if item.image.startswith("s3://") else read_ref(item.image, store, base_dir)
                depth = (None if not item.depth or item.depth.startswith("s3://")
                         else read_ref(item.depth, store, base_dir, "depth map"))
                lut = (None if not item.lut or item.lut.startswith("s3://")
                       else read_ref(item.lut, store, base_dir, "look"))
                if names := mask_names(item.request):  # subjects' mask images travel in the request
                    masks = {name: read_ref(name, store, base_dir, "mask") for name in names}
                    payload["request"] = attach_masks(item.request, masks).model_dump(mode="json")
            except D2VError as e:
                finish(Row(id=item.label, line=item.line, status="failed", error=str(e), seconds=0.0))
                continue
            yield payload, image, depth, lut

    try:
        if options.use_ray:
            _run_on_ray(runnable(), settings, options, finish)
        else:
            for payload, image, depth, lut in runnable():
                finish(Row(**render_item(payload, settings, image, depth, lut)))
    finally:
        progress.close()
        write_manifest(force=True)
    return [rows[line] for line in sorted(rows)]


def _run_on_ray(work: Iterator[tuple[dict, bytes | None, bytes | None, bytes | None]], settings: dict[str, str],
                options: Options, finish: Callable[[Row], None]) -> None:
    import ray

    if not ray.is_initialized():
        # Under `ray job submit`, RAY_ADDRESS names the cluster; run directly, this joins a
        # running local cluster or starts one.
        ray.init(address=options.address, logging_level="WARNING", log_to_driver=True)
    # max_calls=0 (no limit) lets GPU tasks reuse their worker process too (Ray's default
    # for GPU tasks is one task per process), so per-process state (the store client, a
    # loaded model) survives from one item to the next.
    # By reference, from the module (not __main__ under `python -m`): workers import it
    # rather than unpickle a copy with this process's globals (the store cache).
    from d2v.batch import render_item as by_reference

    task = ray.remote(num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=MAX_RETRIES,
                      max_calls=0)(by_reference)
    concurrency = options.concurrency or _default_concurrency(ray.cluster_resources(), options)
    in_flight: dict[Any, dict] = {}
    work = iter(work)
    exhausted = False
    while in_flight or not exhausted:
        while not exhausted and len(in_flight) < concurrency:
            try:
                payload, image, depth, lut = next(work)
            except StopIteration:
                exhausted = True
                break
            payload = {**payload, "gpu_fraction": options.num_gpus}
            in_flight[task.remote(payload, settings, image, depth, lut)] = payload
        if not in_flight:
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            payload = in_flight.pop(ref)
            try:
                row = Row(**ray.get(ref))
            except Exception as e:  # the task's worker or node died, retries spent
                row = Row(id=payload["label"], line=payload["line"], status="failed",
                          error=f"ray: {one_line(e)}")
            finish(row)


def _default_concurrency(resources: dict[str, float], options: Options) -> int:
    """Twice what the cluster runs at once now, so the next item starts the moment one
    ends; at least 4, so a GPU cluster that starts with no GPU node sees demand."""
    if options.num_gpus > 0:
        fits = resources.get("GPU", 0) / options.num_gpus
    elif options.num_cpus > 0:
        fits = resources.get("CPU", 0) / options.num_cpus
    else:
        fits = 8
    return max(4, int(2 * fits))


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m d2v.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("jobs", help="JSONL file: one render request per line, plus image and optional id")
    p.add_argument("--concurrency", type=int, default=None,
                   help="items in flight at once (default: twice what the cluster can run now, at least 4); "
                        "on an autoscaling cluster, what you want running at its largest")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs each item's task asks Ray for (default 1)")
    p.add_argument("--num-gpus", type=float, default=0.0,
                   help="GPUs (a fraction shares one) each item's task asks Ray for (default 0)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, or a local one)")
    p.add_argument("--no-ray", action="store_true", help="render the items one by one in this process")
    args = p.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        p.error("--concurrency must be at least 1")

    jobs = Path(args.jobs)
    if not jobs.is_file():
        print(f"d2v.batch: no such file: {jobs}", file=sys.stderr)
        return 2
    try:
        store = _store(store_settings())  # fail here, before Ray starts, when the store is unreachable
    except D2VError as e:
        print(f"d2v.batch: {e}", file=sys.stderr)
        return 2
    options = Options(concurrency=args.concurrency, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                      use_ray=not args.no_ray, address=args.address)
    rows = run_batch(jobs, None, options)

    counts = {s: sum(r.status == s for r in rows) for s in ("succeeded", "skipped", "failed")}
    manifest = f"{batch_manifest_key(jobs.stem)} in {store.describe()}"
    print(f"[d2v.batch] {len(rows)} items: {counts['succeeded']} succeeded, {counts['skipped']} skipped "
          f"(already done), {counts['failed']} failed; manifest: {manifest}", flush=True)
    for row in rows:
        if row.status == "failed":
            print(f"[d2v.batch] FAILED {row.id} (line {row.line}): {row.error}", flush=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
