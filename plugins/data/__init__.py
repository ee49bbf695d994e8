"""Data set plugins: one module per data set, with its params."""
