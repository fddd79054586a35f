"""The daemon's Prometheus metrics, on a registry of their own (so tests can build many daemons in one process).

mnp_sync_duration_seconds{kind="full"|"incremental"}   one controller sync: drain, compile, apply
mnp_programming_latency_seconds                         a change seen by a source → its rules programmed
mnp_managed_interfaces{state=...}                       local interfaces by state (programmed, pending, …)
mnp_managed_pods                                        pods with at least one programmed interface
mnp_nft_transactions_total{result="ok"|"error"}         nft transactions run (a no-op sync runs none)
mnp_apply_errors_total                                  failed transactions and conntrack cleanups
mnp_conntrack_deletions_total                           conntrack entry groups deleted after a withdrawal
mnp_tamper_repairs_total                                interface tables found removed or edited, restored
mnp_invalid_policies                                    MultiNetworkPolicies with validation problems
mnp_source_synced{source=...}                           1 once a source has completed its first list
mnp_source_problems{source=...}                         what a source cannot use: broken manifest files, garbled
                                                        API answers (each also logged and in `mnpctl status`)
mnp_object_problems{kind="Pod"|"NetworkAttachmentDefinition"|"Namespace"}   API objects with parts mnpd cannot
                                                        read (a garbled network-status, a NAD config that is no JSON
                                                        object, labels that are no map of string to string)
mnp_state_entry_problems{kind="unreadable"|"netns_unchecked"}   state-dir files that are no usable entry, and
                                                        entries whose netns path cannot be checked (kept)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

INTERFACE_STATES = ("programmed", "pending", "failed", "terminated", "gone")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sync_duration = Histogram(
            "mnp_sync_duration_seconds", "Duration of one controller sync.", ["kind"], registry=r
        )
        self.programming_latency = Histogram(
            "mnp_programming_latency_seconds",
            "Time from a change seen by a source to the affected interface's rules being programmed.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.interfaces = Gauge("mnp_managed_interfaces", "Local pod interfaces by state.", ["state"], registry=r)
        self.pods = Gauge("mnp_managed_pods", "Pods with at least one programmed interface.", registry=r)
        self.transactions = Counter("mnp_nft_transactions", "nft transactions run.", ["result"], registry=r)
        self.apply_errors = Counter("mnp_apply_errors", "Failed transactions and conntrack cleanups.", registry=r)
        self.conntrack_deletions = Counter(
            "mnp_conntrack_deletions", "Groups of conntrack entries deleted after a withdrawal.", registry=r
        )
        self.tamper_repairs = Counter(
            "mnp_tamper_repairs",
            "Interface tables the periodic resync found removed or edited in the pod netns and restored.",
            registry=r,
        )
        self.invalid_policies = Gauge(
            "mnp_invalid_policies", "MultiNetworkPolicies with validation problems.", registry=r
        )
        self.source_synced = Gauge(
            "mnp_source_synced", "1 once a source completed its first list.", ["source"], registry=r
        )
        self.source_problems = Gauge(
            "mnp_source_problems",
            "Problems a source currently has with its input (broken manifest files, garbled API answers).",
            ["source"],
            registry=r,
        )
        self.object_problems = Gauge(
            "mnp_object_problems",
            "Objects from the API with parts mnpd cannot read (left out, fail closed), by kind.",
            ["kind"],
            registry=r,
        )
        self.state_entry_problems = Gauge(
            "mnp_state_entry_problems",
            "State-dir files that are not a usable entry (unreadable), and entries whose netns cannot be checked.",
            ["kind"],
            registry=r,
        )
        self.unguarded = Gauge(
            "mnp_unguarded_interfaces",
            "Local pod interfaces a policy selects that mnp neither chains nor adopts, by reason.",
            ["reason"],
            registry=r,
        )
        for state in INTERFACE_STATES:
            self.interfaces.labels(state).set(0)
        for result in ("ok", "error"):
            self.transactions.labels(result)
        for kind in ("unreadable", "netns_unchecked"):
            self.state_entry_problems.labels(kind).set(0)
        for kind in ("Pod", "NetworkAttachmentDefinition", "Namespace"):
            self.object_problems.labels(kind).set(0)

    def set_interface_states(self, counts: Mapping[str, int]) -> None:
        for state in INTERFACE_STATES:
            self.interfaces.labels(state).set(counts.get(state, 0))

    def set_sources(self, status: Mapping[str, bool], problems: Mapping[str, Sequence[str]] | None = None) -> None:
        for name, synced in status.items():
            self.source_synced.labels(name).set(1 if synced else 0)
        for name, found in (problems or {}).items():
            self.source_problems.labels(name).set(len(found))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
