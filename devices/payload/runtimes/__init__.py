"""One runtime adapter per format, each a module holding ``class Adapter(Runtime)``."""
