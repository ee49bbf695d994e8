"""The built-in tasks: their metrics against hand-computed answers, and the labels and outputs they refuse."""

import numpy as np
import pytest

from slimlab.errors import ConfigError
from slimlab.plugins.tasks.classification import Classification
from slimlab.plugins.tasks.detection import Detection, detections, nms
from slimlab.plugins.tasks.fidelity import Fidelity
from slimlab.plugins.tasks.regression import Regression
from slimlab.plugins.tasks.segmentation import Segmentation
from slimlab.tasks import OutputSpec

BLAZEFACE = {"decoder": "anchors", "boxes": "regressors", "scores": "classificators", "input_size": [128, 128],
             "strides": [8, 16], "anchors_per_cell": [2, 6], "scale": 128}
PLAIN_BOXES = {"decoder": "boxes", "boxes": "boxes", "scores": "scores", "layout": "xyxy", "sigmoid": False}


def refusal(call, *args) -> str:
    """The message of the ConfigError ``call(*args)`` raises, checked to be one line."""
    with pytest.raises(ConfigError) as refused:
        call(*args)
    message = str(refused.value)
    assert "\n" not in message
    return message


def boxes_model(boxes, scores) -> dict[str, np.ndarray]:
    """Outputs of a model that gives decoded [x1, y1, x2, y2] boxes and their scores."""
    return {"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32)}


# Classification


def test_classification_scores_accuracy_and_top5_only_with_ten_classes_or_more():
    task = Classification()
    params = task.validate(None, "task")
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], np.float32)
    labels = task.labels(params, np.array([[1], [0], [1], [2]]), "data")
    assert labels.shape == (4,)
    assert task.metrics(params, {"probs": logits}, labels) == {"accuracy": 0.5}

    ten = np.tile(np.arange(10, dtype=np.float32), (2, 1))  # class 9 first, then 8, 7, 6, 5
    assert task.metrics(params, {"logits": ten}, np.array([5, 4])) == {"accuracy": 0.0, "top5": 0.5}
    assert "out of range" in refusal(task.metrics, params, {"probs": logits}, np.array([0, 1, 2, 3]))


def test_classification_agreement_counts_equal_top_classes():
    task = Classification()
    params = task.validate({"output": "logits"}, "task")
    reference = {"logits": np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32), "other": np.zeros((4, 1))}
    outputs = {"logits": np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32), "other": np.zeros((4, 1))}
    assert task.agreement(params, reference, outputs) == {"top1_agreement": 0.75}


@pytest.mark.parametrize("y, problem", [
    (np.array([0.0, 1.5]), "whole numbers"),
    (np.array([0, -1]), "out of range: -1"),
    (np.array(["cat", "dog"]), "whole numbers"),
    (np.eye(3), "one-hot? give class indices"),
])
def test_classification_refuses_bad_labels_in_one_line_naming_the_data(y, problem):
    task = Classification()
    message = refusal(task.labels, task.validate(None, "task"), y, "data set 'faces' (val)")
    assert message.startswith("data set 'faces' (val): ") and problem in message


def test_reads_needs_the_output_param_when_the_model_has_several_outputs():
    task = Classification()
    outputs = [OutputSpec("logits", (None, 10)), OutputSpec("embedding", (None, 64))]
    message = refusal(task.reads, task.validate(None, "task"), outputs)
    assert "logits" in message and "embedding" in message and "task.params.output" in message
    assert task.reads(task.validate({"output": "logits"}, "task"), outputs) == ["logits"]
    assert "(None, 4, 4, 10)" in refusal(task.reads, task.validate(None, "task"), [OutputSpec("map", (None, 4, 4, 10))])


# Regression


def test_regression_scores_mae_and_nme_by_hand():
    task = Regression()
    params = task.validate({"normaliser": {"points": [0, 1], "dims": 2}}, "task")
    truth = np.array([[[0, 0], [2, 0], [0, 2]], [[0, 0], [4, 0], [1, 1]]], np.float64)
    predicted = truth.copy()
    predicted[0, 0] += [1, 0]  # errors 1, 0, 0: mean 1/3 over an eye distance of 2 -> 1/6
    predicted[1, 2] += [3, 4]  # errors 0, 0, 5: mean 5/3 over an eye distance of 4 -> 5/12
    labels = task.labels(params, truth.reshape(2, 6), "data")  # flat labels fit the (N, 3, 2) output
    scores = task.metrics(params, {"landmarks": predicted.astype(np.float32)}, labels)
    assert scores["mae"] == pytest.approx((1 + 3 + 4) / 12)
    assert scores["nme"] == pytest.approx((1 / 6 + 5 / 12) / 2)
    assert "do not fit" in refusal(task.metrics, params, {"landmarks": predicted[:, :2]}, labels)
    assert "points" in refusal(task.validate, {"normaliser": {"points": [1, 1]}}, "task")


