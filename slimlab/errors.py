"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class SlimlabError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(SlimlabError):
    """The config, a recipe, a stage's params or the device inventory is invalid."""


class PluginError(SlimlabError):
    """A plugin failed to load or registered something invalid."""


class ArtifactError(SlimlabError):
    """A model file or its sidecar is missing, truncated or corrupt."""


class DeviceError(SlimlabError):
    """A device could not be reached or a command on it failed."""
