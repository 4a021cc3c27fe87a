"""Procedural reasoning-segmentation scenes (lisa_ros.data.scenes): determinism, split
phrasings, ReasonSeg compatibility, masks that match the drawn pixels, per-type invariants, the
"pick any object" baseline and the command line."""
from __future__ import annotations

import json
import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

from lisa_ros.cli import main
from lisa_ros.data import scenes as rs
from lisa_ros.data.reasonseg import rasterize_shapes, read_reasonseg
from lisa_ros.evaluate.baseline import any_object_baseline

SEEDS = {"train": 11, "test": 12}
COUNTS = {"train": 45, "test": 45}  # three per query type


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scenes")
    return {split: rs.write_split(root / split, split, COUNTS[split], SEEDS[split]) for split in COUNTS}


def _annotations(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def _mask(points, height=240, width=320) -> np.ndarray:
    return rasterize_shapes([{"label": "target", "points": points}], height, width).astype(bool)


class _TrainOutputs:
    """The query strings the train phrasings can produce (``text in _train_outputs()``): each
    template as a pattern whose slots match any words."""

    def __init__(self):
        one_of = lambda words: "(?:" + "|".join(re.escape(w) for w in words) + ")"  # noqa: E731
        cues = [c for table in (rs.COLOUR_CUES, rs.TRAINING_CUES) for cues in table.values() for c in cues]
        label = f"{one_of(rs.COLOURS)} {one_of(rs.SHAPES)}"
        slots = {"colour": one_of(rs.COLOURS), "shape": one_of(rs.SHAPES), "shapes": one_of(rs.PLURALS.values()),
                 "a_shape": f"an? {one_of(rs.SHAPES)}", "cue": one_of(cues),
                 "Cue": one_of(c[:1].upper() + c[1:] for c in cues), "first": label, "second": label,
                 "thing": f"(?:object|{label}|{one_of(rs.SHAPES)})", "extreme": "(?:smallest|largest)",
                 "position": f"(?:on the left|on the right|at the top|at the bottom|next to the {label})",
                 "size": "(?:big|large|small|little)"}
        self.patterns = [re.compile(re.sub(r"\\\{(\w+)\\\}", lambda m: slots[m.group(1)], re.escape(template)) + "$")
                         for phrasings in rs.PHRASINGS.values() for template in phrasings["train"]]

    def __contains__(self, text: str) -> bool:
        return any(pattern.match(text) for pattern in self.patterns)


def _train_outputs() -> _TrainOutputs:
    return _TrainOutputs()


# -------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    first = rs.write_split(tmp_path / "a", "train", 12, 5)
    second = rs.write_split(tmp_path / "b", "train", 12, 5)
    other_seed = rs.write_split(tmp_path / "c", "train", 12, 6)
    other_split = rs.write_split(tmp_path / "d", "val", 12, 5)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert len(names) == 24
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()
        if name.endswith(".jpg"):
            assert np.array_equal(cv2.imread(str(first / name)), cv2.imread(str(second / name)))
    for folder in (other_seed, other_split):
        differing = sum((first / f"{i:05d}.json").read_bytes() != (folder / f"{i:05d}.json").read_bytes()
                        for i in range(12))
        assert differing == 12
    scene_a = rs.make_scene(np.random.default_rng(3), "roll")
    scene_b = rs.make_scene(np.random.default_rng(3), "roll")
    scene_c = rs.make_scene(np.random.default_rng(4), "roll")
    assert np.array_equal(scene_a.rgb, scene_b.rgb) and scene_a.query == scene_b.query
    assert not np.array_equal(scene_a.rgb, scene_c.rgb)


def test_rewriting_a_folder_removes_stale_samples(tmp_path):
    rs.write_split(tmp_path, "val", 8, 1)
    rs.write_split(tmp_path, "val", 3, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:05d}.{ext}" for i in range(3) for ext in ("jpg", "json")]


# ---------------------------------------------------------------------------------- phrasings


SLOTS = {"cue": "a lemon", "Cue": "A lemon", "colour": "yellow", "shape": "ball", "a_shape": "a ball",
         "shapes": "balls", "thing": "red ball", "position": "on the left", "size": "big", "first": "red ball",
         "second": "blue cup", "extreme": "smallest"}


def test_phrasing_counts_and_disjoint_templates():
    # one phrasing set per query type; a follow-up has one per kind
    assert set(rs.PHRASINGS) == set(rs.QUERY_TYPES) - {rs.FOLLOW_UP} | set(rs.FOLLOW_UP_KINDS)
    for query_type, phrasings in rs.PHRASINGS.items():
        assert len(set(phrasings["train"])) >= 6, query_type
        assert len(set(phrasings["test"])) >= 3, query_type
        assert not set(phrasings["train"]) & set(phrasings["test"]), query_type
        for template in phrasings["train"] + phrasings["test"]:
            text = template.format(**SLOTS)
            if query_type in rs.REASONING_TYPES:  # plain commands are also typed in lower case, unpunctuated
                assert text[0].isupper() and text.rstrip()[-1] in ".?", template


def test_training_phrasings_share_no_four_word_run_with_the_test_phrasings():
    # The test split checks generalisation to new wordings: a training phrasing that reused a
    # test phrasing's words ("taking up the most space") would teach the test's wording.
    # Per query type (across types, plain runs such as "which one of these" are fine).
    for query_type, phrasings in rs.PHRASINGS.items():
        test_runs = set().union(*(rs.word_runs(t) for t in phrasings["test"]))
        for template in phrasings["train"]:
            assert not rs.word_runs(template) & test_runs, (query_type, template)


def test_the_command_grammar_frames_every_target_in_training_structures_only():
    """Framed commands (data/scenes/framing.py) fill with each type's slots, stay clear of the
    type's test and probe phrasings (no shared four-word run, more than two words apart, no word
    only held-out phrasings use), agree in number, draw only nouns that are never targets, and
    exist only for the types with target phrases."""
    import random

    from lisa_ros.data.scenes import framing
    from lisa_ros.data.scenes.commands import COMMAND_PHRASINGS, PROBE_COMMAND_PHRASINGS

    assert framing._word_distance("put a mask over it".split(), "lay a mask on it".split()) == 2
    assert framing._word_distance("a b c".split(), "a c".split()) == 1
    training_words = {w for p in rs.PHRASINGS.values() for t in p["train"] for w in rs.phrasing_words(t)}
    assert "draw" not in training_words and "draw" in framing.held_out_only_words()  # a test split word
    assert not framing.held_out_only_words() & training_words

    assert set(framing.TARGET_PHRASES) == set(COMMAND_PHRASINGS)
    never_targets = {*rs.SHAPES, *rs.PLURALS.values(), *rs.COLOURS, "object", "thing", "one", "shape"}
    for nouns in (framing.ENCLOSING_NOUNS, framing.COVERING_NOUNS, framing.RESULT_NOUNS):
        assert not set(nouns) & never_targets
    for key in framing.TARGET_PHRASES:
        per_frame = framing.framed_templates(key)
        assert len(per_frame) == len(framing.FRAMES) and all(per_frame)  # every structure survives the rules
        held_out = (*COMMAND_PHRASINGS[key]["test"], *PROBE_COMMAND_PHRASINGS[key])
        held_out_runs = set().union(*(rs.word_runs(t) for t in held_out))
        templates = [t for frame in per_frame for t in frame]
        assert len(templates) > 500, key
        for template in templates:
            words = rs.phrasing_words(template)
            assert not rs.word_runs(template) & held_out_runs, (key, template)
            assert not framing.held_out_only_words() & set(words), (key, template)
            assert min(framing._word_distance(words, rs.phrasing_words(t)) for t in held_out) > 2, (key, template)
            text = template.format(**SLOTS)
            assert "{" not in text and "  " not in text and text[0].isupper() and "me show me" not in text, template
            if key.startswith(("refer_", "follow_")):
                assert not re.search(r"\b(are|targets|do)\b", text), template
            else:  # several targets: never "is all the ...", "does the X and the Y ..."
                assert not re.search(r"\b(is|does) (all|the|both)\b", text), template
    many = {t for frame in framing.framed_templates("all_of_colour") for t in frame}
    assert {"Where are all the {colour} objects?", "Where is every {colour} object?",
            "My targets are the {colour} objects."} <= many
    assert "The {colour} object - point it out." not in many
    single = {t for frame in framing.framed_templates("refer_colour") for t in frame}
    assert "Look for the {colour} one and pick it out." in single

    rng = random.Random(0)
    drawn = {framing.framed_command("refer_colour_shape", {"colour": "red", "shape": "cup"}, rng) for _ in range(300)}
    assert len(drawn) > 150 and all("red" in text and "cup" in text for text in drawn)
    assert framing.framed_command("follow_up", {"kind": "follow_colour", "colour": "green"}, rng)
    assert framing.framed_command("roll", {"colour": "red"}, rng) is None  # a reasoning type: no target phrase
    assert framing.framed_command("refer_size", {"colour": "red"}, rng) is None  # slots missing (older annotation)


def test_training_cues_are_other_knowledge_than_the_test_cues():
    assert set(rs.TRAINING_CUES) == set(rs.COLOUR_CUES) == set(rs.COLOURS)
    test_cues = {cue for cues in rs.COLOUR_CUES.values() for cue in cues}
    for colour, cues in rs.TRAINING_CUES.items():
        assert len(set(cues)) == len(cues) >= 10, colour
        assert not set(cues) & test_cues, colour


def test_test_queries_never_equal_a_train_phrasing(splits):
    train_outputs = _train_outputs()
    test_queries = [a["text"][0] for a in _annotations(splits["test"])]
    train_queries = [text for a in _annotations(splits["train"]) for text in a["text"]]
    assert test_queries and not any(query in train_outputs for query in test_queries)
    # train (and val) use only the train phrasings, paraphrases too
    assert all(query in train_outputs for query in train_queries)
    assert all(len(a["text"]) == 1 for a in _annotations(splits["test"]))
    val = rs.make_scene(rs.scene_rng(0, "val", 0), "odd_one_out", split="val")
    assert val.query in rs.PHRASINGS["odd_one_out"]["train"]
    with pytest.raises(ValueError):
        rs.make_scene(np.random.default_rng(0), "roll", split="holdout")
    with pytest.raises(ValueError):
        rs.make_scene(np.random.default_rng(0), "fly")


# ------------------------------------------------------------------ files, masks and pixels


@pytest.mark.parametrize("split", ["train", "test"])
def test_samples_load_and_masks_match_the_drawn_objects(splits, split):
    samples = read_reasonseg(splits[split])
    assert len(samples) == COUNTS[split]
    palette_names = list(rs.PALETTE)
    palette = np.array([rs.PALETTE[name] for name in palette_names], float)
    for index, sample in enumerate(samples):
        assert sample.image_path.name == f"{index:05d}.jpg" and sample.is_sentence
        scene = rs.split_scene(SEEDS[split], split, index)
        annotation = json.loads(sample.image_path.with_suffix(".json").read_text())
        assert sample.texts == [scene.query, *scene.paraphrases] and annotation["query_type"] == scene.query_type
        assert sample.answer == scene.answer and sample.nothing_fits == (scene.target is None)
        assert annotation["explanation"] == scene.explanation
        assert [o["label"] for o in annotation["objects"]] == [o.label for o in scene.objects]
        rgb = sample.rgb()
        height, width = rgb.shape[:2]
        assert (width, height) == (annotation["imageWidth"], annotation["imageHeight"])
        assert (width, height) == ((320, 240) if not scene.camera else (width, height))
        assert not scene.camera or (width, height) in rs.CAMERA_SIZES and split == "train"
        # the loaded JPEG is the generated image, also along the target's outline
        error = np.abs(rgb.astype(int) - scene.rgb.astype(int)).sum(axis=2) / 3
        assert error.mean() < 3
        target = sample.target(height, width) == 1
        if scene.target is None:  # nothing fits: an empty ground truth
            assert not target.any()
        else:
            ring = np.ones((3, 3), np.uint8)
            ring = (cv2.dilate(scene.target.mask.astype(np.uint8), ring) > cv2.erode(scene.target.mask.astype(np.uint8), ring))
            assert error[ring].mean() < 8
            # the rasterised ground truth is exactly the drawn targets
            drawn = np.logical_or.reduce([scene.objects[i].mask for i in scene.target_indices])
            iou = np.count_nonzero(target & drawn) / np.count_nonzero(target | drawn)
            assert iou > 0.98
        # pixels: outside every object only background; inside each mask the object's paint
        union = np.zeros((height, width), bool)
        for obj in scene.objects:
            union |= obj.mask
            assert np.array_equal(_mask(obj.polygon.tolist(), height, width), obj.mask)
            changed = np.any(scene.rgb[obj.mask] != scene.background[obj.mask], axis=1).mean()
            assert changed > 0.97, obj.label
            inner = cv2.erode(obj.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            mean = rgb[inner].reshape(-1, 3).mean(axis=0)
            nearest = palette_names[int(np.argmin(np.linalg.norm(palette - mean, axis=1)))]
            assert nearest == obj.colour, (index, obj.label, mean)
        assert np.array_equal(scene.rgb[~union], scene.background[~union])
        # backgrounds are low-saturation greys/beiges
        spread = scene.background.astype(int).max(axis=2) - scene.background.astype(int).min(axis=2)
        assert spread.mean() < 30


def test_objects_do_not_overlap_and_are_visible(splits):
    for split in splits:
        for annotation in _annotations(splits[split]):
            height, width = annotation["imageHeight"], annotation["imageWidth"]
            short = min(height, width)
            masks = [_mask(obj["points"], height, width) for obj in annotation["objects"]]
            assert 3 <= len(masks) <= 5
            kernel = np.ones((5, 5), np.uint8)
            for a, b in combinations(masks, 2):  # a gap of a few pixels between any two
                assert not (cv2.dilate(a.astype(np.uint8), kernel).astype(bool) & b).any()
            for obj in annotation["objects"]:
                points = np.array(obj["points"])
                w, h = points.max(axis=0) - points.min(axis=0) + 1
                assert min(w, h) >= int((0.07 if annotation.get("camera") else 0.12) * short)
            if annotation["nothing_fits"]:
                assert annotation["shapes"] == [] and annotation["target_index"] is None
                assert annotation["target_indices"] == []
            else:  # one shape per target, the targets' own polygons, the first is target_index
                assert [s["points"] for s in annotation["shapes"]] == \
                    [annotation["objects"][i]["points"] for i in annotation["target_indices"]]
                assert annotation["target_index"] == annotation["target_indices"][0]


def test_query_types_are_balanced(splits, tmp_path):
    for split in splits:
        counts = Counter(a["query_type"] for a in _annotations(splits[split]))
        assert counts == {name: COUNTS[split] // len(rs.QUERY_TYPES) for name in rs.QUERY_TYPES}
    uneven = Counter(a["query_type"] for a in _annotations(rs.write_split(tmp_path, "val", 34, 0)))
    assert set(uneven) == set(rs.QUERY_TYPES) and max(uneven.values()) - min(uneven.values()) <= 1


# ------------------------------------------------------------------------ per-type invariants


def _check_nothing_fits(annotation: dict):
    """No object answers the query, and the answer says so without [SEG]."""
    objects = annotation["objects"]
    colours = [obj["label"].split()[0] for obj in objects]
    shapes = [obj["label"].split()[1] for obj in objects]
    query, kind, answer = annotation["text"][0], annotation["query_type"], annotation["answer"]
    assert "[SEG]" not in answer and answer.split(": ")[1].startswith(("there is", "there are no", "they are all"))
    if kind == "roll":
        assert not set(shapes) & rs.ROUND_SHAPES
    elif kind == "hold_water":
        assert not set(shapes) & rs.CONTAINER_SHAPES
    elif kind == "colour_knowledge":
        named = [c for c in rs.COLOURS if f" {c} " in answer]
        assert len(named) == 1 and named[0] not in colours
        assert any(cue in query for cue in rs.COLOUR_CUES[named[0]])
    elif kind in ("largest_of_colour", "smallest_of_colour"):
        named = [c for c in rs.COLOURS if c in query.replace(".", " ").replace("?", " ").replace(",", " ").split()]
        assert len(named) == 1 and named[0] not in colours
    elif kind == "odd_one_out":
        assert len(set(objects_labels := [o["label"] for o in objects])) == 1, objects_labels
    elif kind in ("refer_colour", "all_of_colour"):
        assert annotation["slots"]["colour"] not in colours
    elif kind in ("refer_shape", "all_of_shape"):
        assert annotation["slots"]["shape"] not in shapes
    elif kind == "refer_colour_shape":  # both words are there, never on one object
        colour, shape = annotation["slots"]["colour"], annotation["slots"]["shape"]
        assert f"{colour} {shape}" not in [o["label"] for o in objects] and colour in colours and shape in shapes
    else:
        raise AssertionError(f"{kind} cannot be a 'nothing fits' scene")


def _named(answer: str, objects: list[dict], indices: list[int], width: int, height: int) -> bool:
    """Whether ``answer`` names ``objects[i] for i in indices`` in that order, each before its [SEG]."""
    names = [f"the {objects[i]['label']} {rs.region(*objects[i]['point'], width, height)} [SEG]" for i in indices]
    if len(names) == 1:
        return answer.endswith(f"it is {names[0]}.")
    return answer.endswith(f"they are {', '.join(names[:-1])} and {names[-1]}.") and answer.count("[SEG]") == len(names)


def _extreme_by(points: list, position: str, margin: float, width: int, height: int) -> int:
    """The index furthest towards ``position``, checked to lead the next by ``margin``."""
    axis, sign = {"on the left": (0, -1), "on the right": (0, 1), "at the top": (1, -1), "at the bottom": (1, 1)}[position]
    ranked = sorted(range(len(points)), key=lambda i: -sign * points[i][axis])
    assert abs(points[ranked[0]][axis] - points[ranked[1]][axis]) >= margin * (width, height)[axis]
    return ranked[0]


def _check_command(annotation: dict, objects: list[dict], index: int, areas: list[int]):
    """The invariants of the plain commands (referring, several targets, follow-ups)."""
    width, height = annotation["imageWidth"], annotation["imageHeight"]
    labels = [obj["label"] for obj in objects]
    colours = [label.split()[0] for label in labels]
    shapes = [label.split()[1] for label in labels]
    points = [obj["point"] for obj in objects]
    slots, kind, targets = annotation["slots"], annotation["query_type"], annotation["target_indices"]
    looked_for = annotation["answer"].split(": ")[0]
    assert looked_for == rs.LOOK_FOR[slots.get("kind", kind)].format(**slots)
    assert len(set(targets)) == len(targets) and (len(targets) > 1) == (kind in rs.SEVERAL_TYPES)
    assert kind != "two_named" or len(targets) == 2
    if kind == "refer_colour":
        assert [i for i, c in enumerate(colours) if c == slots["colour"]] == [index]
    elif kind == "refer_shape":
        assert [i for i, s in enumerate(shapes) if s == slots["shape"]] == [index]
    elif kind == "refer_colour_shape":
        assert labels.count(labels[index]) == 1 and labels[index] == f"{slots['colour']} {slots['shape']}"
        assert colours.count(colours[index]) >= 2 and shapes.count(shapes[index]) >= 2
    elif kind == "refer_position":
        position, thing = slots["position"], slots["thing"]
        opposite = {"on the left": "right", "on the right": "left", "at the top": "bottom", "at the bottom": "top"}
        assert opposite.get(position, "-") not in rs.region(*points[index], width, height)  # the answer agrees
        if thing == "object":  # furthest towards a side of all objects, by 15 % of the image
            assert _extreme_by(points, position, 0.15, width, height) == index
        else:
            pair = [i for i, label in enumerate(labels) if label == thing]
            assert len(pair) == 2 and index in pair
            if position.startswith("next to the "):  # the anchor is one of a kind; nearer by 1.8x
                anchor = labels.index(position[len("next to the "):])
                assert labels.count(labels[anchor]) == 1
                d = [np.hypot(points[i][0] - points[anchor][0], points[i][1] - points[anchor][1]) for i in pair]
                assert d[pair.index(index)] * 1.8 <= d[1 - pair.index(index)]
            else:
                assert pair[_extreme_by([points[i] for i in pair], position, 0.2, width, height)] == index
    elif kind == "refer_size":
        alike = [i for i, label in enumerate(labels) if label.endswith(slots["thing"])]
        assert len(alike) == 2 and index in alike
        other = alike[1 - alike.index(index)]
        bigger = slots["size"] in ("big", "large")
        assert (areas[index] >= 2 * areas[other]) if bigger else (areas[other] >= 2 * areas[index])
    elif kind == "all_of_colour":
        assert targets == sorted((i for i, c in enumerate(colours) if c == slots["colour"]), key=lambda i: points[i][0])
        assert 2 <= len(targets) <= 3
    elif kind == "all_of_shape":
        assert targets == sorted((i for i, s in enumerate(shapes) if s == slots["shape"]), key=lambda i: points[i][0])
        assert 2 <= len(targets) <= 3
    elif kind == "two_named":
        assert [labels[i] for i in targets] == [slots["first"], slots["second"]]
        assert all(labels.count(labels[i]) == 1 for i in targets)
    elif kind == "follow_up":  # the first turn, as the engine stores it, then the follow-up
        [(asked, answered)] = annotation["history"]
        assert asked.endswith(" Please output segmentation mask.") or "segment" in asked.lower()
        assert answered.count("[SEG]") == 1 and answered.startswith("I look for ")
        first = next(i for i in range(len(objects)) if _named(answered, objects, [i], width, height))
        assert first != index and annotation["history_targets"] == [[first]]
        if slots["kind"] == "follow_other":
            assert labels[first] == labels[index] == slots["thing"] and labels.count(labels[index]) == 2
        elif slots["kind"] == "follow_colour":
            assert colours.count(colours[index]) == 1 and colours[index] == slots["colour"]
            assert colours.count(colours[first]) == 1
        else:  # the first object is one of a kind in colour and shape: "the smallest one" means of all
            assert colours.count(colours[first]) == 1 and shapes.count(shapes[first]) == 1
            ranked = sorted(range(len(objects)), key=lambda i: areas[i], reverse=slots["extreme"] == "largest")
            assert ranked[0] == index and max(areas[index], areas[ranked[1]]) >= 1.6 * min(areas[index], areas[ranked[1]])
    else:
        raise AssertionError(f"unknown query type {kind}")


def _check_invariants(annotation: dict):
    if annotation["nothing_fits"]:
        return _check_nothing_fits(annotation)
    objects = annotation["objects"]
    width, height = annotation["imageWidth"], annotation["imageHeight"]
    index = annotation["target_index"]
    for target in annotation["target_indices"]:
        point = objects[target]["point"]
        assert _mask(objects[target]["points"], height, width)[point[1], point[0]]  # the point is on the target
    # says what it looks for, then names the targets, each before its [SEG]
    assert _named(annotation["answer"], objects, annotation["target_indices"], width, height)
    looked_for, named = annotation["answer"].split(": ", 1)
    colours = [obj["label"].split()[0] for obj in objects]
    shapes = [obj["label"].split()[1] for obj in objects]
    areas = [int(_mask(obj["points"], height, width).sum()) for obj in objects]
    colour, shape = colours[index], shapes[index]
    query, kind = annotation["text"][0], annotation["query_type"]
    others = [i for i in range(len(objects)) if i != index]
    if kind not in rs.REASONING_TYPES:
        return _check_command(annotation, objects, index, areas)
    if kind == "roll":
        assert [i for i, s in enumerate(shapes) if s in rs.ROUND_SHAPES] == [index]
        assert "round" in annotation["explanation"]
    elif kind == "hold_water":
        assert [i for i, s in enumerate(shapes) if s in rs.CONTAINER_SHAPES] == [index]
    elif kind == "colour_knowledge":
        assert colours.count(colour) == 1
        words = {word.strip(".,;?!") for word in query.lower().split()}
        assert not words & set(rs.COLOURS)  # the colour is only implied
        assert any(cue.lower() in query.lower() for cue in rs.COLOUR_CUES[colour])  # "{Cue} comes to mind..."
        assert colour in annotation["explanation"]
        assert looked_for == f"I look for something {colour}"  # the cue's colour, said before the target
    elif kind in ("largest_of_colour", "smallest_of_colour"):
        assert colour in query.split() or f"{colour}," in query or f"{colour}." in query
        assert looked_for == f"I look for the {kind.split('_')[0]} {colour} object"
        group = [i for i in range(len(objects)) if colours[i] == colour]
        assert 2 <= len(group) <= 3
        sign = 1 if kind == "largest_of_colour" else -1
        ranked = sorted(group, key=lambda i: -sign * areas[i])
        assert ranked[0] == index
        if sign > 0:
            assert areas[index] >= 1.8 * areas[ranked[1]]
            assert any(colours[i] != colour and areas[i] > areas[index] for i in others)
        else:
            assert areas[ranked[1]] >= 1.8 * areas[index]
            assert any(colours[i] != colour and areas[i] < areas[index] for i in others)
    elif kind == "odd_one_out":
        other_shapes = {shapes[i] for i in others}
        other_colours = {colours[i] for i in others}
        assert len(other_shapes) == 1 and len(other_colours) == 1
        differs_shape = shape not in other_shapes
        differs_colour = colour not in other_colours
        assert differs_shape != differs_colour  # exactly one attribute singles the target out
        shared = rs.PLURALS[other_shapes.pop()] if differs_shape else other_colours.pop()
        assert named.startswith(f"the others are all {shared}, and it is the ")  # what the others share first
    else:
        raise AssertionError(f"unknown query type {kind}")


def test_each_query_type_has_exactly_one_valid_target(splits):
    seen = Counter()
    for split in splits:
        for annotation in _annotations(splits[split]):
            _check_invariants(annotation)
            seen[annotation["query_type"]] += 1
    assert set(seen) == set(rs.QUERY_TYPES)
    # more scenes straight from make_scene (no files); both odd-one-out variants must occur
    rng = np.random.default_rng(99)
    odd_kinds = Counter()
    for round_ in range(10):
        for query_type in rs.QUERY_TYPES:
            scene = rs.make_scene(rng, query_type, split="test" if round_ % 2 else "train", nothing_fits=round_ == 9)
            _check_invariants(rs.scene_annotation(scene))
            if round_ == 9:
                continue
            if query_type == "odd_one_out":
                assert len({obj.texture for obj in scene.objects}) == 1  # texture singles nobody out
                other = scene.objects[(scene.target_index + 1) % len(scene.objects)]
                odd_kinds["shape" if other.shape != scene.target.shape else "colour"] += 1
    assert set(odd_kinds) == {"shape", "colour"}


def test_about_one_scene_in_ten_has_nothing_that_fits(tmp_path):
    folder = rs.write_split(tmp_path, "val", 120, 1)
    annotations = _annotations(folder)
    empty = [a for a in annotations if a["nothing_fits"]]
    assert 3 <= len(empty) <= 20  # 12 drawn, 11 of the 15 query types can miss: about 9
    for annotation in empty:
        _check_nothing_fits(annotation)
    # the other samples keep exactly the images they had before such scenes existed
    index = next(i for i, a in enumerate(annotations) if not a["nothing_fits"] and not a.get("camera"))
    plain = rs.make_scene(rs.scene_rng(1, "val", index), rs.QUERY_TYPES[index % len(rs.QUERY_TYPES)], split="val")
    assert np.array_equal(plain.rgb, rs.split_scene(1, "val", index).rgb)


def test_training_samples_carry_distinct_paraphrases_of_their_query():
    scene = rs.split_scene(0, "train", 2)
    from lisa_ros.data.scenes.writing import PARAPHRASES

    # PARAPHRASES draws among the type's training phrasings, repeats dropped
    assert 2 <= len(scene.paraphrases) <= PARAPHRASES and scene.query not in scene.paraphrases
    assert len(set(scene.paraphrases)) == len(scene.paraphrases)
    again = rs.split_scene(0, "train", 2)
    assert again.paraphrases == scene.paraphrases and np.array_equal(again.rgb, scene.rgb)


def test_other_image_sizes():
    for size in [(640, 480), (256, 256), (240, 320)]:
        scene = rs.make_scene(np.random.default_rng(1), "largest_of_colour", size)
        assert scene.rgb.shape == (size[1], size[0], 3) and scene.rgb.dtype == np.uint8
        assert scene.target.mask.shape == (size[1], size[0])
        group = [obj for obj in scene.objects if obj.colour == scene.target.colour]
        assert max(group, key=lambda obj: obj.area) is scene.target
        short = min(size)
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.mask)
            assert min(np.ptp(xs) + 1, np.ptp(ys) + 1) >= int(0.12 * short)


# ---------------------------------------------------------------------------------- baseline


def test_any_object_baseline(splits):
    result = any_object_baseline(splits["test"])
    assert 0.1 < result["giou"] < 0.5
    assert result["count"] == COUNTS["test"] == sum(result["per_type_counts"].values())
    assert set(result["per_type"]) == set(rs.QUERY_TYPES)
    assert result["giou"] == pytest.approx(np.mean(result["per_sample"]))
    # by hand for the first sample: the mean IoU of each object's polygon with the target's
    annotation = json.loads((splits["test"] / "00000.json").read_text())
    target = np.zeros((240, 320), np.uint8)
    cv2.fillPoly(target, [np.array(annotation["shapes"][0]["points"], np.int32)], 1)
    cv2.polylines(target, [np.array(annotation["shapes"][0]["points"], np.int32)], True, 1, 1)
    ious = []
    for obj in annotation["objects"]:
        canvas = np.zeros((240, 320), np.uint8)
        cv2.fillPoly(canvas, [np.array(obj["points"], np.int32)], 1)
        cv2.polylines(canvas, [np.array(obj["points"], np.int32)], True, 1, 1)
        inter = np.count_nonzero(canvas & target)
        union = np.count_nonzero(canvas | target)
        ious.append(inter / (union + 1e-5))
    assert result["per_sample"][0] == pytest.approx(np.mean(ious), abs=1e-9)
    assert result["per_sample"][0] == pytest.approx(1 / len(annotation["objects"]), abs=1e-4)


# --------------------------------------------------------------------------------------- CLI


def test_command_line(tmp_path, capsys):
    assert main(["scenes", str(tmp_path), "--splits", "val,test", "--count-val", "6", "--count-test", "7",
                 "--size", "160x120", "--seed-offset", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "val: 6 scenes (seed 4)" in out and "test: 7 scenes (seed 5)" in out and "roll 1" in out
    assert "any-object baseline gIoU" in out
    assert len(list((tmp_path / "val").glob("*.jpg"))) == 6
    assert len(list((tmp_path / "test").glob("*.jpg"))) == 7
    assert not (tmp_path / "train").exists()
    image = cv2.imread(str(tmp_path / "test" / "00000.jpg"))
    assert image.shape == (120, 160, 3)
    direct = rs.write_split(tmp_path / "again", "test", 7, rs.SPLIT_SEEDS["test"] + 3, (160, 120))
    assert (direct / "00006.json").read_bytes() == (tmp_path / "test" / "00006.json").read_bytes()
    assert main(["scenes", str(tmp_path), "--splits", "holdout"]) == 2
    assert "unknown split(s) ['holdout']" in capsys.readouterr().err
    # --camera-share 0: every train scene has the asked size
    assert main(["scenes", str(tmp_path / "plain"), "--splits", "train", "--count-train", "15", "--size", "160x120",
                 "--camera-share", "0", "--no-progress"]) == 0
    sizes = {json.loads(p.read_text())["imageWidth"] for p in (tmp_path / "plain" / "train").glob("*.json")}
    assert sizes == {160}
    assert main(["scenes", str(tmp_path), "--camera-share", "1.5"]) == 2
    assert "--camera-share must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("known_cues", [False, True])
def test_colour_knowledge_probe_rewrites_only_the_query_with_new_words(splits, tmp_path, known_cues):
    """training/probe_colour_knowledge.py: the test split's colour_knowledge scenes, same images and
    targets, one query each in a phrasing no split uses, with a never-used cue (or a test cue) of
    the scene's colour."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "training" / "probe_colour_knowledge.py"
    out = tmp_path / "probe"
    run = subprocess.run([sys.executable, str(script), str(splits["test"]), str(out)] + ["--known-cues"] * known_cues,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    originals = {path.name: json.loads(path.read_text()) for path in splits["test"].glob("*.json")}
    written = {path.name: json.loads(path.read_text()) for path in out.glob("*.json")}
    assert set(written) == {name for name, a in originals.items() if a["query_type"] == "colour_knowledge"} != set()
    train_outputs = _train_outputs()
    test_templates = set(rs.PHRASINGS["colour_knowledge"]["test"])
    for name, annotation in written.items():
        original = originals[name]
        assert {k: v for k, v in annotation.items() if k != "text"} == {k: v for k, v in original.items() if k != "text"}
        assert (out / name).with_suffix(".jpg").read_bytes() == (splits["test"] / name).with_suffix(".jpg").read_bytes()
        [query] = annotation["text"]
        assert query not in train_outputs and query != original["text"][0]
        colour = original["answer"].split("something ")[1].split(":")[0]
        cues = rs.COLOUR_CUES[colour] if known_cues else [_probe_new_cues()[colour]]
        assert any(cue in query or cue[:1].upper() + cue[1:] in query for cue in cues), query
        assert not any(template.split("{cue}")[0] and query.startswith(template.split("{cue}")[0]) for template in test_templates)


def _probe_new_cues() -> dict[str, str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "probe_colour_knowledge", Path(__file__).resolve().parent.parent / "training" / "probe_colour_knowledge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    used = {cue for table in (rs.COLOUR_CUES, rs.TRAINING_CUES) for cues in table.values() for cue in cues}
    assert not used & set(module.NEW_CUES.values())
    return module.NEW_CUES


def test_new_phrasings_probe_rewrites_every_query_with_words_no_phrasing_uses(splits, tmp_path):
    """training/probe_new_phrasings.py: every test scene, same images, targets and answers, one
    query in a phrasing of its type that shares no four-word run with any phrasing of that type,
    with the scene's own colour (from its answer) filled in."""
    import subprocess
    import sys

    from lisa_ros.data.scenes import framing

    script = Path(__file__).resolve().parent.parent / "training" / "probe_new_phrasings.py"
    out = tmp_path / "probe"
    run = subprocess.run([sys.executable, str(script), str(splits["test"]), str(out)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    originals = {path.name: json.loads(path.read_text()) for path in splits["test"].glob("*.json")}
    written = {path.name: json.loads(path.read_text()) for path in out.glob("*.json")}
    assert set(written) == set(originals)
    slotless = {}  # per query type: the runs of its phrasings without a slot (the query's slots are filled)
    for query_type, phrasings in rs.PHRASINGS.items():
        used = set().union(*(rs.word_runs(t) for split in phrasings.values() for t in split))
        if query_type in framing.TARGET_PHRASES:  # and the command grammar's training structures
            used |= set().union(*(rs.word_runs(t) for frame in framing.framed_templates(query_type) for t in frame))
        slotless[query_type] = {words for words in used if not any("{" in word for word in words)}
    for name, annotation in written.items():
        original = originals[name]
        assert {k: v for k, v in annotation.items() if k != "text"} == {k: v for k, v in original.items() if k != "text"}
        assert (out / name).with_suffix(".jpg").read_bytes() == (splits["test"] / name).with_suffix(".jpg").read_bytes()
        [query] = annotation["text"]
        assert "{" not in query and query != original["text"][0]
        phrasings = original["slots"]["kind"] if original["query_type"] == rs.FOLLOW_UP else original["query_type"]
        assert not rs.word_runs(query) & slotless[phrasings], query
        if original["query_type"] in ("largest_of_colour", "smallest_of_colour"):
            colour = original["answer"].split(original["query_type"].split("_")[0] + " ")[1].split()[0]
            assert re.search(rf"\b{colour}\b", query), (query, original["answer"])


def test_camera_like_scenes():
    """The camera probe split is all camera-like (camera sizes, solid colours, no object of the
    background's own tone); about CAMERA_SHARE of a train split is; the test split has none."""
    sizes, tones, spans = set(), set(), []
    for index in range(30):
        scene = rs.split_scene(rs.SPLIT_SEEDS["camera"], "camera", index)
        height, width = scene.rgb.shape[:2]
        assert scene.camera and (width, height) in rs.CAMERA_SIZES
        sizes.add((width, height))
        assert all(obj.texture == "solid" for obj in scene.objects)
        level = float(scene.background.mean())
        tones.add("light" if level > 190 else "dark" if level < 70 else "grey")
        colours = {obj.colour for obj in scene.objects}
        assert not (level > 190 and "white" in colours) and not (level < 70 and "black" in colours)
        spans += [np.sqrt(obj.area / (width * height)) for obj in scene.objects]
        assert scene.query not in _train_outputs()  # the test phrasings
    assert len(sizes) >= 3 and tones == {"light", "dark", "grey"}
    # objects larger and smaller than the default scenes' (whose sqrt(area share) spans about 0.08-0.3)
    assert min(spans) < 0.06 and max(spans) > 0.3
    camera = [rs.split_scene(0, "train", index).camera for index in range(60)]
    assert 0.1 < np.mean(camera) < 0.5
    assert not any(rs.split_scene(2, "test", index).camera for index in range(30))
