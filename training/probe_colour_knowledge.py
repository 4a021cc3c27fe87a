"""Probe: does colour world knowledge carry to phrasings and cues that appear nowhere in the project?

    python training/probe_colour_knowledge.py runs/scenes/test runs/probe_colour             # new cues
    python training/probe_colour_knowledge.py runs/scenes/test runs/probe_colour_known --known-cues
    lisa-ros eval --model embedded --precision fp32 --data runs/probe_colour --mode generate --out runs/probe_colour_eval

Writes the test split's ``colour_knowledge`` scenes (images, targets, "nothing fits" flags as they
are) with new query text: one of PHRASINGS, which no split uses, in turn, and for each scene's
colour either a cue from NEW_CUES, which no split uses (default), or with ``--known-cues`` one of
the test split's own cues (``COLOUR_CUES``), so the two folders separate the new phrasings' effect
from the new cues'. The scene's colour is read from its answer ("I look for something yellow: ...").
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from lisa_ros.data.scenes import COLOUR_CUES, PHRASINGS, TRAINING_CUES, cue_slots

NEW_CUES = {"yellow": "a duckling", "green": "a kiwi's flesh", "blue": "Cookie Monster", "red": "pomegranate seeds",
            "orange": "Garfield the cat", "brown": "a hazelnut", "white": "a sheep's wool", "black": "a top hat",
            "purple": "a passion fruit's skin", "pink": "Miss Piggy"}
NEW_PHRASINGS = (
    "Suppose a child drew {cue} with crayons. Which object here has the crayon colour they would pick?",
    "Grab the one whose colour makes you think of {cue}.",
    "Out of all of these, which is coloured most like {cue}?",
    "{Cue}: find me the object in its colour.",
    "Which object here could stand in for {cue} in a picture, judging by colour only?",
    "Bring me whatever looks the colour of {cue}.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("split", type=Path, help="a scenes split folder (the test split)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--known-cues", action="store_true", help="the test split's cues instead of new ones")
    args = parser.parse_args()

    used = {cue for table in (COLOUR_CUES, TRAINING_CUES) for cues in table.values() for cue in cues}
    templates = {t for phrasings in PHRASINGS.values() for split in phrasings.values() for t in split}
    if used & set(NEW_CUES.values()) or templates & set(NEW_PHRASINGS):
        raise SystemExit("a probe cue or phrasing is in the project's vocabulary: it would not be new")
    args.out.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(args.split.glob("*.json")):
        annotation = json.loads(path.read_text())
        if annotation["query_type"] != "colour_knowledge":
            continue
        colour = re.search(r"something (\w+)", annotation["answer"]).group(1)
        cue = COLOUR_CUES[colour][count % len(COLOUR_CUES[colour])] if args.known_cues else NEW_CUES[colour]
        template = NEW_PHRASINGS[count % len(NEW_PHRASINGS)]
        annotation["text"] = [template.format(**cue_slots(cue))]
        shutil.copy(path.with_suffix(".jpg"), args.out / path.with_suffix(".jpg").name)
        (args.out / path.name).write_text(json.dumps(annotation) + "\n")
        count += 1
    print(f"{count} colour_knowledge scenes in {args.out} ({'test' if args.known_cues else 'new'} cues, new phrasings)")


if __name__ == "__main__":
    main()
