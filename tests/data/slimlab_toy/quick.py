"""quick: the built-in python runner without a warm-up."""

from slimlab.api import PythonRunner, hookimpl


class QuickRunner(PythonRunner):
    name = "quick"

    def measure(self, artifact, threads, settings):
        return super().measure(artifact, threads, {**settings, "warmup": 0})


@hookimpl
def register_runners(register):
    register(QuickRunner)
