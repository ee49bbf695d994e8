"""Keras 3 ``.keras`` files rebuilt as tf_keras models (slimlab.kit.keras3), and load_any_keras.

Keras 3 models are built in this process (Keras 3 and tf_keras coexist), except one that is
built in a clean child process the way a user would, without TF_USE_LEGACY_KERAS. Every
importable model is imported with both weight sources (Keras 3, and the h5 read directly)
and compared with Keras 3's own predictions.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from slimlab.errors import ArtifactError
from slimlab.kit import keras3 as k3i
from slimlab.kit.keras3 import graph, weights
from slimlab.kit.training import keras as tf_keras

ATOL = 1e-5
ADVICE = "re-save the model with tf_keras, or convert it to ONNX/TFLite and import that"


@pytest.fixture(scope="module")
def keras3():
    import keras

    assert keras.__version__.startswith("3."), keras.__version__
    keras.utils.set_random_seed(0)
    return keras


def randomize(model, seed=0):
    """Non-trivial weights everywhere (BN statistics too), so a swapped weight shows in the outputs."""
    rng = np.random.default_rng(seed)
    values = []
    for var in model.weights:
        name = var.name.split("/")[-1]
        if "variance" in name:
            values.append(rng.uniform(0.5, 2.0, var.shape))
        elif name in ("gamma", "moving_mean", "beta"):
            values.append(rng.normal(0.3 if name == "gamma" else 0.0, 0.5, var.shape))
        else:
            values.append(rng.normal(0.0, 0.3, var.shape))
    model.set_weights([v.astype("float32") for v in values])
    return model


def save(model, tmp_path, name):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


def batch(shape, seed=1):
    return np.random.default_rng(seed).normal(size=(4, *shape)).astype("float32")


def import_both_ways(path, k3_model, shape):
    """Import with the weights read by Keras 3 and straight from the h5; both must match Keras 3."""
    x = batch(shape)
    want = np.asarray(k3_model.predict(x, verbose=0))
    for source in ("keras3", "h5"):
        model, report = k3i.import_keras3_with_report(path, weights=source)
        assert report.weights_source == source and not report.warnings, report
        np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=ATOL, rtol=ATOL)
        if source == "keras3":
            assert report.max_abs_diff < ATOL  # verified against Keras 3 during the import
            imported = model
        else:
            assert report.max_abs_diff is None  # no Keras 3 model to verify against
    assert type(imported).__module__.startswith("tf_keras")
    return imported


def test_keras3_and_tf_keras_coexist_in_one_process(keras3):
    import tensorflow as tf

    assert tf_keras().__version__.startswith("2.") and tf.keras.__name__.startswith("tf_keras")
    assert not isinstance(tf_keras().layers.Dense(1), keras3.layers.Layer)
    assert not isinstance(keras3.layers.Dense(1), tf_keras().layers.Layer)


@pytest.mark.slow
def test_a_sequential_cnn_saved_by_plain_keras3_in_a_child_process(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, keras
        from keras import layers as L
        keras.utils.set_random_seed(7)
        m = keras.Sequential([keras.Input((28, 28, 1)), L.Rescaling(1 / 255.0), L.Conv2D(8, 3, activation="relu"),
                              L.BatchNormalization(), L.MaxPooling2D(2), L.Conv2D(16, 3, padding="same"),
                              L.AveragePooling2D(2), L.Flatten(), L.Dropout(0.3), L.Dense(10, activation="softmax")])
        rng = np.random.default_rng(0)
        m.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
                       else rng.normal(0, 0.3, w.shape).astype("float32") for w in m.weights])
        x = rng.uniform(0, 255, (4, 28, 28, 1)).astype("float32")
        m.save(sys.argv[1] + "/cnn.keras")
        np.save(sys.argv[1] + "/x.npy", x)
        np.save(sys.argv[1] + "/y.npy", m.predict(x, verbose=0))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, timeout=300)
    assert k3i.keras_version_of(tmp_path / "cnn.keras").startswith("3.")
    for source in ("keras3", "h5"):
        model = k3i.import_keras3(tmp_path / "cnn.keras", weights=source)
        got = model.predict(np.load(tmp_path / "x.npy"), verbose=0)
        np.testing.assert_allclose(got, np.load(tmp_path / "y.npy"), atol=ATOL, rtol=ATOL)
    # a top-level Sequential comes back as a functional model with an explicit input layer
    assert [type(layer).__name__ for layer in model.layers][:3] == ["InputLayer", "Rescaling", "Conv2D"]


def residual_model(keras3):
    L = keras3.layers
    inp = keras3.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)  # user-named, yet stored as layers/batch_normalization
    x = L.ReLU(max_value=6.0)(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)  # auto-named batch_normalization, stored as .../batch_normalization_1
    y = L.Activation("relu")(y)
    y = L.Conv2D(8, 1)(y)
    y = L.BatchNormalization(momentum=0.9, epsilon=1e-3)(y)
    x = L.Add()([x, y])
    x = L.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    out = L.Dense(5, kernel_regularizer="l2", name="logits")(x)
    return keras3.Model(inp, L.Softmax()(out))


def test_functional_residual_batchnorm_depthwise(keras3, tmp_path):
    k3 = randomize(residual_model(keras3))
    model = import_both_ways(save(k3, tmp_path, "residual"), k3, (16, 16, 3))
    assert [layer.name for layer in model.layers] == [layer.name for layer in k3.layers]
    assert model.get_layer("logits").kernel_regularizer is not None


def test_h5_groups_are_named_by_class_not_layer_name(keras3, tmp_path):
    """Why a naive layers/<layer name> reader is wrong: it would swap these two BNs silently."""
    k3 = residual_model(keras3)
    bns = [layer.name for layer in k3.layers if type(layer).__name__ == "BatchNormalization"]
    assert bns[0] == "stem_bn" and bns[1].startswith("batch_normalization")
    paths = weights.h5_layer_paths(k3i.read_archive(save(k3, tmp_path, "residual"))[0])
    assert paths[("stem_bn",)] == "layers/batch_normalization"
    assert paths[(bns[1],)] == "layers/batch_normalization_1"
    assert paths[(bns[2],)] == "layers/batch_normalization_2"
    assert paths[("stem_conv",)] == "layers/conv2d"


def supported_layer_models(keras3):
    """Every supported layer beyond the residual model's, in small models: (name, model, input shape)."""
    L = keras3.layers
    inp = keras3.Input((12, 12, 4))
    branches = [L.Conv2D(4, 1, activation="relu")(inp), L.Conv2D(4, 3, padding="same", activation="swish")(inp),
                L.MaxPooling2D(3, strides=1, padding="same")(inp),
                L.AveragePooling2D(3, strides=1, padding="same")(inp)]
    x = L.Concatenate()(branches)
    s = L.Reshape((1, 1, 16))(L.Dense(16, activation="sigmoid")(L.GlobalAveragePooling2D()(x)))
    x = L.Flatten()(L.Multiply()([x, s]))
    inception_se = keras3.Model(inp, L.Dense(3)(L.GlobalMaxPooling2D()(L.Reshape((12, 12, 16))(x))))

    separable = keras3.Sequential([
        keras3.Input((10, 10, 3)), L.SeparableConv2D(8, 3, padding="same", activation="relu"),
        L.SeparableConv2D(6, 3, depth_multiplier=2, use_bias=False), L.BatchNormalization(center=False),
        L.GlobalAveragePooling2D(), L.Dense(3)])
    inp = keras3.Input((32, 2))
    x = L.SpatialDropout1D(0.1)(L.MaxPooling1D(2)(L.Conv1D(8, 5, activation="relu")(inp)))
    x = L.AveragePooling1D(2)(L.Conv1D(8, 3, dilation_rate=2)(L.ZeroPadding1D(1)(x)))
    conv1d = keras3.Model(inp, L.Dense(2)(L.Concatenate()([L.GlobalAveragePooling1D()(x), L.GlobalMaxPooling1D()(x)])))
    inp = keras3.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu6")(inp)
    a, b, c, d = L.LeakyReLU(negative_slope=0.1)(x), L.PReLU()(x), L.ELU()(x), L.Activation("gelu")(x)
    x = L.Average()([L.Subtract()([a, b]), L.Maximum()([c, d]), L.Minimum()([a, d])])
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same")(L.SpatialDropout2D(0.1)(x))
    x = L.Permute((2, 1, 3))(L.UpSampling2D()(L.Cropping2D(((1, 1), (2, 0)))(x)))
    zoo = keras3.Model(inp, L.Dense(2, activation="tanh")(L.GlobalMaxPooling2D()(x)))
    return [("inception_se", inception_se, (12, 12, 4)), ("separable", separable, (10, 10, 3)),
            ("conv1d", conv1d, (32, 2)), ("zoo", zoo, (8, 8, 3))]


