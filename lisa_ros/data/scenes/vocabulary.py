"""The words and numbers of the reasoning scenes: query types, splits, colours, shapes, phrasings.

One place for everything a scene can say or show; the generator's other modules only draw it.
"""
from __future__ import annotations

import re

import numpy as np

from lisa_ros.data.scenes.commands import COMMAND_PHRASINGS

# Queries that need a step of reasoning or world knowledge (the first six types).
REASONING_TYPES: tuple[str, ...] = (
    "roll",
    "colour_knowledge",
    "largest_of_colour",
    "smallest_of_colour",
    "odd_one_out",
    "hold_water",
)
# Plain referring commands (issue 31): the target named by colour, shape, both, place or size.
REFERRING_TYPES: tuple[str, ...] = ("refer_colour", "refer_shape", "refer_colour_shape", "refer_position", "refer_size")
# Commands with several targets: one [SEG] and one mask per object.
SEVERAL_TYPES: tuple[str, ...] = ("all_of_colour", "all_of_shape", "two_named")
# The second turn of a session: the scene's first command and its answer come as history.
FOLLOW_UP = "follow_up"
FOLLOW_UP_KINDS: tuple[str, ...] = ("follow_other", "follow_extreme", "follow_colour")
QUERY_TYPES: tuple[str, ...] = REASONING_TYPES + REFERRING_TYPES + SEVERAL_TYPES + (FOLLOW_UP,)
# "camera": a probe split of camera-like scenes with the test phrasings (seed 3).
SPLITS: tuple[str, ...] = ("train", "val", "test", "camera")
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2, "camera": 3}
DEFAULT_SIZE: tuple[int, int] = (320, 240)  # (width, height)
# Camera-like scenes (issue 31): the sizes cameras give, objects larger and smaller than the
# default scenes', solid colours, backgrounds near white or dark as well as grey, sensor noise.
# A share of the train and val scenes; the "camera" probe split is all camera-like.
CAMERA_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720), (848, 480), (424, 240))
CAMERA_SHARE = 0.3
# Named object colours (RGB), far apart from each other (>= 80 in RGB distance) and from the
# low-saturation backgrounds. Tests check that an object's mean colour is nearest its name.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (245, 125, 25),
    "yellow": (240, 220, 50),
    "green": (50, 160, 60),
    "blue": (40, 80, 210),
    "purple": (130, 60, 170),
    "pink": (240, 130, 190),
    "brown": (120, 75, 35),
    "white": (250, 250, 250),
    "black": (25, 25, 25),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

SHAPES: tuple[str, ...] = ("ball", "square", "triangle", "star", "cup", "bar", "cross")
ROUND_SHAPES = frozenset({"ball"})
CONTAINER_SHAPES = frozenset({"cup"})
PLURALS = {"ball": "balls", "square": "squares", "triangle": "triangles", "star": "stars",
            "cup": "cups", "bar": "bars", "cross": "crosses"}
# The smallest characteristic size of each shape, as a fraction of the image's short side (thin
# parts such as a star's arms need a bigger object to stay visible at 256 px).
SHAPE_MIN_EXTENT = {"ball": 0.13, "square": 0.13, "triangle": 0.14, "star": 0.2, "cup": 0.17,
              "bar": 0.13, "cross": 0.2}
MIN_SIDE_FRACTION = 0.12  # every object's bounding box is at least this x the short side
TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots")

# World knowledge that names a colour without saying it (noun phrases that fit the templates).
COLOUR_CUES: dict[str, tuple[str, ...]] = {
    "yellow": ("a ripe banana", "a lemon"),
    "green": ("fresh grass", "a leaf", "a frog"),
    "blue": ("a clear sky", "the ocean"),
    "red": ("a fire truck", "a ripe tomato", "a strawberry"),
    "orange": ("a carrot", "a pumpkin"),
    "brown": ("chocolate", "tree bark"),
    "white": ("fresh snow", "milk"),
    "black": ("coal", "the night sky"),
    "purple": ("lavender", "an eggplant"),
    "pink": ("a flamingo", "bubblegum"),
}

