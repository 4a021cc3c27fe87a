"""Command frames: a small grammar that says one target in many sentence structures (training only).

The hand-written phrasings of :mod:`.commands` give each query type about thirty sentences. A
model trained on them learns those sentences; a newcomer's command comes in a structure it never
saw, and the words of the structure (a verb it does not know, the noun of "draw a box around
...") get read as the target. The grammar separates the two parts of a command so that training
sees every structure with every target:

* a **target phrase** (:data:`TARGET_PHRASES`, per query type, with the type's slots): what is
  asked for ("the {colour} object", "all the {shapes}", "the {first} and the {second}");
* a **frame** (:data:`FRAMES`): the sentence around it, with ``{np}`` where the target goes:
  imperatives and requests ("Would you {verb} {np}?"), drawing frames whose nouns are never
  targets ("Sketch a {noun} enclosing {np}."), questions ("Where {be} {np}?") and bare phrases.

:func:`framed_templates` spells every combination of a type and keeps a spelling only when it
stays clear of the held-out phrasings (the test split's and the probes'):

1. it shares no run of four words with the type's test or probe phrasings (the rule of
   :mod:`.commands`);
2. it is more than two words (inserted, dropped or replaced) away from each of them, so that no
   held-out sentence comes back with a word or two changed;
3. it uses no word that only held-out phrasings use (:func:`held_out_only_words`: in a test or
   probe phrasing of any type, in no training phrasing), so the grammar brings none of their
   vocabulary into training.

:func:`framed_command` draws a frame, then one of its spellings, and fills the slots. The
trainer replaces a sample's command by a framed one with probability ``framed_commands``
(:class:`~lisa_ros.train.config.TrainConfig`); the scenes' own phrasings, the test split and the
probes are unchanged.
"""
from __future__ import annotations

import random
import string
from functools import lru_cache

from lisa_ros.data.scenes.referring import article

# The verbs that ask for a segmentation (lower case, as they follow "Please", "Would you", ...).
VERBS = ("segment", "mask", "highlight", "outline", "select", "find", "locate", "pick out", "circle",
         "identify", "point out", "colour in", "extract", "separate", "show me", "get", "detect",
         "indicate", "frame", "delineate", "single out", "box", "capture")

# Nouns of drawing frames: what is drawn, never what is looked for (no shape or colour word of the
# scenes is among them; "shape", "object" and "thing" are not either).
ENCLOSING_NOUNS = ("box", "circle", "ring", "frame", "border", "contour", "boundary", "rectangle",
                   "fence", "polygon", "perimeter")
COVERING_NOUNS = ("mask", "highlight", "marker", "label", "tag", "sticker", "layer", "tint", "patch",
                  "stamp", "veil")
RESULT_NOUNS = ("mask", "segmentation", "cutout", "silhouette", "contour", "map", "stencil",
                "footprint", "region", "shape mask", "pixel map")

# (frame, nouns): ``{noun}`` takes each noun in turn; ``{np}`` is the target phrase, ``{Np}`` the
# same capitalised; ``{verb}`` every verb of VERBS; ``{be}``, ``{it}``, ``{do}``... agree with the
# phrase (_AGREEMENT).
FRAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("{Verb} {np}.", ()),
    ("Please {verb} {np}.", ()),
    ("{Verb} {np}, please.", ()),
    ("Would you {verb} {np}?", ()),
    ("Can you {verb} {np}?", ()),
    ("I want you to {verb} {np}.", ()),
    ("Go ahead and {verb} {np}.", ()),
    ("Help me {verb} {np}.", ()),
    ("Your task: {verb} {np}.", ()),
    ("Sketch a {noun} enclosing {np}.", ENCLOSING_NOUNS),
    ("I need a {noun} drawn about {np}.", ENCLOSING_NOUNS),
    ("Enclose {np} in a {noun}.", ENCLOSING_NOUNS),
    ("Paint a {noun} onto {np}.", COVERING_NOUNS),
    ("Cover {np} with a {noun}.", COVERING_NOUNS),
    ("Apply a {noun} to {np}.", COVERING_NOUNS),
    ("Give me a {noun} of {np}.", RESULT_NOUNS),
    ("Produce a {noun} showing {np}.", RESULT_NOUNS),
    ("Make me a {noun} of {np}.", RESULT_NOUNS),
    ("Where {be} {np}?", ()),
    ("Where in the image {be} {np}?", ()),
    ("Which part of the image {be} {np}?", ()),
    ("Which part of the view {do} {np} take up?", ()),
    ("Look for {np} and {verb} {it}.", ()),
    ("{Np}, please.", ()),
    ("{Np}?", ()),
    ("{Np}: {noun} please.", RESULT_NOUNS),
    ("Just {np}.", ()),
    ("I am looking for {np}.", ()),
    ("My {target} {be} {np}.", ()),
    ("Focus on {np}.", ()),
)

