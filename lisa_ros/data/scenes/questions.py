"""Alignment questions about a scene: questions that can only be answered from the image.

They teach a new model to read its image tokens with dense text supervision (as LLaVA's first
stage does), before and beside the reasoning queries, and measure on a validation split whether
it does (``lisa-ros eval --mode alignment``). Answers name objects the way the scene answers do
("the yellow ball at the bottom left"); only "refer" answers with ``[SEG]``, as the referring
scenes do ("I look for the red ball: it is the red ball on the left [SEG].").
"""
from __future__ import annotations

import random

from lisa_ros.data.reasonseg import Sample
from lisa_ros.data.scenes.vocabulary import COLOURS, region
from lisa_ros.model.objects import size_word

ALIGNMENT_TASKS = ("refer", "colour", "where", "count", "list")
# LISA's short-query templates (docs/MODEL.md §5.5), as train.conversations.SHORT_QUESTIONS words them.
REFER_QUESTIONS = ("Can you segment the {label} in this image?", "Please segment the {label} in this image.",
                   "What is {label} in this image? Please respond with segmentation mask.",
                   "What is {label} in this image? Please output segmentation mask.")
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six")


def scene_objects(sample: Sample) -> list[dict]:
    """The annotated objects of a scene sample with their words: colour, shape, label ("red
    ball"), size word and where (a region phrase), from each object's ``point`` and ``area``."""
    if not sample.objects:
        return []
    data = sample.annotation_size
    height, width = data if data else sample.rgb().shape[:2]
    found = []
    for obj in sample.objects:
        if "point" not in obj or "area" not in obj:
            return []
        colour, shape = obj["label"].split()
        found.append({"colour": colour, "shape": shape, "label": obj["label"], "where": region(*obj["point"], width, height),
                      "size": size_word(obj["area"] / (width * height)), "point": obj["point"]})
    return found


def alignment_example(sample: Sample, rng: random.Random, task: str | None = None) -> tuple[str, str, str] | None:
    """(task, question, answer) of one alignment question about ``sample``'s image, or None when
    its annotation does not list the objects with their points. ``task`` picks one of
    :data:`ALIGNMENT_TASKS` (default: random). Only "refer" answers with ``[SEG]``."""
    objects = scene_objects(sample)
    if not objects:
        return None
    task = task or rng.choice(ALIGNMENT_TASKS)
    labels = [o["label"] for o in objects]
    unique = [o for o in objects if labels.count(o["label"]) == 1]
    if task == "refer" and unique:
        obj = rng.choice(unique)
        question = rng.choice(REFER_QUESTIONS).format(label=obj["label"])
        return task, question, f"I look for the {obj['label']}: it is the {obj['label']} {obj['where']} [SEG]."
    if task == "colour":
        shapes = [o["shape"] for o in objects]
        single = [o for o in objects if shapes.count(o["shape"]) == 1]
        if single:
            obj = rng.choice(single)
            return task, f"What colour is the {obj['shape']}?", f"The {obj['shape']} is {obj['colour']}."
    if task == "where" and unique:
        obj = rng.choice(unique)
        # "in words": a plain "Where is the red ball?" is a referring command (the engine adds the
        # segmentation suffix), answered with a mask.
        return task, f"Where is the {obj['label']}? Answer in words.", f"The {obj['label']} is {obj['where']}."
    if task == "count":
        colour = rng.choice(COLOURS)
        count = sum(o["colour"] == colour for o in objects)
        if count == 1:
            return task, f"How many {colour} objects are there?", f"There is one {colour} object."
        return task, f"How many {colour} objects are there?", f"There are {_NUMBERS[min(count, 6)]} {colour} objects."
    described = [f"a {o['size']} {o['label']} {o['where']}" for o in objects]
    listing = described[0] if len(described) == 1 else ", ".join(described[:-1]) + " and " + described[-1]
    return "list", "What objects are in this image?", f"I see {listing}."
