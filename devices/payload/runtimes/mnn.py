"""MNN's Interpreter/Session API (MNN 3.6's Python API that takes a thread count), for ``mnn`` models.

Only ``import MNN``: MNN.tools (telemetry and a run-time pip install) is never imported.
"""

from slimlab_payload.runtime import Runtime, random_input

# MNN::Interpreter::SessionInfoCode
MEMORY, FLOPS, THREAD_NUMBER = 0, 1, 4


class Adapter(Runtime):
    module = "MNN"

    def load(self, files, threads, options):
        self.config = {"numThread": threads, "precision": "normal", "power": "normal", **options}
        self.interpreter = self.lib.Interpreter(files[0])
        self.session = self.interpreter.createSession(self.config)
        self.input = self.interpreter.getSessionInput(self.session)

    def feed(self, rng, input_shape):
        shape = tuple(self.input.getShape())
        x = random_input(self.np, shape, self.np.float32, rng)
        self.input.copyFrom(self.lib.Tensor(shape, self.lib.Halide_Type_Float, x, self.input.getDimensionType()))

    def invoke(self):
        self.interpreter.runSession(self.session)

    def outputs(self, sample):
        shape = tuple(self.input.getShape())
        if sample.ndim == 3 and shape[1:] != sample.shape and shape[1:] == (sample.shape[2], *sample.shape[:2]):
            sample = sample.transpose(2, 0, 1)  # an NCHW graph input (ONNX models exported channel-first)
        x = self.np.ascontiguousarray(sample[None], self.np.float32)
        self.input.copyFrom(self.lib.Tensor(shape, self.lib.Halide_Type_Float, x, self.input.getDimensionType()))
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
