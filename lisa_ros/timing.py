"""Where a request's time goes: one vocabulary for the node, the CLI and the benchmarks (seconds).

A request's time is told in :data:`STAGES` (the fields of ``lisa_ros/msg/StageTimings``, in that
order): what the node puts in every result, what ``lisa-ros ask`` and ``lisa-ros segment`` write
as ``timings`` in result.json. The engine measures finer parts (:data:`PARTS`): each belongs to one
stage, and :func:`engine_stages` adds them up; benchmarks report the parts, named as here.

Torch-free and ROS-free: the stages are plain names.
"""
from __future__ import annotations

# Stage -> what it measures. Stages need not add up to ``total``: an action goal's objects are
# converted (3D, TF) and sent the moment their masks are decoded, between the language model's
# passes, and that time is in ``total`` only.
STAGE_MEANINGS: dict[str, str] = {
    "total": "receipt of the request -> answer ready (queue_wait included)",
    "queue_wait": "waiting for the inference worker (0 outside the node)",
    "preprocess": "choosing the frame and decoding it: colour, depth, camera_info (a file read, for the CLI)",
    "image_encoding": "the encoders: image preparation, the language model's image features (CLIP or the "
                      "object phrases), the SAM image encoder (0 when the frame was encoded before)",
    "generation": "the language model writing the answer: the prompt's prefill and the later passes",
    "mask_decoding": "prompt encoder, mask decoder and upsampling, all masks together",
    "postprocess": "masks -> messages or files, boxes, scores, 3D, TF",
}
STAGES: tuple[str, ...] = tuple(STAGE_MEANINGS)

# The engine's own measurements (lisa_ros.engine: EncodedFrame.timings, Answer.timings) -> their
# stage. ``time_to_first_mask`` and the engine's ``total`` are latencies, not parts of a stage.
PARTS: dict[str, str] = {
    "image_preparation": "image_encoding",  # resize, pad, normalise for SAM (and CLIP)
    "clip": "image_encoding",  # the CLIP tower (released LISA)
    "objects": "image_encoding",  # the object encoder and phrases (the embedded model)
    "sam_encoder": "image_encoding",
    "prefill_image": "image_encoding",  # the prompt's start through the image, for a frame encoded ahead
    "prefill": "generation",  # the first pass: the rest of the prompt, first guesses, the LM head
    "decode": "generation",  # the later passes
    "mask_decode": "mask_decoding",
}
LATENCIES = ("time_to_first_mask", "total")


def engine_stages(timings: dict[str, float]) -> dict[str, float]:
    """``image_encoding``, ``generation`` and ``mask_decoding`` (seconds) from the engine's parts
    in ``timings`` (an Answer's, which holds its frame's encoding parts when the engine was given
    an image; a part that did not run counts 0). Latencies and names that are no part are left
    out (test_model checks that every part the engine measures is in :data:`PARTS`)."""
    stages = {"image_encoding": 0.0, "generation": 0.0, "mask_decoding": 0.0}
    for part, seconds in timings.items():
        if part in PARTS:
            stages[PARTS[part]] += seconds
    return stages