def test_every_supported_layer_comes_through(keras3, tmp_path):
    for name, k3, shape in supported_layer_models(keras3):
        import_both_ways(save(randomize(k3), tmp_path, name), k3, shape)


@pytest.mark.slow
def test_nested_models_are_flattened(keras3, tmp_path):
    """Transfer learning: a Keras application inside a functional model, called with training=False."""
    L = keras3.layers
    base = randomize(keras3.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                                     weights=None))
    inp = keras3.Input((32, 32, 3))
    functional = keras3.Model(inp, L.Dense(4)(L.GlobalAveragePooling2D()(base(inp, training=False))))
    model = import_both_ways(save(functional, tmp_path, "nested_fn"), functional, (32, 32, 3))
    assert not any(isinstance(layer, tf_keras().Model) for layer in model.layers)
    assert len(model.layers) == len(base.layers) + 2  # the base's input layer is replaced by ours
    # output_layers points straight into the nested model (1-based there, 0-based in inbound nodes)
    direct = keras3.Model(inp, base(inp))
    model, report = k3i.import_keras3_with_report(save(direct, tmp_path, "nested_out"))
    assert report.max_abs_diff < ATOL and report.inlined_models == [base.name]

    sub = keras3.Sequential([keras3.Input((8, 8, 3)), L.Conv2D(4, 3), L.BatchNormalization()], name="sub")
    seq = randomize(keras3.Sequential([keras3.Input((8, 8, 3)), sub, L.Flatten(), L.Dense(2)]))
    import_both_ways(save(seq, tmp_path, "nested_seq"), seq, (8, 8, 3))


