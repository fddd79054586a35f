"""The benchmark suite's one command: runs the parts, prints a table and a JSON summary, and records both with the
machine description in docs/benchmarks.md (between the `bench:results` markers; the rest of the file is left as
it is).

    sudo .venv/bin/python -m tests.bench                      # everything, ~10 minutes on 2 cores
    sudo .venv/bin/python -m tests.bench --parts policy,scale # a selection
    sudo .venv/bin/python -m tests.bench --quick --no-docs    # small sizes: checks that the suite works

Parts (each figure is printed next to its baseline, measured in the same run):

  cni       CNI ADD: frozen `mnp` vs macvlan's own ADD (tests/bench/bench_cni_add.py, run as is)
  policy    policy change → every local pod programmed; one label change; no-op resync (bench_daemon.py)
  podstart  pod start: ADD returned → the pod's chains filled by mnpd (bench_daemon.py)
  packet    packet path with 10,000 allowed peers vs no table vs one rule per peer (bench_packet_path.py)
  scale     mnpd RSS/CPU with 10,000 pods / 1,000 policies; pod events/s kept up with (bench_scale.py)

Needs root (network namespaces, nft), the CNI plugins in /usr/lib/cni (macvlan, static), nft, conntrack, gcc.
Everything created is named `mnpb-…` and removed, pass or fail (a killed run's debris is swept by the next).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from tests.bench.common import PREFIX, ROOT, BenchError, machine

__test__ = False

PARTS = ("cni", "policy", "podstart", "packet", "scale")
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
COMMAND = "sudo .venv/bin/python -m tests.bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench", description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )  # fmt: skip
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, any of {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run, not figures)")
    p.add_argument("--json", type=Path, help="also write the full JSON document here")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--profile-dir", default=None, help="pyinstrument profiles of one policy-change sync and one "
                   "pod-start sync (an extra run each, not counted); default: a directory under /tmp")  # fmt: skip
    g = p.add_argument_group("sizes and repeats")
    g.add_argument("--cni-rounds", type=int, default=25)
    g.add_argument("--pods", type=int, default=5000, help="pods in the API for policy/podstart")
    g.add_argument("--policies", type=int, default=500, help="policies in the API for policy/podstart")
    g.add_argument("--local", type=int, default=110, help="pod interfaces on the node")
    g.add_argument("--repeats", type=int, default=6, help="policy changes measured")
    g.add_argument("--pod-starts", type=int, default=20)
    g.add_argument("--repeats-packet", type=int, default=5)
    g.add_argument("--packet-seconds", type=float, default=2.0)
    g.add_argument("--scale-pods", type=int, default=10000)
    g.add_argument("--scale-policies", type=int, default=1000)
    g.add_argument("--event-rates", default="5,10,25,50,100,200", help="pod events/s offered, in steps")
    g.add_argument("--event-seconds", type=float, default=16.0)
    g.add_argument("--idle-seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.quick:
        args.cni_rounds, args.pods, args.policies, args.local = 5, 1000, 100, 20
        args.repeats, args.pod_starts, args.repeats_packet, args.packet_seconds = 2, 3, 1, 1.0
        args.scale_pods, args.scale_policies, args.event_rates, args.event_seconds = 2000, 200, "50,200", 6.0
        args.idle_seconds = 2.0
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in args.parts if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    # Profiles are extra runs for the docs' analysis; pyinstrument and py-spy are not part of README's setup.
    have = importlib.util.find_spec("pyinstrument") is not None
    if args.profile_dir is None:
        args.profile_dir = tempfile.mkdtemp(prefix=f"{PREFIX}profiles-") if have else ""
    elif args.profile_dir and not have:
        # Asked for explicitly: without pyinstrument every profiled sync failed and the part ran into its timeout.
        p.error("--profile-dir needs pyinstrument: .venv/bin/pip install pyinstrument py-spy")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- part 1


def run_cni(args: argparse.Namespace) -> dict[str, Any]:
    """bench_cni_add.py is its author's; it is run as documented and its JSON read."""
    with tempfile.NamedTemporaryFile(prefix=PREFIX, suffix=".json") as out:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run(
            [sys.executable, "-m", "tests.bench.bench_cni_add", "-n", str(args.cni_rounds), "--json", out.name],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"bench_cni_add failed (rc {done.returncode}): {done.stderr.strip()[-500:]}")
        doc = json.loads(Path(out.name).read_text())
    ratios: dict[str, float] = doc["ratio_add_vs_macvlan"]
    # the headline: the frozen build as on a node, where mnpd's keeper takes the committed socket (bench_cni_add.py)
    name = next((n for n in ratios if "one-dir" in n and n.endswith("+ mnpd")), next(iter(ratios)))
    res = doc["results"]
    mnp, mac = res[name]["ADD"]["median"], res["macvlan"]["ADD"]["median"]
    mnp_cpu, mac_cpu = res[name]["ADD cpu"]["median"], res["macvlan"]["ADD cpu"]["median"]
    rows = [
        {
            "metric": f"CNI ADD wall, {name}", "value": mnp, "unit": "ms",
            "baseline": mac, "baseline_name": "macvlan ADD", "ratio": mnp / mac, "goal": "≤ 2.0 × macvlan",
            "met": mnp / mac <= 2.0,
        },
        {
            "metric": f"CNI ADD CPU, {name}", "value": mnp_cpu, "unit": "ms",
            "baseline": mac_cpu, "baseline_name": "macvlan ADD CPU", "ratio": mnp_cpu / mac_cpu, "goal": "report",
            "met": None,
        },
    ]  # fmt: skip
    alone = name.removesuffix(" + mnpd")  # the same build where no mnpd takes the committed socket
    if alone != name and alone in res:
        wall = res[alone]["ADD"]["median"]
        rows.append(
            {
                "metric": f"CNI ADD wall, {alone}, no mnpd on the node", "value": wall, "unit": "ms",
                "baseline": mac, "baseline_name": "macvlan ADD", "ratio": wall / mac, "goal": "report", "met": None,
            }
        )  # fmt: skip
    return {
        "part": "cni",
        "title": "CNI ADD (tests/bench/bench_cni_add.py; docs: section CNI ADD)",
        "rows": rows,
        "details": {"rounds": doc.get("rounds"), "results": res},
    }


