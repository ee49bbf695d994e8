"""LiteRT (else tflite_runtime, else TensorFlow's own interpreter), for ``tflite`` models."""

import importlib

from slimlab_payload.runtime import PayloadError, Runtime, named_inputs, random_input


def to_tensor_dtype(np, x, detail):
    """Quantise a float batch as the tensor asks (scale and zero point), else cast."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def from_tensor_dtype(np, y, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def signature_inputs(interpreter) -> dict[str, dict]:
    """Input details by the one signature's names (as the exporter named them: a Keras model's), else by tensor."""
    if len(interpreter.get_signature_list()) == 1:
        return interpreter.get_signature_runner().get_input_details()
    return {detail["name"]: detail for detail in interpreter.get_input_details()}


class Adapter(Runtime):
    def __init__(self, np):
        super().__init__(np)
        for package in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite.python"):
            try:
                self.lib = importlib.import_module(f"{package}.interpreter")
            except ImportError:
                continue
            top = importlib.import_module(package.split(".")[0])
            self.version = f"{top.__name__} {getattr(top, '__version__', '?')}"
            return
        raise PayloadError("no TFLite runtime on this device (pip install ai-edge-litert)")

    def load(self, files, threads, options):
        self.xnnpack = options.get("xnnpack", True)
        resolver = self.lib.OpResolverType
        # LiteRT applies XNNPACK as a default delegate; this resolver type leaves it out.
        kind = resolver.AUTO if self.xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = self.lib.Interpreter(model_path=files[0], num_threads=threads,
                                                   experimental_op_resolver_type=kind)
        self.interpreter.allocate_tensors()
        self.inputs = signature_inputs(self.interpreter)
        # A signature names the outputs as the exporter did (a Keras model's output names); tensor names otherwise.
        signatures = self.interpreter.get_signature_list()
        named = self.interpreter.get_signature_runner().get_output_details() if len(signatures) == 1 else {}
        by_index = {detail["index"]: name for name, detail in named.items()}
        self.output_names = {out["index"]: by_index.get(out["index"], out["name"])
                             for out in self.interpreter.get_output_details()}

    def feed(self, rng, input_shape):
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], random_input(self.np, detail["shape"], detail["dtype"], rng))

    def invoke(self):
        self.interpreter.invoke()

    def outputs(self, sample):
        for name, value in named_inputs(sample, self.inputs).items():
            detail = self.inputs[name]
            self.interpreter.set_tensor(detail["index"], to_tensor_dtype(self.np, value[None], detail))
        self.interpreter.invoke()
        return {self.output_names[out["index"]]: from_tensor_dtype(self.np, self.interpreter.get_tensor(out["index"])[0],
                                                                   out)
                for out in self.interpreter.get_output_details()}

    def applied(self):
        return {"xnnpack": self.xnnpack}

    def observed(self):
        # A delegate shows as one DELEGATE node standing for the ops it took over.
        return {"delegated_nodes": sum(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())}
