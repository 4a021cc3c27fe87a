"""Plans of the plain commands (issue 31): referring, several targets and follow-ups.

A plan draws the pieces of one scene (:mod:`.layout`'s contract: ``(targets, others, slots)``);
when the answer depends on where the pieces land ("the red ball on the left", "the smallest
one"), ``slots["resolve"]`` decides it after placement: it takes the placed objects (anything
with ``point`` (x, y), ``area``, ``label``, ``colour``, ``shape``), the image size and the
indices of the planned targets, and returns ``(target_indices, more slots)`` or raises
:class:`~.layout.PlanRetry` when the scene would be ambiguous (two objects about as far left, as
big, as near). Margins: a position must single out its object by >= 20 % of the image (15 % for
"the object on the left" among all objects) and agree with the answer's region phrase; a size by
an area ratio >= 2 (1.6 for the smallest or largest of all in a follow-up); "next to" by a
distance ratio >= 1.8.
"""
from __future__ import annotations

import numpy as np

from lisa_ros.data.scenes.layout import Builder, PlanRetry, _count, _default_size, _others
from lisa_ros.data.scenes.vocabulary import COLOURS, PLURALS, SHAPES, pick, region

# Where an object is, by the axis and the direction of its extreme: (axis 0 = x, 1 = y; sign).
POSITIONS: dict[str, tuple[int, int]] = {"on the left": (0, -1), "on the right": (0, 1),
                                         "at the top": (1, -1), "at the bottom": (1, 1)}
OPPOSITES = {"on the left": "right", "on the right": "left", "at the top": "bottom", "at the bottom": "top"}
SIZE_WORDS = {"big": ("big", "large", "bigger", "larger"), "small": ("small", "little", "smaller")}
EXTREMES = ("smallest", "largest")


