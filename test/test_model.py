"""LISA model core on checkpoints written by the tests in the released layout.

Covers strict loading (7B and 13B-llama2 tokenizer layouts), the tokenization the released models
were trained with, the [SEG] gather (KV-cached == official full-sequence indexing), several [SEG]
-> several masks at the source size, prompts, and 4-bit / 8-bit bitsandbytes loading on CPU.
"""
from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from lisa_ros.engine import GenerationOptions, LisaEngine
from lisa_ros.errors import CheckpointError
from lisa_ros.model.loading import load_lisa
from lisa_ros.model.options import LoadOptions
from lisa_ros.model.prompts import Conversation, split_explanation, target_label, with_suffix
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from lisa_ros.model.tokenization import IMAGE_TOKEN_INDEX, LisaTokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("ckpt") / "lisa-7b-tiny", layout="7b")


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_lisa(checkpoint, LoadOptions(precision="fp32", device="cpu"))


def force_seg(loaded, engine, frame, command):
    """Make the random model emit [SEG]: its most frequent generated token now scores as [SEG]
    (x1.5), so greedy decoding produces [SEG] where it produced that token."""
    answer, _ = engine.answer(frame, command)
    counts = collections.Counter(t for t in answer.token_ids if t != loaded.tokenizer.eos_token_id)
    with torch.no_grad():
        weight = loaded.model.lm_head.weight
        weight[loaded.tokenizer.seg_token_id] = weight[counts.most_common(1)[0][0]] * 1.5


@pytest.fixture(scope="module")
def seg_engine(checkpoint):
    fresh = load_lisa(checkpoint, LoadOptions(precision="fp32", device="cpu"))
    engine = LisaEngine(fresh, GenerationOptions(max_new_tokens=24, stop_after_seg=False))
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    frame = engine.encode_frame(rgb)
    force_seg(fresh, engine, frame, "what should I use to reach the shelf?")
    return engine, frame


# ------------------------------------------------------------------------------------ loading


def test_released_layout_loads_strictly_with_the_right_pieces(checkpoint, loaded):
    files = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
            "tokenizer.model", "added_tokens.json", "tokenizer_config.json"} <= files
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["architectures"] == ["LISAForCausalLM"] and config["model_type"] == "llava"
    index = json.loads((checkpoint / "pytorch_model.bin.index.json").read_text())
    keys = set(index["weight_map"])
    assert not any("vision_tower" in k for k in keys)
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.mm_projector.weight",
            "model.text_hidden_fcs.0.0.weight", "model.text_hidden_fcs.0.2.bias",
            "model.visual_model.mask_decoder.iou_token.weight"} <= keys
    assert set(loaded.model.state_dict()) == keys  # every key loaded, none left over
    for key, value in torch.load(checkpoint / index["weight_map"]["model.text_hidden_fcs.0.2.weight"]).items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    assert loaded.memory_bytes()["total"] > 0


@pytest.mark.parametrize("layout,seg_offset", [("7b", 3), ("13b", 0)])
def test_seg_id_is_looked_up_from_the_tokenizer(tmp_path, layout, seg_offset):
    folder = write_tiny_lisa_checkpoint(tmp_path / f"lisa-{layout}", layout=layout, shards=1)
    tokenizer = LisaTokenizer.from_pretrained(folder)
    assert tokenizer.seg_token_id == tokenizer.sp.get_piece_size() + seg_offset
    assert tokenizer.encode("[SEG]") == [tokenizer.seg_token_id]  # one id, not "▁" + id (issue #55)
    assert load_lisa(folder, LoadOptions(precision="fp32")).model.config.vocab_size == len(tokenizer)


