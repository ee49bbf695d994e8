"""ncnn's Python binding, for ``ncnn`` models (a .param and a .bin, channel-first input).

``use_vulkan_compute`` runs the model on a Vulkan GPU. ncnn would fall back to its CPU
without a word where there is none, so the adapter refuses instead, picks ncnn's default
GPU itself and reports it: ``vulkan_device`` in the options read back, and ``gpu``
(its name, type and whether it is a software rasteriser such as Mesa's lavapipe,
whose latencies are a CPU's, not a GPU's) beside them.
"""

from slimlab_payload.runtime import PayloadError, Runtime, random_input

FLAGS = ("use_vulkan_compute", "use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_packing_layout",
         "use_winograd_convolution", "use_sgemm_convolution", "lightmode")
# ncnn's GpuInfo.type(); a "cpu" device is a software Vulkan driver.
GPU_TYPES = {0: "discrete", 1: "integrated", 2: "virtual", 3: "cpu"}
# Software Vulkan drivers, by the name they give (Mesa's lavapipe says "llvmpipe (LLVM 15.0.6, 256 bits)").
SOFTWARE_GPUS = ("llvmpipe", "lavapipe", "swiftshader")


class Adapter(Runtime):
    module = "ncnn"
    gpu = None  # the Vulkan device the model runs on, when use_vulkan_compute

    def load(self, files, threads, options):
        if len(files) != 2:
            raise PayloadError(f"an ncnn model is a .param and a .bin file, got {len(files)} file(s)")
        self.net = self.lib.Net()
        # Options must be set before load_param: layers pick their kernels while loading.
        self.net.opt.num_threads = threads
        for name, value in options.items():
            setattr(self.net.opt, name, value)
        if options.get("use_vulkan_compute"):
            self.gpu = self.vulkan_device()
        param, weights = files
        if self.net.load_param(param) != 0 or self.net.load_model(weights) != 0:
            raise PayloadError(f"ncnn cannot load {param} with {weights}")
        (self.input_name,), self.output_names = self.net.input_names(), list(self.net.output_names())

    def vulkan_device(self) -> dict:
        """Put the net on ncnn's default GPU (a discrete one first); what it is. ncnn itself would run on the CPU."""
        if not hasattr(self.lib, "get_gpu_count"):
            raise PayloadError("no Vulkan device: this ncnn build has no Vulkan support (use_vulkan_compute)")
        if self.lib.get_gpu_count() < 1:
            raise PayloadError("no Vulkan device for use_vulkan_compute: no GPU driver found "
                               "(Debian: apt-get install mesa-vulkan-drivers libvulkan1)")
        index = self.lib.get_default_gpu_index()
        self.net.set_vulkan_device(index)
        info = self.lib.get_gpu_info(index)
        name, kind = info.device_name(), GPU_TYPES.get(info.type(), "unknown")
        software = kind == "cpu" or any(driver in name.lower() for driver in SOFTWARE_GPUS)
        return {"index": index, "name": name, "type": kind, "software": software}

    def feed(self, rng, input_shape):
        if not input_shape:
            raise PayloadError("ncnn param files carry no input shape: pass --input-shape (channel-first)")
        x = random_input(self.np, input_shape, self.np.float32, rng)
        # A batch-of-one Mat, cloned, as pnnx's generated <name>_ncnn.py feeds it.
        self.mat = self.lib.Mat(x, batch_index=0).clone()

    def invoke(self):
        # A fresh extractor per inference: an extractor caches blobs and would skip the work. It takes the net's
        # options, Vulkan included; extract() waits for the GPU and downloads the output.
        with self.net.create_extractor() as extractor:
            extractor.input(self.input_name, self.mat)
            for name in self.output_names:
                extractor.extract(name)

    def outputs(self, sample):
        # pnnx graphs are channel-first: NHWC -> NCHW here, once.
        x = self.np.ascontiguousarray(sample.transpose(2, 0, 1) if sample.ndim == 3 else sample, self.np.float32)
        with self.net.create_extractor() as extractor:
            # A batch-of-one Mat, cloned, as pnnx's own <name>_ncnn.py does; ncnn.Mat(x) gave garbage.
            extractor.input(self.input_name, self.lib.Mat(x[None], batch_index=0).clone())
            # ncnn drops the batch axis and may fold others: the host matches outputs back by size and order.
            return {name: self.np.array(extractor.extract(name)[1].numpy(batch_index=0), self.np.float32)
                    for name in self.output_names}

    def applied(self):
        # Read back after loading: ncnn turns off what the GPU lacks (fp16 storage, say).
        applied = {name: getattr(self.net.opt, name) for name in ("num_threads", *FLAGS)}
        return {**applied, "vulkan_device": self.gpu["name"]} if self.gpu else applied

    def observed(self):
        return {"gpu": self.gpu} if self.gpu else {}
