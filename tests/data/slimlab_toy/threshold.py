"""prune.threshold: zero every weight whose magnitude is below a threshold."""

import numpy as np
from pydantic import Field

from slimlab.api import Stage, StageParams, hookimpl


class ThresholdParams(StageParams):
    threshold: float = Field(0.01, ge=0, description="weights with |w| below this become 0")


def prune_threshold(artifact, params: ThresholdParams, ctx):
    """Zero small weights; the sidecar's zero_fraction shows how many."""
    model = artifact.model
    model.set_weights([np.where(np.abs(w) < params.threshold, 0, w) for w in model.get_weights()])
    return model


@hookimpl
def register_stages(register):
    register(Stage("prune.threshold", prune_threshold, ThresholdParams, inputs=("keras",), output="keras"))
