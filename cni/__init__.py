"""The `mnp` chained CNI plugin: closes a pod's secondary interface from its first packet (see cni/plugin.py).

Imports here stay minimal: this package is frozen into the `mnp` binary that runs on every pod ADD.
"""

__version__ = "0.1.0"  # kept equal to pyproject's version (tests/unit/test_cni_plugin.py checks)

# The CNI spec versions the plugin speaks (prevResult exists from 0.3.0; GC and STATUS from 1.1.0).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
