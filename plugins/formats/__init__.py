"""Format plugins: one module per model format, with its convert stage and runtime options."""
