"""Rebuilding a Keras 3 functional graph out of tf_keras layers, importing its weights, and verifying it.

The graph is executed symbolically on tf_keras tensors with Keras 3's node-queue
semantics: shared layers, several inputs/outputs, dict inputs/outputs, and the call
keywords ``training=`` (kept) and ``mask=None``. Nested Sequential/Functional models are
inlined (flattened), which tfmot wants (``quantize_model`` refuses nested models); a
frozen sub-model stays frozen, ``base(x, training=False)`` keeps its layers in inference
mode, and inner names that clash with outer ones become ``<submodel>_<name>``.
"""

from __future__ import annotations

import inspect
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimlab.kit.keras3.check import (Keras3ImportError, importable_config, is_functional, is_model,
                                      is_tf_keras_version, layer_name, one_line, translate_layer_config)
from slimlab.kit.keras3.weights import H5Weights, Keras3Weights, assign
from slimlab.kit.training import keras as tf_keras

WEIGHT_SOURCES = ("auto", "keras3", "h5")


@dataclass
class ImportReport:
    keras_version: str = ""
    weights_source: str = ""  # "keras3" or "h5"
    layers: int = 0
    inlined_models: list[str] = field(default_factory=list)
    renamed_layers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # training-only options dropped, fallbacks taken
    max_abs_diff: float | None = None  # vs Keras 3 on a random batch (None: not verified)
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------ graph rebuild


