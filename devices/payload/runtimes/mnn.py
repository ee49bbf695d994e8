"""MNN's Interpreter/Session API (MNN 3.6's Python API that takes a thread count), for ``mnn`` models.

Only ``import MNN``: MNN.tools (telemetry and a run-time pip install) is never imported.
"""

import re

from slimlab_payload.runtime import Runtime, named_inputs, random_input

# MNN::Interpreter::SessionInfoCode
MEMORY, FLOPS, THREAD_NUMBER = 0, 1, 4


class Adapter(Runtime):
    module = "MNN"

    def load(self, files, threads, options):
        self.config = {"numThread": threads, "precision": "normal", "power": "normal", **options}
        self.interpreter = self.lib.Interpreter(files[0])
        self.session = self.interpreter.createSession(self.config)
        # A model converted from TFLite keeps the tensor names of its signature, serving_default_<input>:0.
        self.inputs = {re.sub(r"^serving_default_(.+):\d+$", r"\1", name): tensor
                       for name, tensor in self.interpreter.getSessionInputAll(self.session).items()}

    def feed(self, rng, input_shape):
        for tensor in self.inputs.values():
            self.copy_in(tensor, random_input(self.np, tuple(tensor.getShape()), self.np.float32, rng))

    def copy_in(self, tensor, x):
        shape = tuple(tensor.getShape())
        tensor.copyFrom(self.lib.Tensor(shape, self.lib.Halide_Type_Float, x, tensor.getDimensionType()))

    def invoke(self):
        self.interpreter.runSession(self.session)

    def outputs(self, sample):
        for name, value in named_inputs(sample, self.inputs).items():
            shape = tuple(self.inputs[name].getShape())
            if value.ndim == 3 and shape[1:] != value.shape and shape[1:] == (value.shape[2], *value.shape[:2]):
                value = value.transpose(2, 0, 1)  # an NCHW graph input (ONNX models exported channel-first)
            self.copy_in(self.inputs[name], self.np.ascontiguousarray(value[None], self.np.float32))
        self.interpreter.runSession(self.session)
        return {name: self.host_copy(out) for name, out in self.interpreter.getSessionOutputAll(self.session).items()}

    def host_copy(self, out):
        """An output tensor as a float32 array without the batch axis, in the layout the model declares."""
        shape = out.getShape()
        host = self.lib.Tensor(shape, self.lib.Halide_Type_Float, self.np.zeros(shape, self.np.float32),
                               out.getDimensionType())
        out.copyToHostTensor(host)
        return self.np.array(host.getData(), self.np.float32).reshape(shape)[0]

    def applied(self):
        # getSessionInfo returns a float, but MNN writes THREAD_NUMBER as an int into it: reinterpret the bits.
        info = self.interpreter.getSessionInfo(self.session, THREAD_NUMBER)
        threads = int(self.np.array([info], self.np.float32).view(self.np.int32)[0])
        return {"num_threads": threads, "precision": self.config["precision"], "power": self.config["power"]}

    def observed(self):
        return {"runtime_mflops": self.interpreter.getSessionInfo(self.session, FLOPS)}

    def memory(self):
        return {"runtime_mb": self.interpreter.getSessionInfo(self.session, MEMORY)}