# Target phrases per query type: (phrase, number) with number "one" (is, it), "many" (are, them) or
# "each" (is, them: "every ball").
# Follow-ups are keyed by their kind, as in :data:`.commands.COMMAND_PHRASINGS`.
TARGET_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "refer_colour": (("the {colour} object", "one"), ("the {colour} one", "one"), ("the {colour} thing", "one"),
                     ("the {colour} item", "one"), ("the object that is {colour}", "one"),
                     ("the thing coloured {colour}", "one")),
    "refer_shape": (("the {shape}", "one"), ("the {shape} shape", "one"), ("the object shaped like {a_shape}", "one"),
                    ("the one that is {a_shape}", "one")),
    "refer_colour_shape": (("the {colour} {shape}", "one"), ("the {shape} that is {colour}", "one"),
                           ("the {colour} coloured {shape}", "one")),
    "refer_position": (("the {thing} {position}", "one"), ("that {thing} {position}", "one")),
    "refer_size": (("the {size} {thing}", "one"), ("that {size} {thing}", "one")),
    "all_of_colour": (("all the {colour} objects", "many"), ("every {colour} object", "each"),
                      ("the {colour} objects", "many"), ("each {colour} thing", "each"),
                      ("all things coloured {colour}", "many")),
    "all_of_shape": (("all the {shapes}", "many"), ("every {shape}", "each"), ("the {shapes}", "many"),
                     ("each {shape} in view", "each"), ("all {shapes}", "many")),
    "two_named": (("the {first} and the {second}", "many"), ("both the {first} and the {second}", "many"),
                  ("the {first} plus the {second}", "many"), ("the {first} together with the {second}", "many"),
                  ("the {first} as well as the {second}", "many")),
    "follow_other": (("the other one", "one"), ("the other of the two", "one"), ("the second one", "one"),
                     ("the one you skipped", "one")),
    "follow_extreme": (("the {extreme} object", "one"), ("the {extreme} one of all", "one"),
                       ("the {extreme} thing here", "one"), ("whichever is {extreme}", "one")),
    "follow_colour": (("the {colour} one", "one"), ("the {colour} object", "one"), ("something {colour}", "one"),
                      ("the {colour} thing now", "one")),
}

_AGREEMENT = {
    "one": {"be": "is", "it": "it", "do": "does", "target": "target"},
    "many": {"be": "are", "it": "them", "do": "do", "target": "targets"},
    "each": {"be": "is", "it": "them", "do": "does", "target": "target"},
}


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _with_object(verb: str, pronoun: str) -> str:
    """``verb`` with a pronoun object: a phrasal verb's particle goes after it ("cut it out"),
    "show me" becomes "show it to me"."""
    if verb == "show me":
        return f"show {pronoun} to me"
    head, _, particle = verb.rpartition(" ")
    return f"{head} {pronoun} {particle}" if head else f"{verb} {pronoun}"


