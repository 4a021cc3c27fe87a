"""Probe: do the query types carry to phrasings that appear nowhere in the project?

    python training/probe_new_phrasings.py runs/scenes/test runs/probe_phrasings
    lisa-ros eval --model embedded --precision fp32 --data runs/probe_phrasings --mode generate --out runs/probe_phrasings_eval

Writes every scene of the test split (images, targets, "nothing fits" flags and answers as they
are) with new query text: for each query type one of the phrasings of :data:`NEW_PHRASINGS` in
turn (8 per reasoning type, 7 per plain command type or follow-up kind, the scene's ``slots``
filled in). None shares a run of four words with a training or test phrasing of its type (checked here,
before anything is written), so the probe measures how far the model reads the meaning of a
command rather than its wording. ``colour_knowledge`` keeps the test split's own cues (the colour
probe, ``probe_colour_knowledge.py``, asks about new cues); the colour slot of the "...of colour"
types is read from the answer ("I look for the largest yellow object: ...").
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from lisa_ros.data.scenes import COLOUR_CUES, PHRASINGS, cue_slots, word_runs
from lisa_ros.data.scenes.commands import PROBE_COMMAND_PHRASINGS

NEW_PHRASINGS: dict[str, tuple[str, ...]] = {
    "roll": (
        "A marble run needs one of these objects. Which would work?",
        "Which object has a curved outline all around, so it could roll?",
        "Give me whatever would travel down a chute on its own.",
        "On a tipped tray, which piece would get away by rolling?",
        "What could I use like a marble?",
        "For a game of bowling my robot needs a rolling object. Which one?",
        "Which shape here turns over and over as it goes downhill?",
        "Which of these would keep going across a smooth floor once pushed?",
    ),
    "colour_knowledge": (
        "Out of these objects, pick the one sharing a colour with {cue}.",
        "What would you hand me if I asked for the colour {cue} has?",
        "I think of {cue} when I see one of these. Which one, going by colour?",
        "Whose colour, among these objects, would you borrow to colour in {cue}?",
        "The object I need is coloured just like {cue}. Where is it?",
        "Judging only by hue, which object belongs with {cue}?",
        "Someone looking at {cue} wants an object of that same colour. Which one?",
        "Colour match: {cue}. Which object?",
    ),
    "largest_of_colour": (
        "Two or more objects are {colour}; bring the biggest one.",
        "Which {colour} shape has the most pixels?",
        "I need the {colour} one that would weigh the most if all were made of the same stuff.",
        "Out of the {colour} pieces, which is the giant?",
        "The {colour} item larger than any other {colour} item: where is it?",
        "Find the {colour} thing with the biggest dimensions.",
        "Hand over the biggest-looking {colour} object.",
        "Under a lamp, which {colour} one would cast the largest shadow?",
    ),
    "smallest_of_colour": (
        "Two or more objects are {colour}; bring the smallest one.",
        "Which {colour} shape has the fewest pixels?",
        "I need the {colour} one that would weigh the least if all were made of the same stuff.",
        "Out of the {colour} pieces, which is the tiny one?",
        "The {colour} item smaller than any other {colour} item: where is it?",
        "Find the {colour} thing with the smallest dimensions.",
        "Hand over the smallest-looking {colour} object.",
        "Under a lamp, which {colour} one would cast the smallest shadow?",
    ),
    "odd_one_out": (
        "Which object would a sorting robot put in a bin of its own?",
        "Point to the stray in this little crowd.",
        "Everything matches except one thing. Show it to me.",
        "What is not part of the set the others make?",
        "Locate the item that does not share the others' look.",
        "Most of these are alike. Tell me which is not.",
        "Which item spoils the likeness of the group?",
        "Which object departs from what the others have in common?",
    ),
    "hold_water": (
        "What could I water the flowers with?",
        "Lemonade has to go somewhere. Where among these could I pour it?",
        "Which of these is a container for liquids?",
        "What could hold water for a goldfish for a moment?",
        "Which object is shaped to keep a liquid inside?",
        "For a glass of water, what would I reach for here?",
        "What here could serve as a mug?",
        "I am off to the well for water; which item comes along?",
    ),
}
# The plain commands' probe phrasings (referring, several targets, follow-ups), written with them
# before the ninth run trained on them.
NEW_PHRASINGS.update(PROBE_COMMAND_PHRASINGS)
_COLOUR = re.compile(r"(?:something|the largest|the smallest) (\w+)")


def check_new() -> None:
    """SystemExit when a probe phrasing shares four words in a row with a phrasing of its type."""
    for query_type, templates in NEW_PHRASINGS.items():
        used = set().union(*(word_runs(t) for split in PHRASINGS[query_type].values() for t in split))
        for template in templates:
            if word_runs(template) & used:
                raise SystemExit(f"{template!r} shares words with a {query_type} phrasing: it would not be new")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("split", type=Path, help="a scenes split folder (the test split)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    check_new()
    args.out.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(NEW_PHRASINGS, 0)
    for path in sorted(args.split.glob("*.json")):
        annotation = json.loads(path.read_text())
        slots = annotation.get("slots", {})
        query_type = slots["kind"] if annotation["query_type"] == "follow_up" else annotation["query_type"]  # per kind
        index = counts[query_type]
        found = _COLOUR.search(annotation["answer"])
        colour = found.group(1) if found else ""
        cues = COLOUR_CUES.get(colour, ("",))
        fields = {**slots, "colour": slots.get("colour", colour), **cue_slots(cues[index % len(cues)])}
        annotation["text"] = [NEW_PHRASINGS[query_type][index % len(NEW_PHRASINGS[query_type])].format(**fields)]
        shutil.copy(path.with_suffix(".jpg"), args.out / path.with_suffix(".jpg").name)
        (args.out / path.name).write_text(json.dumps(annotation) + "\n")
        counts[query_type] += 1
    print(f"{sum(counts.values())} scenes in {args.out} with new phrasings: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
