"""JSON Schemas (YAML) for the config and the device inventory; installed as ``slimlab.schemas``."""
