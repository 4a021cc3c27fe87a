"""result.json: one format for an answer written to a folder, by ``lisa-ros segment`` (the model in
process) and by ``lisa-ros ask`` (the running node's SegmentationResult).

Keys (values JSON-ready; lengths in pixels, positions in metres, times in seconds):

- ``success``: a target was segmented; ``status``: ``code``, ``name`` (lisa_ros/msg/Status's
  constant: OK, NO_TARGET, ...), ``message`` (what the caller should know: no target and why,
  warnings, history dropped to fit the context);
- ``command``, ``answer``, ``explanation`` ("" unless asked for), ``session_id`` ("" outside a
  session), ``generated_tokens``;
- the frame: ``frame_id``, ``stamp`` (seconds, None for a file), ``image_size`` [height, width]
  (None when the node's answer carried neither masks nor camera_info: ``result_masks: none``
  without 3D);
- 3D: ``target_frame``, ``transform_error``, ``no_3d``, ``no_target_pose``, ``points`` (points in
  the result's cloud);
- ``objects``: per mask ``id``, ``label``, ``score``, ``box`` [x, y, width, height], ``pose``
  (``position`` [x, y, z] or None without depth, ``orientation`` [x, y, z, w], in the optical
  frame; None without 3D), ``extent`` [x, y, z] along the pose's axes (None without 3D),
  ``valid_points``, ``target_pose`` (None when there is none), ``mask``: its file name (None when
  the result held no mask);
- ``warnings``: signs that the answer itself is broken (a degenerate mask, runaway [SEG]);
- ``timings``: seconds per stage, :data:`lisa_ros.timing.STAGES`.

ROS-free: the node's side (lisa_ros.ros.client) and the CLI's both fill :func:`result_entry`.
"""
from __future__ import annotations

import math

from lisa_ros.timing import STAGES


# lisa_ros/msg/Status's outcome codes by name, for writers without the ROS interfaces (`lisa-ros
# segment` needs no ROS install); test_packaging ties them to the message's constants.
STATUS_CODES: dict[str, int] = {name: code for code, name in enumerate((
    "OK", "INVALID_COMMAND", "INVALID_IMAGE", "NO_FRAME", "STALE_FRAME", "UNKNOWN_CAMERA", "UNKNOWN_SESSION", "BUSY",
    "NOT_READY", "MODEL_ERROR", "CANCELLED", "DEADLINE_EXCEEDED", "NO_TARGET"))}
def number(value: float | None, digits: int = 6) -> float | None:
    """``value`` (a Python or numpy number) rounded for JSON; None for None, NaN and infinities
    (JSON has none of them)."""
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def object_entry(object_id: int, label: str, score: float, box: tuple[int, int, int, int], mask: str | None = None,
                 pose: dict | None = None, extent: tuple | None = None, valid_points: int = 0,
                 target_pose: dict | None = None) -> dict:
    """One entry of ``objects`` (see the module docstring)."""
    return {"id": int(object_id), "label": label, "score": number(score, 4), "box": [int(v) for v in box],
            "pose": pose, "extent": [number(v) for v in extent] if extent is not None else [None, None, None],
            "valid_points": int(valid_points), "target_pose": target_pose, "mask": mask}


def result_entry(*, status_code: int, status_name: str, status_message: str, command: str, answer: str,
                 explanation: str, objects: list[dict], warnings: list[str], timings: dict[str, float],
                 generated_tokens: int, image_size: tuple[int, int] | None, session_id: str = "", frame_id: str = "",
                 stamp: float | None = None, target_frame: str = "", transform_error: str = "", no_3d: bool = True,
                 no_target_pose: bool = False, points: int = 0) -> dict:
    """result.json's object (see the module docstring); ``success`` is
    ``status_name == "OK"``. ``timings``: seconds per stage; a stage not given is 0. Raises
    ValueError for a timing that is not a stage."""
    unknown = set(timings) - set(STAGES)
    if unknown:
        raise ValueError(f"not stages of lisa_ros.timing.STAGES: {sorted(unknown)}")
    return {
        "success": status_name == "OK",
        "status": {"code": int(status_code), "name": status_name, "message": status_message},
        "command": command, "answer": answer, "explanation": explanation, "session_id": session_id,
        "generated_tokens": int(generated_tokens),
        "frame_id": frame_id, "stamp": stamp,
        "image_size": [int(image_size[0]), int(image_size[1])] if image_size is not None else None,
        "target_frame": target_frame, "transform_error": transform_error, "no_3d": bool(no_3d),
        "no_target_pose": bool(no_target_pose), "points": int(points),
        "objects": objects, "warnings": list(warnings),
        "timings": {stage: number(timings.get(stage, 0.0), 4) for stage in STAGES},
    }
