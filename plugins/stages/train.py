"""train: build a registered architecture and train it. The source stage of every recipe."""

from pydantic import Field, model_validator

from slimlab import hookimpl
from slimlab.kit.training import architecture, build_model, compile_and_fit
from slimlab.stages import Stage, StageParams


class TrainParams(StageParams):
    model: str = "cnn"
    model_params: dict = Field(default_factory=dict, description="keyword arguments of the model builder")
    epochs: int = Field(5, ge=1, le=10000)
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="initial weights and shuffling; default: "
                             "dataset.seed. Recipes that differ only here measure run-to-run spread")

    @model_validator(mode="after")
    def _model_exists(self):
        architecture(self.model).check(self.model_params)
        return self


def train(_, params: TrainParams, ctx):
    """Train a registered architecture from scratch on the train split."""
    seed = ctx.seed if params.seed is None else params.seed
    model = build_model(params.model, params.model_params, ctx.splits, seed)
    history = compile_and_fit(
        model, ctx.splits,
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate, seed=seed,
    )
    ctx.record(history=history)
    return model


@hookimpl
def register_stages(register):
    register(Stage("train", train, TrainParams, inputs=(), output="keras",
                   uses=lambda params: [architecture(params.model).build]))