def _rewrite_shard(checkpoint, tmp_path, edit):
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(checkpoint, copy)
    shard = copy / "pytorch_model-00002-of-00002.bin"
    state = torch.load(shard)
    edit(state)
    torch.save(state, shard)
    index = json.loads((copy / "pytorch_model.bin.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k in state or v != shard.name}
    index["weight_map"].update({k: shard.name for k in state})
    (copy / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return copy


def test_an_unexpected_key_is_refused(checkpoint, tmp_path):
    folder = _rewrite_shard(checkpoint, tmp_path, lambda s: s.__setitem__("model.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match="unexpected_keys"):
        load_lisa(folder, LoadOptions(precision="fp32"))


def test_a_missing_key_is_refused(checkpoint, tmp_path):
    folder = _rewrite_shard(checkpoint, tmp_path, lambda s: s.pop("lm_head.weight" if "lm_head.weight" in s else next(iter(s))))
    with pytest.raises(CheckpointError, match="missing_keys"):
        load_lisa(folder, LoadOptions(precision="fp32"))


def test_folders_that_are_not_lisa_checkpoints_get_a_clear_error(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_lisa(tmp_path / "nowhere", LoadOptions(precision="fp32"))
    base = tmp_path / "llava"
    base.mkdir()
    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("train_mask_decoder")
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a LISA checkpoint"):
        load_lisa(base, LoadOptions(precision="fp32"))


def test_a_hub_id_that_cannot_be_fetched_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: the hub path must fail cleanly
    with pytest.raises(CheckpointError, match="xinlai/LISA-7B-v1"):
        load_lisa("xinlai/LISA-7B-v1", LoadOptions(precision="fp32"))


def test_an_incomplete_clip_tower_is_refused(checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    clip = tmp_path / "clip"
    shutil.copytree(checkpoint.parent / f"{checkpoint.name}-clip", clip)
    state = load_file(clip / "model.safetensors")
    state.pop("vision_model.post_layernorm.weight")
    save_file(state, clip / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="incomplete"):
        load_lisa(checkpoint, LoadOptions(precision="fp32", vision_tower=str(clip)))


def test_clip_towers_that_do_not_fit_the_released_models_are_refused():
    from transformers import CLIPVisionConfig

    from lisa_ros.model.configuration import LisaConfig
    from lisa_ros.model.loading import check_vision_tower

    lisa_7b = LisaConfig(hidden_size=4096, mm_hidden_size=1024)
    check_vision_tower(lisa_7b, CLIPVisionConfig(hidden_size=1024, num_attention_heads=16, image_size=224, patch_size=14))
    with pytest.raises(CheckpointError, match="576 patches"):  # clip-vit-large-patch14-336
        check_vision_tower(lisa_7b, CLIPVisionConfig(hidden_size=1024, num_attention_heads=16, image_size=336, patch_size=14))
    with pytest.raises(CheckpointError, match="width"):
        check_vision_tower(lisa_7b, CLIPVisionConfig(hidden_size=768, image_size=224, patch_size=14))


def test_sam_pixel_buffers_hold_the_constants_after_loading(loaded):
    sam = loaded.model.model.visual_model
    torch.testing.assert_close(sam.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(sam.pixel_std.flatten(), torch.tensor([58.395, 57.12, 57.375]))


def test_vision_tower_comes_from_a_full_clip_model_folder_or_an_override(checkpoint, loaded):
    clip_folder = checkpoint.parent / f"{checkpoint.name}-clip"
    saved = json.loads((clip_folder / "config.json").read_text())
    assert saved["model_type"] == "clip" and "text_config" in saved  # the hub layout: both towers
    assert loaded.model.vision_tower.config.hidden_size == loaded.model.config.mm_hidden_size
    with pytest.raises(CheckpointError, match="vision tower"):
        load_lisa(checkpoint, LoadOptions(precision="fp32", vision_tower=str(checkpoint / "missing")))


def test_loading_a_full_clip_model_folder_reports_one_line_not_a_key_table(checkpoint, capfd, caplog):
    """transformers prints a LOAD REPORT table of every text-tower key ("UNEXPECTED") for a full
    CLIPModel folder; the loader logs one summary line instead and leaves transformers' verbosity
    as it was."""
    import logging

    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    with caplog.at_level(logging.INFO, logger="lisa_ros.model.loading"):
        load_lisa(checkpoint, LoadOptions(precision="fp32"))
    printed = capfd.readouterr()
    assert "UNEXPECTED" not in printed.out + printed.err and "LOAD REPORT" not in printed.out + printed.err
    summary = [r.getMessage() for r in caplog.records if "text tower and projection heads" in r.getMessage()]
    assert len(summary) == 1 and "other unused" not in summary[0], summary
    assert hf_logging.get_verbosity() == before


# ------------------------------------------------------------------------------------ tokenizer


def test_tokenization_matches_the_training_tokenizer(loaded):
    tokenizer = loaded.tokenizer
    sp = tokenizer.sp
    seg = tokenizer.seg_token_id
    # "ASSISTANT: [SEG].</s>": the space before [SEG] vanishes, "." gets its own dummy prefix.
    ids = tokenizer.encode("ASSISTANT: [SEG].</s>")
    assert ids == sp.encode("ASSISTANT:") + [seg] + sp.encode(".") + [tokenizer.eos_token_id]
    assert sp.id_to_piece(ids[ids.index(seg) - 1]).endswith(":")
    # The newline after <im_end> vanishes; the text after it is encoded on its own.
    prompt_ids = tokenizer.encode_with_image("USER: <im_start><image><im_end>\nWhat is x ASSISTANT:")
    start, end = tokenizer.token_id("<im_start>"), tokenizer.token_id("<im_end>")
    assert prompt_ids[0] == tokenizer.bos_token_id and prompt_ids.count(tokenizer.bos_token_id) == 1
    at = prompt_ids.index(IMAGE_TOKEN_INDEX)
    assert prompt_ids[at - 1] == start and prompt_ids[at + 1] == end
    assert prompt_ids[1:at - 1] == sp.encode("USER:")
    assert prompt_ids[at + 2:] == sp.encode("What is x ASSISTANT:")


def test_decoding_keeps_seg_markers_readable(loaded):
    tokenizer = loaded.tokenizer
    for text in ("Sure, [SEG].", "Sure, it is [SEG]. The ladder is tall.", "[SEG] and [SEG]."):
        assert tokenizer.decode(tokenizer.encode(text)) == text


# ------------------------------------------------------------------------------------ prompts


def test_llava_v1_prompt_byte_for_byte():
    conversation = Conversation()
    conversation.ask("What is x? Please output segmentation mask.")
    assert conversation.prompt() == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the human's questions. USER: <im_start><image><im_end>\n"
        "What is x? Please output segmentation mask. ASSISTANT:")
    conversation.answer("Sure, [SEG].")
    conversation.ask("And the cup?")
    assert conversation.prompt().endswith(
        "ASSISTANT: Sure, [SEG].</s>USER: And the cup? ASSISTANT:")
    assert conversation.prompt().count("<image>") == 1


def test_suffixes_and_explanations():
    assert with_suffix("what should I use to reach the shelf?", False) == \
        "what should I use to reach the shelf? Please output segmentation mask."
    assert with_suffix("Please segment the cup.", False) == "Please segment the cup."
    assert with_suffix("where is the cup", True) == \
        "where is the cup Please output segmentation mask and explain why."
    assert with_suffix("where is the cup", False, segment_suffix="") == "where is the cup"
    assert split_explanation("Sure, it is [SEG]. The ladder is tall enough. Use it.") == \
        "The ladder is tall enough. Use it."
    assert split_explanation("Sure, [SEG].") == ""
    assert split_explanation("It is [SEG]. The sign says 3.5 m.") == "The sign says 3.5 m."
    assert split_explanation("Sure, [SEG] is the ladder because it is tall.") == \
        "is the ladder because it is tall."
    assert with_suffix("explain where the cup is", True) == "explain where the cup is Please output segmentation mask."


@pytest.mark.parametrize("before, label", [
    ("I look for something yellow: it is the yellow cup at the bottom left ", "yellow cup at the bottom left"),
    ("It is the step ladder ", "step ladder"),
    ("Sure, the segmentation result is ", ""),   # the templates name nothing
    ("Sure, it is ", ""),
    ("", ""),
    ("The cup [SEG] and the plate ", "plate"),   # a later [SEG]: only the words since the previous one
    ("The cup is ", "cup"),
    ("I would use the step ladder ", "step ladder"),
    # several targets (the embedded model's list answers)
    ("I look for every red object: they are the red ball on the left ", "red ball on the left"),
    ("...: they are the red ball on the left [SEG], the red cup at the top ", "red cup at the top"),
    ("...: they are the red ball [SEG], the red cup [SEG] and the red star in the middle ", "red star in the middle"),
])
def test_a_target_label_is_the_answers_words_before_its_seg(before, label):
    assert target_label(before) == label


# ------------------------------------------------------------------------------------ gather and masks


def test_cached_gather_equals_the_official_full_sequence_indexing(seg_engine):
    _check_cached_gather(*seg_engine)


def _check_cached_gather(engine, frame):
    answer, _ = engine.answer(frame, "what should I use to reach the shelf?")
    seg_count = answer.token_ids.count(engine.seg_token_id)
    assert seg_count >= 2, answer.token_ids
    ids = engine.tokenizer.encode_with_image(answer.prompt) + answer.token_ids
    reference = engine.teacher_forced_seg_states(frame, ids)
    assert reference.shape == answer.seg_hidden_states.shape == (seg_count, engine.model.config.hidden_size)
    torch.testing.assert_close(answer.seg_hidden_states, reference, atol=1e-4, rtol=1e-4)
    reference_logits, _ = engine.decode_masks(reference, frame)
    cached_logits, _ = engine.decode_masks(answer.seg_hidden_states, frame)
    torch.testing.assert_close(cached_logits, reference_logits, atol=1e-3, rtol=1e-4)
    for decoded, logits in zip(answer.masks, reference_logits):
        # The streamed masks are the thresholded logits; states that agree to ~1e-6 can flip a
        # pixel whose logit is ~0 (CPU-dependent rounding), so only confident pixels must agree.
        confident = (logits.abs() > 1e-3).numpy()
        np.testing.assert_array_equal(decoded.mask[confident], (logits > 0).numpy()[confident])


def test_official_indexing_takes_the_state_before_each_seg_after_the_image(seg_engine):
    engine, frame = seg_engine
    seg = engine.seg_token_id
    ids = [1, 50, IMAGE_TOKEN_INDEX, 60, 70, seg, 80, seg, 2]
    patches = frame.image_tokens.shape[1]
    states = engine.teacher_forced_seg_states(frame, ids)
    with torch.no_grad():
        embeds = engine.model.embed_with_image_tokens(torch.tensor([ids]), frame.image_tokens).inputs_embeds
        full = engine.model.model(inputs_embeds=embeds, use_cache=False).last_hidden_state[0]
    for state, p in zip(states, [5, 7]):  # [SEG] at token p -> expanded index p - 1 + (P - 1)
        torch.testing.assert_close(state, full[p - 1 + patches - 1])


def test_the_batched_splice_equals_one_sequence_at_a_time(seg_engine):
    """Two right-padded rows with their placeholder at different places: each row's spliced
    embeddings, mask and expanded labels equal the single-row splice."""
    from lisa_ros.model.modeling import expand_at_image

    engine, frame = seg_engine
    model = engine.model
    pad = engine.tokenizer.pad_token_id
    first, second = [1, 50, IMAGE_TOKEN_INDEX, 60, 70], [1, IMAGE_TOKEN_INDEX, 80]
    batch = torch.tensor([first, second + [pad, pad]])
    attention = torch.tensor([[1] * 5, [1] * 3 + [0, 0]])
    images = torch.cat([frame.image_tokens, frame.image_tokens.flip(1)])
    patches = images.shape[1]
    with torch.no_grad():
        spliced = model.embed_with_image_tokens(batch, images, attention)
        alone = [model.embed_with_image_tokens(torch.tensor([ids]), images[i:i + 1]) for i, ids in enumerate((first, second))]
    assert spliced.inputs_embeds.shape == (2, 5 + patches - 1, model.config.hidden_size)
    torch.testing.assert_close(spliced.inputs_embeds[0], alone[0].inputs_embeds[0])
    torch.testing.assert_close(spliced.inputs_embeds[1, :2 + patches], alone[1].inputs_embeds[0])
    assert spliced.image_start.tolist() == [2, 1]
    assert spliced.attention_mask[1].tolist() == [1] * (3 + patches - 1) + [0, 0]
    labels = expand_at_image(torch.tensor([[-100, -100, -100, 60, 70], [-100, -100, 80, -100, -100]]), batch, patches, -100)
    assert labels[0, -2:].tolist() == [60, 70] and labels[1, patches + 1].item() == 80
    with pytest.raises(ValueError, match="exactly one image placeholder"):
        model.embed_with_image_tokens(torch.tensor([[1, 50, 60]]), images[:1])


def test_every_seg_yields_a_source_size_mask_as_soon_as_it_is_generated(seg_engine):
    engine, frame = seg_engine
    streamed, tokens_when_streamed = [], []
    progress = []
    answer, conversation = engine.answer(
        frame, "what should I use to reach the shelf?",
        on_mask=lambda m: (streamed.append(m), tokens_when_streamed.append(len(progress))),
        on_token=lambda text, n: progress.append(n))
    assert len(answer.masks) == answer.token_ids.count(engine.seg_token_id) == len(streamed) >= 2
    # each mask's label is taken from the answer text before its [SEG]
    pieces = answer.text.split("[SEG]")
    assert [m.label for m in answer.masks] == [target_label("[SEG]".join(pieces[:i + 1])) for i in range(len(answer.masks))]
    for decoded in answer.masks:
        assert decoded.mask.shape == (480, 640) and decoded.mask.dtype == bool
        assert 0.0 <= decoded.score <= 1.0
        x, y, w, h = decoded.box
        if decoded.mask.any():
            assert decoded.mask[y:y + h, x:x + w].sum() == decoded.mask.sum()
    # The first mask was delivered before generation finished.
    assert tokens_when_streamed[0] < len(answer.token_ids)
    assert answer.timings["time_to_first_mask"] <= answer.timings["total"]
    assert conversation.turns[-1][1] == answer.text


def test_stop_after_seg_ends_generation_at_the_sentence_end(seg_engine):
    from dataclasses import replace

    engine, frame = seg_engine
    options = replace(engine.options, stop_after_seg=True)
    answer, _ = engine.answer(frame, "what should I use to reach the shelf?", options=options)
    assert engine.options.stop_after_seg is False  # per call: the engine's own options are untouched
    ended = engine.tokenizer.decode(answer.token_ids[-1:]).rstrip()
    assert answer.masks
    assert ended.endswith((".", "!", "?")) or answer.token_ids[-1] in (engine.seg_token_id, 2) \
        or len(answer.token_ids) == options.max_new_tokens


def test_runaway_seg_tokens_stop_at_max_masks_with_a_warning(seg_engine):
    """The forced model says [SEG] again and again (as fp16/quantized LISA sometimes does): with
    max_masks 1 generation stops at the second [SEG], keeps one mask and says why."""
    from dataclasses import replace

    engine, frame = seg_engine
    free, _ = engine.answer(frame, "what should I use to reach the shelf?")
    assert len(free.masks) >= 2 and free.stop_reason != "max_masks"
    limited, _ = engine.answer(frame, "what should I use to reach the shelf?", options=replace(engine.options, max_masks=1))
    assert len(limited.masks) == 1 and limited.stop_reason == "max_masks"
    assert limited.token_ids.count(engine.seg_token_id) == 1
    assert any("max_masks (1)" in w for w in limited.warnings) and limited.warnings[-1] in limited.caveats


@pytest.mark.parametrize("logit, words", [(-10.0, "empty (all background)"), (10.0, "whole image (all foreground)")])
def test_degenerate_masks_are_warned_about(seg_engine, monkeypatch, logit, words):
    """A decoder whose logits are all negative (the all-black masks of 4-bit LISA) or all positive:
    the answer stands and says so per mask; a plausible mask gives no warning."""
    engine, frame = seg_engine
    plausible, _ = engine.answer(frame, "what should I use to reach the shelf?")
    assert not [w for w in plausible.warnings if "mask #" in w]

    def degenerate(frame_, seg_hidden_states=None, boxes=None):
        logits = torch.full((seg_hidden_states.shape[0], *frame_.original_size), logit)
        return logits, torch.sigmoid(logits).mean(dim=(1, 2)), torch.ones(seg_hidden_states.shape[0])

    monkeypatch.setattr(engine, "segment", degenerate)
    answer, _ = engine.answer(frame, "what should I use to reach the shelf?")
    assert answer.masks and len([w for w in answer.warnings if words in w]) == len(answer.masks)


def test_should_stop_cancels_generation(seg_engine):
    engine, frame = seg_engine
    answer, _ = engine.answer(frame, "anything", should_stop=lambda: True)
    assert answer.token_ids == [] and answer.masks == []


# ------------------------------------------------------------------------------------ drafting


def _answers_with(engine, frame, command, draft_tokens, drafter=None, **kwargs):
    from dataclasses import replace

    if drafter is not None:
        engine.drafter = drafter
    return engine.answer(frame, command, options=replace(engine.options, draft_tokens=draft_tokens), **kwargs)[0]


def test_drafted_decoding_gives_the_greedy_answer_in_fewer_passes(seg_engine):
    """Guesses from the table are checked against the model: the answer, its [SEG] states and
    masks are those of one-token-per-pass greedy decoding, whatever the table holds; once the
    table knows the answer, it takes a few passes instead of one per token."""
    from lisa_ros.drafting import NGramDrafter

    engine, frame = seg_engine
    command = "what should I use to reach the shelf?"
    saved = engine.drafter
    try:
        greedy = _answers_with(engine, frame, command, 0)
        assert greedy.forward_passes == len(greedy.token_ids) >= 10 and len(greedy.masks) >= 2
        wrong = NGramDrafter()
        rows = engine.model.model.get_input_embeddings().num_embeddings
        wrong.observe([(t + 1) % rows for t in greedy.token_ids] * 3)  # confident and always wrong
        known = NGramDrafter()
        known.observe(greedy.token_ids)
        # every 4th token wrong: passes that keep some guesses and crop the rest, mid-answer
        partly = NGramDrafter()
        partly.observe([(t + 1) % rows if i % 4 == 3 else t for i, t in enumerate(greedy.token_ids)])
        passes = {}
        for name, drafter in (("wrong", wrong), ("empty", NGramDrafter()), ("partly", partly), ("known", known)):
            drafted = _answers_with(engine, frame, command, 8, drafter)
            assert drafted.token_ids == greedy.token_ids and drafted.text == greedy.text
            torch.testing.assert_close(drafted.seg_hidden_states, greedy.seg_hidden_states, atol=1e-4, rtol=1e-4)
            for mask, reference in zip(drafted.masks, greedy.masks):
                assert mask.token_index == reference.token_index
                assert (mask.mask != reference.mask).mean() < 1e-3  # pixels with logits ~0 may flip
            passes[name] = drafted.forward_passes
        assert passes["known"] <= len(greedy.token_ids) // 8 + 1  # all guesses right: 8 + 1 per pass
        assert passes["known"] < passes["partly"] < len(greedy.token_ids), passes
        _check_cached_gather(engine, frame)  # [SEG] states gathered from multi-token passes
    finally:
        engine.drafter = saved


def test_drafting_keeps_to_max_new_tokens_max_masks_and_the_sentence_end(seg_engine):
    from dataclasses import replace

    from lisa_ros.drafting import NGramDrafter

    engine, frame = seg_engine
    command = "what should I use to reach the shelf?"
    saved = engine.drafter
    try:
        greedy = _answers_with(engine, frame, command, 0)
        engine.drafter = NGramDrafter()
        engine.drafter.observe(greedy.token_ids)
        for options in (dict(max_new_tokens=5), dict(max_masks=1), dict(stop_after_seg=True)):
            plain, _ = engine.answer(frame, command, options=replace(engine.options, draft_tokens=0, **options))
            drafted, _ = engine.answer(frame, command, options=replace(engine.options, draft_tokens=8, **options))
            assert drafted.token_ids == plain.token_ids and drafted.stop_reason == plain.stop_reason, options
            assert len(drafted.masks) == len(plain.masks) and drafted.warnings == plain.warnings
            assert drafted.forward_passes < plain.forward_passes, options
        # a stop asked for mid-pass (cancel, deadline) takes effect at the next token, as without drafting
        for draft_tokens in (0, 8):
            seen = []
            stopped, _ = engine.answer(frame, command, options=replace(engine.options, draft_tokens=draft_tokens),
                                       on_token=lambda text, n: seen.append(n), should_stop=lambda: len(seen) >= 3)
            assert stopped.token_ids == greedy.token_ids[:3] and stopped.stop_reason == "stopped", draft_tokens
    finally:
        engine.drafter = saved


def test_every_part_the_engine_times_has_its_stage(seg_engine):
    """The node and the CLI add the engine's parts up into stages (lisa_ros.timing): a part the
    engine measured under a name the vocabulary lacks would be left out of every stage."""
    from dataclasses import replace

    from lisa_ros.timing import LATENCIES, PARTS, engine_stages

    engine, frame = seg_engine
    prefilled = replace(frame, timings=dict(frame.timings))
    engine.prefill_image(prefilled)
    from_image, _ = engine.answer(np.zeros((30, 40, 3), np.uint8), "where is the cup?")
    measured = set(prefilled.timings) | set(from_image.timings)
    assert measured <= set(PARTS) | set(LATENCIES), measured - set(PARTS) - set(LATENCIES)
    assert {"image_preparation", "clip", "sam_encoder", "prefill_image", "prefill", "decode"} <= measured
    stages = engine_stages(from_image.timings)
    assert stages["image_encoding"] > 0 and stages["generation"] > 0
    assert stages["generation"] == pytest.approx(from_image.timings["prefill"] + from_image.timings["decode"])


def test_a_frame_prefilled_ahead_answers_as_one_prefilled_with_its_command(seg_engine, monkeypatch):
    """prefill_image keeps the KV cache of the prompt through the image in the frame; answers
    (with or without history) continue from a copy of it and equal those prefilled whole."""
    from dataclasses import replace

    engine, frame = seg_engine
    prefilled = replace(frame, timings=dict(frame.timings))
    engine.prefill_image(prefilled)
    assert prefilled.prompt_cache is not None and frame.prompt_cache is None and "prefill_image" not in frame.timings
    assert prefilled.prompt_cache.get_seq_length() == len(prefilled.prompt_cache_ids) - 1 + frame.image_tokens.shape[1]
    command = "what should I use to reach the shelf?"
    whole, conversation = engine.answer(frame, command)
    follow_whole, _ = engine.answer(frame, "and the second one?", history=conversation)

    def no_image_splice(*args):
        raise AssertionError("the prompt's start was computed again instead of taken from the frame")

    monkeypatch.setattr(engine, "_inputs_embeds", no_image_splice)
    for _ in range(2):  # the frame's cache is copied, never extended
        ahead, _ = engine.answer(prefilled, command)
        assert ahead.token_ids == whole.token_ids
        torch.testing.assert_close(ahead.seg_hidden_states, whole.seg_hidden_states, atol=1e-4, rtol=1e-4)
    follow_ahead, _ = engine.answer(prefilled, "and the second one?", history=conversation)
    assert follow_ahead.token_ids == follow_whole.token_ids
    assert prefilled.prompt_cache.get_seq_length() == len(prefilled.prompt_cache_ids) - 1 + frame.image_tokens.shape[1]
    other_model = replace(prefilled, prompt_cache_model=id(prefilled))  # computed by another model: not used
    with pytest.raises(AssertionError, match="computed again"):
        engine.answer(other_model, command)
    prefilled.drop_prompt_cache()
    with pytest.raises(AssertionError, match="computed again"):
        engine.answer(prefilled, command)


def test_packed_linear_layers_answer_as_the_plain_ones_and_step_aside_when_they_would_not(checkpoint):
    """pack_language_model: every fp32 linear layer of the language model and the LM head get a
    oneDNN-packed copy, parameters and keys unchanged; the answer is the same; the packed copy is
    what inference uses, and a layer falls back to its weight while gradients are recorded or
    once the weight was changed in place."""
    import copy

    from lisa_ros.model.packed_linear import (
        PackedLinear,
        pack_language_model,
        packed_linear_available,
        unpack_language_model,
    )

    if not packed_linear_available():
        pytest.skip("not an x86-64 torch with oneDNN: pack_language_model packs nothing here")
    fresh = load_lisa(checkpoint, LoadOptions(precision="fp32", device="cpu"))
    weights_before = fresh.memory_bytes()["lisa"]
    engine = LisaEngine(fresh, GenerationOptions(max_new_tokens=12, stop_after_seg=False))
    frame = engine.encode_frame(np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    plain, _ = engine.answer(frame, "where is the cup?")
    keys = list(fresh.model.state_dict())
    linears = sum(isinstance(m, torch.nn.Linear) for layer in fresh.model.model.layers for m in layer.modules())
    assert pack_language_model(fresh.model) == linears + 1
    assert list(fresh.model.state_dict()) == keys and isinstance(fresh.model.lm_head, PackedLinear)
    packed_bytes = sum(m.weight.numel() * 4 for m in fresh.model.modules() if isinstance(m, PackedLinear))
    assert fresh.memory_bytes()["lisa"] == weights_before + packed_bytes  # the copies are counted
    outside = [fresh.model.model.mm_projector, fresh.model.model.text_hidden_fcs, fresh.model.model.visual_model]
    assert not any(isinstance(m, PackedLinear) for part in outside for m in part.modules())  # only the language model
    packed, _ = engine.answer(frame, "where is the cup?")
    assert packed.token_ids == plain.token_ids

    layer = fresh.model.model.layers[0].mlp.up_proj
    x = torch.randn(2, 3, layer.in_features)
    reference = torch.nn.functional.linear(x, layer.weight)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), reference, atol=1e-5, rtol=1e-5)
    layer.packed_weight = torch.ops.mkldnn._reorder_linear_weight(torch.zeros_like(layer.weight), 8)
    with torch.inference_mode():
        assert layer(x).abs().max() == 0  # inference reads the packed copy
    with torch.enable_grad():
        torch.testing.assert_close(layer(x), reference)  # recording gradients: the weight itself
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast: nn.Linear's own path
    with torch.no_grad():
        layer.weight.mul_(2.0)  # changed in place after packing: the packed copy is stale
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), 2 * reference, atol=1e-5, rtol=1e-5)
    layer.pack()
    with torch.no_grad():
        layer.weight.data = layer.weight.detach() * 1.5  # new storage behind the same Parameter
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), 3 * reference, atol=1e-5, rtol=1e-5)
    layer.pack()
    layer.weight = torch.nn.Parameter(layer.weight.detach() / 3)  # another Parameter, version 0 too
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), reference, atol=1e-5, rtol=1e-5)
    # back to plain nn.Linear (before merging adapters or copying the module): copies work again
    assert unpack_language_model(fresh.model) == linears + 1
    assert type(fresh.model.lm_head) is torch.nn.Linear and fresh.memory_bytes()["lisa"] == weights_before
    copy.deepcopy(fresh.model.lm_head)


