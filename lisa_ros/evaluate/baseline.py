"""The "pick any object" baseline: what a model that segments a random object of the scene scores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lisa_ros.data.reasonseg import rasterize_shapes, read_reasonseg
from lisa_ros.errors import DataError
from lisa_ros.evaluate.metrics import intersection_union, query_iou


def any_object_baseline(folder: str | Path) -> dict:
    """The "pick any object" baseline of a split folder written by
    :func:`~lisa_ros.data.scenes.write_split` (or any ReasonSeg folder whose JSON lists ``objects``).

    Per sample: the expected IoU of a prediction that is one of the scene's objects chosen
    uniformly at random, i.e. the mean over ``objects`` of IoU(object mask, target mask), masks
    rasterised with ``rasterize_shapes`` and IoU as in :mod:`lisa_ros.evaluate.metrics`.
    Returns ``{"giou": mean over samples, "count": N, "per_type": {type: gIoU},
    "per_type_counts": {type: N}, "per_sample": [values in read_reasonseg order]}``.
    """
    values: list[float] = []
    by_type: dict[str, list[float]] = {}
    for sample in read_reasonseg(folder):
        data = json.loads(sample.image_path.with_suffix(".json").read_text())
        if "objects" not in data:
            raise DataError(f"{sample.image_path.with_suffix('.json')} has no 'objects' list")
        if "imageHeight" in data and "imageWidth" in data:
            height, width = int(data["imageHeight"]), int(data["imageWidth"])
        else:
            height, width = sample.rgb().shape[:2]
        target = rasterize_shapes(data["shapes"], height, width)
        ious = [query_iou(*intersection_union(
                    rasterize_shapes([{"label": "object", "points": obj["points"]}], height, width), target))
                for obj in data["objects"]]
        value = float(np.mean(ious)) if ious else 0.0
        values.append(value)
        by_type.setdefault(str(data.get("query_type", "unknown")), []).append(value)
    return {
        "giou": float(np.mean(values)),
        "count": len(values),
        "per_type": {name: float(np.mean(v)) for name, v in sorted(by_type.items())},
        "per_type_counts": {name: len(v) for name, v in sorted(by_type.items())},
        "per_sample": values,
    }
