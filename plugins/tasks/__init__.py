"""Task plugins: one module per kind of model output and how it is scored. Copy one to start your own."""
