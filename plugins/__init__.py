"""slimlab's built-in plugins, grouped by kind: stages, formats, lab, data, models.

Each module is one plugin, registered through the same hooks as a third-party one.
Copy one to start your own.
"""
