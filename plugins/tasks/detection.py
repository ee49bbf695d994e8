"""detection: boxes with classes and scores, scored by COCO mAP (pycocotools).

Reads two outputs, named by the params ``boxes`` and ``scores`` (column c of the scores is class c; (batch,
boxes) is one class); ``decoder`` says how they become boxes:

- ``anchors``: SSD-style regressors, (batch, anchors, 4 or more) of [x, y, w, h] in units of 1/``scale`` (later
  columns, such as keypoints, are ignored), against anchors laid out like MediaPipe's SsdAnchorsCalculator: for
  an ``input_size`` [H, W], each of ``strides`` is a feature map of ceil(H / stride) x ceil(W / stride) cells with
  ``anchors_per_cell`` anchors each. BlazeFace short range (128 x 128, 896 anchors)::

      task: {name: detection, params: {decoder: anchors, boxes: regressors, scores: classificators,
             input_size: [128, 128], strides: [8, 16], anchors_per_cell: [2, 6], scale: 128}}

- ``boxes``: boxes already decoded, (batch, boxes, 4), normalised, in the ``layout`` yxyx or xyxy::

      task: {name: detection, params: {decoder: boxes, boxes: boxes, scores: scores, layout: yxyx, sigmoid: false}}

Per class, the boxes scoring at least ``score_threshold`` (after a sigmoid, if ``sigmoid``) go through greedy
NMS at ``iou_threshold``; the best ``max_detections`` of each image remain. A low ``score_threshold`` (COCO's
evaluations go down to 0.05) lets mAP see the whole precision-recall curve.
Labels: (N, boxes, 5) rows of [class, x1, y1, x2, y2], normalised; rows of class -1 pad images with fewer boxes.
Metrics: ``map50`` and ``map50_95``, COCO's mAP at IoU 0.5 and over IoU 0.5:0.95 (of the best 100 detections
of an image). Agreement: ``box_agreement``, the fraction of the source model's detections that a detection of
the same class overlaps at IoU >= 0.5.
"""

import contextlib
import io
import math
from typing import Annotated, Literal

import numpy as np
import pydantic
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from pydantic import Field, PositiveInt

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.tasks import Task, TaskParams, choose, finite_numbers

# pycocotools works in pixels (its area ranges: small < 32²), so boxes are scored on a 1000 x 1000 image.
PIXELS = 1000


class DecoderParams(TaskParams):
    """The params both decoders share: which outputs, and how detections are kept."""

    boxes: str = Field(description="the output holding the boxes (the box regressors, with anchors)")
    scores: str = Field(description="the output holding the class scores")
    score_threshold: float = Field(0.5, ge=0, le=1, description="lowest score (after the sigmoid) a detection keeps")
    iou_threshold: float = Field(0.3, gt=0, le=1, description="NMS drops a box overlapping a better one more")
    max_detections: int = Field(100, ge=1, le=10000, description="detections kept per image, best first")
    sigmoid: bool = Field(True, description="the scores are logits: apply a sigmoid")


class AnchorParams(DecoderParams):
    """SSD-style regressors decoded against generated anchors of the fixed size 1 (MediaPipe's fixed_anchor_size)."""

    decoder: Literal["anchors"]
    input_size: tuple[PositiveInt, PositiveInt] = Field(description="the model's input [height, width]")
    strides: tuple[PositiveInt, ...] = Field(min_length=1, description="one per feature map, e.g. [8, 16]")
    anchors_per_cell: tuple[PositiveInt, ...] = Field(description="anchors per cell, one per stride, e.g. [2, 6]")
    scale: float = Field(gt=0, description="regressors are in units of 1/scale of the input, e.g. 128")

    @pydantic.model_validator(mode="after")
    def _one_count_per_stride(self):
        if len(self.anchors_per_cell) != len(self.strides):
            raise ValueError(f"anchors_per_cell has {len(self.anchors_per_cell)} values, strides "
                             f"{len(self.strides)}: give one per stride")
        return self

    def anchors(self) -> np.ndarray:
        """(anchors, 2) normalised anchor centres (x, y), row by row, cell by cell, as MediaPipe orders them."""
        height, width = self.input_size
        centres = []
        for stride, per_cell in zip(self.strides, self.anchors_per_cell):
            rows, columns = math.ceil(height / stride), math.ceil(width / stride)
            y, x = np.mgrid[:rows, :columns]
            cells = np.stack([(x + 0.5) / columns, (y + 0.5) / rows], axis=-1).reshape(-1, 2)
            centres.append(np.repeat(cells, per_cell, axis=0))
        return np.concatenate(centres)

    def corners(self, raw: np.ndarray) -> np.ndarray:
        """Regressors (batch, anchors, 4+) as boxes (batch, anchors, 4) of [x1, y1, x2, y2]."""
        # The anchors' size is 1, so only their centres enter the decoding.
        centre = raw[..., :2] / self.scale + self.anchors()
        size = raw[..., 2:4] / self.scale
        return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)


