"""lisa_ros.result_file: the values result.json holds (ROS-free; also on Python 3.10 and 3.12).
The files `lisa-ros segment` and `lisa-ros ask` write are checked in test_cli and test_node."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lisa_ros.result_file import STATUS_CODES, number, object_entry, result_entry
from lisa_ros.timing import STAGES


def _entry(**changes):
    fields = dict(status_code=STATUS_CODES["NO_TARGET"], status_name="NO_TARGET", status_message="nothing fits",
                  command="the red cup", answer="No.", explanation="", objects=[], warnings=[],
                  timings={"total": 1.5, "generation": 1.0}, generated_tokens=3, image_size=(480, 640))
    return result_entry(**{**fields, **changes})


@pytest.mark.parametrize("value", [math.nan, np.float32("nan"), math.inf, -np.float64("inf"), None])
def test_numbers_json_cannot_hold_become_null(value):
    assert number(value) is None


def test_numbers_are_rounded_python_floats():
    assert number(np.float32(0.123456789), 4) == 0.1235 and type(number(np.float32(1.0))) is float


def test_an_entry_is_valid_json_with_every_stage_and_a_null_size_when_unknown():
    objects = [object_entry(1, "red cup", np.float32("nan"), (1, 2, 3, 4), extent=(0.1, math.nan, 0.2))]
    entry = _entry(objects=objects, image_size=None)
    text = json.dumps(entry, allow_nan=False)  # raises on NaN or infinity
    assert json.loads(text)["objects"][0]["score"] is None and entry["objects"][0]["extent"] == [0.1, None, 0.2]
    assert entry["image_size"] is None and not entry["success"] and entry["status"]["code"] == 12
    assert list(entry["timings"]) == list(STAGES) and entry["timings"]["queue_wait"] == 0
    assert _entry(status_code=0, status_name="OK")["success"]


def test_a_timing_that_is_no_stage_is_refused():
    with pytest.raises(ValueError, match="decode"):
        _entry(timings={"decode": 0.1})
