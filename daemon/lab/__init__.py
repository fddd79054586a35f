"""`mnpctl lab`: a throwaway node built from manifests, with real CNI plugins, the real `mnp` plugin and `mnpd`,
and real packets compared with `mnpctl matrix`'s prediction.

Modules, in the order a run uses them:

* `plan` — pure: manifests → what to build (masters, pods and their CNI attachments, outside hosts, listeners).
* the test bed (daemon/testbed/: namespaces, links, servers, probes, the libcni-exact CNI runtime) — shared
  with the test suite.
* `build` — builds the plan for real in `mnplab-` namespaces, as Multus and a kubelet would, and tears it down.
* `enforcer` — runs `mnpd` on the lab and waits until every pod is programmed.
* `observe` — probes in parallel, compares with the prediction, renders the matrix.
* `session` — one run from start to end (`run_lab`), as `mnpctl lab` and the end-to-end tests use it.
* `cli` — the `mnpctl lab` subcommand (command line only; imports the rest when a lab runs).

The prediction it checks is shared/predict.py, the same `mnpctl matrix` prints. The container image keeps only
`cli` of this package (packaging/Containerfile), so `mnpctl lab` there says the lab is not installed.
"""