class BoxParams(DecoderParams):
    """Boxes the model has already decoded."""

    decoder: Literal["boxes"]
    layout: Literal["yxyx", "xyxy"] = Field(description="coordinate order: [y1, x1, y2, x2] or [x1, y1, x2, y2]")

    def corners(self, raw: np.ndarray) -> np.ndarray:
        """The boxes as [x1, y1, x2, y2]."""
        return raw[..., [1, 0, 3, 2]] if self.layout == "yxyx" else raw


DetectionParams = pydantic.RootModel[Annotated[AnchorParams | BoxParams, Field(discriminator="decoder")]]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P, Q) intersection over union of boxes ``a`` (P, 4) and ``b`` (Q, 4), each [x1, y1, x2, y2]."""
    overlap = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    inter = np.prod(np.clip(overlap, 0, None), axis=-1)
    area_a, area_b = (np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=-1) for boxes in (a, b))
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best first."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        best, order = order[0], order[1:]
        kept.append(best)
        order = order[iou(boxes[best][None], boxes[order])[0] <= iou_threshold]
    return np.array(kept, dtype=np.int64)


def detections(params: AnchorParams | BoxParams, outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each image's detections: (K, 6) rows of [class, score, x1, y1, x2, y2], best first."""
    boxes = params.corners(outputs[params.boxes].astype(np.float64))
    scores = outputs[params.scores].astype(np.float64)
    scores = scores[..., None] if scores.ndim == 2 else scores
    if params.sigmoid:
        scores = np.exp(-np.logaddexp(0, -scores))  # a sigmoid that cannot overflow
    return [image_detections(params, image_boxes, image_scores) for image_boxes, image_scores in zip(boxes, scores)]


