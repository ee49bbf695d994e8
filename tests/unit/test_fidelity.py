"""Fidelity and output matching (issue 22): the numbers every artifact and device evaluation report per output."""

import numpy as np
import pytest

from slimlab_payload.evaluate import OutputMismatch, align, fidelities, fidelity, match


def test_a_model_against_itself_is_exact():
    x = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    found = fidelity(np, x, x.copy())
    assert found["snr_db"] == float("inf") and found["cosine"] == pytest.approx(1.0)
    assert found["max_abs_diff_rel"] == 0.0


@pytest.mark.parametrize("snr_db", [5.0, 20.0, 40.0])
def test_noise_of_known_power_gives_its_snr(snr_db):
    rng = np.random.default_rng(1)
    signal = rng.normal(0, 2.0, size=(400, 64))
    noise = rng.normal(0, 1.0, size=signal.shape)
    noise *= np.sqrt(np.sum(signal ** 2) / np.sum(noise ** 2) / 10 ** (snr_db / 10))  # exactly that power
    found = fidelity(np, signal.astype(np.float32), (signal + noise).astype(np.float32))
    assert abs(found["snr_db"] - snr_db) < 0.5
    assert found["cosine"] < 1.0 and found["max_abs_diff_rel"] > 0


def test_renamed_reordered_outputs_are_matched_by_name_then_by_value():
    rng = np.random.default_rng(2)
    reference = {"class_logits": rng.normal(size=(30, 4)), "box": rng.uniform(size=(30, 4)),
                 "mask": rng.normal(size=(30, 2, 2, 3))}
    # as ncnn gives them: other names, reversed, the box slightly off, an extra axis on the mask
    actual = {"out0": reference["mask"].reshape(30, 1, 12) + 1e-4, "out1": reference["box"] + 1e-3,
              "out2": reference["class_logits"]}
    assert match(np, reference, actual) == {"class_logits": "out2", "box": "out1", "mask": "out0"}
    aligned = align(np, reference, actual)
    assert aligned["mask"].shape == (30, 2, 2, 3)
    assert all(found["snr_db"] > 30 for found in fidelities(np, reference, actual).values())
    assert match(np, reference, {**actual, "class_logits": actual["out2"]})["class_logits"] == "class_logits"


def test_an_output_nothing_matches_is_one_line():
    with pytest.raises(OutputMismatch) as raised:
        match(np, {"box": np.zeros((3, 4))}, {"out0": np.zeros((3, 5))})
    assert str(raised.value) == "no output matches 'box' [4]: the model gives out0 [5]"