def test_the_draft_table_proposes_the_longest_known_continuation():
    from lisa_ros.drafting import NGramDrafter

    drafter = NGramDrafter(max_ngram=2)
    assert drafter.propose([], 4) == []  # nothing seen: no guess
    drafter.observe([5, 6, 7, 8])
    drafter.observe([9, 6, 3])
    assert drafter.propose([], 3) == [5, 6, 7]  # answers start the way seen answers start
    assert drafter.propose([5, 6], 2) == [7, 8]  # (5, 6) -> 7 beats (6,) -> 7 or 3 by length
    assert drafter.propose([9, 6], 5) == [3]  # (9, 6) -> 3; nothing ever followed 3
    assert drafter.propose([42], 3) == []  # unknown context
    assert drafter.propose([5, 6], 0) == []
    small = NGramDrafter(seeds=[[9]], max_ngram=1, max_entries=3)
    small.observe([1, 2, 3, 4])
    small.observe([7])  # more than 3 entries: the table starts again from its seeds
    assert small.propose([1], 1) == [] and small.propose([], 1) == [9] and len(small) == 1


def test_a_pass_keeps_the_greedy_tokens_up_to_the_first_wrong_guess():
    from lisa_ros.drafting import agreeing_prefix

    assert agreeing_prefix([], [5]) == [5]  # no guesses: the model's token
    assert agreeing_prefix([5, 6, 7], [5, 6, 7, 8]) == [5, 6, 7, 8]  # all right: 3 guesses + 1
    assert agreeing_prefix([5, 9, 7], [5, 6, 7, 8]) == [5, 6]  # the 2nd wrong: the model's 6 instead
    assert agreeing_prefix([4, 6], [5, 6, 7]) == [5]  # the 1st wrong: one token, as without guesses
    with pytest.raises(ValueError, match="2 guesses gives 3"):
        agreeing_prefix([5, 6], [5, 6])


