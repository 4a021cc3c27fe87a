"""Procedural reasoning-segmentation scenes in the ReasonSeg folder format (the embedded model's data).

Each scene shows 3-5 flat coloured objects (ball, square, triangle, star, cup, bar, cross) on a
low-saturation grey/beige background, with exactly one query whose single valid answer needs a
small step of reasoning rather than the object's name:

=====================  =====================================================================
``roll``               the only round object (a ball) — "which object could roll down a slope?"
``colour_knowledge``   the only object of colour C, named through world knowledge only
                       ("the same colour as a ripe banana" -> yellow)
``largest_of_colour``  the largest of 2-3 objects of colour C (area >= 1.8x the next one; an
                       object of another colour is bigger than the target)
``smallest_of_colour`` the smallest of 2-3 objects of colour C (the next one >= 1.8x its area;
                       an object of another colour is smaller than the target)
``odd_one_out``        all objects share one shape and one colour except the target, which
                       differs in exactly one of them; the query does not say which
``hold_water``         the only open container (a cup) among solid objects
=====================  =====================================================================

and plain commands, what a person types first (:mod:`.referring`, phrasings in :mod:`.commands`):

=======================  ===================================================================
``refer_colour``         the only object of a colour ("Segment the blue thing.")
``refer_shape``          the only object of a shape ("Where is the star?")
``refer_colour_shape``   the only (colour, shape); others share one of the two ("the red ball")
``refer_position``       one of two alike objects by place ("the red ball on the left", "...
                         next to the blue cup"), or the object furthest towards a side
``refer_size``           the big or the small one of two objects of one shape
``all_of_colour``        every object of a colour, 2-3 of them: one ``[SEG]`` per object
``all_of_shape``         every object of a shape, 2-3 of them
``two_named``            two named objects ("the cup and the star")
``follow_up``            a session's second turn ("And the other one?", "Now the smallest one.",
                         "What about the green one?"): the first command and its answer are
                         the sample's ``history``
=======================  ===================================================================

A share of the train and val scenes (:data:`CAMERA_SHARE`), and the whole ``camera`` probe split,
are camera-like: the sizes cameras give (:data:`CAMERA_SIZES`), objects larger and smaller,
solid colours, light, dark or grey backgrounds with uneven light and grain.

The ``train`` and ``val`` splits use one set of query phrasings, ``test`` (and ``camera``) a
different one (:data:`PHRASINGS`), so the test split checks that a model generalises to new wordings.

Files written by :func:`write_split` (one pair per sample, read by
:func:`lisa_ros.data.reasonseg.read_reasonseg`): ``NNNNN.jpg`` (JPEG quality 95, no chroma subsampling) and ``NNNNN.json``::

    {"text": [query], "is_sentence": true,
     "shapes": [{"label": "target", "points": [[x, y], ...]}],
     "answer": "I look for something round: it is the red ball on the left [SEG].",
     "explanation": "It is round, so it would roll down a slope.", "nothing_fits": false,
     "query_type": "roll", "target_index": 2,
     "objects": [{"label": "red ball", "points": [[x, y], ...]}, ...],
     "target_indices": [2], "slots": {"colour": "red", ...},
     "imageWidth": 320, "imageHeight": 240}

``answer`` first says what it looks for (:data:`LOOK_FOR`), then names the target before
``[SEG]``, or says without ``[SEG]`` that nothing here fits (``nothing_fits``: drawn for 10 % of
the samples, kept for the 11 query types that can miss, so about 7 % of a split; ``shapes`` and
``target_indices`` empty, ``target_index`` null). ``answer``, ``explanation``, ``query_type``, ``target_index`` (the first target),
``target_indices`` (every target, in the order the answer names them), ``slots`` (the words
filled into the phrasing), ``history`` (a follow-up's earlier turns) with ``history_targets``, ``camera`` (a camera-like
scene), ``objects`` (every object, target included,
in drawing order) and the LabelMe ``imageWidth``/``imageHeight`` are our extension; the reader
ignores them. Points are integer pixel coordinates (x right, y down). Every object is drawn by
filling exactly the mask its polygon rasterises to (``cv2.polylines`` + ``cv2.fillPoly``, as
``rasterize_shapes`` does), so the annotation and the pixels agree exactly; objects never touch
(a gap of a few pixels) and the shortest side of every object's bounding box is at least 12% of
the image's short side.

Modules: :mod:`.vocabulary` (what a scene can say or show), :mod:`.layout` (outlines, plans,
placement), :mod:`.rendering`, :mod:`.generator` (one scene), :mod:`.writing` (a split folder).
Command line: ``lisa-ros scenes OUT_DIR [--splits train,val,test] [--count-train N --count-val N
--count-test N] [--seed-offset K] [--size 320x240] [--no-progress]`` writes ``OUT_DIR/<split>/``
with seed ``SPLIT_SEEDS[split] + K``.
"""
from lisa_ros.data.scenes.generator import Scene, SceneObject, make_scene, scene_annotation, scene_rng
from lisa_ros.data.scenes.layout import polygon_mask
from lisa_ros.data.scenes.vocabulary import (
    CAMERA_SHARE,
    CAMERA_SIZES,
    FOLLOW_UP,
    FOLLOW_UP_KINDS,
    REASONING_TYPES,
    REFERRING_TYPES,
    SEVERAL_TYPES,
    COLOUR_CUES,
    COLOURS,
    CONTAINER_SHAPES,
    DEFAULT_SIZE,
    EXPLANATIONS,
    LOOK_FOR,
    PALETTE,
    PHRASINGS,
    PLURALS,
    QUERY_TYPES,
    ROUND_SHAPES,
    SHAPES,
    SPLIT_SEEDS,
    SPLITS,
    REFUSALS,
    TEXTURES,
    TRAINING_CUES,
    cue_slots,
    phrasing_words,
    region,
    word_runs,
)
from lisa_ros.data.scenes.writing import split_scene, write_split

__all__ = ["COLOUR_CUES", "COLOURS", "CONTAINER_SHAPES", "DEFAULT_SIZE", "EXPLANATIONS", "PALETTE", "PHRASINGS",
           "QUERY_TYPES", "ROUND_SHAPES", "SHAPES", "SPLIT_SEEDS", "SPLITS", "TEXTURES", "Scene", "SceneObject",
           "make_scene", "polygon_mask", "scene_annotation", "scene_rng", "split_scene", "write_split",
           "LOOK_FOR", "PLURALS", "REFUSALS", "TRAINING_CUES", "cue_slots", "phrasing_words", "region", "word_runs",
           "CAMERA_SHARE", "CAMERA_SIZES", "FOLLOW_UP", "FOLLOW_UP_KINDS", "REASONING_TYPES", "REFERRING_TYPES",
           "SEVERAL_TYPES"]
