"""Training conversations: the question and answer templates of LISA's training (docs/MODEL.md §5.5) and
the token ids and labels of one conversation."""
from __future__ import annotations

import random

from lisa_ros.data.reasonseg import Sample
from lisa_ros.errors import DataError
from lisa_ros.model.prompts import ANSWER_TEMPLATES, Conversation, asks_for_mask
from lisa_ros.model.tokenization import IMAGE_TOKEN_INDEX, LisaTokenizer
from lisa_ros.train.losses import IGNORE_INDEX

SHORT_QUESTIONS = [
    "Can you segment the {class_name} in this image?",
    "Please segment the {class_name} in this image.",
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "What is {class_name} in this image? Please output segmentation mask.",
]
LONG_QUESTIONS = [
    "{sent} Please respond with segmentation mask.",
    "{sent} Please output segmentation mask.",
]
EXPLANATORY_SUFFIXES = [
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
]


def question_and_answer(sample: Sample, text: str, rng: random.Random, explanatory: bool = False) -> tuple[str, str]:
    """A training question/answer pair from the templates (docs/MODEL.md §5.5).

    A sentence that already asks for a segmentation ("Segment the red ball.") goes as it is most
    of the time, as the engine sends it (:func:`~lisa_ros.model.prompts.with_suffix` adds no
    suffix then), and with a suffix otherwise."""
    if sample.is_sentence and asks_for_mask(text) and rng.random() < 0.7:
        question = text
    elif sample.is_sentence:
        question = rng.choice(LONG_QUESTIONS).format(sent=text)
    else:
        question = rng.choice(SHORT_QUESTIONS).format(class_name=text.lower())
    answer = sample.answer or rng.choice(ANSWER_TEMPLATES)
    if explanatory and sample.explanation:
        question = f"{text} {rng.choice(EXPLANATORY_SUFFIXES)}" if sample.is_sentence else question
        answer = f"{answer} {sample.explanation}"
    return question, answer


def training_tokens(tokenizer: LisaTokenizer, question: str, answer: str,
                    history: list[tuple[str, str]] | None = None) -> tuple[list[int], list[int]]:
    """Token ids and labels of one training conversation (docs/MODEL.md §5.5): ``history`` (earlier
    (user, answer) turns, rendered as the engine renders a session), then ``question``.

    Labels ignore the BOS, the system prompt, the earlier turns, the last user turn and
    "ASSISTANT:"; the last answer's tokens and the closing ``</s>`` are supervised. The -200
    image placeholder is ignored too (its P expanded positions are ignored when the labels are
    expanded).
    """
    conversation = Conversation([tuple(turn) for turn in history or []])
    conversation.ask(question)
    prompt = conversation.prompt()  # ends with "ASSISTANT:"
    conversation.answer(answer)
    full = prompt + " " + answer + "</s>"
    ids = tokenizer.encode_with_image(full)
    instruction = len(tokenizer.encode_with_image(prompt))
    if ids[:instruction] != tokenizer.encode_with_image(prompt):
        raise DataError("the answer changed the tokens of the prompt (cannot mask the instruction)")
    labels = [IGNORE_INDEX] * instruction + ids[instruction:]
    labels = [IGNORE_INDEX if token == IMAGE_TOKEN_INDEX else token for token in labels]
    return ids, labels