@pytest.mark.parametrize("y", [np.array([1.0, np.nan]), np.array([["a"], ["b"]]), np.array(3.0)])
def test_regression_refuses_bad_labels_in_one_line_naming_the_data(y):
    task = Regression()
    assert refusal(task.labels, task.validate(None, "task"), y, "data set 'ages'").startswith("data set 'ages': ")


# Segmentation


def test_segmentation_miou_by_hand_on_a_2x2_mask():
    task = Segmentation()
    params = task.validate({"ignore_index": 255}, "task")
    labels = task.labels(params, np.array([[[0, 1], [1, 1]]]), "data")
    predicted = np.array([[0, 1], [0, 1]])
    logits = np.eye(3, dtype=np.float32)[predicted][None]  # class 2: neither labelled nor predicted
    # Class 0: 1 hit, union 2 -> 1/2. Class 1: 2 hits, union 3 -> 2/3. Class 2 is absent and not averaged.
    assert task.metrics(params, {"logits": logits}, labels) == pytest.approx({"miou": 7 / 12, "pixel_accuracy": 3 / 4})
    ignored = np.array([[[0, 1], [255, 1]]])  # the one wrong pixel is not scored
    assert task.metrics(params, {"logits": logits}, ignored) == {"miou": 1.0, "pixel_accuracy": 1.0}
    assert "(N, H, W)" in refusal(task.labels, params, np.zeros((2, 4)), "data")
    assert "(None, 8, 10)" in refusal(task.reads, params, [OutputSpec("logits", (None, 8, 10))])


# Detection


def test_blazeface_short_range_has_896_anchors_and_a_zero_regressor_is_its_anchor_centre():
    task = Detection()
    params = task.validate(BLAZEFACE, "task")
    anchors = params.anchors()
    assert anchors.shape == (896, 2)  # 16 x 16 cells x 2 + 8 x 8 cells x 6
    assert anchors[0].tolist() == [0.5 / 16, 0.5 / 16] and anchors[-1].tolist() == [7.5 / 8, 7.5 / 8]
    corners = params.corners(np.zeros((1, 896, 16)))
    assert np.array_equal(corners[0, :, :2], anchors) and np.array_equal(corners[0, :, 2:], anchors)
    raw = np.zeros((1, 896, 16))
    raw[0, 0, :4] = [12.8, 0, 64, 32]  # moved 0.1 right, 0.5 wide, 0.25 high
    centre = [0.03125 + 0.1, 0.03125]
    assert params.corners(raw)[0, 0] == pytest.approx([centre[0] - 0.25, centre[1] - 0.125,
                                                       centre[0] + 0.25, centre[1] + 0.125])
    outputs = [OutputSpec("regressors", (1, 896, 16)), OutputSpec("classificators", (1, 896, 1))]
    assert task.reads(params, outputs) == ["regressors", "classificators"]
    outputs[0] = OutputSpec("regressors", (1, 900, 16))
    assert "896 anchors" in refusal(task.reads, params, outputs)


def test_nms_keeps_the_best_of_two_overlapping_boxes():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.9], [2, 2, 3, 3]], np.float64)
    assert nms(boxes, np.array([0.8, 0.9, 0.7]), 0.3).tolist() == [1, 2]
    params = Detection().validate({**PLAIN_BOXES, "layout": "yxyx"}, "task")
    found = detections(params, boxes_model([[[0, 0, 1, 1], [0, 0, 0.75, 1]]], [[0.75, 0.875]]))
    assert found[0].tolist() == [[0, 0.875, 0, 0, 1, 0.75]]  # the yxyx box, as [x1, y1, x2, y2]


def test_map_is_one_when_every_box_is_found_exactly():
    task = Detection()
    params = task.validate(PLAIN_BOXES, "task")
    truth = np.array([[[0, 0.1, 0.1, 0.4, 0.5], [1, 0.5, 0.5, 0.9, 0.8]],
                      [[1, 0.2, 0.2, 0.6, 0.7], [-1, 0, 0, 0, 0]]])
    labels = task.labels(params, truth, "data")
    outputs = boxes_model(truth[..., 1:], [[[0.9, 0], [0, 0.8]], [[0, 0.7], [0, 0]]])
    assert task.metrics(params, outputs, labels) == {"map50": 1.0, "map50_95": 1.0}


