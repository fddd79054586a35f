"""The exit statuses of `mnpctl`, one set for every subcommand (see each subcommand's help for what it counts).

* 0 `EXIT_OK` — success: the answer is "yes", every expectation is met.
* 1 `EXIT_FAILED` — the answer is "no": an expectation not met, a pod not programmed, a probe not observed.
* 2 `EXIT_INVALID` — bad input or usage: an unreadable or invalid manifest, probe file or option.
* 3 `EXIT_LAB` — `mnpctl lab` only: the lab could not be built or run (not root, a CNI plugin missing …).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_LAB = 0, 1, 2, 3
