"""Lab plugins: transports, runners and energy probes, each with the Settings of its inventory block."""
