"""LISA's tokenizer: the released slow LLaMA SentencePiece model plus the added tokens.

The released models were trained with transformers 4.31's slow ``LlamaTokenizer`` (legacy mode).
Its behaviour, which prompts and training labels must reproduce (docs/MODEL.md §2.4):

1. the text is split on every added token (``[SEG]``, ``<im_start>``, ``<im_end>``,
   ``<im_patch>``) and special token (``<s>``, ``</s>``, ``<unk>``);
2. whitespace next to an *added* token is stripped on both sides (``", [SEG]"`` loses its space,
   the ``"\\n"`` after ``<im_end>`` vanishes); text next to ``<s>``/``</s>``/``<unk>`` is kept;
3. every remaining text chunk is SentencePiece-encoded on its own, with the model's dummy ``▁``
   prefix.

transformers 5 tokenizes differently (it keeps a ``▁`` piece before ``[SEG]``), so this class uses
the checkpoint's ``tokenizer.model`` through sentencepiece directly. ``<image>`` is never
tokenized: it becomes :data:`IMAGE_TOKEN_INDEX` (-200), replaced by CLIP features later.

Checkpoints built on a byte-level BPE language model (the embedded model: SmolLM2) ship a
``tokenizer.json`` instead; :class:`ByteLevelLisaTokenizer` applies the same rules 1-3 to it, so
prompts, labels and the [SEG] position are computed by one set of rules whichever tokenizer a
checkpoint has. :func:`load_tokenizer` picks the class from the folder's files.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from lisa_ros.errors import TokenizerError

IMAGE_TOKEN_INDEX = -200
IMAGE_PLACEHOLDER = "<image>"
SEG_TOKEN = "[SEG]"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
IM_PATCH_TOKEN = "<im_patch>"


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
                ids.extend(self._encode_text(part))
        return ids

    def _encode_text(self, text: str) -> list[int]:
        """Ids of one chunk without added or special tokens (SentencePiece adds its dummy prefix)."""
        return self.sp.encode(text)

    def _decode_text(self, ids: list[int]) -> tuple[str, bool]:
        """Text of a run of ordinary ids, and whether it begins with a word-separating space."""
        return self.sp.decode(ids), self.sp.id_to_piece(ids[0]).startswith("\u2581")

    def _special_piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)

    def reserved_strings(self) -> list[str]:
        """The strings that text never becomes: every added and special token this tokenizer
        splits on, and ``<image>``. A user's text holding one would turn into prompt structure
        (a second image slot, a [SEG], an end of turn), so the engine refuses such commands."""
        return sorted({IMAGE_PLACEHOLDER, *self.added_tokens, *self.special_tokens, *self._text_specials()})

    def _text_specials(self) -> list[str]:
        return []

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
            text, spaced = self._decode_text(run)
            text = text.lstrip(" ") if spaced else text
            after_text = bool(out) and not out[-1].endswith((" ", "\n"))
            if spaced and after_text and (not previous_added or text[:1].isalnum()):
                text = " " + text
            elif previous_added and after_text and text[:1].isalnum():  # byte-level BPE: the space
                text = " " + text  # after an added token was stripped when encoding, as rule 2 says
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
                    out.append(self._special_piece(token_id))
                continue
            run.append(token_id)
        flush()
        return "".join(out)


class ByteLevelLisaTokenizer(LisaTokenizer):
    """A byte-level BPE ``tokenizer.json`` with LISA's added tokens, tokenizing by rules 1-3.

    ``bos_token``/``eos_token`` name the model's own sequence markers (SmolLM2: ``<|im_start|>``,
    ``<|im_end|>``); the strings ``<s>`` and ``</s>`` that LISA's prompt template writes are
    read as those markers, so the llava_v1 template works unchanged.
    """

    def __init__(self, tokenizer_file: str | Path, added_tokens: dict[str, int], bos_token: str, eos_token: str,
                 pad_token: str | None = None):
        from tokenizers import Tokenizer

        self.bpe = Tokenizer.from_file(str(tokenizer_file))
        self.base_size = self.bpe.get_vocab_size(with_added_tokens=False)
        self.added_tokens = dict(added_tokens)
        self.added_by_id = {index: token for token, index in self.added_tokens.items()}
        for token, index in self.added_tokens.items():
            if index < self.base_size:
                raise TokenizerError(f"added token {token!r} has id {index}, inside the base vocabulary")
        ids = {}
        for name in (bos_token, eos_token, pad_token or eos_token):
            index = self.bpe.token_to_id(name)
            if index is None:
                raise TokenizerError(f"{tokenizer_file} has no token {name!r}")
            ids[name] = index
        self.bos_token_id, self.eos_token_id = ids[bos_token], ids[eos_token]
        self.pad_token_id = self.unk_token_id = ids[pad_token or eos_token]
        self.special_tokens = {"<s>": self.bos_token_id, "</s>": self.eos_token_id,
                               bos_token: self.bos_token_id, eos_token: self.eos_token_id}
        names = sorted(list(self.added_tokens) + list(self.special_tokens), key=len, reverse=True)
        self._splitter = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")
        self._special_by_id = {self.bos_token_id: bos_token, self.eos_token_id: eos_token}

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "ByteLevelLisaTokenizer":
        """Read ``tokenizer.json``, ``added_tokens.json`` and ``tokenizer_config.json`` (bos/eos)."""
        folder = Path(folder)
        added_file, config_file = folder / "added_tokens.json", folder / "tokenizer_config.json"
        added = json.loads(added_file.read_text()) if added_file.is_file() else {}
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if "bos_token" not in config or "eos_token" not in config:
            raise TokenizerError(f"{config_file} must name bos_token and eos_token")
        tokenizer = cls(folder / "tokenizer.json", added, config["bos_token"], config["eos_token"],
                        config.get("pad_token"))
        if SEG_TOKEN not in tokenizer.added_tokens:
            raise TokenizerError(f"the tokenizer in {folder} has no {SEG_TOKEN} token: not a LISA checkpoint")
        return tokenizer

    def __len__(self) -> int:
        return max([self.base_size - 1, *self.added_tokens.values()]) + 1

    def _encode_text(self, text: str) -> list[int]:
        return self.bpe.encode(text, add_special_tokens=False).ids

    def _text_specials(self) -> list[str]:
        # tokenizer.json's own added tokens (<|endoftext|>, <|im_start|>, ...) are matched inside
        # text by the tokenizers library whatever add_special_tokens says.
        return [token.content for token in self.bpe.get_added_tokens_decoder().values()]

    def _decode_text(self, ids: list[int]) -> tuple[str, bool]:
        text = self.bpe.decode(ids, skip_special_tokens=False)
        return text, text.startswith(" ")

    def _special_piece(self, token_id: int) -> str:
        return self._special_by_id[token_id]


def load_tokenizer(folder: str | Path) -> LisaTokenizer:
    """The tokenizer of a checkpoint folder: SentencePiece (released LISA) or byte-level BPE."""
    folder = Path(folder)
    if (folder / "tokenizer.model").is_file():
        return LisaTokenizer.from_pretrained(folder)
    if (folder / "tokenizer.json").is_file():
        return ByteLevelLisaTokenizer.from_pretrained(folder)
    raise TokenizerError(f"{folder} has no tokenizer (tokenizer.model or tokenizer.json)")