class _Builder:
    def __init__(self, config: dict, report: ImportReport):
        self.config = config
        self.report = report
        self.layers: dict[tuple, Any] = {}  # scoped name -> tf_keras layer
        self.frozen: set[tuple] = set()  # nested models saved with trainable=False
        self.names = self._final_names()

    def _final_names(self) -> dict[tuple, str]:
        """A tf_keras name per scoped layer: its own, or ``<submodel>_<name>`` where inlining makes it clash."""
        scoped: list[tuple] = []

        def walk(model_cfg, scope):
            for layer in model_cfg["config"]["layers"]:
                key = scope + (layer_name(layer),)
                if is_model(layer):
                    self.report.inlined_models.append("/".join(key))
                    walk(layer, key)
                elif layer["class_name"] != "InputLayer" or not scope:
                    scoped.append(key)

        walk(self.config, ())
        counts: dict[str, int] = {}
        for key in scoped:
            counts[key[-1]] = counts.get(key[-1], 0) + 1
        names: dict[tuple, str] = {}
        taken = {k[-1] for k in scoped if counts[k[-1]] == 1}
        for key in scoped:
            name = key[-1]
            if counts[name] > 1 and len(key) > 1:
                name = "_".join(key)
                while name in taken:
                    name += "_"
                taken.add(name)
                self.report.renamed_layers["/".join(key)] = name
            names[key] = name
        return names

    def layer(self, layer_cfg: dict, scope: tuple):
        key = scope + (layer_name(layer_cfg),)
        if key not in self.layers:
            cls, cfg = translate_layer_config(layer_cfg["class_name"], layer_cfg["config"], self.report.warnings)
            cfg["name"] = self.names[key]
            if any(scope[:i] in self.frozen for i in range(1, len(scope) + 1)):
                cfg["trainable"] = False  # inlining must not unfreeze a frozen base model
            self.layers[key] = cls.from_config(cfg)
        return self.layers[key]

    def build(self):
        cfg = self.config
        if cfg["class_name"] == "Sequential":
            inputs = self._sequential_input(cfg)
            outputs = self.run_sequential(cfg, (), inputs, None)
        else:
            tensors = {layer_name(layer): self._input(layer["config"], layer_name(layer))
                       for layer in cfg["config"]["layers"] if layer["class_name"] == "InputLayer"}
            inputs = _map_refs(cfg["config"]["input_layers"], lambda ref: tensors[ref[0]])
            outputs = self.run_functional(cfg, (), None, None, given=tensors)
        return tf_keras().Model(inputs=inputs, outputs=outputs, name=cfg["config"].get("name"))

    def _input(self, cfg3: dict, name: str):
        _, cfg = translate_layer_config("InputLayer", cfg3, self.report.warnings)
        shape = cfg.get("batch_input_shape")
        if shape is None:
            raise Keras3ImportError(f"input {name!r} has no shape")
        return tf_keras().Input(batch_shape=tuple(shape), dtype=cfg.get("dtype") or "float32", name=name)

    def _sequential_input(self, cfg: dict):
        layers = cfg["config"]["layers"]
        if layers and layers[0]["class_name"] == "InputLayer":
            return self._input(layers[0]["config"], layer_name(layers[0]))
        shape = cfg["config"].get("build_input_shape")
        if not shape:
            raise Keras3ImportError("the Sequential model was saved unbuilt (no input shape, no weights); "
                                    "build it or give it a keras.Input before saving")
        return tf_keras().Input(batch_shape=tuple(shape), name="input_layer")

    # -- execution of one (possibly nested) model on tf_keras tensors

    def call(self, layer_cfg: dict, scope: tuple, args, kwargs, training):
        if training is not None and "training" not in kwargs:
            kwargs = {**kwargs, "training": training}
        key = scope + (layer_name(layer_cfg),)
        if is_model(layer_cfg):
            if layer_cfg["config"].get("trainable") is False:
                self.frozen.add(key)
            if layer_cfg["class_name"] == "Sequential":
                return self.run_sequential(layer_cfg, key, args[0] if len(args) == 1 else list(args),
                                           kwargs.get("training"))
            return self.run_functional(layer_cfg, key, _flatten(list(args)), kwargs.get("training"))
        layer = self.layer(layer_cfg, scope)
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k != "mask"}
        if "training" in kwargs and "training" not in inspect.signature(layer.call).parameters:
            kwargs.pop("training")
        return layer(*args, **kwargs)

    def run_sequential(self, cfg: dict, scope: tuple, x, training):
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] != "InputLayer":
                x = self.call(layer, scope, [x], {}, training)
        return x

    def run_functional(self, cfg: dict, scope: tuple, inputs, training, given=None):
        by_name = {layer_name(layer): layer for layer in cfg["config"]["layers"]}
        produced: dict[str, list] = {name: [] for name in by_name}  # outputs[name][node_index]
        if given is not None:
            for name, tensor in given.items():
                produced[name].append(tensor)
        else:
            input_refs = _flatten_refs(cfg["config"]["input_layers"])
            if len(input_refs) != len(inputs):
                raise Keras3ImportError(f"model {'/'.join(scope)} expects {len(input_refs)} inputs, got {len(inputs)}")
            for ref, tensor in zip(input_refs, inputs):
                produced[ref[0]].append(tensor)
        pending = {name: list(layer.get("inbound_nodes") or []) for name, layer in by_name.items()
                   if layer["class_name"] != "InputLayer"}

        def resolve(obj):
            if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
                lname, node, tensor = obj["config"]["keras_history"]
                nodes = produced.get(lname)
                if nodes is None:
                    raise Keras3ImportError(f"unknown layer {lname!r} in the graph")
                if node >= len(nodes):
                    raise IndexError  # not produced yet
                return _flatten(nodes[node])[tensor] if isinstance(nodes[node], (list, tuple)) else nodes[node]
            if isinstance(obj, list):
                return [resolve(o) for o in obj]
            if isinstance(obj, dict):
                return {k: resolve(v) for k, v in obj.items()}
            return obj

        while pending:
            progress = False
            for name in list(pending):
                nodes = pending[name]
                while nodes:
                    try:
                        args = resolve(nodes[0].get("args", []))
                        kwargs = resolve(nodes[0].get("kwargs", {}) or {})
                    except IndexError:
                        break
                    produced[name].append(self.call(by_name[name], scope, args, kwargs, training))
                    nodes.pop(0)
                    progress = True
                if not nodes:
                    del pending[name]
            if not progress:
                raise Keras3ImportError(f"the graph of {'/'.join(scope) or 'the model'} has loops or "
                                        f"disconnected nodes: {sorted(pending)}")

        def out(ref):
            # Keras 3 numbers a nested Functional's nodes from 1 in output_layers (node 0 being
            # its own internal node), but from 0 in the inbound_nodes' keras_history.
            node = ref[1] - 1 if is_functional(by_name[ref[0]]) else ref[1]
            value = produced[ref[0]][node]
            return _flatten(value)[ref[2]] if isinstance(value, (list, tuple)) else value

        return _map_refs(cfg["config"]["output_layers"], out)


def _is_ref(obj) -> bool:
    return isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], str) and isinstance(obj[1], int)


def _map_refs(refs, fn):
    if _is_ref(refs):
        return fn(refs)
    if isinstance(refs, dict):
        return {k: _map_refs(v, fn) for k, v in refs.items()}
    return [_map_refs(r, fn) for r in refs]


def _flatten_refs(refs) -> list:
    if _is_ref(refs):
        return [refs]
    values = refs.values() if isinstance(refs, dict) else refs
    return [r for v in values for r in _flatten_refs(v)]


def _flatten(obj) -> list:
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _flatten(o)]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flatten(v)]
    return [obj]


# ------------------------------------------------------------------------------ import


def import_keras3(path, *, weights: str = "auto", verify: bool = True, atol: float = 1e-4):
    """A Keras 3 ``.keras`` file as a tf_keras model. See :func:`import_keras3_with_report`."""
    return import_keras3_with_report(path, weights=weights, verify=verify, atol=atol)[0]


