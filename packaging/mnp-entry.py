"""PyInstaller entry point of the frozen `mnp` CNI plugin: exactly what the `mnp` console script runs."""

from cni.__main__ import main

main()
