"""One reasoning scene: plan, place, render, phrase the query and the explanation."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

import cv2

from lisa_ros.model.prompts import with_suffix

from lisa_ros.data.scenes.layout import NOTHING_FITS_PLANS, PLANS, Builder, PlanRetry, place, polygon_mask
from lisa_ros.data.scenes.referring import NOTHING_FITS_PLANS as COMMAND_NOTHING_FITS_PLANS
from lisa_ros.data.scenes.referring import PLANS as COMMAND_PLANS
from lisa_ros.data.scenes.referring import article
from lisa_ros.data.scenes.rendering import background, camera_background, render, sensor_noise
from lisa_ros.data.scenes.vocabulary import (
    CAMERA_SHARE,
    CAMERA_SIZES,
    DEFAULT_SIZE,
    SEVERAL_ANSWER,
    EXPLANATIONS,
    LOOK_FOR,
    NOTHING_FITS_SHARE,
    ODD_ONE_OUT_ANSWER,
    PHRASINGS,
    PLURALS,
    QUERY_TYPES,
    REFUSALS,
    SPLITS,
    TARGET_ANSWER,
    COLOUR_CUES,
    TRAINING_CUES,
    cue_slots,
    pick,
    region,
)


@dataclass
class SceneObject:
    """One drawn object.

    ``polygon``: int32 array (N, 2) of (x, y) pixel coordinates; ``mask``: bool (H, W), exactly
    what the polygon rasterises to (outline + fill) and exactly the pixels painted with the
    object's colour/texture. ``label`` is ``"<colour> <shape>"``.
    """

    label: str
    colour: str
    shape: str
    polygon: np.ndarray
    mask: np.ndarray
    texture: str = "solid"

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @cached_property
    def point(self) -> tuple[int, int]:
        """(x, y): the pixel deepest inside the object (the distance transform's maximum; a cup's
        or a star's centroid can lie outside it). Computed once (positions compare it often)."""
        depth = cv2.distanceTransform(np.pad(self.mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(depth.argmax()), depth.shape)
        return int(x), int(y)


@dataclass
class Scene:
    """A generated image with its query.

    ``rgb``: uint8 (H, W, 3); ``background``: uint8 (H, W, 3), the same image without the objects
    (outside every object mask ``rgb == background``); ``objects[target_index]`` is the answer,
    or ``target_index`` is None when nothing in the scene answers the query ("nothing fits").
    ``answer``: what the model should say: what it looks for
    (:data:`~lisa_ros.data.scenes.vocabulary.LOOK_FOR`), then the target named before ``[SEG]``
    (:data:`~lisa_ros.data.scenes.vocabulary.TARGET_ANSWER`) or that nothing fits, without ``[SEG]``
    (:data:`~lisa_ros.data.scenes.vocabulary.REFUSALS`).
    ``paraphrases``: more phrasings of the same query (training splits only).
    """

    rgb: np.ndarray
    query: str
    query_type: str
    explanation: str
    target_index: int | None
    objects: list[SceneObject]
    background: np.ndarray | None = None
    answer: str = ""
    paraphrases: tuple[str, ...] = ()
    target_indices: tuple[int, ...] = ()
    history: tuple[tuple[str, str], ...] = ()  # earlier turns (user text as the engine sends it, answer)
    history_targets: tuple[tuple[int, ...], ...] = ()  # each earlier turn's target indices
    camera: bool = False
    slots: dict | None = None  # the words filled into the query's phrasing ({"colour": "red", ...})

    @property
    def target(self) -> SceneObject | None:
        return None if self.target_index is None else self.objects[self.target_index]


def phrasing_split(split: str) -> str:
    """The phrasing set of ``split`` ("train" for train and val, "test" for the test and camera
    splits); ValueError for an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    return "train" if split in ("train", "val") else "test"


def make_scene(rng: np.random.Generator, query_type: str, size: tuple[int, int] = DEFAULT_SIZE,
               split: str = "train", nothing_fits: bool = False, paraphrase_rng: np.random.Generator | None = None,
               paraphrases: int = 0, camera: dict | None = None) -> Scene:
    """One scene of ``query_type`` at ``size`` = (width, height), with the phrasings of ``split``.

    Deterministic given the generators' states. The returned :class:`Scene` has its valid
    targets ``scene.objects[i] for i in scene.target_indices`` (one, or several for the
    several-target types), or with ``nothing_fits`` none (the same kind of query about a scene
    where no object answers it; a type that cannot miss, such as ``refer_position``, ignores the
    flag). ``paraphrases``: that many more phrasings of the query, drawn with ``paraphrase_rng``
    (so they change nothing else). ``camera``: a camera-like scene (:func:`camera_style`; its
    size replaces ``size``).
    """
    if query_type not in PLANS and query_type not in COMMAND_PLANS:
        raise ValueError(f"unknown query type {query_type!r} (one of {', '.join(QUERY_TYPES)})")
    phrasing = phrasing_split(split)
    width, height = (int(v) for v in (camera["size"] if camera else size))
    if min(width, height) < 48:
        raise ValueError(f"image size {width}x{height} is too small (short side >= 48)")
    builder = Builder(rng, width, height, camera)
    nothing_plans = {**NOTHING_FITS_PLANS, **COMMAND_NOTHING_FITS_PLANS}
    nothing_fits = nothing_fits and query_type in nothing_plans
    plan = (nothing_plans if nothing_fits else {**PLANS, **COMMAND_PLANS})[query_type]
    for _ in range(500):
        if camera:
            builder.scale = float(rng.uniform(0.55, 1.45))
        try:
            targets, others, slots = plan(builder)
            targets = targets if isinstance(targets, list) else ([] if targets is None else [targets])
            pieces = targets + others
            order = rng.permutation(len(pieces))  # the targets' positions are random
            pieces = [pieces[i] for i in order]
            target_indices = [int(np.flatnonzero(order == k)[0]) for k in range(len(targets))]
            offsets = place(pieces, width, height, rng)
            objects = []
            for piece, (x, y) in zip(pieces, offsets):
                polygon = piece.polygon + np.array([x, y], np.int32)
                objects.append(SceneObject(f"{piece.colour} {piece.shape}", piece.colour, piece.shape,
                                           polygon, polygon_mask(polygon, height, width), piece.texture))
            resolve = slots.pop("resolve", None)
            if resolve is not None:  # the answer depends on where the pieces landed
                target_indices, more = resolve(objects, target_indices, width, height)
                slots.update(more)
        except PlanRetry:
            continue
        break
    else:  # pragma: no cover - only for absurd sizes
        raise RuntimeError(f"could not lay out a {query_type} scene at {width}x{height}")

    plain_background = camera_background(rng, width, height, camera["tone"]) if camera else background(rng, width, height)
    image = render(pieces, offsets, plain_background, rng)
    gain = np.float32(rng.uniform(0.92, 1.08))  # per-image brightness jitter
    if camera:  # the same grain on the image and on its empty background
        grain = sensor_noise(rng, np.zeros_like(image))
        image, plain_background = image + grain, plain_background + grain
    rgb = np.clip(np.rint(image * gain), 0, 255).astype(np.uint8)
    plain = np.clip(np.rint(plain_background * gain), 0, 255).astype(np.uint8)

    if query_type in ("all_of_colour", "all_of_shape"):  # named left to right, in the answer and the annotation
        target_indices = sorted(target_indices, key=lambda i: objects[i].point[0])
    chosen = objects[target_indices[0]] if target_indices else None
    cue = slots.get("cue", "")
    fields = {"colour": chosen.colour if chosen else slots.get("colour", ""),
              "shape": chosen.shape if chosen else slots.get("shape", ""), **cue_slots(cue),
              **{k: v for k, v in slots.items() if k not in ("cue", "colour", "shape", "first_turn")}}
    if query_type == "follow_up":
        fields["colour"] = slots.get("colour", fields["colour"])
    fields.update(_derived(fields))
    key = slots["kind"] if query_type == "follow_up" else query_type
    templates = PHRASINGS[key][phrasing]
    query = pick(rng, templates).format(**fields)
    look = LOOK_FOR[key].format(**fields)
    history: tuple[tuple[str, str], ...] = ()
    history_targets: tuple[tuple[int, ...], ...] = ()
    if "first_turn" in slots:  # a follow-up: the session's first command and the answer it got
        first_type, first_index, first_fields = slots["first_turn"]
        first_fields = {**first_fields, **_derived(first_fields)}
        first_query = pick(rng, PHRASINGS[first_type][phrasing]).format(**first_fields)
        first_answer = _answer(LOOK_FOR[first_type].format(**first_fields), objects, [first_index], width, height)
        history = ((with_suffix(first_query, explain=False), first_answer),)
        history_targets = ((int(first_index),),)
    if chosen is None:
        explanation = ""
        answer = pick(rng, REFUSALS[query_type]).format(look=look, shapes=PLURALS.get(fields["shape"], ""),
                                                        **{k: v for k, v in fields.items() if k != "shapes"})
    else:
        explanation_key = f"odd_one_out_{slots['kind']}" if query_type == "odd_one_out" else key
        explanation = pick(rng, EXPLANATIONS[explanation_key]).format(**fields)
        if query_type == "odd_one_out":
            answer = ODD_ONE_OUT_ANSWER.format(look=look, colour=chosen.colour, shape=chosen.shape,
                                               others=slots.get("others", ""), where=region(*chosen.point, width, height))
        else:
            answer = _answer(look, objects, list(target_indices), width, height)
    more: list[str] = []
    if paraphrases and paraphrase_rng is not None:
        for _ in range(paraphrases):
            more_fields = dict(fields)
            if query_type == "colour_knowledge":  # other world knowledge for the same colour, too
                cues = COLOUR_CUES[fields["colour"]] + TRAINING_CUES[fields["colour"]]
                cue = cues[int(paraphrase_rng.integers(len(cues)))]
                more_fields.update(cue_slots(cue))
            text = templates[int(paraphrase_rng.integers(len(templates)))].format(**more_fields)
            if text != query and text not in more:
                more.append(text)
    return Scene(rgb, query, query_type, explanation, target_indices[0] if target_indices else None, objects, plain,
                 answer, tuple(more), tuple(target_indices), history, history_targets, camera is not None,
                 {k: v for k, v in fields.items() if isinstance(v, str) and v})


def _derived(fields: dict) -> dict:
    """Slots spelled from others: ``a_shape`` ("a ball"), ``shapes`` and ``shape_plural``."""
    shape = fields.get("shape", "")
    return {"a_shape": article(shape) if shape else "", "shape_plural": PLURALS.get(shape, ""),
            "shapes": fields.get("shapes") or PLURALS.get(shape, "")}


def _answer(look: str, objects: list[SceneObject], indices: list[int], width: int, height: int) -> str:
    """The answer naming ``objects[i] for i in indices``, each before its own [SEG]."""
    if len(indices) == 1:
        obj = objects[indices[0]]
        return TARGET_ANSWER.format(look=look, colour=obj.colour, shape=obj.shape, where=region(*obj.point, width, height))
    names = [f"the {objects[i].label} {region(*objects[i].point, width, height)} [SEG]" for i in indices]
    return SEVERAL_ANSWER.format(look=look, listing=", ".join(names[:-1]) + " and " + names[-1])


def camera_style(rng: np.random.Generator) -> dict:
    """How a camera-like scene looks: its size (:data:`CAMERA_SIZES`), the background's tone
    (light, dark or grey; the colour it would hide is not drawn), and smaller minimum sizes
    (objects 0.55-1.45x the default scenes' sizes, short box side >= 7 % of the image)."""
    tone = pick(rng, ("light", "dark", "grey"))
    return {"size": CAMERA_SIZES[int(rng.integers(len(CAMERA_SIZES)))], "tone": tone,
            "hidden": {"light": ("white",), "dark": ("black",)}.get(tone, ()), "min_side": 0.07, "min_extent": 0.6}


def scene_annotation(scene: Scene) -> dict:
    """The ReasonSeg JSON of a scene (see the package doc for the keys)."""
    height, width = scene.rgb.shape[:2]
    target = scene.target
    return {
        "text": [scene.query, *scene.paraphrases],
        "is_sentence": True,
        "shapes": [{"label": "target", "points": scene.objects[i].polygon.tolist()} for i in scene.target_indices],
        "answer": scene.answer,
        "explanation": scene.explanation,
        "query_type": scene.query_type,
        "target_index": scene.target_index,
        "target_indices": list(scene.target_indices),
        **({"history": [list(turn) for turn in scene.history],
            "history_targets": [list(t) for t in scene.history_targets]} if scene.history else {}),
        **({"camera": True} if scene.camera else {}),
        "slots": dict(scene.slots or {}),
        "nothing_fits": target is None,
        "objects": [{"label": obj.label, "points": obj.polygon.tolist(), "point": list(obj.point), "area": obj.area}
                    for obj in scene.objects],
        "imageWidth": width,
        "imageHeight": height,
    }


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator :func:`write_split` uses for sample ``index``: depends on the seed, the
    split's name and the index, so splits never share scenes and samples can be regenerated."""
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be >= 0")
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def nothing_fits(seed: int, split: str, index: int) -> bool:
    """Whether sample ``index`` of a split is drawn as a "nothing fits" scene (about
    :data:`~lisa_ros.data.scenes.vocabulary.NOTHING_FITS_SHARE` of each split; a query type that
    cannot miss ignores it), from its own generator: the other samples' images stay what they
    were before such scenes existed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index, 1]))
    return bool(rng.random() < NOTHING_FITS_SHARE)


def camera_scene(seed: int, split: str, index: int, share: float = CAMERA_SHARE) -> dict | None:
    """The camera style of sample ``index`` (:func:`camera_style`), or None for a default scene:
    every sample of the "camera" split, ``share`` of the train and val splits (about), none of
    the test split. From its own generator, so the other samples stay as they were."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index, 3]))
    share = {"camera": 1.0, "test": 0.0}.get(split, share)
    return camera_style(rng) if rng.random() < share else None


def paraphrase_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s extra phrasings (independent of its image)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index, 2]))
