"""ncnn's Python binding, for ``ncnn`` models (a .param and a .bin, channel-first input)."""

from slimlab_payload.runtime import PayloadError, Runtime, random_input

FLAGS = ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_packing_layout",
         "use_winograd_convolution", "use_sgemm_convolution", "lightmode")


class Adapter(Runtime):
    module = "ncnn"

    def load(self, files, threads, options):
        if len(files) != 2:
            raise PayloadError(f"an ncnn model is a .param and a .bin file, got {len(files)} file(s)")
        self.net = self.lib.Net()
        # Options must be set before load_param: layers pick their kernels while loading.
        self.net.opt.num_threads = threads
        for name, value in options.items():
            setattr(self.net.opt, name, value)
        param, weights = files
        if self.net.load_param(param) != 0 or self.net.load_model(weights) != 0:
            raise PayloadError(f"ncnn cannot load {param} with {weights}")
        (self.input_name,), (self.output_name,) = self.net.input_names(), self.net.output_names()

    def feed(self, rng, input_shape):
        if not input_shape:
            raise PayloadError("ncnn param files carry no input shape: pass --input-shape (channel-first)")
        x = random_input(self.np, input_shape, self.np.float32, rng)
        # A batch-of-one Mat, cloned, as pnnx's generated <name>_ncnn.py feeds it.
        self.mat = self.lib.Mat(x, batch_index=0).clone()

    def invoke(self):
        # A fresh extractor per inference: an extractor caches blobs and would skip the work.
        with self.net.create_extractor() as extractor:
            extractor.input(self.input_name, self.mat)
            extractor.extract(self.output_name)

    def predict(self, sample):
        # pnnx graphs are channel-first: NHWC -> NCHW here, once.
        x = self.np.ascontiguousarray(sample.transpose(2, 0, 1) if sample.ndim == 3 else sample, self.np.float32)
        with self.net.create_extractor() as extractor:
            # A batch-of-one Mat, cloned, as pnnx's own <name>_ncnn.py does; ncnn.Mat(x) gave garbage.
            extractor.input(self.input_name, self.lib.Mat(x[None], batch_index=0).clone())
            _, y = extractor.extract(self.output_name)
            return self.np.array(y.numpy(batch_index=0)).reshape(-1)

    def applied(self):
        return {name: getattr(self.net.opt, name) for name in ("num_threads", *FLAGS)}
