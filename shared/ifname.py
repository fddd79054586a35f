"""The one rule for an interface name that mnp accepts: CNI_IFNAME at the plugin, `ifname` in a state entry at
the daemon, and every name the renderer writes into an nft transaction.

The kernel's rule (dev_valid_name, net/core/dev.c; libcni's ValidateInterfaceName is the same): 1 to 15 bytes
(IFNAMSIZ 16 with the NUL), not `.` or `..`, no `/`, `:` or whitespace. mnp is stricter, because the name is
written into nft text as a double-quoted string and nft 1.0.6's quoted strings have no escape for their own
delimiter (its scanner reads `"[^"]*"`): a name holding `"` could end the string and write its own commands —
`z" : accept }` and a newline are a whole rule. So mnp accepts printable ASCII only (0x21–0x7E), and refuses
besides the kernel's `/` and `:`:

* `"`: it would end the quoted string;
* `\\`: nft reads `\\*` inside a quoted interface name as `*` (checked with nft 1.0.6), so the name written
  would not be the name matched;
* `*`: a trailing `*` in an interface name is a wildcard to nft (`"net*"` matches every `net…`);
* `$`: nft expands `$name` inside some quoted strings (a log prefix), and the name is written into comments
  and log prefixes too.

Everything outside printable ASCII is refused: control bytes (the kernel's whitespace includes \\x0b, \\x0c and,
in its Latin-1 ctype table, \\xa0) and non-ASCII names, which no CNI runtime hands out. A refused name is a clear
error where it enters — code 4 at the plugin, a reported unreadable entry at the daemon — never a quiet rewrite.
"""

from __future__ import annotations

IFNAMSIZ = 16  # the kernel's buffer, NUL included: names are at most 15 bytes
_REFUSED = frozenset('/:"\\*$')


class InvalidInterfaceName(ValueError):
    """A name that the kernel or mnp's quoting would not take as an interface name."""


def ifname_problem(name: object) -> str | None:
    """Why `name` is not an interface name mnp accepts, or None when it is."""
    if not isinstance(name, str):
        return f"not a string ({type(name).__name__})"
    if not name:
        return "empty"
    if len(name.encode("utf-8", "surrogatepass")) >= IFNAMSIZ:
        return f"longer than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return f"{name!r} is not a name"
    for char in name:
        if not "\x21" <= char <= "\x7e":
            return f"holds {char!r}: only printable ASCII without whitespace is accepted"
        if char in _REFUSED:
            return f"holds {char!r} (refused: {' '.join(sorted(_REFUSED))})"
    return None


def check_ifname(name: object) -> str:
    """`name` itself when it is an interface name mnp accepts; InvalidInterfaceName naming the problem else."""
    problem = ifname_problem(name)
    if problem is not None:
        raise InvalidInterfaceName(f"invalid interface name {_excerpt(name)}: {problem}")
    assert isinstance(name, str)
    return name


def _excerpt(name: object) -> str:
    """`name` as a short, printable excerpt for an error message (a hostile name may be long or hold escapes)."""
    text = repr(name)
    return text if len(text) <= 40 else text[:37] + "..."
