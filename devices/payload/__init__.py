"""The scripts slimlab pushes to a device. They import nothing from slimlab."""
