"""The npmlp format's runtime adapter: pushed inside slimlab's payload, runs with NumPy only."""

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

    def invoke(self):
        h = self.x
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = self.np.maximum(h, 0)

    def applied(self):
        return {"dtype": self.dtype}
