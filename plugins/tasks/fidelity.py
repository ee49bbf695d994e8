"""fidelity: no labels; a model is scored only by how closely it reproduces the source model.

Every artifact gets per-output fidelity against the recipe's source model anyway (SNR in dB, cosine similarity
and the largest absolute difference relative to the reference's range), whatever the task. Choosing this task
means: the data has no labels (or none worth scoring), so fidelity is the score. Reads: every output. Params:
none. Labels: not used. Metrics: none of its own; ``snr_db`` is the headline.
"""

from slimlab import hookimpl
from slimlab.tasks import Task


class Fidelity(Task):
    """Scores by fidelity to the source model only: reads every output, needs no labels."""

    name = "fidelity"
    needs_labels = False
    stratify = False
    better = {"snr_db": "higher", "cosine": "higher", "max_abs_diff_rel": "lower"}
    headline = "snr_db"

    def reads(self, params, outputs):
        """Every output."""
        return [spec.name for spec in outputs]

    def labels(self, params, y, what):
        """The labels unchanged: this task does not use them."""
        return y

    def metrics(self, params, outputs, labels):
        """Nothing beyond the fidelity every model gets."""
        return {}


@hookimpl
def register_tasks(register):
    register(Fidelity())
