"""onnxruntime's CPU provider, for ``onnx`` models."""

from slimlab_payload.runtime import Runtime, named_inputs, random_input


class Adapter(Runtime):
    module = "onnxruntime"

    def load(self, files, threads, options):
        self.session_options = self.lib.SessionOptions()
        self.session_options.intra_op_num_threads = threads
        self.session_options.inter_op_num_threads = 1  # a plain chain of ops: parallelism is within each op
        self.session = self.lib.InferenceSession(files[0], self.session_options, providers=["CPUExecutionProvider"])

    def feed(self, rng, input_shape):
        types = {"tensor(float)": self.np.float32, "tensor(int8)": self.np.int8, "tensor(uint8)": self.np.uint8}
        self.feeds = {}
        for tensor in self.session.get_inputs():
            shape = [dim if isinstance(dim, int) else 1 for dim in tensor.shape]  # a free batch dim -> 1
            self.feeds[tensor.name] = random_input(self.np, shape, types[tensor.type], rng)

    def invoke(self):
        self.session.run(None, self.feeds)

    def outputs(self, sample):
        names = [tensor.name for tensor in self.session.get_inputs()]
        found = self.session.run(None, {name: value[None].astype(self.np.float32)
                                        for name, value in named_inputs(sample, names).items()})
        return {out.name: value[0] for out, value in zip(self.session.get_outputs(), found)}

    def applied(self):
        return {"num_threads": self.session_options.intra_op_num_threads,
                "inter_op_num_threads": self.session_options.inter_op_num_threads}
