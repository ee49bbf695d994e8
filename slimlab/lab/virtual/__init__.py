"""Devices without hardware: SSH boards in network namespaces and an ADB device that speaks the wire
protocol, for trying the lab and for its tests."""
