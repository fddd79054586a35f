"""The parts of the official Kubernetes client mnpd uses, imported without the packages' eager `__init__`s.

mnpd needs `kubernetes.client` (lazy by itself: `ApiClient`, `Configuration`, `ApiException`) and one loader of
`kubernetes.config`. But `import kubernetes` runs the client's top-level `__init__`, which imports `config`,
`dynamic`, `watch`, `stream`, `utils`, `leaderelection` and `informer` (websocket-client, jsonschema through
kubernetes-validate, …), and `kubernetes.config`'s `__init__` imports the kubeconfig loader (requests,
requests-oauthlib, oauthlib, PyYAML) even in a pod that only reads its service account. Registering both packages
bare (`bare_package`) before the first import skips that: 9.6 MB less resident memory for mnpd in a cluster
(in-cluster config), 4.2 MB with a kubeconfig (docs/benchmarks.md, Scale). The modules themselves are the
client's own, imported the ordinary way; a process that imported `kubernetes` before (tests, another tool) keeps
the real packages.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def bare_package(name: str) -> None:
    """Register package `name` without running its `__init__`: importing one of its modules then imports that
    module (and what it imports) only. A no-op when `name` is already imported, not installed, or no package."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return
    sys.modules[name] = importlib.util.module_from_spec(spec)


bare_package("kubernetes")
bare_package("kubernetes.config")

from kubernetes import client as k8s  # noqa: E402  (after bare_package, on purpose)
from kubernetes.client.exceptions import ApiException  # noqa: E402

__all__ = ["ApiException", "api_client", "bare_package", "k8s"]


def api_client(kubeconfig: str | None) -> Any:
    """An ApiClient from a kubeconfig file, or the in-cluster service account (only that loader is imported)."""
    configuration = k8s.Configuration()
    if kubeconfig:
        from kubernetes.config.kube_config import load_kube_config

        load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        from kubernetes.config.incluster_config import load_incluster_config

        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s.ApiClient(configuration)