# More world knowledge for training only (train and val splits; the test split draws its cues from
# COLOUR_CUES alone, as it always has): many cues teach the model to use what the language model
# knows about colours rather than a short list.
TRAINING_CUES: dict[str, tuple[str, ...]] = {
    "yellow": ("a sunflower", "butter", "a school bus", "a canary", "corn", "the sun in a drawing",
               "a rubber duck", "a dandelion", "a daffodil", "mustard", "a pineapple's flesh", "a taxi in New York"),
    "green": ("a lime", "a cucumber", "broccoli", "a pine tree", "a pea", "a lettuce leaf",
              "an emerald", "a pickle", "spinach", "a cactus", "a grasshopper", "celery"),
    "blue": ("a blueberry", "a sapphire", "deep sea water", "a bluebird", "denim jeans", "a blue whale",
             "a cornflower", "a forget-me-not", "a smurf", "a robin's egg", "cobalt glass", "a peacock's neck"),
    "red": ("a cherry", "blood", "a stop sign", "a ladybug", "a red rose", "a cardinal bird",
            "a ruby", "a raspberry", "ketchup", "a poppy", "a cooked lobster", "a chili pepper"),
    "orange": ("an orange", "a tangerine", "a goldfish", "a traffic cone", "a tiger's fur", "apricot jam",
               "a monarch butterfly", "a basketball", "a fox's fur", "a clementine", "a persimmon", "a life jacket"),
    "brown": ("coffee", "a chestnut", "wet soil", "a bear's fur", "cinnamon", "a wooden log",
              "a walnut shell", "a cardboard box", "peanut butter", "a coconut shell", "a teddy bear", "mud"),
    "white": ("a cloud", "a swan", "sugar", "paper", "a polar bear", "cotton",
              "chalk", "salt", "a wedding dress", "a dove", "whipped cream", "a daisy's petals"),
    "black": ("a crow", "ink", "a panther", "asphalt", "soot", "licorice",
              "a raven", "tar", "a hockey puck", "a tuxedo", "a car tyre", "obsidian"),
    "purple": ("a grape", "a plum", "violets", "amethyst", "blackcurrant juice", "lilac",
               "wisteria", "a jacaranda in bloom", "grape juice", "heather in bloom", "an iris flower", "Barney the dinosaur"),
    "pink": ("a piglet", "cotton candy", "a cherry blossom", "a pink rose", "salmon flesh", "a tongue",
             "a pig's snout", "Peppa Pig", "a peony", "a ballet slipper", "ham", "a rose quartz stone"),
}

def phrasing_words(text: str) -> list[str]:
    """The words of a phrasing as the phrasings are compared: lower case, punctuation dropped
    (apostrophes split words), slots such as ``{colour}`` kept as words."""
    return re.findall(r"[a-z{}]+", text.lower())


def word_runs(text: str, length: int = 4) -> set[tuple[str, ...]]:
    """The runs of ``length`` consecutive words of a phrasing (:func:`phrasing_words`): how
    training, test and probe phrasings are kept apart (no shared run of four words within a query
    type)."""
    words = phrasing_words(text)
    return {tuple(words[i:i + length]) for i in range(len(words) - length + 1)}


def cue_slots(cue: str) -> dict[str, str]:
    """The phrasing slots of a world-knowledge cue: ``{cue}`` mid-sentence, ``{Cue}`` at its start."""
    return {"cue": cue, "Cue": cue[:1].upper() + cue[1:]}


