"""PyInstaller entry point of the frozen `mnp` CNI plugin: exactly what the `mnp` console script runs.

With the cyclic garbage collector off: the plugin runs for milliseconds and exits with `os._exit` (cni/__main__.py),
so a collection — which the allocations of its imports trigger, each one walking every object the interpreter
holds — is CPU spent on nothing (docs/benchmarks.md, CNI ADD). Reference counting still frees what it allocates.
"""

import gc

gc.disable()

from cni.__main__ import main  # noqa: E402  (after gc.disable: the imports are what allocates)

main()
