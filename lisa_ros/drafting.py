"""Draft tokens for speculative greedy decoding, from n-grams of earlier answers.

Greedy decoding runs one forward pass of the language model per token, and each pass reads all
of its weights. A pass over the last token plus ``k`` guessed tokens costs far less than ``k`` + 1
passes (docs/PERFORMANCE.md has the figures), and it gives the model's own greedy choice at every
position: the guesses the model agrees with are kept in order, up to and including the model's
own token after the first disagreement (:func:`agreeing_prefix`). The answer is the greedy
answer; only the number of passes changes (speculative decoding, Leviathan et al. 2023, greedy
case; the guesses come from a table, as in prompt-lookup decoding, Saxena 2023, instead of a
second model). Token for token in exact arithmetic: a pass over several tokens sums in another
order than one token at a time, so at a near-tie (more likely in 16-bit) the two can pick
different tokens, and the answer can then depend on what the table held. ``draft_tokens: 0``
decodes one token per pass.

LISA's answers are formulaic ("Sure, it is [SEG].", the embedded model's "I look for something
round: it is the red ball at the bottom [SEG]."), so the table is built from answers: the
training templates it is seeded with and every answer the engine generated since (``observe``).
A model's own phrasing is drafted from its second answer on. Nothing here touches the model.
Not thread-safe: one thread uses a table at a time.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

# Stands for "the answer starts here", so that an answer's first words are drafted too.
_ANSWER_START = -1


class NGramDrafter:
    """An n-gram table of answer token ids that proposes how an answer goes on.

    ``seeds``: answers the table starts with and keeps. ``max_ngram``: the longest context looked
    up (the longest that matches wins, down to one token). ``max_entries``: table size (contexts)
    past which it starts again from its seeds: bounds memory on a node that runs for weeks (about
    400 bytes per context, so about 40 MB at the default).
    """

    def __init__(self, seeds: Iterable[Sequence[int]] = (), max_ngram: int = 4, max_entries: int = 100_000):
        if max_ngram < 1:
            raise ValueError(f"max_ngram must be at least 1, got {max_ngram}")
        self.max_ngram = max_ngram
        self.max_entries = max_entries
        self._seeds = [list(seed) for seed in seeds]
        self._next: dict[tuple[int, ...], Counter] = {}
        self.observe_all(self._seeds)

    def __len__(self) -> int:
        return len(self._next)

    def observe(self, answer_ids: Sequence[int]) -> None:
        """Add one answer (token ids, without the prompt) to the table."""
        if len(self._next) > self.max_entries:
            self._next.clear()
            for seed in self._seeds:
                self._add(seed)
        self._add(answer_ids)

    def observe_all(self, answers: Iterable[Sequence[int]]) -> None:
        """:meth:`observe` each of ``answers``."""
        for answer_ids in answers:
            self.observe(answer_ids)

    def _add(self, answer_ids: Sequence[int]) -> None:
        sequence = [_ANSWER_START, *answer_ids]
        for end in range(1, len(sequence)):
            for n in range(1, min(self.max_ngram, end) + 1):
                self._next.setdefault(tuple(sequence[end - n:end]), Counter())[sequence[end]] += 1

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


def agreeing_prefix(drafts: Sequence[int], greedy_ids: Sequence[int]) -> list[int]:
    """The tokens one pass adds to the answer: the model's greedy tokens ``greedy_ids`` (one per
    position fed: the last token, then each guess; ``len(drafts) + 1``) up to and including the
    first that differs from the guess at its place. All of them when every guess was right; the
    guesses kept are ``len(result) - 1``, and the KV cache drops the others."""
    if len(greedy_ids) != len(drafts) + 1:
        raise ValueError(f"a pass over {len(drafts)} guesses gives {len(drafts) + 1} greedy tokens, not {len(greedy_ids)}")
    count = 1
    while count <= len(drafts) and drafts[count - 1] == greedy_ids[count - 1]:
        count += 1
    return list(greedy_ids[:count])