# Query phrasings: train/val use "train", the held-out test split uses "test" only. Slots:
# {cue} (colour_knowledge), {colour} (largest/smallest_of_colour).
PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "roll": {
        "train": (
            "Which object could roll down a slope?",
            "What would roll down a slope if I let go of it?",
            "Which thing here could roll down a hill?",
            "Show me the object that could roll down a slope.",
            "Which of these objects is able to roll?",
            "What here could roll across the floor if I pushed it?",
            "Which one of these would roll if I nudged it?",
            "What could I roll across the table?",
            "Which item has a shape that lets it roll?",
            "Point out the thing that would roll away on a sloped floor.",
            "Which object would keep rolling after a push?",
            "I want something I can roll to my friend. Which one?",
            "Which of the things here is round enough to roll?",
            "If I dropped everything on a slide, what would roll down?",
            "Which object would not stay put on a tilted surface?",
            "Find the thing that rolls.",
            "What here could roll like a wheel?",
            "Which object could I bowl along the ground?",
            "Show me what would roll off a sloping shelf.",
            "Which piece could roll under the sofa?",
            # Eighth run (training/README.md): more sentence structures: a robot's task, a scenario,
            # a condition first, other words for the property, so the query type is read from the
            # meaning rather than from a few fixed frames.
            "Suppose the floor were tilted: which object would start to move by itself?",
            "My robot must pick the thing that rolls. Which one should it take?",
            "Which object would trundle away if the floor sloped?",
            "Which object has no flat side to rest on and would roll?",
            "Hand me the item that rolls best.",
            "Of all the things here, which would roll on a tilted board?",
            "Which object has the right shape for rolling?",
            "Which thing could be used as a wheel?",
            "Tell me which object a child could roll back and forth.",
            "Looking at the shapes, which one would roll if I gave it a push?",
            "Which object could a cat chase rolling across the room?",
            "I am looking for the object that can roll. Where is it?",
        ),
        "test": (
            "If I put everything on a ramp, which thing would roll away?",
            "Something here would not stay still on an incline. Which one is it?",
            "I tilt the table a little. What ends up tumbling off the edge first?",
        ),
    },
    "colour_knowledge": {
        "train": (
            "Which object has the same colour as {cue}?",
            "Find the object that is the colour of {cue}.",
            "What is coloured like {cue}?",
            "Show me the thing whose colour matches {cue}.",
            "Which thing has the colour of {cue}?",
            "Point out the object coloured like {cue}.",
            "Which object matches the colour of {cue}?",
            "Show me something that has the colour of {cue}.",
            "Which thing is the same colour as {cue}?",
            "Pick the object whose colour is like {cue}.",
            "Which item shares its colour with {cue}?",
            "Find me the thing coloured like {cue}.",
            "What object here looks the colour of {cue}?",
            "Which one has the colour you would expect of {cue}?",
            "Point to the item with the colour of {cue}.",
            "Which object is coloured the way {cue} usually is?",
            "Give me the object that has the typical colour of {cue}.",
            "Which of these is the colour of {cue}?",
            "Which thing would you match to {cue} by its colour?",
            "Select the object that is the colour of {cue}.",
            # Other sentence structures (the cue mid-sentence, a purpose, a scenario), so that the
            # colour is read from the cue rather than from a fixed frame around it.
            "{Cue} has a typical colour. Which object shares it?",
            "My favourite colour is the colour of {cue}. Which object would I like best?",
            "Hand me the object that reminds you of {cue} because of its colour.",
            "Which object would blend in if it lay next to {cue}?",
            "Find the piece whose colour you would also see on {cue}.",
            "The colour I want is the one of {cue}. Show me that object.",
            "Which object here is tinted like {cue}?",
            "Can you find something with the colour {cue} normally has?",
            "Colour-wise, which object is closest to {cue}?",
            "Which of the objects could be mistaken for {cue} by its colour alone?",
            "Someone asked for a thing coloured like {cue}. What should I give them?",
            "Which object here has the hue of {cue}?",
            "Among these objects, which one has the colour of {cue}?",
            "{Cue} comes to mind when I see the colour of one of these objects. Which one?",
            "Which object shows the colour that {cue} usually has?",
            "Which object has the colour people associate with {cue}?",
            "Which thing here would suit someone who loves the colour of {cue}?",
            # Eighth run: more sentence structures and words (see roll).
            "{Cue} has a colour twin here. Point it out.",
            "When you picture {cue}, which object's colour do you see?",
            "What colour is {cue}? Pick the object that has it.",
            "Which object's colour would you name to describe {cue}?",
            "Grab the thing that is coloured like {cue}, please.",
            "Which object comes in the colour of {cue}?",
            "Which object pairs with {cue} if you sort by colour?",
            "The robot's next job is to fetch the object with the colour of {cue}.",
            "Which object's colour is the one {cue} is known for?",
            "Sort by colour: which object lands in the same pile as {cue}?",
            "Which object would look the same colour as {cue} in a photo?",
            "Colour is all that counts: which object is the twin of {cue}?",
        ),
        "test": (
            "If I wanted something that looks like {cue} in colour, which one would I take?",
            "Imagine painting {cue}. Which item here already wears that paint?",
            "I need an item matching the usual shade of {cue}; which is it?",
        ),
    },
    "largest_of_colour": {
        "train": (
            "Which is the largest of the {colour} things?",
            "Find the biggest {colour} object.",
            "What is the largest {colour} object here?",
            "Show me the biggest of the {colour} objects.",
            "Among the {colour} objects, which one is the largest?",
            "Point to the largest {colour} thing in the picture.",
            "Which {colour} object is the biggest?",
            "Show me the largest thing that is {colour}.",
            "Of all the {colour} things, which is the largest?",
            "Pick the biggest of the {colour} items.",
            "Which {colour} item is the largest one?",
            "Find the {colour} object with the largest size.",
            "Among the {colour} things, point to the biggest one.",
            "Which is the largest {colour} shape?",
            "I want the biggest {colour} piece. Which is it?",
            "Which of the {colour} objects is the largest in the picture?",
            "Show the {colour} object that is larger than the other {colour} ones.",
            "Which {colour} thing is the most large?",
            "Give me the largest {colour} object.",
            "Where is the biggest {colour} object?",
            # Eighth run: more sentence structures and words (see roll).
            "Rank the {colour} objects from big to small; which comes first?",
            "Ignoring every other colour, point to the largest {colour} object.",
            "Hand me the biggest thing of {colour} colour.",
            "Which {colour} object is the bulkiest?",
            "Look at the {colour} pieces and tell me which one is the most sizeable.",
            "My robot should grasp the bulkiest {colour} object. Which one is that?",
            "Of the {colour} shapes, which has the biggest footprint?",
            "Which {colour} object would need the most paint to cover?",
            "Which {colour} object would need the biggest box to pack it?",
            "Comparing the {colour} objects by size, which one is biggest?",
            "Which {colour} piece would be hardest to fit in a pocket?",
            "Take the largest one among the {colour} things.",
            "Which of the {colour} ones is the most massive?",
            "Sort the {colour} objects by size and hand me the biggest.",
        ),
        "test": (
            "Out of everything that is {colour}, I want the one taking up the most space.",
            "Several {colour} items are here; grab whichever of them covers the most area.",
            "If I only look at {colour} items, which one has the greatest size?",
        ),
    },
    "smallest_of_colour": {
        "train": (
            "Which is the smallest of the {colour} things?",
            "Find the tiniest {colour} object.",
            "What is the smallest {colour} object here?",
            "Show me the littlest of the {colour} objects.",
            "Among the {colour} objects, which one is the smallest?",
            "Point to the smallest {colour} thing in the picture.",
            "Which {colour} object is the smallest?",
            "Show me the smallest thing that is {colour}.",
            "Of all the {colour} things, which is the smallest?",
            "Pick the tiniest of the {colour} items.",
            "Which {colour} item is the smallest one?",
            "Find the {colour} object with the smallest size.",
            "Among the {colour} things, point to the littlest one.",
            "Which is the smallest {colour} shape?",
            "I want the tiniest {colour} piece. Which is it?",
            "Which of the {colour} objects is the smallest in the picture?",
            "Show the {colour} object that is smaller than the other {colour} ones.",
            "Which {colour} thing is the least large?",
            "Give me the smallest {colour} object.",
            "Where is the smallest {colour} object?",
            # Eighth run: more sentence structures and words (see roll).
            "Rank the {colour} objects from big to small; which comes last?",
            "Ignoring every other colour, point to the smallest {colour} object.",
            "Hand me the smallest thing of {colour} colour.",
            "Which {colour} object is the teeniest?",
            "Look at the {colour} pieces and tell me which one is the teeniest.",
            "My robot should grasp the littlest {colour} object. Which one is that?",
            "Of the {colour} shapes, which has the smallest footprint?",
            "Which {colour} object would need the least paint to cover?",
            "Which {colour} object would fit into the smallest box?",
            "Comparing the {colour} objects by size, which one is smallest?",
            "Which {colour} piece would be easiest to fit in a pocket?",
            "Take the smallest one among the {colour} things.",
            "Which of the {colour} ones is the most petite?",
            "Sort the {colour} objects by size and hand me the smallest.",
        ),
        "test": (
            "Out of everything that is {colour}, I want the one taking up the least space.",
            "Several {colour} items are here; grab whichever of them covers the least area.",
            "If I only look at {colour} items, which one has the most modest size?",
        ),
    },
    "odd_one_out": {
        "train": (
            "Which object is different from the others?",
            "Find the odd one out in this picture.",
            "Which one does not belong with the rest?",
            "Show me the object that does not match the others.",
            "What is the odd one out here?",
            "Which thing is unlike all the other things?",
            "Which object is not like the others?",
            "Find the object that is different.",
            "Which thing stands out from the rest?",
            "Point to the one that is different from all the others.",
            "Which of these does not fit in?",
            "Show me the object that breaks the group.",
            "Which item is the different one?",
            "One of these is not the same as the rest. Which?",
            "Which object does not look like the others?",
            "Which thing is different from everything else here?",
            "Spot the object that does not match.",
            "Which one is unlike the others?",
            "Which object would you say is the odd one?",
            "Find the one thing that differs from the group.",
            # Eighth run: more sentence structures and words (see roll).
            "Which object is the only one of its kind here?",
            "Which object would you remove to make the group uniform?",
            "Which object is out of step with the rest?",
            "Find the object that is the outsider in this group.",
            "Which item differs from the rest in colour or in shape?",
            "Look at the colours and shapes: which object is the misfit?",
            "The robot should pick the object that does not belong. Which is it?",
            "Which thing sticks out because it differs from its neighbours?",
            "Point out the object that would be rejected from this set.",
            "Which object would look wrong in a row of the others?",
            "Which object is the unusual one here?",
            "Tell me which item fails to match the others.",
        ),
        "test": (
            "All but one of these items have something in common. Point out the exception.",
            "One item breaks the pattern the others follow; which is it?",
            "If you grouped these by similarity, which would be left alone?",
        ),
    },
    "hold_water": {
        "train": (
            "What should I pick up to hold water?",
            "Which object could hold water?",
            "Find something I could pour water into.",
            "Which of these things can carry water?",
            "What here could I use to hold some water?",
            "Show me the object that can contain water.",
            "Which object could I fill with water?",
            "What could I use as a container for water?",
            "Which thing could hold some water for me?",
            "Show me something that water could go into.",
            "Which item would keep water inside it?",
            "I need to carry some water. Which object should I take?",
            "Which of these could I drink water from?",
            "What here could be filled up with water?",
            "Which object is able to contain a liquid?",
            "Find the thing I could pour milk into.",
            "Which one could hold a drink?",
            "What could I use to carry soup to the table?",
            "Which object works as a vessel for water?",
            "Point to something that could hold tea.",
            # Eighth run: more sentence structures and words (see roll).
            "Which object could I carry a little water in?",
            "What could carry water over to my plant?",
            "Which item here is hollow enough to hold water?",
            "The robot should fetch something that holds liquid. Which one?",
            "Which object would I use to scoop up some water?",
            "Which object would keep rainwater if I left it outside?",
            "Which of these would not leak if I filled it with water?",
            "Find the object you could fill from a tap.",
            "Hand me something that can keep water in.",
            "Which thing here is a vessel I could pour into?",
            "What object would you use to give a dog some water?",
            "Show me the item that a liquid could be stored in.",
        ),
        "test": (
            "I am thirsty and need something to drink from. Which item works?",
            "Where could I keep a bit of liquid without it spilling out?",
            "To bring juice to the table, which one of these should I use?",
        ),
    },
}
# The referring, several-target and follow-up commands' phrasings (their own module: many words).
PHRASINGS.update(COMMAND_PHRASINGS)

