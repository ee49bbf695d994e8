"""The device lab: inventory, transports, runners and benchmark records."""
