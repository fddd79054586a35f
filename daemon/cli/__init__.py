"""The subcommands of `mnpctl` (see daemon/ctl.py for how one is added), and what they share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

# What `ArgumentParser.add_subparsers()` returns; argparse does not export the class under a public name, and it
# is generic only for the type checker.
if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction
