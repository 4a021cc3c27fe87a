"""The one inference entry point: encode a frame once, answer commands against it, stream masks.

Used by the CLI, the benchmarks, the evaluator and the ROS node, so the [SEG] path exists once.
Like segment-anything's predictor (``set_image`` once, ``predict`` many times):

1. :meth:`LisaEngine.encode_frame`: the SAM image embedding and the image tokens of an RGB image,
   computed once and reusable for any number of commands (the frame cache).
2. :meth:`LisaEngine.answer`: prompt (llava_v1, optional history, automatic suffix), greedy
   generation with the KV cache (several drafted tokens verified per forward pass,
   :mod:`lisa_ros.drafting`), and for every generated ``[SEG]`` the final post-norm hidden
   state of the position that *predicted* it (docs/MODEL.md §1.5) -> ``text_hidden_fcs`` -> SAM prompt
   encoder + mask decoder (single-mask output) -> upsampled to the source size, threshold 0.
   Each mask is handed to ``on_mask`` the moment its [SEG] is generated, before the rest of the
   answer exists.
3. :meth:`LisaEngine.teacher_forced_seg_states`: the official full-sequence computation and
   indexing, the reference the cached path is tested against and what teacher-forced evaluation
   uses.

The model maths (image features, splice, [SEG] projection, mask decoding) is the model's own
(:mod:`lisa_ros.model.modeling`); this module is the loop around it. Generation options are passed
per call and never stored per request. Nothing here imports rclpy.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from lisa_ros.drafting import NGramDrafter, agreeing_prefix
from lisa_ros.errors import InvalidCommandError
from lisa_ros.model.loading import LoadedLisa, load_lisa
from lisa_ros.model.modeling import gather_seg_states
from lisa_ros.model.preprocess import clip_preprocess, sam_preprocess
from lisa_ros.model.prompts import (
    ANSWER_TEMPLATES,
    ASSISTANT,
    Conversation,
    clean_answer,
    split_explanation,
    target_label,
    with_suffix,
)
from lisa_ros.model.options import GenerationOptions, LoadOptions
from lisa_ros.model.packed_linear import pack_language_model
from lisa_ros.model.tokenization import IMAGE_TOKEN_INDEX

if TYPE_CHECKING:
    from transformers import DynamicCache


@dataclass
class EncodedFrame:
    """One image encoded for both branches (the frame cache entry).

    ``image_embedding``: ``[1, 256, g, g]`` SAM encoder output (None when encoded without it);
    ``image_tokens``: ``[1, P, H]``, what replaces the ``<image>`` placeholder (P = 256 CLIP
    patches for ViT-L/14 at 224 px; 6 phrase tokens per object slot for ``mm_vision_source:
    objects``); ``encoder_features``:
    ``[1, P, mm_hidden_size]`` the same before the projector (training projects them itself);
    sizes in (height, width); ``timings``: seconds per part (``image_preparation``, ``clip`` or
    ``objects``, ``sam_encoder``, ``prefill_image``; :data:`lisa_ros.timing.PARTS`). ``prompt_cache``: the language
    model's KV cache over the start every prompt about this frame shares (system prompt, ``USER:``,
    the image tokens; :meth:`LisaEngine.prefill_image`), None until computed;
    ``prompt_cache_ids``: the token ids it covers, the image placeholder (-200) last;
    ``prompt_cache_model``: ``id()`` of the model that computed it (another model never uses it).
    """

    image_embedding: torch.Tensor | None
    image_tokens: torch.Tensor
    resized_size: tuple[int, int]
    original_size: tuple[int, int]
    timings: dict[str, float]
    encoder_features: torch.Tensor | None = None
    prompt_cache: DynamicCache | None = None
    prompt_cache_ids: tuple[int, ...] = ()
    prompt_cache_model: int = 0

    def drop_prompt_cache(self) -> None:
        """Free ``prompt_cache`` (for LISA-7B in fp16 about 150 MB: 296 positions x 32 layers x
        keys and values); answers then prefill the whole prompt again."""
        self.prompt_cache, self.prompt_cache_ids, self.prompt_cache_model = None, (), 0


@dataclass
class DecodedMask:
    """One mask: ``mask`` (H, W) bool at the source size; ``score`` in [0, 1] = mean sigmoid
    probability of the decoder logits over the mask's pixels (0 when empty); ``box`` = (x, y,
    width, height) in pixels, zeros when empty; ``token_index``: position of its [SEG] among the
    generated tokens; ``label``: the answer's words naming its target, "" when none
    (:func:`lisa_ros.model.prompts.target_label`); ``predicted_iou``: the mask decoder's own
    estimate of the mask's IoU with the object (SAM's IoU head), NaN when not known."""

    index: int
    mask: np.ndarray
    score: float
    box: tuple[int, int, int, int]
    token_index: int
    seconds_since_start: float
    label: str = ""
    predicted_iou: float = math.nan


# Why generation ended (Answer.stop_reason).
STOP_EOS, STOP_SENTENCE_END, STOP_MAX_NEW_TOKENS, STOP_REQUESTED = "eos", "sentence_end", "max_new_tokens", "stopped"
STOP_MAX_MASKS = "max_masks"
# The least room for an answer ("Sure, it is the red ball at the top left [SEG].") a prompt must
# leave in the context before the command is refused as too long.
MIN_ANSWER_TOKENS = 32


@dataclass
class Answer:
    """The reply to one command.

    ``explanation``: the answer's reasoning around the [SEG] template, only when one was asked
    for ("" otherwise). ``stop_reason``: why generation ended, one of ``eos``, ``sentence_end``,
    ``max_new_tokens``, ``stopped`` (``should_stop``), ``max_masks``. ``notes``: what was changed to
    serve the command (history turns dropped, the answer shortened to fit the context), for the
    caller to report. ``warnings``: signs that the answer itself is broken, to check before acting
    on it (:func:`mask_warning`, the [SEG] limit). ``forward_passes``: the language model's
    passes this answer took, the prefill included (fewer than its tokens when drafted tokens were
    accepted). ``timings`` in seconds per part (:data:`lisa_ros.timing.PARTS`): ``prefill``, the first pass (the prompt after the frame's
    cached start, the first guesses, the LM head); ``decode``, the later passes (LM head
    included); ``mask_decode``; ``time_to_first_mask``; ``total``; and the frame's encoding parts
    (``image_preparation``, ``clip`` or ``objects``, ``sam_encoder``) when :meth:`LisaEngine.answer`
    was given an image.
    """

    command: str
    prompt: str
    text: str
    explanation: str
    masks: list[DecodedMask]
    token_ids: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    # [N, H] final post-norm states that predicted each [SEG] (what text_hidden_fcs projected).
    seg_hidden_states: torch.Tensor | None = None
    stop_reason: str = STOP_EOS
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    forward_passes: int = 0

    @property
    def outcome(self) -> str:
        """One line on an answer without masks ("" when it has masks): that no target was
        segmented, and why the answer holds no [SEG]."""
        if self.masks:
            return ""
        if self.stop_reason == STOP_MAX_NEW_TOKENS:
            return (f"no target segmented: the answer was cut at max_new_tokens ({self.generated_tokens} "
                    f"tokens) before any [SEG]")
        if self.stop_reason == STOP_REQUESTED:
            return "no target segmented: generation was stopped before any [SEG]"
        return f"no target segmented: the model answered without [SEG]: {self.text!r}"

    @property
    def caveats(self) -> list[str]:
        """What the caller should tell the user beside the answer: :attr:`outcome`, :attr:`warnings`,
        then :attr:`notes`."""
        return ([self.outcome] if self.outcome else []) + self.warnings + self.notes

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids)


def mask_warning(decoded: DecodedMask) -> str:
    """A warning for a degenerate mask ("" for a plausible one): all background (an empty mask,
    e.g. the all-black masks of 4-bit LISA, issue #174 upstream) or all foreground (the whole
    image: no object was delimited)."""
    if not decoded.mask.any():
        return f"mask #{decoded.index} is empty (all background): the model found no pixels for it"
    if decoded.mask.all():
        return f"mask #{decoded.index} covers the whole image (all foreground): it delimits no object"
    return ""


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x, y, width, height) of a boolean mask; zeros when it is empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return 0, 0, 0, 0
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


class LisaEngine:
    """Inference over a loaded LISA (see the module docstring). ``options`` are the defaults of
    :meth:`answer`; a call may pass others. ``drafter``: the table drafted tokens come from,
    seeded with the training answer templates and grown by every answer generated here. Not
    thread-safe: one thread answers at a time (the node's worker, the CLI)."""

    def __init__(self, loaded: LoadedLisa, options: GenerationOptions | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.options = options or GenerationOptions()
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.seg_token_id = self.tokenizer.seg_token_id
        self.drafter = NGramDrafter(seeds=[self._answer_ids(template) for template in ANSWER_TEMPLATES])
        # Tokens an image takes in the prompt, known once a frame is encoded (the same for every
        # frame of a model); check_options counts them.
        self.image_token_count: int | None = None
        self.packed_layers = 0  # linear layers packed by oneDNN (load)

    @classmethod
    def load(cls, model: str, options: LoadOptions, generation: GenerationOptions | None = None) -> "LisaEngine":
        """The engine over ``model`` (a checkpoint folder, a hub id or "embedded"; loaded by
        :func:`lisa_ros.model.loading.load_lisa` with ``options``), its language model's linear
        layers packed by oneDNN where that is faster (fp32 on the CPU,
        :mod:`lisa_ros.model.packed_linear`; ``packed_layers`` says how many). What the CLI and
        the node serve with. Raises what ``load_lisa`` raises (a missing or
        malformed checkpoint: :class:`lisa_ros.errors.CheckpointError`)."""
        loaded = load_lisa(model, options)
        engine = cls(loaded, generation)
        engine.packed_layers = pack_language_model(loaded.model)
        return engine

    def _answer_ids(self, text: str) -> list[int]:
        """The ids ``text`` has as an answer, after "ASSISTANT:" (as generation produces them)."""
        head = self.tokenizer.encode(f"{ASSISTANT}:")
        ids = self.tokenizer.encode(f"{ASSISTANT}: {text}")
        return ids[len(head):] if ids[:len(head)] == head else ids

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ frame encoding
    @torch.no_grad()  # not inference_mode: training uses these tensors as constants in its graph
    def encode_frame(self, rgb: np.ndarray, image_embedding: bool = True, prefill: bool = False) -> EncodedFrame:
        """Encode an ``(H, W, 3)`` uint8 RGB image once: the SAM embedding and the image tokens.

        ``image_embedding=False`` skips the SAM encoder when the image tokens do not need it
        (CLIP and object sources): the frame can then be answered in text but not segmented
        (training without mask losses uses this). ``prefill``: also run the language model over
        the prompt's start through the image (:meth:`prefill_image`), for a frame encoded before
        its command arrives. Raises ValueError for an array that is not an RGB image."""
        model, timings = self.model, {}
        start = time.perf_counter()
        sam_config = model.config.sam
        sam_input = sam_preprocess(rgb, sam_config.image_size, sam_config.pixel_mean, sam_config.pixel_std)
        clip, clip_pixels = self.loaded.clip_preprocessing, None
        if clip is not None:
            clip_pixels = clip_preprocess(rgb, clip.image_size, clip.mean, clip.std).to(self.device)
        timings["image_preparation"] = time.perf_counter() - start

        sam_pixels = sam_input.pixels.to(self.device)
        start = time.perf_counter()  # timed under the source's name: "clip" or "objects"
        encoder_features = model.encoder_features(sam_pixels, clip_pixels, [sam_input.resized_size])
        self._sync()
        timings[model.config.mm_vision_source] = time.perf_counter() - start

        embedding = None
        if image_embedding:
            start = time.perf_counter()
            embedding = model.sam_image_embedding(sam_pixels)
            self._sync()
            timings["sam_encoder"] = time.perf_counter() - start
        frame = EncodedFrame(embedding, model.project_image_features(encoder_features), sam_input.resized_size,
                             sam_input.original_size, timings, encoder_features)
        self.image_token_count = frame.image_tokens.shape[1]
        if prefill:
            self.prefill_image(frame)
        return frame

    @torch.inference_mode()
    def prefill_image(self, frame: EncodedFrame) -> None:
        """Run the language model once over the start every prompt about ``frame`` shares, and
        keep its KV cache in ``frame.prompt_cache``: the system prompt, ``USER: <im_start>`` and
        the image tokens (docs/MODEL.md §3.3: the image is in the first user turn, whatever the command
        and history). A command about the frame then prefills only the rest of its prompt (for
        the embedded model 24 of 93 positions). Adds ``timings["prefill_image"]`` (s)."""
        from transformers import DynamicCache

        start = time.perf_counter()
        ids = self.tokenizer.encode_with_image(Conversation([("", None)]).prompt())
        head = ids[:ids.index(IMAGE_TOKEN_INDEX) + 1]
        cache = DynamicCache()
        self.model.language_model_states(self._inputs_embeds(head, frame), past_key_values=cache)
        self._sync()
        frame.prompt_cache, frame.prompt_cache_ids, frame.prompt_cache_model = cache, tuple(head), id(self.model)
        frame.timings["prefill_image"] = time.perf_counter() - start

    def _prompt_start(self, ids: list[int], frame: EncodedFrame) -> tuple[DynamicCache, torch.Tensor]:
        """The KV cache a prompt's prefill continues (a copy of the frame's ``prompt_cache`` when
        it covers the prompt's start, else empty) and ``[1, T, H]``, the embeddings of the rest."""
        from transformers import DynamicCache

        cut = ids.index(IMAGE_TOKEN_INDEX) + 1
        if (frame.prompt_cache is not None and frame.prompt_cache_model == id(self.model)
                and tuple(ids[:cut]) == frame.prompt_cache_ids):
            rest = torch.tensor([ids[cut:]], device=self.device)
            return copy.deepcopy(frame.prompt_cache), self.model.embed_text(rest)
        return DynamicCache(), self._inputs_embeds(ids, frame)

    # ------------------------------------------------------------------ prompt, embeddings, masks
    @property
    def context_length(self) -> int | None:
        """The language model's context in tokens (``max_position_embeddings``), None if unknown."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def _prompt_syntax_in(self, text: str) -> list[str]:
        """The strings in ``text`` the tokenizer would turn into prompt structure instead of text
        (``<image>``, ``[SEG]``, ``</s>``, the base model's special tokens:
        :meth:`~lisa_ros.model.tokenization.LisaTokenizer.reserved_strings`)."""
        return [token for token in self.tokenizer.reserved_strings() if token in text]

    def check_options(self, options: GenerationOptions) -> None:
        """Raise ValueError, naming the option, when a suffix (``segment_suffix``,
        ``explain_suffix``: added to commands) holds prompt syntax (:meth:`_prompt_syntax_in`:
        every request would fail or silently change) or is so long that a one-word command with
        it leaves the model's context less than :data:`MIN_ANSWER_TOKENS` for the answer, with
        the image's tokens (:attr:`image_token_count`, once a frame has been encoded; before,
        without them). Run it on options before serving with them (the node does, at configure
        and when a suffix parameter is set)."""
        for name, explain in (("segment_suffix", False), ("explain_suffix", True)):
            text = getattr(options, name)
            found = self._prompt_syntax_in(text)
            if found:
                raise ValueError(f"{name} contains {', '.join(map(repr, found))}: the model's prompt syntax (image "
                                 "slot, segmentation token or turn marker), which a suffix added to every command "
                                 "cannot carry")
            if self.context_length is not None:
                prompt, _ = self.build_prompt("x", explain, None, options)
                image = self.image_token_count or 0
                length = len(self.tokenizer.encode_with_image(prompt)) - 1 + image
                if length + MIN_ANSWER_TOKENS > self.context_length:
                    raise ValueError(f"{name} is too long: with a one-word command the prompt takes {length} of the "
                                     f"model's {self.context_length} tokens (image {image}), leaving less than "
                                     f"{MIN_ANSWER_TOKENS} for the answer")

    def check_command(self, command: str) -> None:
        """Raise InvalidCommandError when ``command`` holds a string the tokenizer would turn into
        prompt structure instead of text (:meth:`_prompt_syntax_in`)."""
        found = self._prompt_syntax_in(command)
        if found:
            raise InvalidCommandError(
                f"the command contains {', '.join(map(repr, found))}: the model's prompt syntax (image slot, "
                f"segmentation token or turn marker), which text cannot carry; rephrase without it")

    def build_prompt(self, command: str, explain: bool, history: Conversation | None = None,
                     options: GenerationOptions | None = None) -> tuple[str, Conversation]:
        """The rendered prompt and the conversation it came from (history + the new question).

        Raises InvalidCommandError for a command holding reserved strings (:meth:`check_command`)."""
        options = options or self.options
        self.check_command(command)
        conversation = Conversation(list(history.turns) if history else [])
        conversation.ask(with_suffix(command, explain, options.segment_suffix, options.explain_suffix))
        return conversation.prompt(), conversation

    def fit_prompt(self, command: str, explain: bool, history: Conversation | None, options: GenerationOptions,
                   image_token_count: int) -> tuple[str, Conversation, list[int], int, list[str]]:
        """Build the prompt so that it and the answer fit :attr:`context_length`.

        The prompt takes ``len(ids) - 1 + image_token_count`` positions. While it and
        ``max_new_tokens`` overflow the context, the oldest history turn is dropped (the image
        stays: it moves to the first remaining turn); with no history left, generation is
        shortened to the room left, down to :data:`MIN_ANSWER_TOKENS`, below which the command is
        refused (InvalidCommandError). Returns (prompt, conversation, ids, new-token limit, notes).
        """
        turns = list(history.turns) if history else []
        context, notes = self.context_length, []
        while True:
            prompt, conversation = self.build_prompt(command, explain, Conversation(turns), options)
            ids = self.tokenizer.encode_with_image(prompt)
            length = len(ids) - 1 + image_token_count
            if context is None or length + options.max_new_tokens <= context:
                break
            if turns:
                turns = turns[1:]
                continue
            if context - length >= MIN_ANSWER_TOKENS:
                notes.append(f"answer limited to {context - length} tokens (max_new_tokens "
                             f"{options.max_new_tokens}) by the model's {context}-token context")
                break
            raise InvalidCommandError(
                f"the command is too long for the model: its prompt takes {length} of the model's {context} "
                f"tokens (image {image_token_count}, command {len(self.tokenizer.encode(command))}, "
                f"{'explain' if explain else 'segment'}_suffix {self._suffix_tokens(command, explain, options)}), "
                f"leaving less than {MIN_ANSWER_TOKENS} for the answer")
        dropped = len(history.turns) - len(turns) if history else 0
        if dropped:
            notes.insert(0, f"the {dropped} oldest turn(s) of the conversation were dropped to fit the model's "
                            f"{context}-token context")
        limit = options.max_new_tokens if context is None else min(options.max_new_tokens, context - length)
        return prompt, conversation, ids, limit, notes

    def _suffix_tokens(self, command: str, explain: bool, options: GenerationOptions) -> int:
        """Tokens the suffix added to ``command`` takes (0 when none is added)."""
        asked = with_suffix(command, explain, options.segment_suffix, options.explain_suffix)
        return len(self.tokenizer.encode(asked)) - len(self.tokenizer.encode(command.strip()))

    def _inputs_embeds(self, ids: list[int], frame: EncodedFrame) -> torch.Tensor:
        """``[1, L + P - 1, H]`` for one token sequence holding one placeholder."""
        input_ids = torch.tensor([ids], device=self.device)
        return self.model.embed_with_image_tokens(input_ids, frame.image_tokens).inputs_embeds

    @torch.inference_mode()
    def decode_masks(self, seg_hidden_states: torch.Tensor, frame: EncodedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, H]`` [SEG] states -> (``[N, H_src, W_src]`` float32 logits, ``[N]`` scores in [0, 1])."""
        logits, scores, _ = self.segment(frame, seg_hidden_states=seg_hidden_states)
        return logits, scores

    @torch.inference_mode()
    def segment(self, frame: EncodedFrame, seg_hidden_states: torch.Tensor | None = None,
                boxes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SAM's decoder on ``frame`` prompted by ``[N, H]`` [SEG] states (projected by
        ``text_hidden_fcs``), by ``(N, 4)`` boxes (x0, y0, x1, y1) in source-image pixels, or by
        both (one box and one state per mask). Returns ``[N, H_src, W_src]`` float32 logits
        (threshold 0), ``[N]`` scores (mean probability over each mask's pixels, 0 when empty)
        and ``[N]`` the decoder's predicted IoU. Raises ValueError when the frame was encoded
        without its SAM embedding or neither prompt is given."""
        if frame.image_embedding is None:
            raise ValueError("the frame was encoded without its SAM image embedding")
        tokens = None if seg_hidden_states is None else self.model.project_seg_hidden_states(seg_hidden_states)
        sam_boxes = None
        if boxes is not None:
            scale_y = frame.resized_size[0] / frame.original_size[0]
            scale_x = frame.resized_size[1] / frame.original_size[1]
            to_sam = np.float32([scale_x, scale_y, scale_x, scale_y])
            sam_boxes = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4) * to_sam, device=self.device)
        logits, ious = self.model.decode_prompted_masks(frame.image_embedding, frame.resized_size, frame.original_size,
                                                        tokens=tokens, boxes=sam_boxes)
        masks = logits > 0
        probabilities = torch.sigmoid(logits)
        counts = masks.sum(dim=(1, 2))
        scores = torch.where(counts > 0, (probabilities * masks).sum(dim=(1, 2)) / counts.clamp(min=1),
                             torch.zeros_like(counts, dtype=probabilities.dtype))
        return logits, scores, ious

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def answer(
        self,
        frame: EncodedFrame | np.ndarray,
        command: str,
        explain: bool = False,
        history: Conversation | None = None,
        on_mask: Callable[[DecodedMask], None] | None = None,
        on_token: Callable[[str, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        forced_ids: list[int] | None = None,
        options: GenerationOptions | None = None,
    ) -> tuple[Answer, Conversation]:
        """Answer ``command`` about ``frame``; returns the answer and the updated conversation.

        ``on_mask(mask)`` runs as soon as each mask is decoded, ``on_token(partial_text, n)``
        after each generated token, and generation ends early when ``should_stop()`` is true.
        ``forced_ids``: teacher forcing on the cached path: emit these tokens instead of the
        argmax (same compute as generation; benchmarks use it for a realistic answer shape).
        ``options``: this call's generation options (default: the engine's).

        Raises InvalidCommandError for a command with reserved strings or one that does not fit
        the context even without history (see :meth:`fit_prompt`).
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        if isinstance(frame, np.ndarray):
            frame = self.encode_frame(frame)
            timings.update(frame.timings)
        options = options or self.options
        prompt, conversation, ids, limit, notes = self.fit_prompt(command, explain, history, options,
                                                                  frame.image_tokens.shape[1])

        generated: list[int] = []
        warnings: list[str] = []
        masks: list[DecodedMask] = []
        seg_states: list[torch.Tensor] = []
        mask_time = 0.0
        stop_at_sentence_end = options.stop_after_seg and not explain
        limit = limit if forced_ids is None else len(forced_ids)

        def emit(next_id: int, hidden: torch.Tensor) -> str | None:
            """Add one token (``hidden``: ``[1, H]``, the state that predicted it); returns why
            generation ends with it, None to go on."""
            nonlocal mask_time
            if next_id == self.seg_token_id and len(masks) >= options.max_masks and forced_ids is None:
                warnings.append(f"the model asked for more than max_masks ({options.max_masks}) masks: generation "
                                f"stopped there (runaway [SEG] tokens, a known failure of fp16 and quantized models)")
                return STOP_MAX_MASKS
            generated.append(next_id)
            if next_id == self.seg_token_id:
                mask_start = time.perf_counter()
                # `hidden` is the state that predicted this [SEG]: the one LISA projects.
                seg_states.append(hidden[0].detach().clone())
                logits, scores, ious = self.segment(frame, seg_hidden_states=hidden)
                mask = (logits[0] > 0).cpu().numpy()
                decoded = DecodedMask(len(masks), mask, float(scores[0]), mask_box(mask),
                                      len(generated) - 1, time.perf_counter() - started,
                                      target_label(clean_answer(self.tokenizer.decode(generated[:-1]))),
                                      float(ious[0]))
                problem = mask_warning(decoded)
                if problem:
                    warnings.append(problem)
                masks.append(decoded)
                mask_time += time.perf_counter() - mask_start
                if on_mask is not None:
                    on_mask(decoded)
            if on_token is not None:
                on_token(clean_answer(self.tokenizer.decode(generated)), len(generated))
            if next_id == self.tokenizer.eos_token_id:
                return STOP_EOS
            if stop_at_sentence_end and next_id != self.seg_token_id:
                if self.tokenizer.decode([next_id]).rstrip().endswith((".", "!", "?")):
                    return STOP_SENTENCE_END
            if len(generated) >= limit:
                return STOP_MAX_NEW_TOKENS
            return None

        # Each pass feeds what the cache lacks (the prompt after the frame's cached start, then
        # the last generated token) and up to draft_tokens guesses after it; its states at the
        # last fed token and at each guess predict the next tokens. Guesses are kept while they
        # equal the model's prediction; the cache drops the rejected ones.
        prefill_start = time.perf_counter()
        cache, pending_embeds = self._prompt_start(ids, frame)
        drafting = forced_ids is None and options.draft_tokens > 0
        passes, decode_time = 0, 0.0
        stop_reason = STOP_MAX_NEW_TOKENS if limit <= 0 else None
        timings["prefill"] = 0.0
        while stop_reason is None:
            if should_stop is not None and should_stop():
                stop_reason = STOP_REQUESTED
                break
            room = limit - len(generated)  # >= 1 here; the last token needs no guess after it
            drafts = self.drafter.propose(generated, min(options.draft_tokens, room - 1)) if drafting else []
            pass_start = time.perf_counter()
            if pending_embeds is not None:
                embeds = pending_embeds
                if drafts:
                    drafted = self.model.embed_text(torch.tensor([drafts], device=self.device))
                    embeds = torch.cat([pending_embeds, drafted.to(pending_embeds.dtype)], dim=1)
                states = self.model.language_model_states(embeds, past_key_values=cache)
                pending_embeds = None
            else:
                states = self.model.language_model_states(
                    input_ids=torch.tensor([[generated[-1], *drafts]], device=self.device), past_key_values=cache)
            # Post-norm states at the last fed token and at each guess, [1 + guesses, H]: each
            # predicts the token after it.
            predicting_states = states[0, -(len(drafts) + 1):]
            greedy_ids = self.model.token_logits(predicting_states).float().argmax(dim=-1).tolist()
            self._sync()
            if passes == 0:  # the prompt's pass (with the first guesses)
                timings["prefill"] = time.perf_counter() - prefill_start
            else:
                decode_time += time.perf_counter() - pass_start
            passes += 1
            if forced_ids is not None:
                greedy_ids = [forced_ids[len(generated)]]
            emitting = agreeing_prefix(drafts, greedy_ids)
            for position, next_id in enumerate(emitting):
                if position and should_stop is not None and should_stop():
                    stop_reason = STOP_REQUESTED
                    break
                stop_reason = emit(next_id, predicting_states[position:position + 1])
                if stop_reason is not None:
                    break
            else:
                accepted = len(emitting) - 1  # guesses now in the cache as the model's own tokens
                if accepted < len(drafts):
                    cache.crop(accepted - len(drafts))

        text = clean_answer(self.tokenizer.decode(generated))
        conversation.answer(text)
        timings["decode"] = decode_time
        timings["mask_decode"] = mask_time
        timings["time_to_first_mask"] = masks[0].seconds_since_start if masks else math.nan
        timings["total"] = time.perf_counter() - started
        answer = Answer(command, prompt, text, split_explanation(text) if explain else "", masks, generated,
                        timings, torch.stack(seg_states) if seg_states else None, stop_reason, notes, warnings,
                        passes)
        if forced_ids is None:
            self.drafter.observe(generated)
        return answer, conversation

    # ------------------------------------------------------------------ official reference
    @torch.inference_mode()
    def teacher_forced_seg_states(self, frame: EncodedFrame, ids: list[int]) -> torch.Tensor:
        """The official computation: one full-sequence forward over ``ids`` (prompt and answer,
        one -200 placeholder), then :func:`~lisa_ros.model.modeling.gather_seg_states`. Returns ``[N, H]``."""
        return gather_seg_states(self._full_sequence_states(frame, ids), ids, self.seg_token_id,
                                 frame.image_tokens.shape[1])

    @torch.inference_mode()
    def next_token_logits(self, frame: EncodedFrame, ids: list[int]) -> torch.Tensor:
        """``[V]`` float32 logits of the token after ``ids`` (a prompt from :meth:`build_prompt`
        encoded with its -200 placeholder, plus any teacher-forced answer tokens): one
        full-sequence forward, no cache. For probes and for comparing loadings of one model."""
        return self.model.token_logits(self._full_sequence_states(frame, ids)[-1]).float()

    def _full_sequence_states(self, frame: EncodedFrame, ids: list[int]) -> torch.Tensor:
        """``[L + P - 1, H]`` final hidden states of one forward over ``ids``, no cache."""
        return self.model.language_model_states(self._inputs_embeds(ids, frame))[0]
