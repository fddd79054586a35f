"""One lab session, start to end: plan → build → wait until programmed → probe → report → tear down (or keep).

`run_lab` is what `mnpctl lab` runs (daemon/lab/cli.py only parses the command line, so that every other `mnpctl`
command starts without loading any of this) and what the end-to-end tests call in-process. Its exit statuses are
documented in daemon/lab/cli.py and docs/lab.md.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from daemon.cli.exitcodes import EXIT_FAILED, EXIT_INVALID, EXIT_LAB, EXIT_OK
from daemon.cli.output import use_colour
from daemon.lab import build as nodes
from daemon.lab import enforcer as enforcers
from daemon.lab.build import DEFAULT_CNI_DIRS, NODE_NAME, PREFIX, WORK_ROOT, Lab, LabError
from daemon.lab.observe import (
    NOT_RUN,
    Observation,
    Summary,
    listeners,
    observe,
    predict,
    render_table,
    summarise,
    write_json,
)
from daemon.lab.plan import LabPaths, plan
from daemon.testbed.cniruntime import CniFailure
from daemon.testbed.netns import NetnsError, Proto
from shared.predict import load_probes
from shared.probes import ResolvedProbe

TOOLS = ("ip", "nft", "nsenter")


@dataclass
class LabRun:
    """Everything a run found out; `status` is the exit status."""

    status: int
    observations: list[Observation] = field(default_factory=list)
    summary: Summary | None = None
    enforcer: str = ""
    plugin: str = ""
    workdir: Path | None = None
    programmed_s: float | None = None
    problems: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: build, pods, listeners, …
    netns: list[str] = field(default_factory=list)  # every namespace the lab created
    pids: list[int] = field(default_factory=list)  # every process the lab started that outlives a call (mnpd, servers)


def preflight() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "mnpctl lab needs root (it creates network namespaces and runs CNI plugins)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"mnpctl lab needs {', '.join(missing)} (packaging/install.sh installs them)"
    return None


def run_lab(
    directory: Path,
    probes_file: Path | None = None,
    *,
    as_json: bool = False,
    keep: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    prefix: str = PREFIX,
    plugin: str | None = None,
    cni_dirs: Sequence[Path] = DEFAULT_CNI_DIRS,
    program_timeout: float = enforcers.PROGRAM_TIMEOUT,
    shield: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    colour: bool | None = None,
) -> LabRun:
    """The whole lab: plan, build, wait, probe, report, tear down (or keep). Never leaves anything behind unless
    `keep`; `shield()` wraps the teardown (the CLI ignores Ctrl-C there)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def say(message: str) -> None:
        # progress must never stop a teardown: a closed stderr (`… 2>&1 | head`) is not an error of the lab
        with contextlib.suppress(OSError, ValueError):
            print(f"lab: {message}", file=err, flush=True)

    why = preflight()
    if why:
        print(why, file=err)
        return LabRun(EXIT_LAB)

    # -------------------------------------------------------------- plan (no side effects)
    workdir = WORK_ROOT / f"{prefix}{os.getpid()}-{os.urandom(2).hex()}"
    paths = LabPaths(workdir)
    the_plan = plan(directory, paths)
    probes, probe_problems, origin = load_probes(directory, probes_file, the_plan.manifests.cluster)
    errors = list(the_plan.errors) + [f"error: {p}" for p in probe_problems]
    known = {p.key for p in the_plan.manifests.cluster.pods}
    for probe in probes:
        for end in (probe.source, probe.target):
            if not _is_address(end) and (end if "/" in end else f"default/{end}") not in known:
                errors.append(f"error: probe {probe.source} -> {probe.target}: {end!r} is no Pod of {directory}")
    for warning in the_plan.warnings:
        print(warning, file=err)
    for problem in the_plan.invalid:
        print(problem, file=err)
    if errors:
        for error in errors:
            print(error, file=err)
        print(f"invalid input: {len(errors)} error(s); nothing was built", file=err)
        return LabRun(EXIT_INVALID)
    try:
        plugin_path, plugin_how = nodes.find_plugin(plugin)
    except LabError as exc:
        print(exc, file=err)
        return LabRun(EXIT_LAB)

    # -------------------------------------------------------------- build, program, probe
    run = LabRun(EXIT_LAB, plugin=f"{plugin_path} ({plugin_how})", workdir=workdir)
    enforcer = enforcers.Mnpd(paths, NODE_NAME, linger=keep)
    run.enforcer = enforcer.description
    lab: Lab | None = None
    interrupted = False
    clock = [time.monotonic()]

    def phase(name: str) -> float:
        now = time.monotonic()
        run.timings[name] = now - clock[0]
        clock[0] = now
        return run.timings[name]

    try:
        nodes.create_workdir(paths)
        lab = Lab(the_plan, paths, plugin_path, cni_dirs=cni_dirs, prefix=prefix, log=say, linger=keep)
        say(f"{directory} on a throwaway node; work dir {workdir}")
        say(f"plugin: {run.plugin}")
        stale = nodes.stale_frozen_plugin(plugin_path)
        if stale:
            say(f"WARNING: {stale}")
        lab.build_node()
        lab.write_cluster_manifests()
        early = [p for p in the_plan.pods if p.before_mnpd]
        if early:  # pods that existed before the daemon (annotated; mnpd must adopt them at its first sync)
            lab.add_pods(early)
            say(f"{len(early)} pods attached before {enforcer.name} starts")
        enforcer.start()
        if enforcer.pid:
            lab.add_process("mnpd", enforcer.pid)
        phase("build")
        added = lab.add_pods([p for p in the_plan.pods if not p.before_mnpd])
        say(f"{len(added)} pods attached through their CNI chains in {phase('pods'):.2f} s")

        cluster = lab.runtime_cluster()
        if probes_file is None and not (directory / "probes.yaml").is_file():
            probes, _, origin = load_probes(directory, None, cluster)  # the default probes need the addresses
        observations = predict(cluster, probes)
        for o in observations:
            if o.resolved is None:
                continue
            for endpoint in (o.resolved.source, o.resolved.target):
                if endpoint.pod is None:
                    lab.add_host(endpoint.address, o.resolved.network)
        if lab.hosts:
            say(f"hosts outside the cluster: {', '.join(f'{h.address} on {h.network}' for h in lab.hosts.values())}")
        wanted = listeners(observations)
        for key, pod in lab.pods.items():
            for cp in pod.plan.pod.container_ports:
                if cp.protocol in ("TCP", "UDP"):
                    proto: Proto = "tcp" if cp.protocol == "TCP" else "udp"
                    wanted.setdefault(key, []).append((proto, cp.port))
        lab.start_listeners(wanted)
        phase("listeners")

        programmed = enforcer.wait(enforcers.targets(lab, cluster), program_timeout)
        run.programmed_s = phase("programmed")
        if programmed.ok:
            say(f"{enforcer.name}: every interface programmed (waited {programmed.seconds:.2f} s)")
        for problem in programmed.missing:
            say(f"WARNING: {problem}")
            run.problems.append(problem)

        def netns_of(resolved: ResolvedProbe, source: bool) -> str:
            end = resolved.source if source else resolved.target
            if end.pod is not None:
                return lab.pods[end.pod.key].ns.path if lab else ""
            return lab.hosts[(resolved.network, str(end.address))].ns.path if lab else ""

        say(f"probing ({len(observations)} probes: {origin})")
        run.observations = observe(observations, netns_of)
        phase("probes")
        run.summary = summarise(run.observations)
        if as_json:
            write_json(run.observations, out)
        elif run.observations:
            out.write(render_table(run.observations, use_colour(out) if colour is None else colour))
        else:
            out.write(f"no probes ({origin})\n")
        if not as_json:
            out.write(f"{run.summary}; enforced by {enforcer.description}\n")
        out.flush()
        changed = enforcers.unprogrammed([t for t in enforcers.targets(lab, cluster) if t.recorded])
        for t, why in changed:
            problem = f"{t.label}: not as compiled after the probes ({why}); observations may be inconsistent"
            say(f"WARNING: {problem}")
            run.problems.append(problem)
        if the_plan.invalid:
            print(
                f"invalid input: {len(the_plan.invalid)} error(s); the lab ran with them (invalid policies "
                "fail closed)",
                file=err,
            )
        if any(o.outcome == NOT_RUN for o in run.observations) or the_plan.invalid:
            run.status = EXIT_INVALID
        else:
            run.status = EXIT_OK if run.summary.ok and not changed else EXIT_FAILED
    except BrokenPipeError:
        raise  # the reader of our output went away (`| head`): tear down, then let mnpctl end quietly
    except (LabError, NetnsError, CniFailure, OSError) as exc:
        say(f"failed: {exc}")
        run.problems.append(str(exc))
        run.status = EXIT_LAB
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted")
        run.status = 130
    finally:
        if lab is not None:
            run.netns = [ns.name for ns in lab.namespaces()]
            run.pids = [s.pid for s in lab.servers() if s.pid] + ([enforcer.pid] if enforcer.pid else [])
        with shield():
            if keep and lab is not None:
                enforcer.release()
                lab.release()
                with contextlib.suppress(OSError, ValueError):
                    _print_kept(lab, enforcer, err)
            else:
                if lab is not None and not interrupted:
                    say("tearing down")
                enforcer.stop()
                if lab is not None:
                    for problem in lab.teardown():
                        say(f"teardown: {problem}")
                else:
                    shutil.rmtree(workdir, ignore_errors=True)
                phase("teardown")
    return run


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _print_kept(lab: Lab, enforcer: enforcers.Mnpd, err: TextIO) -> None:
    node = lab.node.ns.name if lab.node else "?"
    lines = [
        f"lab kept in {lab.paths.workdir}" + (f"; {enforcer.description} keeps running" if enforcer.pid else ""),
        f"  node netns      {node}   (ip -n {node} link)",
    ]
    for key, pod in sorted(lab.pods.items()):
        lines.append(f"  pod {key:<24} ip netns exec {pod.ns.name} nft list table inet mnp")
    for host in lab.hosts.values():
        lines.append(f"  outside host {host.label:<15} ip netns exec {host.ns.name} ip addr")
    lines += [
        f"  manifests       {lab.paths.manifests} (edit them: mnpd reprograms)",
        f"  logs            {lab.paths.daemon_log}, {lab.paths.plugin_log}",
        f"  remove it with  mnpctl lab --down {lab.paths.workdir}",
    ]
    print("\n".join(lines), file=err)