def test_map_when_one_of_two_boxes_is_found_matches_cocos_101_point_interpolation():
    task = Detection()
    params = task.validate(PLAIN_BOXES, "task")
    labels = task.labels(params, np.array([[[0, 0, 0, 0.4, 0.4], [0, 0.6, 0.6, 0.9, 0.9]]]), "data")
    # The one detection overlaps the first box by 0.4 x 0.25 / (0.4 x 0.4) = IoU 0.625 (off COCO's thresholds);
    # the second box is missed (score 0.1 < 0.5). Recall reaches 1/2 at precision 1, so of COCO's 101 recall
    # points 0, 0.01, ..., 1 the 51 up to 0.5 have precision 1 and the rest 0: AP = 51/101 at IoU 0.5, 0.55 and
    # 0.6, and 0 at the 7 thresholds 0.65 ... 0.95, so mAP@[.5:.95] = 3/10 x 51/101.
    outputs = boxes_model([[[0, 0, 0.4, 0.25], [0.1, 0.6, 0.2, 0.7]]], [[0.9, 0.1]])
    scores = task.metrics(params, outputs, labels)
    assert scores == pytest.approx({"map50": 51 / 101, "map50_95": 3 / 10 * 51 / 101})
    assert task.metrics(params, boxes_model(np.zeros((1, 2, 4)), [[0.1, 0.2]]), labels) == {"map50": 0.0,
                                                                                           "map50_95": 0.0}


def test_box_agreement_counts_reference_detections_found_again():
    task = Detection()
    params = task.validate(PLAIN_BOXES, "task")
    reference = boxes_model([[[0, 0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]], [[0.9, 0.8]])
    moved = boxes_model([[[0, 0, 0.4, 0.4], [0.7, 0.7, 1, 1]]], [[0.6, 0.8]])
    assert task.agreement(params, reference, moved) == {"box_agreement": 0.5}
    nothing = boxes_model(np.zeros((1, 2, 4)), np.zeros((1, 2)))
    assert task.agreement(params, nothing, moved) == {"box_agreement": 1.0}


@pytest.mark.parametrize("y, problem", [
    (np.zeros((2, 3, 4)), "shape (2, 3, 4)"),
    (np.array([[[0, 0, 0, np.inf, 1]]]), "NaN or infinite"),
    (np.array([[[-2, 0, 0, 1, 1]]]), "-1 on padding rows"),
    (np.array([[[0.5, 0, 0, 1, 1]]]), "whole numbers"),
    (np.array([[[0, 0, 0, 2, 1]]]), "normalised"),
    (np.array([[[0, 0.5, 0, 0.2, 1]]]), "x1 <= x2"),
    (np.array([[[-1, 0, 0, 1, 1]]]), "no ground-truth boxes"),
])
def test_detection_refuses_bad_labels_in_one_line_naming_the_data(y, problem):
    task = Detection()
    message = refusal(task.labels, task.validate(PLAIN_BOXES, "task"), y, "data set 'faces'")
    assert message.startswith("data set 'faces': ") and problem in message


def test_detection_params_name_the_bad_key():
    task = Detection()
    assert "anchors_per_cell" in refusal(task.validate, {**BLAZEFACE, "anchors_per_cell": [2]}, "task")
    assert "layout" in refusal(task.validate, {**PLAIN_BOXES, "layout": None}, "task")
    assert "decoder" in refusal(task.validate, {"boxes": "b", "scores": "s"}, "task")
    message = refusal(task.reads, task.validate(PLAIN_BOXES, "task"), [OutputSpec("boxes", (None, 5, 4))])
    assert message.startswith("task.params.scores: ") and "'scores'" in message


# Fidelity


def test_fidelity_reads_every_output_and_needs_no_labels():
    task = Fidelity()
    params = task.validate(None, "task")
    assert not task.needs_labels and task.headline == "snr_db"
    assert task.reads(params, [OutputSpec("a", (None, 2)), OutputSpec("b", (None, 3))]) == ["a", "b"]
    assert task.metrics(params, {"a": np.zeros((1, 2))}, None) == {}