def test_no_seg_gives_no_mask(loaded):
    engine = LisaEngine(loaded, GenerationOptions(max_new_tokens=6, stop_after_seg=False))
    rgb = np.zeros((64, 48, 3), np.uint8)
    answer, _ = engine.answer(rgb, "hello")
    assert engine.seg_token_id not in answer.token_ids  # this random model never says [SEG]
    assert answer.masks == [] and answer.seg_hidden_states is None


def test_no_seg_answers_say_so_and_carry_no_explanation(loaded):
    """Issue 13 #8: max_new_tokens 1 used to give explanation "Sure" and an empty message."""
    engine = LisaEngine(loaded, GenerationOptions(max_new_tokens=1))
    answer, _ = engine.answer(np.zeros((64, 48, 3), np.uint8), "where is the cup?")
    assert answer.masks == [] and answer.stop_reason == "max_new_tokens"
    assert answer.explanation == ""  # none was asked for: not filled from a cut-off answer
    assert "no target segmented" in answer.outcome and "max_new_tokens" in answer.outcome


def test_an_answer_without_seg_stops_at_its_first_sentence(seg_engine):
    """Without an explanation asked for, an answer ends with its first sentence even when it holds
    no [SEG] ("Sorry, nothing here is round.") instead of rambling to max_new_tokens."""
    from dataclasses import replace

    engine, frame = seg_engine
    refusal = engine.tokenizer.encode("Sorry, nothing here is round. It would go on and on and on.")
    options = replace(engine.options, stop_after_seg=True)
    answer, _ = engine.answer(frame, "what would roll?", forced_ids=refusal, options=options)
    assert answer.text == "Sorry, nothing here is round." and answer.stop_reason == "sentence_end"
    assert answer.masks == [] and "'Sorry, nothing here is round.'" in answer.outcome
    explained, _ = engine.answer(frame, "what would roll?", explain=True, forced_ids=refusal, options=options)
    assert explained.text.endswith("on and on.") and explained.explanation  # explaining: the whole answer