def import_keras3_with_report(path, *, weights: str = "auto", verify: bool = True, atol: float = 1e-4):
    """(tf_keras model, :class:`ImportReport`).

    weights: "keras3" (Keras 3 loads the file, in this process), "h5" (model.weights.h5 read
    directly, no Keras 3), or "auto" (Keras 3, falling back to h5 with a warning).
    verify: compare with Keras 3's predictions on a random batch (needs the Keras 3 model) and
    raise if they differ by more than ``atol`` times max(1, the largest output).
    Errors are :class:`Keras3ImportError` (an ArtifactError) naming the file, on one line.
    """
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"weights={weights!r}: expected one of {WEIGHT_SOURCES}")
    try:
        return _import(path, weights, verify, atol)
    except Keras3ImportError as exc:
        exc.path = exc.path or path
        raise
    except (ValueError, TypeError, KeyError, OSError) as exc:  # Keras, TensorFlow or h5py refusing the file
        raise Keras3ImportError(f"cannot import it: {one_line(exc)}", path) from exc


def _import(path, weights: str, verify: bool, atol: float):
    report = ImportReport()
    t0 = time.perf_counter()
    config, report.keras_version = importable_config(path)
    if is_tf_keras_version(report.keras_version):
        raise Keras3ImportError(f"written by Keras {report.keras_version} (tf_keras), not Keras 3: load it with "
                                "tf_keras.models.load_model (load_any_keras does)")
    report.seconds["check"] = time.perf_counter() - t0

    t = time.perf_counter()
    source = _weights_source(path, config, weights, report)
    report.seconds["read_weights"] = time.perf_counter() - t

    t = time.perf_counter()
    builder = _Builder(config, report)
    try:
        model = builder.build()
    except (ValueError, TypeError) as exc:  # tf_keras refusing a config or a call: named, on one line
        raise Keras3ImportError(f"tf_keras could not rebuild the graph: {one_line(exc)}") from exc
    report.seconds["build"] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        for key, layer in builder.layers.items():
            values, names = source.get(key)
            assign(layer, values, names, f"layer {'/'.join(key)!r} ({type(layer).__name__})")
    finally:
        source.close()
    report.layers = len(builder.layers)
    report.seconds["weights"] = time.perf_counter() - t

    if verify and source.model is not None:
        t = time.perf_counter()
        _verify(source.model, model, config, atol, report)
        report.seconds["verify"] = time.perf_counter() - t
    report.seconds["total"] = time.perf_counter() - t0
    for note in report.warnings:
        warnings.warn(f"{path}: {note}", stacklevel=3)
    return model, report


def _weights_source(path, config: dict, weights: str, report: ImportReport):
    if weights != "h5":
        try:
            source = Keras3Weights(path)
            report.weights_source = "keras3"
            return source
        except Exception as exc:  # noqa: BLE001 - any failure of Keras 3 to load it: fall back or name it
            if weights == "keras3":
                raise Keras3ImportError(f"Keras 3 could not load it: {one_line(exc)}") from exc
            report.warnings.append(f"Keras 3 could not load the file ({one_line(exc)}); weights read from h5")
    report.weights_source = "h5"
    return H5Weights(path, config)


def _random_inputs(model, seed: int = 0, batch: int = 2):
    """A random float batch per input; None if an input is not float (ids need a range we do not know)."""
    rng = np.random.default_rng(seed)
    xs = []
    for tensor in model.inputs:
        dtype = tensor.dtype.as_numpy_dtype
        if not np.issubdtype(dtype, np.floating):
            return None
        xs.append(rng.standard_normal([batch] + [d if d is not None else 32 for d in tensor.shape[1:]]).astype(dtype))
    return xs


def _verify(k3_model, tfk_model, config: dict, atol: float, report: ImportReport) -> None:
    """Keras 3 and tf_keras agree on a random batch to ``atol`` times max(1, max|y|) (1e-2 in float16)."""
    xs = _random_inputs(tfk_model)
    if xs is None:
        return
    feed = xs if len(xs) > 1 else xs[0]
    if isinstance(config["config"].get("input_layers"), dict):
        feed = dict(zip(config["config"]["input_layers"], xs))
    ref = _flatten(k3_model(feed, training=False))
    got = _flatten(tfk_model(feed, training=False))
    if len(ref) != len(got):
        raise Keras3ImportError(f"Keras 3 gives {len(ref)} outputs, the rebuilt tf_keras model {len(got)}")
    report.max_abs_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ref, got))
    scale = max(float(np.max(np.abs(np.asarray(a)))) for a in ref)
    half = any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16") for layer in tfk_model.layers)
    limit = (max(atol, 1e-2) if half else atol) * max(1.0, scale)  # relative when outputs are big
    if not report.max_abs_diff <= limit:
        raise Keras3ImportError(f"the rebuilt tf_keras model differs from Keras 3 by {report.max_abs_diff:g} "
                                f"(> {limit:g}; outputs up to {scale:g}) on a random batch")
