"""The CNI error a plugin call ends with: a well-known code, a short message and details.

A CNI plugin reports failure by printing `{"cniVersion", "code", "msg", "details"}` on stdout and exiting non-zero
(SPEC.md "Error"); the runtime (libcni) decodes that JSON, so every failure of the `mnp` plugin — a bad variable,
bad JSON, an nft refusal — must end as one `CNIError` with the right code. Codes 0–99 are the spec's (plus libcni's
8 and 999); 100 and up are free for plugins, and mnp uses two, `CHECK_FAILED` and `INTERFACE_MISSING`.

Which code for which failure (decided here, tested in tests/unit/test_cni_skel.py):

| code | name                 | mnp raises it when                                                               |
|------|----------------------|----------------------------------------------------------------------------------|
| 1    | INCOMPATIBLE_VERSION | cniVersion (of the config or prevResult) is missing or not one mnp speaks;       |
|      |                      | CHECK below 0.4.0, GC/STATUS below 1.1.0 (libcni skel does the same)             |
| 4    | INVALID_ENV          | a required CNI_* variable is missing or malformed (CNI_COMMAND, CNI_CONTAINERID, |
|      |                      | CNI_IFNAME, CNI_NETNS, CNI_PATH, CNI_ARGS), or any of them is not valid UTF-8    |
| 5    | IO_FAILURE           | the state dir cannot be created, locked or written                               |
| 6    | DECODING_FAILURE     | stdin is not UTF-8 JSON                                                          |
| 7    | INVALID_CONFIG       | the JSON is well-formed but a field has the wrong type or value (a path that no  |
|      |                      | file can have included); no prevResult on ADD; no valid-attachments on GC        |
| 8    | INVALID_NETNS        | CNI_NETNS is the plugin's own netns (refused before anything is touched), does   |
|      |                      | not exist on ADD/CHECK, or — on ADD, CHECK and DEL, before nft — is no network   |
|      |                      | namespace the plugin can use (EACCES, `/proc/self/ns/mnt`, a directory, FIFO,    |
|      |                      | device, a file with content). Not 3 ("unknown container"): 3 tells the runtime   |
|      |                      | no cleanup is needed, but the plugins before mnp (IPAM) still need their DEL.    |
|      |                      | Not 4: the variable is well-formed; what it names is the problem (libcni's       |
|      |                      | ErrInvalidNetNS).                                                                |
| 11   | TRY_AGAIN_LATER      | nft reported "Device or resource busy"                                           |
| 50   | NOT_AVAILABLE        | STATUS: nft cannot run or the state dir is not writable, so an ADD would fail.   |
|      |                      | Never 51 ("existing containers may have limited connectivity"): the tables of    |
|      |                      | running pods live in their kernels and are unaffected by either problem.         |
| 100  | CHECK_FAILED         | CHECK: the table or the state entry is not what ADD left                         |
| 101  | INTERFACE_MISSING    | ADD, CHECK: CNI_IFNAME names no interface inside the pod netns (the plugin       |
|      |                      | before mnp did not create it under that name, or it was removed or renamed).     |
|      |                      | mnp closes an interface by its index, so it cannot close what is not there. No   |
|      |                      | spec code says this: not 3 (the runtime would skip the DEL the plugins before    |
|      |                      | mnp need), not 4 (the variable is well-formed; what it names is missing), not 7  |
|      |                      | (the configuration may be valid; the netns is not as the chain should have left  |
|      |                      | it), not 11 (trying again finds the same netns).                                 |
| 999  | INTERNAL             | nft refused the transaction for any other reason; any unexpected exception.      |
|      |                      | Never for bad input (tests/unit/test_hostile_cni.py holds the plugin to that).   |
"""

from __future__ import annotations

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
CHECK_FAILED = 100
INTERFACE_MISSING = 101
INTERNAL = 999


class CNIError(Exception):
    """A failure to report to the runtime as the CNI error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg} ({details})" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.cni_version: str | None = None  # the config's version, when it was known at the failure

    def to_dict(self, cni_version: str) -> dict[str, object]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}
