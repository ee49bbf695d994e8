"""Devices without hardware: SSH boards in network namespaces and the emulated arm64 board (``slimlab board
up``), for trying the lab and for its tests. The ADB device that speaks the wire protocol is a test peer,
outside the package: ``labpeers/`` at the checkout's root."""
