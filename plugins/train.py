"""train: build a registered architecture and train it. The source stage of every recipe."""

import inspect

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from slimlab import hookimpl, registry
from slimlab.stages import Stage, StageParams
from slimlab.training import compile_and_fit


class TrainParams(StageParams):
    model: str = "cnn"
    model_params: dict = Field(default_factory=dict, description="keyword arguments of the model builder")
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _model_exists(self):
        build = registry.models().get(self.model)
        if build is None:
            raise ValueError(f"unknown model {self.model!r}; registered: {', '.join(sorted(registry.models()))}")
        signature = inspect.signature(build)
        try:
            signature.bind(None, None, **self.model_params)
        except TypeError as exc:
            raise ValueError(f"model_params do not fit model {self.model!r}: {exc}") from None
        for name, value in self.model_params.items():
            annotation = signature.parameters[name].annotation
            if annotation is not inspect.Parameter.empty:
                try:
                    TypeAdapter(annotation).validate_python(value)
                except ValidationError as exc:
                    problem = exc.errors()[0]["msg"]
                    raise ValueError(f"model_params.{name} of model {self.model!r}: {problem}") from None
        return self


def train(_, params: TrainParams, ctx):
    """Train a registered architecture from scratch on the train split."""
    build = registry.models()[params.model]
    model = build(ctx.splits.input_shape, ctx.splits.num_classes, **params.model_params)
    history = compile_and_fit(
        model, ctx.splits,
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate, seed=ctx.seed,
    )
    ctx.record(history=history)
    return model


@hookimpl
def register_stages(register):
    register(Stage("train", train, TrainParams, inputs=(), output="keras"))
