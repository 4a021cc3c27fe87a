"""LISA's tokenizer: the released slow LLaMA SentencePiece model plus the added tokens.

The released models were trained with transformers 4.31's slow ``LlamaTokenizer`` (legacy mode).
Its behaviour, which prompts and training labels must reproduce (spec §2.4):

1. the text is split on every added token (``[SEG]``, ``<im_start>``, ``<im_end>``,
   ``<im_patch>``) and special token (``<s>``, ``</s>``, ``<unk>``);
2. whitespace next to an *added* token is stripped on both sides (``", [SEG]"`` loses its space,
   the ``"\\n"`` after ``<im_end>`` vanishes); text next to ``<s>``/``</s>``/``<unk>`` is kept;
3. every remaining text chunk is SentencePiece-encoded on its own, with the model's dummy ``▁``
   prefix.

transformers 5 tokenizes differently (it keeps a ``▁`` piece before ``[SEG]``), so this class uses
the checkpoint's ``tokenizer.model`` through sentencepiece directly. ``<image>`` is never
tokenized: it becomes :data:`IMAGE_TOKEN_INDEX` (-200), replaced by CLIP features later.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

IMAGE_TOKEN_INDEX = -200
IMAGE_PLACEHOLDER = "<image>"
SEG_TOKEN = "[SEG]"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
IM_PATCH_TOKEN = "<im_patch>"


class TokenizerError(ValueError):
    """A tokenizer folder that is missing files or lacks the tokens LISA needs."""


class LisaTokenizer:
    """SentencePiece LLaMA tokenizer with LISA's added tokens, tokenizing as training did.

    Ids: the SentencePiece pieces first (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 in LLaMA), then the
    added tokens at the ids ``added_tokens.json`` gives them (e.g. ``[SEG]`` = 32003 for 7B and
    32000 for 13B-llama2: never assume one).
    """

    def __init__(self, sp_model_file: str | Path, added_tokens: dict[str, int]):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model_file))
        self.added_tokens = dict(added_tokens)
        self.added_by_id = {index: token for token, index in self.added_tokens.items()}
        base = self.sp.get_piece_size()
        for token, index in self.added_tokens.items():
            if index < base:
                raise TokenizerError(f"added token {token!r} has id {index}, inside the base vocabulary")
        self.bos_token_id = self.sp.bos_id()
        self.eos_token_id = self.sp.eos_id()
        self.unk_token_id = self.sp.unk_id()
        self.pad_token_id = self.unk_token_id  # LISA pads with <unk>
        self.special_tokens = {
            self.sp.id_to_piece(self.bos_token_id): self.bos_token_id,
            self.sp.id_to_piece(self.eos_token_id): self.eos_token_id,
            self.sp.id_to_piece(self.unk_token_id): self.unk_token_id,
        }
        # Longest first, so that no token string is split by a shorter one it contains.
        names = sorted(list(self.added_tokens) + list(self.special_tokens), key=len, reverse=True)
        self._splitter = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "LisaTokenizer":
        """Read ``tokenizer.model`` and ``added_tokens.json`` of a released checkpoint folder."""
        folder = Path(folder)
        model_file = folder / "tokenizer.model"
        if not model_file.is_file():
            raise TokenizerError(f"{folder} has no tokenizer.model (the slow LLaMA tokenizer file)")
        added_file = folder / "added_tokens.json"
        added = json.loads(added_file.read_text()) if added_file.is_file() else {}
        config_file = folder / "tokenizer_config.json"
        if config_file.is_file():  # newer layouts list added tokens here instead
            config = json.loads(config_file.read_text())
            for index, entry in (config.get("added_tokens_decoder") or {}).items():
                content = entry["content"] if isinstance(entry, dict) else str(entry)
                added.setdefault(content, int(index))
        tokenizer = cls(model_file, {k: v for k, v in added.items() if k not in ("<s>", "</s>", "<unk>")})
        if SEG_TOKEN not in tokenizer.added_tokens:
            raise TokenizerError(f"the tokenizer in {folder} has no {SEG_TOKEN} token: not a LISA checkpoint")
        return tokenizer

    def __len__(self) -> int:
        return max([self.sp.get_piece_size() - 1, *self.added_tokens.values()]) + 1

    @property
    def seg_token_id(self) -> int:
        """The id of ``[SEG]``, looked up in this tokenizer (it differs between released models)."""
        return self.added_tokens[SEG_TOKEN]

    def token_id(self, token: str) -> int:
        if token in self.added_tokens:
            return self.added_tokens[token]
        if token in self.special_tokens:
            return self.special_tokens[token]
        raise KeyError(token)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` exactly as the 4.31 slow tokenizer produced them (see module doc)."""
        parts = [p for p in self._splitter.split(text) if p != ""]
        ids = [self.bos_token_id] if add_bos else []
        for index, part in enumerate(parts):
            if part in self.added_tokens:
                ids.append(self.added_tokens[part])
                continue
            if part in self.special_tokens:
                ids.append(self.special_tokens[part])
                continue
            if index > 0 and parts[index - 1] in self.added_tokens:
                part = part.lstrip()
            if index + 1 < len(parts) and parts[index + 1] in self.added_tokens:
                part = part.rstrip()
            if part:
                ids.extend(self.sp.encode(part))
        return ids

    def encode_with_image(self, prompt: str) -> list[int]:
        """Ids of a prompt holding ``<image>`` once: BOS first, -200 where the image goes."""
        pieces = prompt.split(IMAGE_PLACEHOLDER)
        if len(pieces) != 2:
            raise ValueError(f"a prompt must contain {IMAGE_PLACEHOLDER} exactly once")
        first = self.encode(pieces[0], add_bos=True)
        second = self.encode(pieces[1], add_bos=True)[1:]  # each piece got a BOS; keep the first
        return first + [IMAGE_TOKEN_INDEX] + second

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``. Added tokens are kept (``[SEG]`` must stay visible); with
        ``skip_special_tokens`` the ``<s>``/``</s>``/``<unk>`` markers and -200 are dropped.

        A space goes before an added token that follows text; after one, the next text keeps
        its leading space only when it starts with a letter or digit ("Sure, [SEG]." and
        "[SEG] and [SEG]").
        """
        out: list[str] = []
        run: list[int] = []
        previous_added = False

        def flush() -> None:
            nonlocal previous_added
            if not run:
                return
            pieces = [self.sp.id_to_piece(i) for i in run]
            text = self.sp.decode(run)
            leading_space = pieces[0].startswith("\u2581") and (out and not out[-1].endswith((" ", "\n")))
            if leading_space and (not previous_added or text[:1].isalnum()):
                text = " " + text
            out.append(text)
            run.clear()
            previous_added = False

        special_ids = set(self.special_tokens.values())
        for token_id in ids:
            if token_id == IMAGE_TOKEN_INDEX:
                flush()
                if not skip_special_tokens:
                    out.append(IMAGE_PLACEHOLDER)
                continue
            if token_id in self.added_by_id:
                flush()
                token = self.added_by_id[token_id]
                if out and not out[-1].endswith((" ", "\n")):
                    out.append(" ")
                out.append(token)
                previous_added = True
                continue
            if token_id in special_ids:
                flush()
                if not skip_special_tokens:
                    out.append(self.sp.id_to_piece(token_id))
                continue
            run.append(token_id)
        flush()
        return "".join(out)
