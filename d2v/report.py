"""The farm's KPIs from the store: what `d2v report` prints and GET /v1/stats returns.

    d2v report [--since 7d] [--json]

Read from the finished-job records (d2v.lifecycle.JobRecord: one empty object per job,
its numbers in its key), so a report over 10,000 jobs costs a LIST per day, no GETs.
For every job that ended in the window, the latest ending counts:

    videos          jobs that succeeded
    failed          jobs that failed by our fault (a bug, a store or model away; records written
                    before failures had kinds count here too)
    rejected        jobs that failed on the caller's own input, found only once they ran
    stopped         jobs the user stopped (Ctrl-C)
    success_rate    succeeded / (succeeded + failed): the caller's mistakes are not ours to alert on
    median_s, p95_s generation time of the videos (claim to end of the last attempt;
                    p95 by nearest rank: the smallest time that 95% of videos took at most)
    cost_per_video  the videos' total cost / the videos priced (d2v.cost; the table's currency)
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from d2v.errors import InvalidRequestError
from d2v.lifecycle import JobRecord, Jobs
from d2v.store import Store

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SPAN = timedelta(days=366)


def parse_since(text: str) -> timedelta:
    """'30m', '24h', '7d', '2w' -> a timedelta, more than 0 and at most MAX_SPAN."""
    m = _SPAN.match(text or "")
    if not m:
        raise InvalidRequestError(f"since: {text!r} is not a span; use a number and m, h, d or w (e.g. 7d, 24h)")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]  # bounded before timedelta, which overflows on 1e20 w
    if seconds > MAX_SPAN.total_seconds():
        raise InvalidRequestError(f"since: {text!r} is more than {MAX_SPAN.days} days; report a shorter span "
                                  "(e.g. 30d, 52w)")
    if timedelta(seconds=seconds) <= timedelta(0):
        raise InvalidRequestError(f"since: {text!r} is an empty span; use a number above 0 and m, h, d or w "
                                  "(e.g. 7d, 24h)")
    return timedelta(seconds=seconds)


def kpis(records: list[JobRecord]) -> dict:
    done = [r for r in records if r.status == "succeeded"]
    failed, rejected, stopped = (sum(r.status == how for r in records) for how in ("failed", "rejected", "stopped"))
    times = sorted(r.seconds for r in done if r.seconds is not None)
    priced = [r.cost for r in done if r.cost is not None]
    counted = len(done) + failed
    return {
        "jobs": counted + rejected + stopped,
        "videos": len(done),
        "failed": failed,
        "rejected": rejected,
        "stopped": stopped,
        "success_rate": round(len(done) / counted, 6) if counted else None,
        "median_s": round(statistics.median(times), 3) if times else None,
        "p95_s": round(times[math.ceil(0.95 * len(times)) - 1], 3) if times else None,
        "cost_per_video": round(sum(priced) / len(priced), 9) if priced else None,
        "cost_total": round(sum(priced), 9) if priced else None,
    }


def report(store: Store, since: str = "7d", now: datetime | None = None, *, tenant: str | None = None,
           deadline: float | None = None) -> dict:
    """The KPIs of the jobs that ended in the last `since`: all, by backend, by effect, and
    by backend and effect together. `tenant`: only that tenant's jobs; `deadline`
    (time.monotonic()): give up (StoreUnavailableError) rather than list past it."""
    until = now or datetime.now(timezone.utc)
    start = until - parse_since(since)
    records = Jobs(store).records(start, until, tenant=tenant, deadline=deadline)
    groups: dict[str, dict[str, list[JobRecord]]] = {"backends": defaultdict(list), "effects": defaultdict(list),
                                                     "backend_effects": defaultdict(list)}
    for r in records:
        groups["backends"][r.backend].append(r)
        groups["effects"][r.effect].append(r)
        groups["backend_effects"][f"{r.backend}/{r.effect}"].append(r)
    currencies = sorted({r.currency for r in records if r.currency})
    return {
        "since": since,
        "from": start.isoformat(timespec="seconds"),
        "to": until.isoformat(timespec="seconds"),
        "store": store.describe(),
        "currency": currencies[0] if len(currencies) == 1 else (currencies or None),
        "all": kpis(records),
        **{name: {key: kpis(rs) for key, rs in sorted(group.items())} for name, group in groups.items()},
    }


def format_report(data: dict) -> str:
    """The report as a table, one row per group."""
    currency = data["currency"] if isinstance(data["currency"], str) else ""

    def cell(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [f"d2v report: jobs that ended {data['from']} .. {data['to']} ({data['since']}), {data['store']}",
             f"{'':24} {'jobs':>7} {'videos':>7} {'success':>8} {'rejected':>8} {'stopped':>7} {'median s':>9} "
             f"{'p95 s':>8} {'cost/video':>11} {currency}".rstrip()]

    def row(label: str, k: dict) -> str:
        rate = "-" if k["success_rate"] is None else f"{100 * k['success_rate']:.1f}%"
        return (f"{label:24} {k['jobs']:>7} {k['videos']:>7} {rate:>8} {k['rejected']:>8} {k['stopped']:>7} "
                f"{cell(k['median_s'], '.2f'):>9} {cell(k['p95_s'], '.2f'):>8} {cell(k['cost_per_video'], '.6f'):>11}")

    lines.append(row("all", data["all"]))
    for title, label in (("backends", "backend "), ("effects", "effect "), ("backend_effects", "")):
        for key, k in data[title].items():
            lines.append(row(f"  {label}{key}", k))
    if not data["all"]["jobs"]:
        lines.append("no job ended in this span")
    return "\n".join(lines)
