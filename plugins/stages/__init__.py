"""Stage plugins: one module per compression technique. Copy one to start your own."""
