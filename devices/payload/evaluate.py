"""How close one model's outputs come to another's, and the model run on the device against the host's run.

The same functions score conversions on the host and evaluations on devices, so both measure
alike. Outputs are dicts, output name -> array with the batch first. Converters rename and
reorder outputs (TFLite lists a Keras model's outputs in reverse, pnnx names them out0, out1,
and ncnn adds axes), so :func:`match` pairs them back: by name, else among the outputs with
as many values per sample, by value (the two ran on the same inputs).

For a device's evaluation the host sends one ``.npz``: ``x`` (NHWC float32 samples; a model of
several inputs: ``x/<input name>`` each), the
host's outputs for them as ``output/<name>``, and, for a classifier, ``y`` (the labels) and
``classify`` (the name of the logits output). The device answers with per-output fidelity to
the host, and for a classifier its accuracy and top-1 agreement. Whether that passes is the
host's call (slimlab's parity bounds), not the payload's.
"""

from slimlab_payload.runtime import PayloadError

OUTPUT_PREFIX = "output/"
INPUT_PREFIX = "x/"  # a model of several inputs: one array per input, "x/<input name>"


class OutputMismatch(PayloadError):
    """A model's outputs cannot be matched to the reference's: one line naming both."""


def _per_sample(np, value) -> int:
    return int(np.prod(value.shape[1:]))


def match(np, reference: dict, actual: dict) -> dict:
    """Reference output name -> the name of ``actual``'s output that is the same output: the same name, else, among
    the outputs left with as many values per sample, the closest in value (both ran on the same inputs)."""
    matched = {name: name for name in reference if name in actual}
    left = [name for name in actual if name not in matched.values()]
    for name, expected in reference.items():
        if name in matched:
            continue
        same_size = [key for key in left if _per_sample(np, actual[key]) == _per_sample(np, expected)]
        if not same_size:
            raise OutputMismatch(f"no output matches {name!r} {list(expected.shape[1:])}: the model gives "
                                 + ", ".join(f"{key} {list(value.shape[1:])}" for key, value in actual.items()))
        target = expected.reshape(len(expected), -1)
        found = min(same_size, key=lambda key: float(np.mean(np.square(actual[key].reshape(target.shape) - target))))
        matched[name] = found
        left.remove(found)
    return matched


def align(np, reference: dict, actual: dict, names: dict | None = None) -> dict:
    """``actual``'s outputs under ``reference``'s names and per-sample shapes, paired by ``names`` (from
    :func:`match`, which pairs them if not given)."""
    names = names or match(np, reference, actual)
    return {name: np.asarray(actual[names[name]], np.float32).reshape((-1, *expected.shape[1:]))
            for name, expected in reference.items()}


def fidelity(np, expected, actual) -> dict:
    """One output against its reference: SNR in dB, cosine similarity and max |difference| relative to the
    reference's range (an exact copy has infinite SNR and cosine 1)."""
    expected = expected.astype(np.float64).reshape(len(expected), -1)
    diff = actual.astype(np.float64).reshape(expected.shape) - expected
    noise, signal = float(np.sum(diff * diff)), float(np.sum(expected * expected))
    norms = np.linalg.norm(expected, axis=1) * np.linalg.norm(expected + diff, axis=1)
    cosines = np.where(norms > 0, np.sum(expected * (expected + diff), axis=1) / np.where(norms > 0, norms, 1), 1.0)
    value_range = float(np.ptp(expected)) or 1.0
    return {
        "snr_db": float("inf") if noise == 0 else (10 * np.log10(signal / noise) if signal else float("-inf")),
        "cosine": float(np.mean(cosines)),
        "max_abs_diff": float(np.abs(diff).max()),
        "mean_abs_diff": float(np.abs(diff).mean()),
        "value_range": value_range,
        "max_abs_diff_rel": float(np.abs(diff).max()) / value_range,
    }


def fidelities(np, expected: dict, actual: dict) -> dict:
    """:func:`fidelity` of every output, by the reference's names (``actual`` aligned to them first)."""
    actual = align(np, expected, actual)
    return {name: fidelity(np, expected[name], actual[name]) for name in expected}


def top1(np, expected, actual) -> float:
    """The share of samples whose largest logit is the same class in both."""
    return float(np.mean(np.argmax(actual, -1) == np.argmax(expected, -1)))


def evaluate(np, runtime, path: str) -> dict:
    """Every sample of the slice at ``path`` through ``runtime`` (loaded, with the record's options)."""
    with np.load(path, allow_pickle=False) as data:
        several = {key[len(INPUT_PREFIX):]: data[key] for key in data.files if key.startswith(INPUT_PREFIX)}
        x = several or data["x"]
        expected = {key[len(OUTPUT_PREFIX):]: data[key] for key in data.files if key.startswith(OUTPUT_PREFIX)}
        classify = str(data["classify"]) if "classify" in data.files else None
        y = data["y"] if "y" in data.files else None
    actual = align(np, expected, runtime.run_batch(x))
    found = {"samples": int(len(next(iter(several.values()))) if several else len(x)), "outputs": {name: fidelity(np, expected[name], actual[name]) for name in expected}}
    if classify is not None:
        found["agreement"] = top1(np, expected[classify], actual[classify])
        if y is not None:
            found["accuracy"] = float(np.mean(np.argmax(actual[classify], -1) == y))
            found["host_accuracy"] = float(np.mean(np.argmax(expected[classify], -1) == y))
    return found