# Explanations (one sentence each). Slots: {colour} {shape} of the target, {cue}, {Cue}
# (capitalised), {others} (the colour or plural shape the other objects share).
EXPLANATIONS: dict[str, tuple[str, ...]] = {
    "roll": (
        "It is round, so it would roll down a slope.",
        "The {colour} {shape} is the only round object, so it is the one that would roll.",
    ),
    "colour_knowledge": (
        "{Cue} is {colour}, and the {colour} {shape} is the only {colour} object here.",
        "It is {colour} like {cue}, and nothing else here is {colour}.",
    ),
    "largest_of_colour": (
        "It is the biggest of the {colour} objects.",
        "The {colour} {shape} is larger than every other {colour} object.",
    ),
    "smallest_of_colour": (
        "It is the smallest of the {colour} objects.",
        "The {colour} {shape} is smaller than every other {colour} object.",
    ),
    "odd_one_out_shape": (
        "It is {a_shape} while all the others are {others}.",
        "Every other object is one of the {others}; only this one is {a_shape}.",
    ),
    "odd_one_out_colour": (
        "It is {colour} while all the others are {others}.",
        "Every other object is {others}; only this one is {colour}.",
    ),
    "hold_water": (
        "It is an open container, so it can hold water.",
        "The {colour} cup is open at the top, so water can stay inside it.",
    ),
    "refer_colour": ("It is the only {colour} object here.",),
    "refer_shape": ("It is the only {shape} here.",),
    "refer_colour_shape": ("The other {colour} objects are not {shape_plural}, and the other {shape_plural} are not {colour}.",),
    "refer_position": ("It is the {thing} {position}.",),
    "refer_size": ("It is clearly {sizer} than the other {thing}.",),
    "all_of_colour": ("These are all the {colour} objects here.",),
    "all_of_shape": ("These are all the {shapes} here.",),
    "two_named": ("You asked for both of them.",),
    "follow_other": ("It is the other {thing}.",),
    "follow_extreme": ("It is the {extreme} object in the picture.",),
    "follow_colour": ("It is the only {colour} object here.",),
}


def pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------------- answers (issue 12)
# The answer first says what it looks for, then decides: it names the target before [SEG] (its
# colour, shape and where it is), so the state that predicts [SEG] holds the target's identity and
# place, or it says that nothing here fits, with no [SEG]. Saying the property first ("something
# yellow" for "the colour of a ripe banana") moves the decision past the first answer token, where
# a model that has not yet attended to the property cannot make it (training/README.md, the
# first-token probe). The explanation follows the answer.
LOOK_FOR: dict[str, str] = {
    "roll": "I look for something round",
    "colour_knowledge": "I look for something {colour}",
    "largest_of_colour": "I look for the largest {colour} object",
    "smallest_of_colour": "I look for the smallest {colour} object",
    "odd_one_out": "I look for the one unlike the others",
    "hold_water": "I look for an open container",
    "refer_colour": "I look for something {colour}",
    "refer_shape": "I look for {a_shape}",
    "refer_colour_shape": "I look for the {colour} {shape}",
    "refer_position": "I look for the {thing} {position}",
    "refer_size": "I look for the {size} {thing}",
    "all_of_colour": "I look for every {colour} object",
    "all_of_shape": "I look for every {shape}",
    "two_named": "I look for the {first} and the {second}",
    "follow_other": "I look for the other {thing}",
    "follow_extreme": "I look for the {extreme} object",
    "follow_colour": "I look for something {colour}",
}
TARGET_ANSWER = "{look}: it is the {colour} {shape} {where} [SEG]."
# Several targets: each named before its own [SEG], joined as a list ("the red ball on the left
# [SEG] and the red star at the top [SEG]").
SEVERAL_ANSWER = "{look}: they are {listing}."
# odd_one_out says what the others share before it names the one that differs.
ODD_ONE_OUT_ANSWER = "{look}: the others are all {others}, and it is the {colour} {shape} {where} [SEG]."
# Where an object is: thirds of the image by its deepest interior point (row, column).
REGIONS: dict[tuple[int, int], str] = {
    (0, 0): "at the top left", (0, 1): "at the top", (0, 2): "at the top right",
    (1, 0): "on the left", (1, 1): "in the middle", (1, 2): "on the right",
    (2, 0): "at the bottom left", (2, 1): "at the bottom", (2, 2): "at the bottom right",
}
# "Nothing here fits": the answer when no object answers the command (no [SEG]); ``{look}`` is
# LOOK_FOR's phrase, ``{shapes}`` the plural of ``{shape}``.
REFUSALS: dict[str, tuple[str, ...]] = {
    "roll": ("{look}: there is nothing round here, so nothing would roll.",),
    "colour_knowledge": ("{look}: there is nothing {colour} here.",),
    "largest_of_colour": ("{look}: there is no {colour} object here.",),
    "smallest_of_colour": ("{look}: there is no {colour} object here.",),
    "odd_one_out": ("{look}: they are all {colour} {shapes}, so none is the odd one out.",),
    "hold_water": ("{look}: there is no open container here, so nothing can hold water.",),
    "refer_colour": ("{look}: there is nothing {colour} here.",),
    "refer_shape": ("{look}: there is no {shape} here.",),
    "refer_colour_shape": ("{look}: there is no {colour} {shape} here.",),
    "all_of_colour": ("{look}: there is nothing {colour} here.",),
    "all_of_shape": ("{look}: there are no {shapes} here.",),
}
NOTHING_FITS_SHARE = 0.1  # of each split


def region(x: float, y: float, width: int, height: int) -> str:
    """The region phrase of pixel (x, y) in a ``width`` x ``height`` image (thirds)."""
    return REGIONS[(min(2, int(3 * y / height)), min(2, int(3 * x / width)))]