def test_a_frozen_submodel_called_twice_shares_weights_and_clashing_names_are_renamed(keras3, tmp_path):
    L = keras3.layers
    tower = keras3.Sequential([keras3.Input((6,)), L.Dense(4, name="dense_x")], name="tower")
    tower.trainable = False
    a, b = keras3.Input((6,)), keras3.Input((6,))
    siamese = randomize(keras3.Model([a, b], L.Dense(1, name="dense_x")(L.Subtract()([tower(a), tower(b)]))))
    x = [batch((6,), seed) for seed in range(2)]
    model, report = k3i.import_keras3_with_report(save(siamese, tmp_path, "siamese"))
    np.testing.assert_allclose(model.predict(x, verbose=0), siamese.predict(x, verbose=0), atol=ATOL)
    assert report.inlined_models == ["tower"]
    assert report.renamed_layers == {"tower/dense_x": "tower_dense_x"}
    assert [layer.name for layer in model.layers if not layer.trainable] == ["tower_dense_x"]
    assert len(model.trainable_weights) == 2  # only the outer dense_x


def test_a_shared_layer_with_several_inputs_and_outputs(keras3, tmp_path):
    L = keras3.layers
    a, b = keras3.Input((6,), name="a"), keras3.Input((6,), name="b")
    shared = L.Dense(4, activation="relu", name="shared")
    k3 = randomize(keras3.Model([a, b], [L.Dense(2)(L.Concatenate()([shared(a), shared(b)])), shared(b)]))
    path = save(k3, tmp_path, "shared")
    x = [batch((6,), 2), batch((6,), 3)]
    for source in ("keras3", "h5"):
        model = k3i.import_keras3(path, weights=source)
        for got, want in zip(model.predict(x, verbose=0), k3.predict(x, verbose=0)):
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=ATOL)
        assert len(model.get_layer("shared").weights) == 2


def test_normalization_frozen_layers_and_nested_training_false(keras3, tmp_path):
    L = keras3.layers
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(0).normal(3, 2, (64, 5)).astype("float32"))
    sub = keras3.Sequential([keras3.Input((5,)), L.Dense(4, trainable=False), L.BatchNormalization(),
                             L.Dropout(0.5)], name="sub")
    inp = keras3.Input((5,))
    x = L.Normalization(mean=[1, 2, 3, 4, 5], variance=[1, 2, 3, 4, 5])(norm(inp))
    k3 = keras3.Model(inp, L.Dense(2)(sub(x, training=False)))
    randomize(sub)
    model = import_both_ways(save(k3, tmp_path, "norm"), k3, (5,))
    np.testing.assert_allclose(model.get_layer(norm.name).get_weights()[0].ravel(), norm.mean.numpy().ravel())
    assert not model.layers[3].trainable  # the frozen Dense inside "sub"
    # Keras 3's sub(x, training=False) pins BN and Dropout to inference mode; so does the import
    x = np.ones((3, 5), "float32")
    np.testing.assert_allclose(model(x, training=True), model(x, training=False))


