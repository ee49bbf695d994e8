"""LiteRT (else tflite_runtime, else TensorFlow's own interpreter), for ``tflite`` models."""

import importlib

from slimlab_payload.runtime import PayloadError, Runtime, random_input


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

    def feed(self, rng, input_shape):
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], random_input(self.np, detail["shape"], detail["dtype"], rng))

    def invoke(self):
        self.interpreter.invoke()

    def applied(self):
        return {"xnnpack": self.xnnpack}

    def observed(self):
        # A delegate shows as one DELEGATE node standing for the ops it took over.
        return {"delegated_nodes": sum(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())}
