"""The version of mnp: the one place it is written.

Everything else reads it from here — the package metadata (pyproject's dynamic `version`), `mnpd --version`,
`mnpctl --version`, the plugin's VERSION answer (`mnpVersion`) and its log lines (`mnp=`), the state entries the
plugin writes, mnpd's status file, the image's `org.opencontainers.image.version` label and tag, the manifests'
image tag and packaging/release.sh. tests/unit/test_version.py checks that they all agree. Kept free of imports:
the frozen plugin reads it on every call.
"""

VERSION = "0.1.0"
