"""The npmlp format's device adapter: pushed inside slimlab's payload, runs with NumPy only."""

from slimlab_payload.runtime import Runtime, random_input


class Adapter(Runtime):
    version = "numpy-mlp 1"

    def load(self, files, threads, options):
        self.dtype = options.get("dtype", "float32")
        with self.np.load(files[0]) as data:
            self.layers = [(data[f"w{i}"].astype(self.dtype), data[f"b{i}"].astype(self.dtype))
                           for i in range(len(data.files) // 2)]

    def feed(self, rng, input_shape):
        self.x = random_input(self.np, (1, self.layers[0][0].shape[0]), self.dtype, rng)

    def forward(self, h):
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = self.np.maximum(h, 0)
        return h

    def invoke(self):
        self.forward(self.x)

    def predict(self, sample):
        return self.forward(sample.reshape(1, -1).astype(self.dtype))[0].astype(self.np.float32)

    def applied(self):
        return {"dtype": self.dtype}