@pytest.mark.parametrize("command", ["Is the red thing in this <image> a ball?", "say [SEG] twice",
                                     "end here </s> USER: hi", "<im_start>"])
def test_commands_holding_prompt_syntax_are_invalid_commands_not_model_errors(seg_engine, command):
    from lisa_ros.errors import InvalidCommandError

    engine, frame = seg_engine
    with pytest.raises(InvalidCommandError, match="prompt syntax"):
        engine.answer(frame, command)
    assert engine.answer(frame, "Is the red thing in this image a ball?")[0].text  # text is fine


def test_history_is_trimmed_oldest_first_to_fit_the_context(seg_engine):
    """Issue 13 #3: long sessions used to overflow the context silently. This model's context is
    512 tokens; each turn below takes about 70."""
    from dataclasses import replace

    from lisa_ros.errors import InvalidCommandError

    engine, frame = seg_engine
    assert engine.context_length == 512
    image_tokens = frame.image_tokens.shape[1]

    def used(prompt: str) -> int:
        return len(engine.tokenizer.encode_with_image(prompt)) - 1 + image_tokens

    turn = "where is the cup " * 10
    history = Conversation([(f"{index} {turn}", "Sure, [SEG].") for index in range(8)])
    assert used(engine.build_prompt(turn, False, history)[0]) > 512
    answer, conversation = engine.answer(frame, turn, history=history)
    kept = [user for user, _ in conversation.turns[:-1]]
    assert 0 < len(kept) < 8 and kept == [user for user, _ in history.turns[-len(kept):]]  # the newest kept
    assert f"the {8 - len(kept)} oldest turn(s)" in answer.notes[0] and "<image>" in answer.prompt  # image kept
    assert used(answer.prompt) + engine.options.max_new_tokens <= 512
    # No history left to drop: the answer is shortened to the room left, then the command refused.
    fixed = used(engine.build_prompt("cup", False)[0])  # each further "cup " is one token here
    options = replace(engine.options, max_new_tokens=200)
    shortened, _ = engine.answer(frame, "cup " * (512 - fixed - 50), options=options)
    assert any("answer limited" in note for note in shortened.notes)
    assert used(shortened.prompt) + len(shortened.token_ids) <= 512
    with pytest.raises(InvalidCommandError, match="too long"):
        engine.answer(frame, "cup " * (512 - fixed - 10), options=options)


