"""Prompts: the ``llava_v1`` conversation template, segmentation suffixes, answer cleaning.

docs/MODEL.md §3.3-3.6. The template must match byte for byte what the released models were trained on::

    "<system> USER: <im_start><image><im_end>\\n<text> ASSISTANT:"                  (one turn)
    "<system> USER: <u1> ASSISTANT: <a1></s>USER: <u2> ASSISTANT:"                  (history)

The image goes in the first user turn only. Unlike the official chat.py, plain commands get a
segmentation suffix (configurable), since the model was trained on questions that end with one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lisa_ros.model.tokenization import IM_END_TOKEN, IM_START_TOKEN, IMAGE_PLACEHOLDER, SEG_TOKEN

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
USER, ASSISTANT = "USER", "ASSISTANT"
END_OF_TURN = "</s>"

# The answers LISA is trained to give to a segmentation question (docs/MODEL.md §5.5): training draws one per
# sample, and inference seeds its draft table with them (lisa_ros.drafting).
ANSWER_TEMPLATES = ("It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].",
                    "[SEG].")

DEFAULT_SEGMENT_SUFFIX = "Please output segmentation mask."
DEFAULT_EXPLAIN_SUFFIX = "Please output segmentation mask and explain why."
# A command that already asks for a mask is left alone (phrasings of the training templates).
_ASKS_FOR_MASK = re.compile(r"segment|segmentation mask", re.IGNORECASE)


def asks_for_mask(command: str) -> bool:
    """Whether ``command`` already asks for a segmentation ("Segment the cup", "... segmentation
    mask"): :func:`with_suffix` then adds no segmentation suffix."""
    return bool(_ASKS_FOR_MASK.search(command))


def with_suffix(command: str, explain: bool, segment_suffix: str = DEFAULT_SEGMENT_SUFFIX,
                explain_suffix: str = DEFAULT_EXPLAIN_SUFFIX) -> str:
    """``command`` with the segmentation (or explanatory) suffix the model was trained with.

    With ``explain`` the explanatory suffix is always added unless the command already asks to
    explain; otherwise the segmentation suffix is added unless the command already asks for a
    segmentation. An empty suffix disables that addition.
    """
    command = command.strip()
    if explain and "explain" not in command.lower():
        return f"{command} {explain_suffix}" if explain_suffix else command
    if segment_suffix and not asks_for_mask(command):
        return f"{command} {segment_suffix}"
    return command


@dataclass
class Conversation:
    """A multi-turn conversation about one image position (the first user turn holds it).

    ``turns`` are (user text, assistant answer) pairs; the pending turn has answer None.
    """

    turns: list[tuple[str, str | None]] = field(default_factory=list)

    def ask(self, user_text: str) -> None:
        if self.turns and self.turns[-1][1] is None:
            raise ValueError("the previous question has no answer yet")
        self.turns.append((user_text, None))

    def answer(self, text: str) -> None:
        if not self.turns or self.turns[-1][1] is not None:
            raise ValueError("no pending question to answer")
        self.turns[-1] = (self.turns[-1][0], text)

    def prompt(self) -> str:
        """The rendered conversation, image in the first user turn, ending with "ASSISTANT:"."""
        if not self.turns or self.turns[-1][1] is not None:
            raise ValueError("render a conversation that ends with a question")
        text = SYSTEM_PROMPT + " "
        for index, (user_text, answer) in enumerate(self.turns):
            if index == 0:
                user_text = f"{IM_START_TOKEN}{IMAGE_PLACEHOLDER}{IM_END_TOKEN}\n{user_text}"
            text += f"{USER}: {user_text} "
            text += f"{ASSISTANT}:" if answer is None else f"{ASSISTANT}: {answer}{END_OF_TURN}"
        return text


def clean_answer(text: str) -> str:
    """Remove newlines and double spaces, as the official demo does (docs/MODEL.md §3.6)."""
    text = text.replace("\n", "")
    while "  " in text:
        text = text.replace("  ", " ")
    return text.strip()


# Sentence ends: . ! ? followed by white space or the end ("3.5 m" is not split).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LEAD = re.compile(r"^[\s,.;:!?-]+")


def split_explanation(answer: str) -> str:
    """The explanation part of an answer: the text around the ``[SEG]`` template.

    Answers look like "Sure, it is [SEG]. The ladder is tall enough to reach the shelf.": the
    template sentence carrying the mask token goes, the reasoning stays. In a sentence that goes
    on after its last [SEG] ("Sure, [SEG] is the ladder because it is tall."), what follows the
    [SEG] is kept. "" when nothing is left.
    """
    kept = []
    for sentence in _SENTENCE_END.split(answer.strip()):
        if SEG_TOKEN in sentence:
            sentence = _LEAD.sub("", sentence.rsplit(SEG_TOKEN, 1)[1])
            if len(sentence.split()) < 2:  # only "." or a stray word left: the template itself
                continue
        if sentence.strip():
            kept.append(sentence.strip())
    return " ".join(kept)


# Clause boundaries inside an answer: a label is taken from the last clause before its [SEG].
_CLAUSE_END = re.compile(r"[.!?:;,]")
# Words that lead into a target's name in LISA-style answers ("Sure, it is the ...", "the
# segmentation result is ...", "and the ...") or trail it ("... is [SEG]"): never part of the name.
_LEAD_WORDS = {"sure", "yes", "ok", "okay", "it", "it's", "its", "they", "is", "are", "this", "that", "these", "those",
               "here", "there", "the", "a", "an", "and", "or", "also", "segmentation", "result", "mask", "of",
               "i", "see", "found", "would", "use", "choose", "pick"}
_TRAIL_WORDS = {"is", "are", "which", "that", "here", "there", "the", "a", "an", "and"}


def target_label(answer_before_seg: str) -> str:
    """The words that name the target of a ``[SEG]``, from the answer text that precedes it.

    ``answer_before_seg``: the answer up to (not including) this [SEG], earlier [SEG] markers
    included. The name is the last clause since the previous [SEG], without the lead-in words of
    the answer templates: "I look for something yellow: it is the yellow cup at the bottom left"
    -> "yellow cup at the bottom left"; "Sure, it is" -> "" (the answer names nothing); "The
    cup [SEG] and the plate" -> "plate". Lower-case as written; no trailing punctuation.
    """
    text = answer_before_seg.rsplit(SEG_TOKEN, 1)[-1]
    clause = _CLAUSE_END.split(text)[-1]
    words = clause.split()
    while words and words[0].lower() in _LEAD_WORDS:
        words.pop(0)
    while words and words[-1].lower() in _TRAIL_WORDS:
        words.pop()
    return " ".join(words)
