"""distill: knowledge distillation from the input model (the teacher) into a new, smaller student.

The student is a registered model (``student`` + ``student_params``) trained from
scratch on the train split against the teacher's logits. The teacher may be Keras or
TFLite: a quantised teacher's logits come from LiteRT, computed once over the train split.

The loss (see ``slimlab/distillation.py``) is

    w_soft · KL(softmax(t/T) ‖ softmax(s/T)) · T² + w_hard · CE(y, s)
      + w_cos · (1 − cos(h_s, h_t)) + w_hidden · MSE(h_s, h_t)

- ``alpha`` is the simple form: w_soft = alpha, w_hard = 1 − alpha (Hinton et al.).
  Set ``w_soft`` and ``w_hard`` instead for other weightings, e.g. DistilBERT's
  5·Lce + 2·Lhard + 1·Lcos is ``{w_soft: 5, w_hard: 2, w_cos: 1}``.
- ``soft_loss: mse`` replaces the KL term by the MSE between the raw logits (no T).
- ``w_cos`` / ``w_hidden`` > 0 turn on feature matching, which needs a Keras teacher.
  Each of ``student_layers`` (default: the student's weighted layers except the logits)
  gets one of ``teacher_layers`` (default: the same rule on the teacher) by ``mapping``,
  as in TinyBERT: ``uniform`` every k-th teacher layer, ``top`` the last ones, ``bottom``
  the first ones. Where widths differ, a learned projection (1×1 conv for feature maps,
  dense for vectors) maps the student's state to the teacher's width; spatial sizes must
  match. Any named hidden layers work the same way. Attention matching, TinyBERT's other
  term, has no counterpart in a CNN.

The stage returns the plain student; the projections are dropped. The sidecar records
both parameter counts and the layer mapping used.
"""

from typing import Literal

from pydantic import Field, model_validator

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.kit import distillation
from slimlab.kit.training import architecture, build_model
from slimlab.stages import Stage, StageParams


class DistillParams(StageParams):
    student: str = Field("cnn", description="registered model to build as the student")
    student_params: dict = Field(default_factory=dict, description="keyword arguments of the student's builder")
    temperature: float = Field(4.0, gt=0, le=1000, description="T: softens both distributions in the KL term")
    alpha: float | None = Field(0.5, ge=0, le=1, description="w_soft = alpha, w_hard = 1 - alpha; unset by w_soft/w_hard")
    w_soft: float | None = Field(None, ge=0, le=1e6, description="weight of the soft (teacher) loss; with w_hard, instead of alpha")
    w_hard: float | None = Field(None, ge=0, le=1e6, description="weight of the cross-entropy with the labels; with w_soft")
    w_cos: float = Field(0.0, ge=0, le=1e6, description="weight of 1 - cos between mapped hidden states (DistilBERT's Lcos)")
    w_hidden: float = Field(0.0, ge=0, le=1e6, description="weight of the MSE between mapped hidden states (TinyBERT)")
    soft_loss: Literal["kl", "mse"] = Field("kl", description="kl: KL at temperature T; mse: MSE between the logits")
    mapping: Literal["uniform", "top", "bottom"] = Field("uniform", description="which teacher layers the student's match")
    student_layers: list[str] | None = Field(None, description="student layers to match (default: weighted, not logits)")
    teacher_layers: list[str] | None = Field(None, description="teacher layers to pick from (default: weighted, not logits)")
    epochs: int = Field(8, ge=1, le=10000)
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(1e-3, gt=0, le=10)

    @model_validator(mode="before")
    @classmethod
    def _alpha_or_weights(cls, values):
        if not isinstance(values, dict) or (values.get("w_soft") is None and values.get("w_hard") is None):
            return values
        if values.get("alpha") is not None:
            raise ValueError("alpha and w_soft/w_hard are alternatives; set alpha, or w_soft and w_hard")
        if values.get("w_soft") is None or values.get("w_hard") is None:
            raise ValueError("w_soft and w_hard go together; set both (or alpha)")
        return {**values, "alpha": None}

    @model_validator(mode="after")
    def _consistent(self):
        try:
            architecture(self.student).check(self.student_params)
        except ValueError as exc:
            raise ValueError(f"student: {exc}") from None
        if self.alpha is None and self.w_soft is None:
            raise ValueError("alpha is unset; set alpha, or w_soft and w_hard")
        if not any(self.loss_weights.values()):
            raise ValueError("every loss weight is 0 (alpha/w_soft/w_hard/w_cos/w_hidden); the student would not learn")
        if (self.student_layers or self.teacher_layers) and not self.matches_features:
            raise ValueError("student_layers/teacher_layers only apply to feature matching; set w_cos or w_hidden > 0")
        return self

    @property
    def loss_weights(self) -> dict[str, float]:
        soft, hard = (self.alpha, 1 - self.alpha) if self.alpha is not None else (self.w_soft, self.w_hard)
        return {"soft": soft, "hard": hard, "cos": self.w_cos, "hidden": self.w_hidden}

    @property
    def matches_features(self) -> bool:
        return self.w_cos > 0 or self.w_hidden > 0


def distill(artifact, params: DistillParams, ctx):
    """Knowledge distillation: train a registered student on the teacher's logits (and, optionally, hidden states)."""
    from slimlab.kit import distillation

    splits = ctx.splits
    if params.matches_features and artifact.kind != "keras":
        raise ConfigError(
            f"distill: w_cos/w_hidden (feature matching) need the teacher's hidden states, which a {artifact.kind} "
            "teacher does not expose; set them to 0 or distill from the Keras artifact"
        )
    student = build_model(params.student, params.student_params, splits, ctx.seed)
    mapping = {}
    if params.matches_features:
        teacher_layers = params.teacher_layers or distillation.hidden_layers(artifact.model)
        student_layers = params.student_layers or distillation.hidden_layers(student)
        distillation.check_layer_names(artifact.model, teacher_layers, "teacher_layers")
        distillation.check_layer_names(student, student_layers, "student_layers")
        mapping = distillation.map_layers(teacher_layers, student_layers, params.mapping)
    history = distillation.train_student(
        student, splits, artifact.format.predict(artifact.model, splits.x_train),
        distillation.LossWeights(**params.loss_weights, temperature=params.temperature, soft_loss=params.soft_loss),
        teacher=artifact.model if mapping else None, mapping=mapping,
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate, seed=ctx.seed,
    )
    teacher_count, student_count = artifact.info.params.count, student.count_params()
    ctx.record(
        history=history, layer_mapping=mapping,
        params_teacher=teacher_count, params_student=student_count,
        params_student_over_teacher=round(student_count / teacher_count, 5),
    )
    return student


@hookimpl
def register_stages(register):
    register(Stage("distill", distill, DistillParams, inputs=("keras", "tflite"), output="keras",
                   uses=lambda params: [architecture(params.student).build]))