# ----------------------------------------------------------------------------------------------- runner


def run_parts(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from tests.bench import bench_daemon, bench_packet_path, bench_scale
    from tests.bench.node import LabNode

    results: dict[str, dict[str, Any]] = {}

    def attempt(part: str, fn: Any) -> None:
        log(f"[{part}] …")
        t0 = time.monotonic()
        try:
            results[part] = fn()
        except Exception as exc:  # one part's failure must not cost the others; KeyboardInterrupt still ends
            log(f"[{part}] FAILED: {exc}")
            results[part] = {"part": part, "title": part, "rows": [], "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()}  # fmt: skip
        results[part]["seconds"] = round(time.monotonic() - t0, 1)
        log(f"[{part}] done in {results[part]['seconds']} s")

    if "cni" in args.parts:
        attempt("cni", lambda: run_cni(args))
    if "packet" in args.parts:
        attempt("packet", lambda: bench_packet_path.run(args))
    node: LabNode | None = None
    try:
        if {"policy", "podstart", "scale"} & set(args.parts):
            node = LabNode()
        if {"policy", "podstart"} & set(args.parts):
            assert node is not None
            setup: bench_daemon.DaemonSetup | None = None
            try:
                log("[setup] fake API + node + mnpd for policy/podstart …")
                setup = bench_daemon.DaemonSetup(args, node, log)
            except Exception as exc:
                for part in ("policy", "podstart"):
                    if part in args.parts:
                        results[part] = {"part": part, "title": part, "rows": [], "error": f"setup: {exc}"}
            if setup is not None:
                try:
                    if "policy" in args.parts:
                        attempt("policy", lambda: bench_daemon.run_programming(setup, args, log))
                    if "podstart" in args.parts:
                        attempt("podstart", lambda: bench_daemon.run_pod_start(setup, args, log))
                finally:
                    setup.close()
        if "scale" in args.parts:
            attempt("scale", lambda: bench_scale.run(args, node, log))
    finally:
        if node is not None:
            node.close()
    return results


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def table(results: dict[str, dict[str, Any]]) -> str:
    head = "| part | figure | measured | baseline (same run) | ratio | goal | |\n|---|---|---:|---|---:|---|---|\n"
    lines = []
    for part in PARTS:
        r = results.get(part)
        if r is None:
            continue
        if r.get("error"):
            lines.append(f"| {part} | **did not run**: {r['error']} | | | | | |")
            continue
        for row in r["rows"]:
            base = (
                "—" if row.get("baseline") is None else f"{fmt(row['baseline'], row['unit'])} ({row['baseline_name']})"
            )
            ratio = "—" if row.get("ratio") is None else f"{row['ratio']:.2f}"
            met = {True: "met", False: "**missed**", None: ""}[row.get("met")]
            value = fmt(row["value"], row["unit"])
            lines.append(f"| {part} | {row['metric']} | {value} | {base} | {ratio} | {row['goal']} | {met} |")
    return head + "\n".join(lines) + "\n"


def machine_line(m: dict[str, Any], parts: dict[str, Any] | None = None) -> str:
    line = (
        f"{m['nproc']} CPUs (`nproc`), {m['cpu']}, {m['memory_gb']} GB; kernel {m['kernel']}, {m['os']}; "
        f"{m['nft']}; {m['conntrack']}; {m['python']}. Load average at start: {' '.join(m['loadavg_at_start'])}"
    )
    after = [
        f"{name} {p['details']['loadavg_after'][0]}"
        for name, p in (parts or {}).items()
        if (p.get("details") or {}).get("loadavg_after")
    ]
    if after:
        line += "; 1-minute load average after " + ", ".join(after) + " (anything above 2 is other work on the machine)"
    return line + "."


# What of each part's details goes into the docs' JSON summary (stdout and --json get everything).
DOC_DETAILS = {
    "cni": ["rounds"],
    "policy": ["latency_ms", "kinds", "median_breakdown_ms", "nft_floor_ms", "libnftables_floor", "startup"],
    "podstart": ["latency_ms", "median ms after ADD returned (negative: before)", "chain_add_ms_median"],
    "packet": ["connections_per_s", "ratio_to_no_table_per_repeat", "throughput_gbit_s", "outsider_probe"],
    "scale": ["baseline", "scaled", "rss_after_events_mb", "idle_cpu_pct", "markers_alone", "event_steps"],
}


def summary_json(doc: dict[str, Any], brief: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k != "parts"}
    out["parts"] = {}
    for name, part in doc["parts"].items():
        item = {k: v for k, v in part.items() if k not in ("traceback", "details")}
        details = part.get("details") or {}
        keep = [*DOC_DETAILS.get(name, []), "loadavg_after"] if brief else list(details)
        item["details"] = {k: details[k] for k in keep if k in details}
        out["parts"][name] = _rounded(item) if brief else item
    return out


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def compact_json(value: Any, indent: int = 0) -> str:
    """JSON with one line per dict entry, but lists and dicts of plain values kept on one line."""

    def plain(v: Any) -> bool:
        if isinstance(v, dict):
            return all(not isinstance(x, dict | list) for x in v.values())
        if isinstance(v, list):
            return all(not isinstance(x, dict | list) for x in v)
        return True

    if plain(value):
        return json.dumps(value, ensure_ascii=False, default=str)
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {compact_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{compact_json(v, indent + 1)}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


def write_docs(doc: dict[str, Any], text_table: str) -> None:
    body = "\n".join(
        [
            BEGIN,
            f"### Latest run: {doc['date']}",
            "",
            f"`{doc['command']}` — parts: {', '.join(doc['parts'])}; {doc['seconds']:.0f} s.",
            "",
            f"Machine: {machine_line(doc['machine'], doc['parts'])}",
            "",
            text_table,
            "<details><summary>JSON summary of this run</summary>",
            "",
            "```json",
            compact_json(summary_json(doc, brief=True)),
            "```",
            "",
            "</details>",
            END,
        ]
    )
    current = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in current and END in current:
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: body, current, count=1, flags=re.S)
    else:
        new = current.rstrip("\n") + "\n\n## Results of the suite\n\n" + body + "\n"
    tmp = DOC.with_name(f".{DOC.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, DOC)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmarks need root (network namespaces, nft)", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every cleanup

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    doc: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": COMMAND + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""),
        "machine": machine(),
        "quick": args.quick,
    }
    log(f"machine: {machine_line(doc['machine'])}")
    log(
        f"profiles: {args.profile_dir}"
        if args.profile_dir
        else "profiles: none (.venv/bin/pip install pyinstrument py-spy, or --profile-dir DIR, to get them)"
    )
    doc["parts"] = run_parts(args)
    doc["seconds"] = round(time.monotonic() - started, 1)
    doc["profile_dir"] = args.profile_dir
    text = table(doc["parts"])
    print(text)
    print(compact_json(summary_json(doc)))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
    if not args.no_docs and not args.quick:
        write_docs(doc, text)
        log(f"results written to {DOC.relative_to(ROOT)}")
    with contextlib.suppress(Exception):
        from daemon.testbed.netns import leftover_netns

        left = leftover_netns(prefix=PREFIX)
        if left:
            log(f"warning: leftover namespaces {left}")
    return 0 if all(not r.get("error") for r in doc["parts"].values()) else 1
