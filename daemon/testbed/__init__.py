"""The test bed: real network namespaces, links, traffic servers and probes, and a libcni-exact CNI runtime.

Not part of the enforcer: mnpd and the plugin never import it. `mnpctl lab` builds its throwaway node with it and
the test suite uses the very same code, so what the lab reports and what the tests assert come from one place.

* `netns` — named netns (`NetNS`), a "node" netns owning the masters (`Node`), servers, probes, leak checks.
* `agent` — the program the servers and probes run in a child process that entered the target netns
  (`python -m daemon.testbed.agent`).
* `cniruntime` — runs a NAD's conflist like libcni (ADD/DEL/CHECK with prevResult chaining and the cache).

The container image leaves this package out (packaging/Containerfile, packaging/container/containerignore).
"""