def test_mixed_precision_is_kept_and_verified_at_the_float16_tolerance(keras3, tmp_path):
    L = keras3.layers
    keras3.mixed_precision.set_global_policy("mixed_float16")
    try:
        k3 = keras3.Sequential([keras3.Input((8, 8, 3)), L.Conv2D(4, 3), L.GlobalAveragePooling2D(),
                                L.Dense(2, dtype="float32")])
    finally:
        keras3.mixed_precision.set_global_policy("float32")
    model, report = k3i.import_keras3_with_report(save(k3, tmp_path, "mp"))
    assert [layer.dtype_policy.name for layer in model.layers[1:]] == ["mixed_float16"] * 2 + ["float32"]
    assert report.max_abs_diff < 1e-2


def test_auto_falls_back_to_the_h5_when_keras3_cannot_load_the_file(keras3, tmp_path, monkeypatch):
    k3 = randomize(residual_model(keras3))
    path = save(k3, tmp_path, "residual")

    def newer_keras(*args):
        raise ValueError("pretend this file came from a newer Keras 3")

    monkeypatch.setattr(graph, "Keras3Weights", newer_keras)
    with pytest.warns(UserWarning, match="newer Keras 3.*weights read from h5"):
        model, report = k3i.import_keras3_with_report(path)
    assert report.weights_source == "h5" and report.max_abs_diff is None
    x = batch((16, 16, 3))
    np.testing.assert_allclose(model.predict(x, verbose=0), k3.predict(x, verbose=0), atol=ATOL, rtol=ATOL)
    with pytest.raises(ArtifactError, match=f"^{path}: Keras 3 could not load it: pretend"):
        k3i.import_keras3(path, weights="keras3")


def test_a_wrong_import_is_caught_by_the_verification(keras3, tmp_path, monkeypatch):
    k3 = randomize(residual_model(keras3))
    path = save(k3, tmp_path, "residual")
    real = weights.assign
    # Weights in the wrong places pass every shape check (as two swapped same-shaped BNs would): verify catches it.
    monkeypatch.setattr(graph, "assign", lambda layer, values, names, where: real(
        layer, [v[::-1] if v.ndim == 1 else v for v in values], names, where))
    with pytest.raises(ArtifactError, match=f"^{path}: the rebuilt tf_keras model differs from Keras 3 by"):
        k3i.import_keras3(path)


# --- refusals: one line, naming the file and every problem -----------------------------------


def test_an_unsupported_layer_is_refused_by_name_before_keras3_loads_anything(keras3, tmp_path, monkeypatch):
    L = keras3.layers
    inp = keras3.Input((8,))
    path = save(keras3.Model(inp, L.Dense(2)(L.LayerNormalization(name="ln_1")(L.Dense(4)(inp)))), tmp_path, "ln")
    monkeypatch.setattr(graph, "Keras3Weights", lambda *a: pytest.fail("Keras 3 load attempted"))
    with pytest.raises(k3i.UnsupportedKeras3Model) as err:
        k3i.import_keras3(path)
    assert isinstance(err.value, ArtifactError)
    assert str(err.value) == (f"{path}: layer 'ln_1' is a keras.layers.LayerNormalization, which slimlab's "
                              f"Keras 3 import does not support; {ADVICE}")


def test_a_custom_layer_is_refused_by_name(keras3, tmp_path):
    @keras3.saving.register_keras_serializable(package="MyPkg")
    class Scale(keras3.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras3.Input((4,))
    path = save(keras3.Model(inp, keras3.layers.Dense(2)(Scale(name="my_scale")(inp))), tmp_path, "custom")
    with pytest.raises(k3i.UnsupportedKeras3Model,
                       match="layer 'my_scale' is a custom layer \\(registered as 'MyPkg>Scale'"):
        k3i.import_keras3(path)


def test_several_problems_are_all_listed_on_one_line(keras3, tmp_path):
    L = keras3.layers
    inp = keras3.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="hard_sigmoid", name="c_hs")(inp)  # a different formula in tf_keras
    x = L.Lambda(lambda t: t + 1, name="plus_one")(x)
    x = L.GroupNormalization(groups=2, name="gn")(x)
    path = save(keras3.Model(inp, x), tmp_path, "bad")
    with pytest.raises(k3i.UnsupportedKeras3Model) as err:
        k3i.import_keras3(path)
    assert len(err.value.problems) == 3
    # the config check that runs when the config loads (without TensorFlow) finds the same
    assert k3i.check(k3i.read_archive(path)[0], quick=True) == err.value.problems
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{path}: layer 'c_hs' (Conv2D) uses activation 'hard_sigmoid', which tf_keras "
                                     "does not compute the same way; layer 'plus_one' is a keras.layers.Lambda")
    assert "; layer 'gn' is a keras.layers.GroupNormalization" in str(err.value)
    assert str(err.value).endswith(ADVICE)