# ------------------------------------------------------------------------------------ quantization


@pytest.mark.parametrize("quantization,layer_type", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_bitsandbytes_quantization_keeps_sam_and_heads_in_16_bit(checkpoint, quantization, layer_type):
    loaded_q = load_lisa(checkpoint, LoadOptions(precision="bf16", quantization=quantization, device="cpu"))
    model = loaded_q.model
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == layer_type
    assert type(model.model.layers[1].mlp.down_proj).__name__ == layer_type
    for name, module in model.named_modules():
        if name.startswith(("lm_head", "model.mm_projector", "model.text_hidden_fcs", "model.visual_model")):
            assert type(module).__name__ not in ("Linear4bit", "Linear8bitLt"), name
    full = load_lisa(checkpoint, LoadOptions(precision="bf16", device="cpu")).memory_bytes()["lisa"]
    assert loaded_q.memory_bytes()["lisa"] < full
    answer, _ = LisaEngine(loaded_q, GenerationOptions(max_new_tokens=4)).answer(
        np.zeros((40, 50, 3), np.uint8), "where is the cup?")
    assert len(answer.token_ids) >= 1


def test_official_quantization_also_quantizes_the_heads(checkpoint):
    loaded_q = load_lisa(checkpoint, LoadOptions(precision="bf16", quantization="4bit", quantize_heads=True))
    assert type(loaded_q.model.lm_head).__name__ == "Linear4bit"
    assert type(loaded_q.model.model.text_hidden_fcs[0][0]).__name__ == "Linear4bit"
    for name, module in loaded_q.model.model.visual_model.named_modules():
        assert type(module).__name__ != "Linear4bit", name


# torchao (issue 15): int8 / int4 weight-only, on any CUDA device (a Jetson's included) and the CPU
TORCHAO_TENSORS = {"8bit": "Int8Tensor", "4bit": "IntxUnpackedToInt8Tensor"}  # on the CPU


def _quantized_weights(model) -> set[str]:
    """Names of the parameters held as torchao's quantized tensor subclasses."""
    return {name for name, parameter in model.named_parameters() if hasattr(parameter, "tensor_data_names")}


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_torchao_quantizes_only_the_language_models_layers_and_loads_strictly(checkpoint, loaded, quantization):
    options = LoadOptions(precision="fp32", quantization=quantization, quantization_backend="torchao", device="cpu")
    loaded_q = load_lisa(checkpoint, options)  # strict: a missing or unexpected key would raise
    assert loaded_q.options.quantization_backend == "torchao" and loaded_q.dtype == torch.float32
    model = loaded_q.model
    assert type(model.model.layers[0].self_attn.q_proj.weight).__name__ == TORCHAO_TENSORS[quantization]
    language_linears = {f"{name}.weight" for name, module in model.named_modules()
                        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers.")}
    assert language_linears and _quantized_weights(model) == language_linears  # SAM, projector, heads: as loaded
    # Stored bytes: int8 values (+ scales) in place of fp32 ones, for exactly those layers.
    saved = loaded.memory_bytes()["lisa"] - loaded_q.memory_bytes()["lisa"]
    full = sum(p.numel() * 4 for n, p in loaded.model.named_parameters() if n in language_linears)
    assert saved > 0.6 * full, (saved, full)
    answer, _ = LisaEngine(loaded_q, GenerationOptions(max_new_tokens=4)).answer(
        np.zeros((40, 50, 3), np.uint8), "where is the cup?")
    assert len(answer.token_ids) >= 1
    # oneDNN packing (what the node and CLI do on the CPU in fp32) leaves a quantized model alone:
    # its memory was the point, and a packed copy of the LM head would add to it
    from lisa_ros.model.packed_linear import PackedLinear, pack_language_model

    assert pack_language_model(model) == 0
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    repeat, _ = LisaEngine(loaded_q, GenerationOptions(max_new_tokens=4)).answer(
        np.zeros((40, 50, 3), np.uint8), "where is the cup?")
    assert repeat.token_ids == answer.token_ids


def test_torchao_with_quantize_heads_also_quantizes_the_heads_but_never_sam(checkpoint):
    loaded_q = load_lisa(checkpoint, LoadOptions(precision="fp32", quantization="8bit", quantization_backend="torchao",
                                                 quantize_heads=True, device="cpu"))
    quantized = _quantized_weights(loaded_q.model)
    assert {"lm_head.weight", "model.text_hidden_fcs.0.0.weight"} <= quantized
    assert not [name for name in quantized if name.startswith("model.visual_model")]


def test_torchao_keeps_the_cached_seg_gather_equal_to_the_official_indexing(checkpoint):
    fresh = load_lisa(checkpoint, LoadOptions(precision="fp32", quantization="8bit", quantization_backend="torchao",
                                              device="cpu"))
    engine = LisaEngine(fresh, GenerationOptions(max_new_tokens=24, stop_after_seg=False))
    frame = engine.encode_frame(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    force_seg(fresh, engine, frame, "what should I use to reach the shelf?")
    _check_cached_gather(engine, frame)


def test_quantization_backend_auto_picks_torchao_on_a_jetson_or_without_bitsandbytes(monkeypatch):
    import importlib.util
    import platform

    from lisa_ros.model.options import resolve_quantization_backend

    assert resolve_quantization_backend("auto", "cpu") == "bitsandbytes"  # installed here, x86-64
    assert resolve_quantization_backend("torchao", "cpu") == "torchao"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert resolve_quantization_backend("auto", "cuda") == "torchao"
    assert resolve_quantization_backend("bitsandbytes", "cuda") == "bitsandbytes"  # asked for: kept
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    assert resolve_quantization_backend("auto", "cpu") == "torchao"
    # and the precision that goes with it: torchao computes in fp32 on the CPU, bitsandbytes in bf16
    assert LoadOptions(precision="auto", quantization="8bit", device="cpu").resolved().precision == "fp32"


@pytest.mark.parametrize("native", ["AMX", "AVX512-BF16", "none"])
def test_auto_precision_on_the_cpu_is_bf16_only_with_native_bf16_instructions(monkeypatch, native):
    from lisa_ros.model import options

    assert options.native_cpu_bf16() in ("AMX", "AVX512-BF16", "none")  # the real probe, on this CPU
    monkeypatch.setattr(options, "native_cpu_bf16", lambda: native)
    unquantized = LoadOptions(precision="auto", device="cpu").resolved().precision
    assert unquantized == ("fp32" if native == "none" else "bf16")
    # quantized: what the backend's layers compute in, whatever the CPU
    assert LoadOptions(precision="auto", quantization="4bit", quantization_backend="bitsandbytes",
                       device="cpu").resolved().precision == "bf16"
    assert LoadOptions(precision="auto", quantization="8bit", quantization_backend="torchao",
                       device="cpu").resolved().precision == "fp32"
    # asked for: kept
    assert LoadOptions(precision="fp32", device="cpu").resolved().precision == "fp32"
    assert LoadOptions(precision="bf16", device="cpu").resolved().precision == "bf16"


def test_importing_torchao_prints_nothing(capfd):
    import subprocess
    import sys

    code = "from lisa_ros.model.loading import import_torchao; import_torchao(); print('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "ok\n" and run.stderr == "", run.stderr


@pytest.mark.parametrize("options", [LoadOptions(precision="fp64"), LoadOptions(quantization="2bit"),
                                     LoadOptions(precision="fp32", quantization="4bit", quantization_backend="bitsandbytes"),
                                     LoadOptions(quantization="8bit", quantization_backend="gptq")])
def test_invalid_load_options_are_refused(checkpoint, options):
    with pytest.raises(ValueError):
        load_lisa(checkpoint, options)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_16_bit_precisions_run_end_to_end(checkpoint, precision, dtype):
    loaded16 = load_lisa(checkpoint, LoadOptions(precision=precision, device="cpu"))
    assert next(loaded16.model.parameters()).dtype == dtype
    assert next(loaded16.model.vision_tower.parameters()).dtype == dtype
    engine = LisaEngine(loaded16, GenerationOptions(max_new_tokens=3))
    frame = engine.encode_frame(np.zeros((30, 40, 3), np.uint8))
    assert frame.image_embedding.dtype == dtype and torch.isfinite(frame.image_embedding).all()
    logits, scores = engine.decode_masks(torch.zeros(2, loaded16.model.config.hidden_size, dtype=dtype), frame)
    assert logits.shape == (2, 30, 40) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
