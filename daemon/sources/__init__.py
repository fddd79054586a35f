"""Where the daemon learns about the world: the Kubernetes API or a manifests directory, and the CNI state dir.

Every source only writes parsed objects into `daemon.store.Store` and reports when its first complete view is in;
none of them programs anything (daemon/controller.py does, on the runner's thread).
"""
