"""The prediction `mnpctl matrix` prints and `mnpctl lab` checks real packets against: probes → verdicts.

A probe file (or the default probe set) is loaded with `load_probes`; each probe is resolved to its two
endpoints on one secondary network (`shared.probes.resolve`) and decided by the reference evaluator
(`shared.evaluate`), which names the deciding policy and rule or says why an endpoint is not isolated. The result
is a `Record` per probe. Pure apart from reading the probe file: no cluster, no root, no network access.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.evaluate import evaluate
from shared.manifests import PROBES_FILE
from shared.model import Cluster
from shared.probes import Probe, ResolvedProbe, default_probes, parse_probes, resolve


@dataclass(frozen=True)
class Record:
    """One probe and its verdict. `allowed` None: the probe could not be answered (`reason` says why)."""

    probe: Probe
    network: str | None
    allowed: bool | None
    reason: str

    @property
    def met(self) -> bool | None:
        """Whether the verdict is the expected one; None when the probe states no expectation."""
        if self.probe.expect is None:
            return None
        return self.allowed is not None and self.allowed == self.probe.expect

    @property
    def verdict(self) -> str:
        """allow, deny, or error (the probe could not be answered)."""
        return "error" if self.allowed is None else ("allow" if self.allowed else "deny")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "from": self.probe.source,
            "to": self.probe.target,
            "port": self.probe.port,
            "protocol": self.probe.protocol,
            "network": self.network,
            "allowed": self.allowed,
            "reason": self.reason,
        }
        if self.probe.expect is not None:
            out["expected"] = "allow" if self.probe.expect else "deny"
        return out


def evaluate_probe(cluster: Cluster, probe: Probe) -> Record:
    resolved = resolve(cluster, probe)
    if not isinstance(resolved, ResolvedProbe):
        return Record(probe, probe.network, None, resolved)
    verdict = evaluate(
        cluster, resolved.network, resolved.source.address, resolved.target.address, probe.protocol, probe.port
    )
    return Record(probe, resolved.network, verdict.allowed, verdict.reason)


def evaluate_probes(cluster: Cluster, probes: Iterable[Probe]) -> list[Record]:
    return [evaluate_probe(cluster, probe) for probe in probes]


def load_probes(directory: Path, file: Path | None, cluster: Cluster) -> tuple[list[Probe], list[str], str]:
    """The probes to ask, the problems of the probe file (each naming the file), and where they came from."""
    path = file if file is not None else directory / PROBES_FILE
    if file is None and not path.is_file():
        return default_probes(cluster), [], "every pod pair sharing a network × the destination's containerPorts"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror or exc}"], str(path)
    except UnicodeDecodeError as exc:
        return [], [f"{path}: cannot read: not UTF-8 text ({exc.reason})"], str(path)
    except yaml.YAMLError as exc:
        return [], [f"{path}: not valid YAML: {exc}"], str(path)
    probes, problems = parse_probes(raw, str(path))
    return probes, problems, str(path)
