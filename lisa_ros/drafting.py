"""Draft tokens for speculative greedy decoding, from n-grams of earlier answers.

Greedy decoding runs one forward pass of the language model per token, and on a CPU each pass
mostly waits for the weights to stream from memory. A pass over the last token plus ``k`` guessed
tokens costs far less than ``k`` + 1 passes (about 1.9x one pass for ``k`` = 8 with the embedded
model on 2 AVX2 cores, fp32; docs/PERFORMANCE.md), and it gives the model's own greedy choice at
every position: the guesses the model agrees with are kept in order, up to and including the
model's own token after the first disagreement. The answer is the greedy answer token for token;
only the number of passes changes (speculative decoding, Leviathan et al. 2023, greedy case; the
guesses here come from a table, as in prompt-lookup decoding, Saxena 2023, instead of a second
model).

LISA's answers are formulaic ("Sure, it is [SEG].", the embedded model's "I look for something
round: it is the red ball at the bottom [SEG]."), so the table is built from answers: the
training templates it is seeded with and every answer the engine generated since (``observe``).
A model's own phrasing is drafted from its second answer on. Nothing here touches the model.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

# Stands for "the answer starts here", so that an answer's first words are drafted too.
_ANSWER_START = -1


class NGramDrafter:
    """An n-gram table of answer token ids that proposes how an answer goes on.

    ``max_ngram``: the longest context looked up (the longest that matches wins, down to one
    token). ``max_entries``: table size at which it is emptied and starts again (bounds memory on
    a node that runs for weeks; about 100 bytes per entry).
    """

    def __init__(self, max_ngram: int = 4, max_entries: int = 200_000):
        if max_ngram < 1:
            raise ValueError(f"max_ngram must be at least 1, got {max_ngram}")
        self.max_ngram = max_ngram
        self.max_entries = max_entries
        self._next: dict[tuple[int, ...], Counter] = {}

    def __len__(self) -> int:
        return len(self._next)

    def observe(self, answer_ids: Sequence[int]) -> None:
        """Add one answer (token ids, without the prompt) to the table."""
        if len(self._next) > self.max_entries:
            self._next.clear()
        sequence = [_ANSWER_START, *answer_ids]
        for end in range(1, len(sequence)):
            for n in range(1, min(self.max_ngram, end) + 1):
                self._next.setdefault(tuple(sequence[end - n:end]), Counter())[sequence[end]] += 1

    def observe_all(self, answers: Iterable[Sequence[int]]) -> None:
        for answer_ids in answers:
            self.observe(answer_ids)

    def propose(self, answer_ids: Sequence[int], count: int) -> list[int]:
        """Up to ``count`` tokens that would follow ``answer_ids`` (the answer so far), each the
        most frequent continuation of the longest context found; fewer (possibly none) where the
        table has never seen the context."""
        context = [_ANSWER_START, *answer_ids][-self.max_ngram:]
        drafted: list[int] = []
        while len(drafted) < count:
            following = None
            for n in range(min(self.max_ngram, len(context)), 0, -1):
                following = self._next.get(tuple(context[-n:]))
                if following:
                    break
            if not following:
                break
            token = following.most_common(1)[0][0]
            drafted.append(token)
            context.append(token)
        return drafted