def test_keras_ops_in_the_graph_and_subclassed_models_are_refused(keras3, tmp_path):
    inp = keras3.Input((4,))
    ops = k3i.check(k3i.read_archive(save(keras3.Model(inp, keras3.layers.Dense(2)(inp) + 1.0), tmp_path, "ops"))[0])
    assert len(ops) == 1 and "is a Keras 3 operation (keras.src.ops.numpy.Add" in ops[0]

    @keras3.saving.register_keras_serializable(package="MyPkg")
    class Net(keras3.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = keras3.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(k3i.UnsupportedKeras3Model, match="subclassed model"):
        k3i.import_keras3(save(net, tmp_path, "subclassed"))


# --- load_any_keras: every Keras file kind --------------------------------------------------------


def test_load_any_keras_takes_every_keras_file_kind(keras3, tmp_path):
    k3 = randomize(keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)]))
    tfk = tf_keras()
    k2 = tfk.Sequential([tfk.Input((4,)), tfk.layers.Dense(2)])
    k2.save(tmp_path / "k2.keras")
    k2.save(tmp_path / "k2.h5")
    k2.save(tmp_path / "saved", save_format="tf")
    assert json.loads(zipfile.ZipFile(tmp_path / "k2.keras").read("metadata.json"))["keras_version"].startswith("2.")
    x = batch((4,))
    for path, want in ((save(k3, tmp_path, "k3"), k3), (tmp_path / "k2.keras", k2), (tmp_path / "k2.h5", k2),
                       (tmp_path / "saved", k2)):
        model = k3i.load_any_keras(path)
        assert isinstance(model, tfk.Model), path
        np.testing.assert_allclose(model.predict(x, verbose=0), want.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ArtifactError, match="tf_keras.models.load_model"):
        k3i.import_keras3(tmp_path / "k2.keras")


def test_load_any_keras_refuses_what_is_not_a_keras_model_in_one_line(keras3, tmp_path):
    import tensorflow as tf

    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    (tmp_path / "empty").mkdir()
    keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)]).save(tmp_path / "k3.h5")
    module = tf.Module()
    module.f = tf.function(lambda x: 2 * x, input_signature=[tf.TensorSpec([None, 4])])
    tf.saved_model.save(module, str(tmp_path / "plain"))
    expected = {
        "bad.keras": "not a .keras archive",
        "bad.h5": "not an HDF5 file",
        "empty": "a folder without saved_model.pb: not a SavedModel",
        "k3.h5": "written by Keras 3.",
        "plain": "a SavedModel without Keras metadata (keras_metadata.pb), so not a Keras model",
    }
    for name, message in expected.items():
        with pytest.raises(ArtifactError) as err:
            k3i.load_any_keras(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: {message}"), err.value
        assert "\n" not in str(err.value)


@pytest.mark.slow
def test_tfmot_prunes_and_quantizes_the_imported_model(keras3, tmp_path):
    import tensorflow_model_optimization as tfmot

    model = k3i.import_keras3(save(randomize(residual_model(keras3)), tmp_path, "residual"))
    tfk, sparsity = tf_keras(), tfmot.sparsity.keras
    schedule = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    wrapped = tfk.models.clone_model(model, clone_function=lambda layer: sparsity.prune_low_magnitude(
        layer, pruning_schedule=schedule) if type(layer).__name__ in ("Conv2D", "Dense") else layer)
    wrapped.compile("sgd", "sparse_categorical_crossentropy")
    x = batch((16, 16, 3))
    wrapped.fit(x, np.arange(4) % 5, epochs=1, batch_size=4, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    kernel = sparsity.strip_pruning(wrapped).get_layer("logits").kernel.numpy()
    assert abs(1 - np.count_nonzero(kernel) / kernel.size - 0.5) < 0.05
    qat = tfmot.quantization.keras.quantize_model(model)  # refuses nested models: ours are flat
    assert qat.predict(x[:2], verbose=0).shape == (2, 5)