def article(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _distinct_labels(b: Builder, count: int, avoid: set[tuple[str, str]] = frozenset(),
                     colours=COLOURS, shapes=SHAPES) -> list[tuple[str, str]]:
    """``count`` (colour, shape) pairs, no two alike and none in ``avoid``."""
    found: list[tuple[str, str]] = []
    if count <= 0:
        return found
    for _ in range(200):
        label = (pick(b.rng, colours), pick(b.rng, shapes))
        if label not in avoid and label not in found:
            found.append(label)
            if len(found) == count:
                return found
    raise PlanRetry


def _pieces(b: Builder, labels) -> list:
    return [b.piece(colour, shape, _default_size(b.rng)) for colour, shape in labels]


# ------------------------------------------------------------------------------ referring
def plan_refer_colour(b: Builder):
    """The only object of its colour."""
    rng = b.rng
    colour = pick(rng, b.colours())
    target = b.piece(colour, pick(rng, SHAPES), _default_size(rng))
    others = _pieces(b, [(pick(rng, _others(b.colours(), colour)), pick(rng, SHAPES)) for _ in range(_count(rng) - 1)])
    return [target], others, {"colour": colour}


def plan_refer_shape(b: Builder):
    """The only object of its shape."""
    rng = b.rng
    shape = pick(rng, SHAPES)
    target = b.piece(pick(rng, b.colours()), shape, _default_size(rng))
    others = _pieces(b, [(pick(rng, b.colours()), pick(rng, _others(SHAPES, shape))) for _ in range(_count(rng) - 1)])
    return [target], others, {"shape": shape}


def plan_refer_colour_shape(b: Builder):
    """The only (colour, shape): another object shares the colour, another the shape."""
    rng = b.rng
    colour, shape = pick(rng, b.colours()), pick(rng, SHAPES)
    target = b.piece(colour, shape, _default_size(rng))
    same_colour = (colour, pick(rng, _others(SHAPES, shape)))
    same_shape = (pick(rng, _others(b.colours(), colour)), shape)
    rest = _distinct_labels(b, _count(rng) - 3, {(colour, shape), same_colour, same_shape}, b.colours())
    return [target], _pieces(b, [same_colour, same_shape, *rest]), {"colour": colour, "shape": shape}


def _extreme(objects, indices, position: str, width: int, height: int, margin: float) -> int:
    """The index among ``indices`` most extreme towards ``position``; PlanRetry unless it leads
    the next one by ``margin`` of the image along that axis, and unless the answer's region
    phrase agrees ("the cup on the left" is never "at the bottom right")."""
    axis, sign = POSITIONS[position]
    size = (width, height)[axis]
    ranked = sorted(indices, key=lambda i: -sign * objects[i].point[axis])
    if abs(objects[ranked[0]].point[axis] - objects[ranked[1]].point[axis]) < margin * size:
        raise PlanRetry
    if OPPOSITES[position] in region(*objects[ranked[0]].point, width, height):
        raise PlanRetry
    return ranked[0]


def _pair_by_place(objects, pair: list[int], rng: np.random.Generator, width: int, height: int):
    """(target, other, position phrase): which of two alike objects a place singles out, by an
    extreme ("on the left") or by nearness to another object ("next to the blue cup")."""
    label = objects[pair[0]].label
    anchors = [i for i, obj in enumerate(objects)
               if i not in pair and sum(o.label == obj.label for o in objects) == 1]
    if anchors and rng.random() < 0.3:
        anchor = anchors[int(rng.integers(len(anchors)))]
        ax, ay = objects[anchor].point
        near = sorted(pair, key=lambda i: np.hypot(objects[i].point[0] - ax, objects[i].point[1] - ay))
        d0, d1 = (np.hypot(objects[i].point[0] - ax, objects[i].point[1] - ay) for i in near)
        if d1 < 1.8 * d0:
            raise PlanRetry
        return near[0], near[1], f"next to the {objects[anchor].label}"
    position = pick(rng, tuple(POSITIONS))
    target = _extreme(objects, pair, position, width, height, 0.2)
    assert label == objects[target].label
    return target, next(i for i in pair if i != target), position


def _alike_pair(b: Builder):
    """Two objects of one label and 1-3 others of other labels (the pair's first two pieces)."""
    rng = b.rng
    colour, shape = pick(rng, b.colours()), pick(rng, SHAPES)
    size = _default_size(rng)
    pair = [b.piece(colour, shape, size * float(rng.uniform(0.85, 1.15))) for _ in range(2)]
    others = _pieces(b, _distinct_labels(b, _count(rng, 1, 3), {(colour, shape)}, b.colours()))
    return pair, others, colour, shape


def plan_refer_position(b: Builder):
    """One of two alike objects by where it is, or the one object furthest towards a side."""
    rng = b.rng
    if rng.random() < 0.35:  # "the object on the left": the extreme of all objects
        position = pick(rng, tuple(POSITIONS))
        objects = _pieces(b, [(pick(rng, b.colours()), pick(rng, SHAPES)) for _ in range(_count(rng))])

        def resolve(placed, _targets, width, height):
            return [_extreme(placed, list(range(len(placed))), position, width, height, 0.15)], \
                {"thing": "object", "position": position}
        return [], objects, {"resolve": resolve}
    pair, others, colour, shape = _alike_pair(b)

    def resolve(placed, targets, width, height):
        target, _, position = _pair_by_place(placed, targets, rng, width, height)
        return [target], {"thing": f"{colour} {shape}", "position": position}
    return pair, others, {"resolve": resolve, "colour": colour, "shape": shape}


def plan_refer_size(b: Builder):
    """The big or the small one of two objects of one shape (and maybe one colour)."""
    rng = b.rng
    shape = pick(rng, _others(SHAPES, "bar"))
    same_colour = rng.random() < 0.5
    colours = [pick(rng, b.colours())] * 2 if same_colour else [str(c) for c in rng.choice(b.colours(), 2, replace=False)]
    big = b.piece(colours[0], shape, float(rng.uniform(0.3, 0.4)))
    small = b.piece(colours[1], shape, float(rng.uniform(0.13, 0.18)))
    if big.area < 2 * small.area:
        raise PlanRetry
    others = _pieces(b, [(pick(rng, b.colours()), pick(rng, _others(SHAPES, shape))) for _ in range(_count(rng, 1, 3))])
    wants_big = rng.random() < 0.5
    word = pick(rng, SIZE_WORDS["big" if wants_big else "small"][:2])
    thing = f"{colours[0]} {shape}" if same_colour else shape
    sizer = "bigger" if wants_big else "smaller"
    return ([big] if wants_big else [small]), ([small] if wants_big else [big]) + others, \
        {"size": word, "sizer": sizer, "thing": thing, "shape": shape}


# ------------------------------------------------------------------------------ several targets
def plan_all_of_colour(b: Builder):
    rng = b.rng
    colour = pick(rng, b.colours())
    group = int(rng.integers(2, 4))
    targets = _pieces(b, [(colour, str(shape)) for shape in rng.choice(SHAPES, group, replace=False)])
    others = _pieces(b, [(pick(rng, _others(b.colours(), colour)), pick(rng, SHAPES))
                         for _ in range(max(1, _count(rng) - group))])
    return targets, others, {"colour": colour}


def plan_all_of_shape(b: Builder):
    rng = b.rng
    shape = pick(rng, SHAPES)
    group = int(rng.integers(2, 4))
    targets = _pieces(b, [(str(colour), shape) for colour in rng.choice(b.colours(), group, replace=False)])
    others = _pieces(b, [(pick(rng, b.colours()), pick(rng, _others(SHAPES, shape)))
                         for _ in range(max(1, _count(rng) - group))])
    return targets, others, {"shape": shape, "shapes": PLURALS[shape]}


def plan_two_named(b: Builder):
    rng = b.rng
    labels = _distinct_labels(b, _count(rng), colours=b.colours())
    pieces = _pieces(b, labels)
    return pieces[:2], pieces[2:], {"first": " ".join(labels[0]), "second": " ".join(labels[1])}


# ------------------------------------------------------------------------------ follow-ups
def plan_follow_up(b: Builder):
    """A scene for a second turn. ``slots["kind"]``: follow_other (the first turn asked for one of
    two alike objects by place; now the other), follow_extreme (the first asked for an object by
    name; now the smallest or largest of all), follow_colour (the first asked for the only object
    of a colour; now the only one of another colour). The resolver adds ``first_turn``: the first
    turn's (query type, target index, slots)."""
    rng = b.rng
    kind = pick(rng, ("follow_other", "follow_extreme", "follow_colour"))
    if kind == "follow_other":
        pair, others, colour, shape = _alike_pair(b)

        def resolve(placed, targets, width, height):
            first, other, position = _pair_by_place(placed, targets, rng, width, height)
            thing = f"{colour} {shape}"
            return [other], {"kind": kind, "thing": thing,
                             "first_turn": ("refer_position", first, {"thing": thing, "position": position})}
        return pair, others, {"resolve": resolve}
    if kind == "follow_colour":
        first_colour, colour = rng.choice(b.colours(), 2, replace=False)
        first = b.piece(str(first_colour), pick(rng, SHAPES), _default_size(rng))
        target = b.piece(str(colour), pick(rng, SHAPES), _default_size(rng))
        others = _pieces(b, [(pick(rng, _others(b.colours(), first_colour, colour)), pick(rng, SHAPES))
                             for _ in range(_count(rng) - 2)])

        def resolve(placed, targets, width, height):
            return [targets[1]], {"kind": kind, "colour": str(colour),
                                  "first_turn": ("refer_colour", targets[0], {"colour": str(first_colour)})}
        return [first, target], others, {"resolve": resolve}
    extreme = pick(rng, EXTREMES)
    labels = _distinct_labels(b, _count(rng), colours=b.colours())
    pieces = [b.piece(colour, shape, float(rng.uniform(0.13, 0.4))) for colour, shape in labels]

    def resolve(placed, _targets, width, height):
        ranked = sorted(range(len(placed)), key=lambda i: placed[i].area, reverse=extreme == "largest")
        a, c = placed[ranked[0]].area, placed[ranked[1]].area
        if max(a, c) < 1.6 * min(a, c):
            raise PlanRetry
        # the first command names another object whose colour and shape are both one of a kind, so
        # "the smallest one" cannot mean the smallest of its colour or of its shape
        alone = [i for i in ranked[1:] if sum(o.colour == placed[i].colour for o in placed) == 1
                 and sum(o.shape == placed[i].shape for o in placed) == 1]
        if not alone:
            raise PlanRetry
        first = int(alone[int(rng.integers(len(alone)))])
        return [ranked[0]], {"kind": kind, "extreme": extreme,
                             "first_turn": ("refer_colour_shape", first,
                                            {"colour": placed[first].colour, "shape": placed[first].shape})}
    return [], pieces, {"resolve": resolve}


PLANS = {
    "refer_colour": plan_refer_colour,
    "refer_shape": plan_refer_shape,
    "refer_colour_shape": plan_refer_colour_shape,
    "refer_position": plan_refer_position,
    "refer_size": plan_refer_size,
    "all_of_colour": plan_all_of_colour,
    "all_of_shape": plan_all_of_shape,
    "two_named": plan_two_named,
    "follow_up": plan_follow_up,
}


# "Nothing fits" for the commands that can miss: no object of the colour, the shape or both.
def _none_of_colour(b: Builder):
    rng = b.rng
    colour = pick(rng, b.colours())
    return [], _pieces(b, [(pick(rng, _others(b.colours(), colour)), pick(rng, SHAPES)) for _ in range(_count(rng))]), \
        {"colour": colour}


def _none_of_shape(b: Builder):
    rng = b.rng
    shape = pick(rng, SHAPES)
    return [], _pieces(b, [(pick(rng, b.colours()), pick(rng, _others(SHAPES, shape))) for _ in range(_count(rng))]), \
        {"shape": shape, "shapes": PLURALS[shape]}


def _none_of_colour_shape(b: Builder):
    """The colour and the shape are both there, never together."""
    rng = b.rng
    colour, shape = pick(rng, b.colours()), pick(rng, SHAPES)
    same_colour = (colour, pick(rng, _others(SHAPES, shape)))
    same_shape = (pick(rng, _others(b.colours(), colour)), shape)
    rest = _distinct_labels(b, _count(rng) - 2, {(colour, shape), same_colour, same_shape}, b.colours())
    return [], _pieces(b, [same_colour, same_shape, *rest]), {"colour": colour, "shape": shape}


NOTHING_FITS_PLANS = {
    "refer_colour": _none_of_colour,
    "refer_shape": _none_of_shape,
    "refer_colour_shape": _none_of_colour_shape,
    "all_of_colour": _none_of_colour,
    "all_of_shape": _none_of_shape,
}
