"""The `mnp` chained CNI plugin: closes a pod's secondary interface from its first packet (see cni/plugin.py).

Imports here stay minimal: this package is frozen into the `mnp` binary that runs on every pod ADD.
"""

from shared.version import VERSION as __version__  # the one version source (shared/version.py)

__all__ = ["LATEST_VERSION", "SUPPORTED_VERSIONS", "__version__"]

# The CNI spec versions the plugin speaks (prevResult exists from 0.3.0; GC and STATUS from 1.1.0).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
