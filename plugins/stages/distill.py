"""distill: knowledge distillation from the input model (the teacher) into a student.

The student is a registered model (``student`` + ``student_params``) trained on the
train split against the teacher's outputs, computed once. The teacher may be Keras or
TFLite: a quantised teacher's logits come from LiteRT.

The loss (see ``slimlab/kit/distillation.py``) is

    w_soft · KL(softmax(t/T) ‖ softmax(s/T)) · T² + w_hard · CE(y, s)
      + w_cos · (1 − cos(h_s, h_t)) + w_hidden · MSE(h_s, h_t)
      + w_embedding · MSE(e_s, e_t) + w_attention · MSE(A_s, A_t)

- ``alpha`` is the simple form: w_soft = alpha, w_hard = 1 − alpha (Hinton et al.).
  Set ``w_soft`` and ``w_hard`` instead for other weightings, e.g. DistilBERT's
  5·Lce + 2·Lhard + 1·Lcos is ``{w_soft: 5, w_hard: 2, w_cos: 1}``.
- ``soft_loss: mse`` replaces the KL term by the MSE between the raw logits (no T).
- ``w_cos`` / ``w_hidden`` > 0 turn on hidden-state matching, which needs a Keras teacher.
  Each of ``student_layers`` (default: a transformer's block outputs, else the weighted
  layers except the logits) gets one of ``teacher_layers`` (default: the same rule on the
  teacher) by ``mapping``, as in TinyBERT: ``uniform`` every k-th teacher layer, ``top``
  the last ones, ``bottom`` the first ones. Where widths differ, a learned projection
  (1×1 conv for feature maps, dense for vectors and tokens) maps the student's state to
  the teacher's width; other sizes must match.
- ``w_embedding`` / ``w_attention`` (TinyBERT; both models transformers, see
  ``slimlab/kit/transformer.py``) match the embeddings through a projection, and each
  block's attention matrices head by head, blocks mapped by ``mapping``; ``attention``
  says whether the scores before the softmax (TinyBERT's choice) or after are compared.
- ``student_init``: ``random``; ``teacher_layers`` copies the teacher's blocks picked by
  ``mapping`` into the student (DistilBERT: ``uniform`` with half the layers takes every
  other one), which needs the teacher's width and heads; ``input`` continues training
  the input artifact, itself made by ``distill``, against the teacher it was distilled
  from: TinyBERT's intermediate-layer step then its prediction step, as two recipe steps
  (``student`` and ``student_params`` play no part then: the input is the student).

The stage returns the plain student; the projections are dropped. The sidecar records
both parameter counts, the layer and block mappings and the teacher.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from slimlab import hookimpl
from slimlab.artifacts import SIDECAR, Artifact
from slimlab.errors import ConfigError
from slimlab.kit import distillation, transformer
from slimlab.kit.training import architecture, build_model
from slimlab.stages import Stage, StageParams
from slimlab.tasks import output_of


class DistillParams(StageParams):
    student: str = Field("cnn", description="registered model to build as the student")
    student_params: dict = Field(default_factory=dict, description="keyword arguments of the student's builder")
    student_init: Literal["random", "teacher_layers", "input"] = Field(
        "random", description="random; teacher_layers: the teacher's blocks picked by mapping (DistilBERT); "
                              "input: keep training the input student against its teacher (TinyBERT's second step)")
    temperature: float = Field(4.0, gt=0, le=1000, description="T: softens both distributions in the KL term")
    alpha: float | None = Field(0.5, ge=0, le=1, description="w_soft = alpha, w_hard = 1 - alpha; unset by w_soft/w_hard")
    w_soft: float | None = Field(None, ge=0, le=1e6, description="weight of the soft (teacher) loss; with w_hard, instead of alpha")
    w_hard: float | None = Field(None, ge=0, le=1e6, description="weight of the cross-entropy with the labels; with w_soft")
    w_cos: float = Field(0.0, ge=0, le=1e6, description="weight of 1 - cos between mapped hidden states (DistilBERT's Lcos)")
    w_hidden: float = Field(0.0, ge=0, le=1e6, description="weight of the MSE between mapped hidden states (TinyBERT)")
    w_embedding: float = Field(0.0, ge=0, le=1e6, description="weight of the MSE between the embeddings (TinyBERT)")
    w_attention: float = Field(0.0, ge=0, le=1e6,
                               description="weight of the MSE between mapped blocks' attention matrices (TinyBERT)")
    attention: Literal["scores", "probabilities"] = Field(
        "scores", description="match attention before the softmax (TinyBERT) or after")
    soft_loss: Literal["kl", "mse"] = Field("kl", description="kl: KL at temperature T; mse: MSE between the logits")
    mapping: Literal["uniform", "top", "bottom"] = Field("uniform", description="which teacher layers the student's match")
    student_layers: list[str] | None = Field(
        None, description="student layers to match (default: block outputs, or weighted layers but the logits)")
    teacher_layers: list[str] | None = Field(None, description="teacher layers to pick from (default: the same rule)")
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
            raise ValueError("every loss weight is 0 (alpha/w_soft/w_hard/w_cos/w_hidden/w_embedding/w_attention); "
                             "the student would not learn")
        if (self.student_layers or self.teacher_layers) and not (self.w_cos or self.w_hidden):
            raise ValueError("student_layers/teacher_layers only apply to hidden-state matching; set w_cos or w_hidden > 0")
        return self

    @property
    def loss_weights(self) -> dict[str, float]:
        soft, hard = (self.alpha, 1 - self.alpha) if self.alpha is not None else (self.w_soft, self.w_hard)
        return {"soft": soft, "hard": hard, "cos": self.w_cos, "hidden": self.w_hidden,
                "embedding": self.w_embedding, "attention": self.w_attention}


def teacher_and_student(artifact, params: DistillParams, ctx):
    """The teacher artifact and the student model this step trains."""
    if params.student_init != "input":
        return artifact, build_model(params.student, params.student_params, ctx.splits, ctx.seed)
    if artifact.kind != "keras" or len(artifact.lineage) < 2 or artifact.lineage[-1].stage != "distill":
        raise ConfigError("distill: student_init input needs the Keras student of a distill step as its input; "
                          f"this input comes from {artifact.lineage[-1].stage if artifact.lineage else 'nowhere'}")
    return Artifact.load(Path(artifact.lineage[-2].artifact) / SIDECAR), artifact.model


def matches(teacher, student, params: DistillParams) -> tuple[distillation.Matches, dict[int, int]]:
    """Which student layer matches which teacher layer, and the student block -> teacher block map where one is needed."""
    hidden = {}
    if params.w_cos or params.w_hidden:
        teacher_layers = params.teacher_layers or distillation.hidden_layers(teacher)
        student_layers = params.student_layers or distillation.hidden_layers(student)
        distillation.check_layer_names(teacher, teacher_layers, "teacher_layers")
        distillation.check_layer_names(student, student_layers, "student_layers")
        hidden = distillation.map_layers(teacher_layers, student_layers, params.mapping)
    blocks = {}
    if params.w_embedding or params.w_attention or params.student_init == "teacher_layers":
        blocks = distillation.block_map(teacher, student, params.mapping)
    return distillation.Matches(
        hidden=hidden,
        embedding={transformer.EMBEDDING: transformer.EMBEDDING} if params.w_embedding else {},
        attention=distillation.attention_matches(teacher, student, blocks, params.attention) if params.w_attention else {},
    ), blocks


def distill(artifact, params: DistillParams, ctx):
    """Knowledge distillation: train a student on the teacher's logits and, optionally, its hidden states and attention."""
    teacher, student = teacher_and_student(artifact, params, ctx)
    weights = distillation.LossWeights(**params.loss_weights, temperature=params.temperature, soft_loss=params.soft_loss)
    needs_layers = weights.matches_features or params.student_init == "teacher_layers"
    if needs_layers and teacher.kind != "keras":
        raise ConfigError(
            f"distill: w_cos/w_hidden/w_embedding/w_attention (feature matching) and student_init teacher_layers need the "
            f"teacher's layers, which a {teacher.kind} teacher does not expose; drop them or distill from the Keras artifact"
        )
    found, blocks = matches(teacher.model, student, params) if needs_layers else (distillation.Matches(), {})
    if params.student_init == "teacher_layers":
        transformer.copy_blocks(student, teacher.model, blocks)
    x_train = ctx.splits.x_train
    logits = output_of(ctx.task[1], teacher.format.predict(teacher.model, x_train), "distill")
    targets = distillation.teacher_targets(teacher.model, logits, found, x_train)
    history = distillation.train_student(
        student, ctx.splits, targets, weights, matches=found,
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate, seed=ctx.seed,
    )
    teacher_count, student_count = teacher.info.params.count, student.count_params()
    ctx.record(
        history=history, layer_mapping=found.hidden, block_mapping={str(s): t for s, t in blocks.items()},
        teacher=str(teacher.dir), params_teacher=teacher_count, params_student=student_count,
        params_student_over_teacher=round(student_count / teacher_count, 5),
    )
    return student


@hookimpl
def register_stages(register):
    register(Stage("distill", distill, DistillParams, inputs=("keras", "tflite"), output="keras",
                   uses=lambda params: [architecture(params.student).build]))
