"""slimlab's built-in plugins, one module per plugin. Copy one to start your own."""
