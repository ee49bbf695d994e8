"""convert.ncnn on a Pad that adds zero channels (BlazeFace's residual shortcut): rewritten as a 1x1 Conv, since
pnnx leaves it as a Pad layer ncnn cannot load; other Pads are left alone."""

import re
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimlab import formats, registry
from slimlab.plugins.formats import ncnn as ncnn_plugin

RNG = np.random.default_rng(3)


def onnx_model(nodes, outputs, weights=(), batch="N"):
    """A float model with one 1x4x8x8 input ``x`` (batch ``batch``); ``outputs``: name -> shape after the batch."""
    graph = helper.make_graph(
        nodes, "channel_pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 8, 8])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *shape]) for name, shape in outputs.items()],
        [numpy_helper.from_array(np.asarray(value, np.int64 if name.endswith("pads") else np.float32), name)
         for name, value in weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def residual_block(begin: int, end: int):
    """x -> Conv(4) -> a; Pad a with zero channels (``begin`` + ``end`` = 4) + Conv(a, 8 channels) -> y."""
    conv = lambda name, src, out: helper.make_node("Conv", [src, name], [out], kernel_shape=[3, 3], pads=[1] * 4)
    return onnx_model(
        [conv("w1", "x", "a"), helper.make_node("Pad", ["a", "pads"], ["padded"]),
         conv("w2", "a", "branch"), helper.make_node("Add", ["padded", "branch"], ["y"])],
        {"y": [8, 8, 8]},
        [("w1", RNG.normal(0, 0.3, (4, 4, 3, 3))), ("w2", RNG.normal(0, 0.3, (8, 4, 3, 3))),
         ("pads", [0, begin, 0, 0, 0, end, 0, 0])])


def onnxruntime_outputs(model, x) -> dict:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


@pytest.mark.parametrize("begin, end", [(0, 4), (4, 0), (1, 3)])
def test_channel_pad_reaches_ncnn_and_matches_onnxruntime(begin, end, monkeypatch):
    model = residual_block(begin, end)
    x = RNG.random((3, 4, 8, 8), dtype=np.float32)
    (expected,) = onnxruntime_outputs(model, x).values()
    # The conversion alone (its parity record would need a source artifact's cached outputs).
    monkeypatch.setattr(ncnn_plugin.parity, "record", lambda *args, **kwargs: None)
    stage = registry.stages()["convert.ncnn"]
    source = SimpleNamespace(kind="onnx", model=model.SerializeToString(), lineage=[])
    converted = stage.run(source, stage.params(), SimpleNamespace(splits=SimpleNamespace(x_test=x), record=dict))
    assert not re.search(rb"^Pad\s", converted.param, re.M)  # the layer ncnn lacks (its own is Padding)
    # convert.ncnn takes the ONNX input for NHWC, so the ncnn model is fed x as it is: the same numbers reach "x".
    (actual,) = formats.get("ncnn").predict(converted, x).values()
    np.testing.assert_allclose(actual.reshape(expected.shape), expected, rtol=0, atol=1e-4)


def test_other_pads_are_left_alone():
    pad = lambda out, pads, *value, mode="constant": [helper.make_node(
        "Pad", ["x", f"{out}_pads", *value], [out], mode=mode)]
    model = onnx_model(
        pad("spatial", [0, 0, 1, 1, 0, 0, 1, 1]) + pad("ones", [0, 0, 0, 0, 0, 4, 0, 0], "one")
        + pad("edge", [0, 0, 0, 0, 0, 2, 0, 0], mode="edge") + pad("both", [0, 0, 0, 1, 0, 4, 0, 0])
        + pad("cropped", [0, 0, 0, 0, 0, -1, 0, 0]) + pad("channels", [0, 0, 0, 0, 0, 4, 0, 0]),
        {"spatial": [4, 10, 10], "ones": [8, 8, 8], "edge": [6, 8, 8], "both": [8, 8, 9], "cropped": [3, 8, 8],
         "channels": [8, 8, 8]},
        [("spatial_pads", [0, 0, 1, 1, 0, 0, 1, 1]), ("ones_pads", [0, 0, 0, 0, 0, 4, 0, 0]), ("one", 1.0),
         ("edge_pads", [0, 0, 0, 0, 0, 2, 0, 0]), ("both_pads", [0, 0, 0, 1, 0, 4, 0, 0]),
         ("cropped_pads", [0, 0, 0, 0, 0, -1, 0, 0]), ("channels_pads", [0, 0, 0, 0, 0, 4, 0, 0])], batch=1)
    x = RNG.random((1, 4, 8, 8), dtype=np.float32)
    expected = onnxruntime_outputs(model, x)
    ncnn_plugin.channel_pads_as_convs(model)
    onnx.checker.check_model(model)
    op_types = {node.output[0]: node.op_type for node in model.graph.node}
    assert op_types == {"spatial": "Pad", "ones": "Pad", "edge": "Pad", "both": "Pad", "cropped": "Pad",
                        "channels": "Conv"}
    for name, actual in onnxruntime_outputs(model, x).items():
        np.testing.assert_array_equal(actual, expected[name], err_msg=name)
