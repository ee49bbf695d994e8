"""lowrank.svd: split large Dense (or 1×1 Conv2D) kernels into two thin ones by truncated SVD, then fine-tune.

A kernel W with M inputs and N outputs becomes W ≈ U_K Σ_K V_Kᵀ, stored as two plain
layers: ``<layer>_u`` (M → K, linear, no bias) with kernel U_K·√Σ_K, then ``<layer>_v``
(K → N) with kernel √Σ_K·V_Kᵀ and the layer's own bias and activation. Splitting √Σ
evenly keeps both factors on one scale, which helps the fine-tuning. The pair holds
K·(M+N) weights instead of M·N, so a layer is skipped unless K < MN/(M+N); the sidecar
says why.

- K is ``rank``, or the smallest K whose singular values keep the fraction ``energy``
  of Σσ² (the default, 0.9). Set one of the two.
- ``layers`` names the layers to split, wherever they sit in the graph (residual branches,
  squeeze-excite blocks, heads). By default: every Dense layer except those that produce the
  model's outputs (the logits); they are narrow (N = number of classes), so it rarely saves
  anything, and any error there moves the decision directly. ``conv1x1: true`` adds
  the 1×1 Conv2D layers (dense layers over channels) to the default choice.
- ``epochs`` of fine-tuning on the train split follow (0: none).

The functional graph is rebuilt with each chosen layer replaced by its pair. The sidecar's
``lowrank`` metric lists M, N, K, retained energy and the parameters before and after for
each chosen layer.
"""

import numpy as np
from pydantic import Field, model_validator

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.stages import Stage, StageParams
from slimlab.kit.depgraph import copy_layer, logits_layers, rebuild
from slimlab.kit.training import compile_and_fit, keras


class LowRankParams(StageParams):
    rank: int | None = Field(None, ge=1, le=1_000_000, description="K for every chosen layer; instead of energy")
    energy: float | None = Field(0.9, gt=0, le=1, description="smallest K keeping this fraction of Σσ²; unset by rank")
    layers: list[str] | None = Field(None, description="layers to factorise (default: the Dense layers but the logits)")
    conv1x1: bool = Field(False, description="also factorise 1x1 Conv2D layers when layers is not given")
    epochs: int = Field(1, ge=0, le=10000, description="fine-tuning epochs after factorising; 0 for none")
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(5e-4, gt=0, le=10)

    @model_validator(mode="before")
    @classmethod
    def _rank_or_energy(cls, values):
        if isinstance(values, dict) and values.get("rank") is not None:
            if values.get("energy") is not None:
                raise ValueError("rank and energy are alternatives; set one of them")
            return {**values, "energy": None}
        return values

    @model_validator(mode="after")
    def _one_is_set(self):
        if self.rank is None and self.energy is None:
            raise ValueError("set rank or energy")
        return self


def is_factorisable(layer) -> bool:
    layers = keras().layers
    is_1x1_conv = type(layer) is layers.Conv2D and layer.kernel_size == (1, 1) and layer.groups == 1
    return type(layer) is layers.Dense or is_1x1_conv


def kernel_matrix(layer) -> np.ndarray:
    """The kernel as M×N (a 1×1 convolution's kernel is 1×1×M×N)."""
    kernel = layer.get_weights()[0]
    return kernel.reshape(kernel.shape[-2:])


def rank_for_energy(singular: np.ndarray, energy: float) -> int:
    """The smallest K whose leading singular values keep ``energy`` of the total σ²."""
    kept = np.cumsum(singular**2) / np.sum(singular**2)
    return min(int(np.searchsorted(kept, energy)) + 1, len(singular))


def low_rank_pair(layer, k: int):
    """``<layer>_u`` (linear, no bias) and ``<layer>_v`` (the layer's bias and activation), of the layer's own type."""
    config = layer.get_config()
    width = "units" if isinstance(layer, keras().layers.Dense) else "filters"
    u = type(layer).from_config({**config, "name": f"{layer.name}_u", width: k, "use_bias": False, "activation": None})
    v_config = {**config, "name": f"{layer.name}_v"}
    if width == "filters":
        # The first factor already applied the stride and padding; the second sees each position once.
        v_config.update(strides=1, padding="valid")
    return u, type(layer).from_config(v_config)


def factorise(model, ranks: dict[str, int]):
    """A new model in which each layer named in ``ranks`` is replaced by its rank-K SVD pair.

    The other layers are copied with their weights, so the input model is left as it was.
    """

    def make(layer):
        if layer.name not in ranks:
            return copy_layer(layer)
        k, weights = ranks[layer.name], layer.get_weights()
        u, s, vt = np.linalg.svd(kernel_matrix(layer), full_matrices=False)
        root, taps = np.sqrt(s[:k]), weights[0].shape[:-2]  # taps: () for Dense, (1, 1) for a 1x1 conv
        first, second = low_rank_pair(layer, k)
        return [(first, [(u[:, :k] * root).reshape(*taps, -1, k)]),
                (second, [(root[:, None] * vt[:k]).reshape(*taps, k, -1), *weights[1:]])]

    return rebuild(model, make)


def lowrank_svd(artifact, params: LowRankParams, ctx):
    """Low-rank factorisation: split Dense (and 1x1 conv) kernels anywhere in the graph into two thin layers by SVD."""
    model = artifact.model
    eligible = [layer.name for layer in model.layers if is_factorisable(layer)]
    if params.layers is None:
        dense, logits = keras().layers.Dense, logits_layers(model)
        chosen = [name for name in eligible
                  if name not in logits and (params.conv1x1 or type(model.get_layer(name)) is dense)]
    else:
        wrong = [name for name in params.layers if name not in eligible]
        if wrong:
            raise ConfigError(f"lowrank.svd: layers: {', '.join(wrong)} not Dense or 1x1 Conv2D layers of the model; "
                              f"those are {', '.join(eligible) or 'none'}")
        chosen = params.layers
    ranks, report = {}, {}
    for name in chosen:
        layer = model.get_layer(name)
        matrix = kernel_matrix(layer)
        (m, n), bias = matrix.shape, sum(w.size for w in layer.get_weights()[1:])
        singular = np.linalg.svd(matrix, compute_uv=False)
        k = min(params.rank, len(singular)) if params.rank else rank_for_energy(singular, params.energy)
        saves = k * (m + n) < m * n
        report[name] = {
            "M": m, "N": n, "K": k,
            "retained_energy": round(float(np.sum(singular[:k] ** 2) / np.sum(singular**2)), 5),
            "params_before": m * n + bias,
            "params_after": (k * (m + n) if saves else m * n) + bias,
        }
        if saves:
            ranks[name] = k
        else:
            limit = m * n / (m + n)
            report[name]["skipped"] = f"K={k} is not below MN/(M+N)={limit:.1f}: the two factors would not be smaller"
    if not ranks:
        ctx.unchanged("no layer where rank < MN/(M+N) at this energy or rank" if chosen
                      else "no Dense or 1x1 Conv2D layer to factorise besides the logits")
    factorised = factorise(model, ranks)
    history = {}
    if ranks and params.epochs:
        history = compile_and_fit(factorised, ctx.splits, epochs=params.epochs, batch_size=params.batch_size,
                                  learning_rate=params.learning_rate, seed=ctx.seed)
    ctx.record(lowrank=report, history=history)
    return factorised


@hookimpl
def register_stages(register):
    register(Stage("lowrank.svd", lowrank_svd, LowRankParams, inputs=("keras",), output="keras", fine_tunes=True))
