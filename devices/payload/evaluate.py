"""The model run on the device over a slice of the test split, against the host's run of the same file.

The host sends one ``.npz``: ``x`` (NHWC float32 samples), ``y`` (their labels) and
``logits`` (the host's logits for them). The device answers with its accuracy, its
top-1 agreement with the host and how far its logits are from the host's. Whether
that passes is the host's call (slimlab's parity bounds), not the payload's.
"""


def agreement(np, expected, actual) -> dict:
    """Top-1 agreement and max/mean |logit difference| of ``actual`` against ``expected``, the max also relative to
    ``expected``'s logit range."""
    actual = actual.reshape(expected.shape)
    diff = np.abs(actual.astype(np.float64) - expected)
    logit_range = float(np.ptp(expected)) or 1.0
    return {
        "samples": int(len(expected)),
        "agreement": float(np.mean(np.argmax(actual, -1) == np.argmax(expected, -1))),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_range": logit_range,
        "max_abs_diff_rel": float(diff.max()) / logit_range,
    }


def evaluate(np, runtime, path: str) -> dict:
    """Every sample of the slice at ``path`` through ``runtime`` (loaded, with the record's options)."""
    with np.load(path, allow_pickle=False) as data:
        x, y, expected = data["x"], data["y"], data["logits"]
    actual = runtime.logits(x)
    return {**agreement(np, expected, actual), "accuracy": float(np.mean(np.argmax(actual, -1) == y)),
            "host_accuracy": float(np.mean(np.argmax(expected, -1) == y))}