def image_detections(params: AnchorParams | BoxParams, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """One image's boxes (boxes, 4) and scores (boxes, classes) thresholded and suppressed class by class."""
    rows = [np.empty((0, 6))]
    has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # a decoded box of no area detects nothing
    for label, column in enumerate(scores.T):
        candidates = np.flatnonzero((column >= params.score_threshold) & has_area)
        kept = candidates[nms(boxes[candidates], column[candidates], params.iou_threshold)]
        rows.append(np.column_stack([np.full(len(kept), label), column[kept], boxes[kept]]))
    rows = np.concatenate(rows)
    return rows[np.argsort(-rows[:, 1], kind="stable")[:params.max_detections]]


def coco_box(corners: np.ndarray) -> dict[str, float | list[float]]:
    """Normalised [x1, y1, x2, y2] as COCO's ``bbox`` [x, y, width, height] in pixels, and its ``area``."""
    x1, y1, x2, y2 = (float(value) * PIXELS for value in corners)
    return {"bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}


def coco_map(found: list[np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """COCO's mAP@0.5 and mAP@[.5:.95] of each image's detections against its labelled boxes."""
    if not any(len(rows) for rows in found):
        return {"map50": 0.0, "map50_95": 0.0}
    boxes = [(image, row) for image, rows in enumerate(truth) for row in rows if row[0] >= 0]
    ground = COCO()
    ground.dataset = {
        "images": [{"id": image} for image in range(len(truth))],
        "categories": [{"id": label} for label in sorted({int(row[0]) for _, row in boxes})],
        # Ids from 1: COCOeval takes id 0 for "unmatched".
        "annotations": [{"id": number, "image_id": image, "category_id": int(row[0]), "iscrowd": 0, **coco_box(row[1:])}
                        for number, (image, row) in enumerate(boxes, start=1)],
    }
    results = [{"image_id": image, "category_id": int(row[0]), "score": float(row[1]), **coco_box(row[2:])}
               for image, rows in enumerate(found) for row in rows]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground.createIndex()
        evaluation = COCOeval(ground, ground.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"map50": float(evaluation.stats[1]), "map50_95": float(evaluation.stats[0])}


class Detection(Task):
    """Boxes scored by COCO mAP, decoded from anchors or read as they are."""

    name = "detection"
    Params = DetectionParams
    needs_labels = True
    stratify = False
    better = {"map50": "higher", "map50_95": "higher"}
    headline = "map50"

    def validate(self, params, where):
        """The params of the decoder they name: :class:`AnchorParams` or :class:`BoxParams`."""
        return super().validate(params, where).root

    def reads(self, params, outputs):
        """The boxes and scores outputs, refused unless their shapes fit the decoder."""
        shapes = {spec.name: spec.shape for spec in outputs}
        boxes, scores = (choose(list(shapes), name, f"task.params.{key}")
                         for key, name in (("boxes", params.boxes), ("scores", params.scores)))
        box_shape, score_shape = shapes[boxes], shapes[scores]
        columns = box_shape[2] if len(box_shape) == 3 else 0
        anchors = params.decoder == "anchors"
        fits = columns is None or columns == 4 or columns > 4 and anchors  # regressors may hold keypoints too
        if not fits or len(score_shape) not in (2, 3):
            box_layout = "(batch, anchors, 4 or more)" if anchors else "(batch, boxes, 4)"
            raise ConfigError(f"task {self.name}: outputs {boxes!r} {box_shape} and {scores!r} {score_shape} do not "
                              f"fit decoder {params.decoder}: expected {box_layout} and (batch, boxes[, classes])")
        if anchors and box_shape[1] not in (None, len(params.anchors())):
            raise ConfigError(f"task.params: the anchors params give {len(params.anchors())} anchors, but output "
                              f"{boxes!r} has {box_shape[1]} boxes")
        return [boxes, scores]

    def labels(self, params, y, what):
        """Rows of [class, x1, y1, x2, y2], shape (N, boxes, 5); class -1 pads."""
        y = finite_numbers(y, what)
        if y.ndim != 3 or y.shape[-1] != 5:
            raise ConfigError(f"{what}: labels have shape {y.shape}; expected (N, boxes, 5) rows of "
                              "[class, x1, y1, x2, y2] (class -1 pads)")
        classes = y[..., 0]
        if not np.all(np.mod(classes, 1) == 0) or np.any(classes < -1):
            raise ConfigError(f"{what}: box classes must be whole numbers from 0, or -1 on padding rows")
        boxes = y[..., 1:][classes >= 0]
        if not len(boxes):
            raise ConfigError(f"{what}: holds no ground-truth boxes (every row's class is -1)")
        if np.any(boxes < 0) or np.any(boxes > 1) or np.any(boxes[:, 2:] < boxes[:, :2]):
            raise ConfigError(f"{what}: boxes must be normalised [x1, y1, x2, y2] with 0 <= x1 <= x2 <= 1 and "
                              "0 <= y1 <= y2 <= 1")
        return y

    def metrics(self, params, outputs, labels):
        """``map50`` and ``map50_95``."""
        return coco_map(detections(params, outputs), labels)

    def agreement(self, params, reference, outputs):
        """``box_agreement``: the fraction of the source model's detections found again (same class, IoU >= 0.5)."""
        matched = total = 0
        for expected, found in zip(detections(params, reference), detections(params, outputs)):
            same = (expected[:, None, 0] == found[None, :, 0]) & (iou(expected[:, 2:], found[:, 2:]) >= 0.5)
            matched += int(same.any(axis=1).sum())
            total += len(expected)
        return {"box_agreement": matched / total if total else 1.0}


@hookimpl
def register_tasks(register):
    register(Detection())