def _spell(frame: str, noun: str, verb: str, phrase: str, number: str) -> str:
    """One template: the frame with the phrase, noun, verb and agreement filled in; the phrase's own
    slots (``{colour}``, ...) stay."""
    agreement = _AGREEMENT[number]
    if noun:
        frame = frame.replace("a {noun}", article(noun))  # "an outline"
    frame = frame.replace("{verb} {it}", _with_object(verb, agreement["it"]))
    frame = frame.replace("{Verb} {it}", _capitalised(_with_object(verb, agreement["it"])))
    words = {"noun": noun, "verb": verb, "Verb": _capitalised(verb), "np": phrase, "Np": _capitalised(phrase),
             **agreement}
    names = {name for _, name, _, _ in string.Formatter().parse(frame) if name}
    spelled = frame
    for name in names:
        spelled = spelled.replace("{" + name + "}", words[name])
    return spelled


def _word_distance(a: list[str], b: list[str]) -> int:
    """Words inserted, dropped or replaced to turn ``a`` into ``b`` (Levenshtein over words)."""
    previous = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]


@lru_cache(maxsize=None)
def held_out_only_words() -> frozenset[str]:
    """The words (:func:`~.vocabulary.phrasing_words`) of the test and probe phrasings of every
    query type that no training phrasing uses."""
    from lisa_ros.data.scenes.commands import PROBE_COMMAND_PHRASINGS
    from lisa_ros.data.scenes.vocabulary import PHRASINGS, phrasing_words

    def words(texts) -> set[str]:
        return {word for text in texts for word in phrasing_words(text)}

    training = words(t for phrasings in PHRASINGS.values() for t in phrasings["train"])
    held_out = words(t for phrasings in PHRASINGS.values() for t in phrasings["test"])
    held_out |= words(t for probe in PROBE_COMMAND_PHRASINGS.values() for t in probe)
    return frozenset(held_out - training)


@lru_cache(maxsize=None)
def framed_templates(key: str) -> tuple[tuple[str, ...], ...]:
    """The framed templates of ``key`` (a query type of :data:`TARGET_PHRASES`, or a follow-up
    kind), one tuple per frame of :data:`FRAMES` (empty where every spelling was dropped): those
    that stay clear of ``key``'s test and probe phrasings by the three rules of the module
    docstring. KeyError for a key without target phrases (the reasoning types: their phrasing is
    the reasoning)."""
    from lisa_ros.data.scenes.commands import COMMAND_PHRASINGS, PROBE_COMMAND_PHRASINGS
    from lisa_ros.data.scenes.vocabulary import phrasing_words, word_runs

    held_out_texts = (*COMMAND_PHRASINGS[key]["test"], *PROBE_COMMAND_PHRASINGS[key])
    held_out_runs = set().union(*(word_runs(t) for t in held_out_texts))
    held_out_words = [phrasing_words(t) for t in held_out_texts]
    banned = held_out_only_words()
    per_frame = []
    for frame, nouns in FRAMES:
        templates = []
        for phrase, number in TARGET_PHRASES[key]:
            for noun in nouns or ("",):
                for verb in VERBS if "erb}" in frame else ("",):
                    template = _spell(frame, noun, verb, phrase, number)
                    words = phrasing_words(template)
                    if ("me show me" in template or word_runs(template) & held_out_runs or banned.intersection(words)
                            or any(_word_distance(words, other) <= 2 for other in held_out_words)):
                        continue
                    templates.append(template)
        per_frame.append(tuple(dict.fromkeys(templates)))
    return tuple(per_frame)


def framed_key(query_type: str, slots: dict) -> str | None:
    """The key of :data:`TARGET_PHRASES` for a sample (its follow-up kind for ``follow_up``), or None
    when the type has no target phrases."""
    key = slots.get("kind") if query_type == "follow_up" else query_type
    return key if key in TARGET_PHRASES else None


def framed_command(query_type: str, slots: dict, rng: random.Random) -> str | None:
    """A command for a sample of ``query_type`` with its ``slots`` (the scene annotation's), in a
    structure drawn from the grammar; None when the type has no target phrases or a slot is missing
    (an annotation written before slots were stored)."""
    key = framed_key(query_type, slots)
    if key is None:
        return None
    frame = rng.choice([templates for templates in framed_templates(key) if templates])  # every frame alike
    try:
        return rng.choice(frame).format(**slots)
    except KeyError:
        return None
