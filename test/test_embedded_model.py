"""The embedded default model: assembly from the registry packages, its tokenizer, and the node
end to end on held-out scenes.

The end-to-end test sends held-out reasoning scenes (test split: seed and phrasings never used in
training) to the node, whose default model this is, as explicit images in several encodings and
sizes. It requires the answers the ROS-free engine gives in-process, and a gIoU against the
ground truth that the model really reaches (training/README.md): a swapped colour channel, a
wrong [SEG] position or a resize/padding slip drops it below the floor.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lisa_ros.errors import CheckpointError
from lisa_ros.model.delta import DELTA_FILE, apply_delta, delta_from_trainable
from lisa_ros.model.embedded import ADDED_TOKENS, embedded_checkpoint
from lisa_ros.model.tokenization import IMAGE_TOKEN_INDEX, SEG_TOKEN, ByteLevelLisaTokenizer, load_tokenizer

E2E_SCENES = 15  # one of each query type
E2E_TOKENS = 64  # a three-target answer takes about 40 tokens
# Measured with the shipped (tenth-run) delta on these 15 scenes in bf16 ("auto" on an AMD EPYC with
# AVX512-BF16, 2026-12-07): gIoU 0.889, the 5 referring scenes 0.931, the several-target scenes' 8
# targets 0.763 matched IoU (the ninth run's delta: 0.755, 0.932, 0.529). The margins let one scene
# answer differently in the other precision (fp32 on a CPU without bf16 instructions): one wrong
# scene of 15 costs about 0.06 of gIoU, one wrong referring scene 0.19, one missing target 0.12.
# The eighth run's delta, which answered plain commands with text, reached 0.835 on the first 12
# scenes of the six reasoning types; breaking the node (BGR into SAM, top-left padding, [SEG]
# gathered one early) gave 0.447, 0.068 and 0.562 there.
GIOU_FLOOR = 0.78
REFERRING_FLOOR = 0.72
SEVERAL_FLOOR = 0.60


@pytest.fixture(scope="module")
def folder():
    return embedded_checkpoint()


# ---------------------------------------------------------------------------------- assembly
def test_delta_merges_lora_rows_and_whole_tensors():
    base = {"layer.weight": torch.zeros(3, 2), "model.embed_tokens.weight": torch.zeros(5, 2),
            "head.bias": torch.zeros(3)}
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [0.0], [-1.0]])
    trainable = {"base_model.model.layer.lora_A.default.weight": a,
                 "base_model.model.layer.lora_B.default.weight": b,
                 "base_model.model.model.embed_tokens.weight": torch.arange(10.0).view(5, 2),
                 "base_model.model.head.bias": torch.ones(3)}
    tensors, metadata = delta_from_trainable(trainable, lora_scale=2.0, rows=[3, 4])
    assert set(tensors) == {"lora.layer.A", "lora.layer.B", "rows.model.embed_tokens.weight", "full.head.bias"}
    apply_delta(base, tensors, metadata)
    assert torch.equal(base["layer.weight"], 2.0 * b @ a)
    assert torch.equal(base["model.embed_tokens.weight"][:3], torch.zeros(3, 2))  # untouched rows
    assert torch.equal(base["model.embed_tokens.weight"][3:], torch.arange(6.0, 10.0).view(2, 2))
    assert torch.equal(base["head.bias"], torch.ones(3))


def test_two_deltas_average_entry_by_entry_and_through_the_cli(tmp_path):
    """``lisa-ros embedded average``: the shipped delta is such an average (training/README.md)."""
    from lisa_ros.model.delta import average_deltas, read_delta, write_delta

    pair_a, pair_b = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [0.0], [-1.0]])
    first = ({"lora.layer.A": pair_a, "lora.layer.B": pair_b, "full.head.bias": torch.full((3,), 2.0)},
             {"lora_scale": "2.0", "rows": "[3, 4]", "trained_steps": "1000"})
    second = ({"lora.layer.A": pair_a + 0.25, "lora.layer.B": pair_b - 0.5, "full.head.bias": torch.full((3,), 4.0)},
              {"lora_scale": "2.0", "rows": "[3, 4]", "trained_steps": "1000"})
    tensors, metadata = average_deltas(first, second, 0.75)
    assert torch.equal(tensors["lora.layer.A"], (pair_a + 0.1875).half())
    assert torch.equal(tensors["lora.layer.B"], (pair_b - 0.375).half())
    assert torch.equal(tensors["full.head.bias"], torch.full((3,), 3.5, dtype=torch.float16))
    merged = {"layer.weight": torch.zeros(3, 2), "head.bias": torch.zeros(3)}  # the pair merges as one update
    apply_delta(merged, tensors, metadata)
    assert torch.allclose(merged["layer.weight"], 2.0 * (pair_b - 0.375) @ (pair_a + 0.1875), atol=1e-3)
    assert metadata["lora_scale"] == "2.0" and metadata["rows"] == "[3, 4]"
    assert json.loads(metadata["averaged"])["weight_of_second"] == 0.75
    for other, problem in (({**second[1], "rows": "[3]"}, "rows"), ({**second[1], "lora_scale": "1.0"}, "lora_scale")):
        with pytest.raises(CheckpointError, match=problem):
            average_deltas(first, (second[0], other), 0.5)
    with pytest.raises(CheckpointError, match="shape"):
        average_deltas(first, ({**second[0], "full.head.bias": torch.zeros(4)}, second[1]), 0.5)
    with pytest.raises(CheckpointError, match="other entries"):
        average_deltas(first, ({"lora.layer.A": pair_a, "lora.layer.B": pair_b}, second[1]), 0.5)

    paths = [write_delta(tmp_path / f"{name}.safetensors", *delta) for name, delta in (("a", first), ("b", second))]
    lisa_ros = str(Path(sys.executable).parent / "lisa-ros")
    run = subprocess.run([lisa_ros, "embedded", "average", *map(str, paths), "--weight", "0.75", "--out",
                          str(tmp_path / "avg.safetensors")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    written, _ = read_delta(tmp_path / "avg.safetensors")
    assert all(torch.equal(written[key], tensors[key]) for key in tensors)
    bad = subprocess.run([lisa_ros, "embedded", "average", str(paths[0]), "--weight", "2", "--out", "x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "two delta files" in bad.stderr


def test_embedded_folder_is_a_released_layout_checkpoint_with_a_byte_level_tokenizer(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava" and config["train_mask_decoder"]
    assert config["mm_vision_source"] == "objects" and config["sam_config"]["encoder_type"] == "tiny_vit"
    assert (folder / "pytorch_model.bin.index.json").is_file() and (folder / "tokenizer.json").is_file()
    tokenizer = load_tokenizer(folder)
    assert isinstance(tokenizer, ByteLevelLisaTokenizer)
    assert len(tokenizer) == config["vocab_size"]
    assert [tokenizer.token_id(t) for t in ADDED_TOKENS] == [config["vocab_size"] - 3 + i for i in range(3)]


def test_image_tokens_start_as_the_language_models_embeddings_of_the_visual_words():
    """The untrained base: the projector's word columns are the embedding rows of " red", " ball"...,
    so the language model reads object phrases as text from the first training step."""
    from lisa_ros.model.objects import VISUAL_WORDS

    base = embedded_checkpoint(trained=False)
    index = json.loads((base / "pytorch_model.bin.index.json").read_text())["weight_map"]
    state = {}
    for key in ("model.mm_projector.weight", "model.embed_tokens.weight"):
        state[key] = torch.load(base / index[key], weights_only=True)[key]
    tokenizer = load_tokenizer(base)
    ids = [tokenizer.encode(word if word == "," else " " + word) for word in VISUAL_WORDS]
    assert all(len(i) == 1 for i in ids)
    torch.testing.assert_close(state["model.mm_projector.weight"][:, :len(VISUAL_WORDS)].T,
                               state["model.embed_tokens.weight"][[i[0] for i in ids]])


def test_byte_level_tokenizer_follows_the_training_rules(folder):
    tokenizer = load_tokenizer(folder)
    seg = tokenizer.seg_token_id
    ids = tokenizer.encode("Sure, [SEG].")
    assert ids[-2] == seg and tokenizer.decode([ids[-3]]) == ","  # the space before [SEG] is stripped
    assert tokenizer.decode(ids) == "Sure, [SEG]."
    several = "they are the red ball on the left [SEG], the cup [SEG] and the star [SEG]."
    assert tokenizer.decode(tokenizer.encode(several)) == several  # "[SEG] and", not "[SEG]and"
    assert tokenizer.encode("a</s>")[-1] == tokenizer.eos_token_id  # the template's </s> is the model's EOS
    prompt = tokenizer.encode_with_image("USER: <im_start><image><im_end>\nWhat rolls? ASSISTANT:")
    assert prompt[0] == tokenizer.bos_token_id and prompt.count(IMAGE_TOKEN_INDEX) == 1
    at = prompt.index(IMAGE_TOKEN_INDEX)
    assert prompt[at - 1] == tokenizer.token_id("<im_start>") and prompt[at + 1] == tokenizer.token_id("<im_end>")
    assert SEG_TOKEN in tokenizer.decode([seg])


def test_trained_weights_differ_from_the_base_exactly_where_the_delta_says(folder):
    from safetensors import safe_open

    base = embedded_checkpoint(trained=False)
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())["weight_map"]
    key = "model.layers.0.self_attn.q_proj.weight"
    trained = torch.load(folder / index[key], weights_only=True)[key]
    original = torch.load(base / index[key], weights_only=True)[key]
    with safe_open(str(DELTA_FILE), "pt") as handle:
        a = handle.get_tensor("lora.model.layers.0.self_attn.q_proj.A").float()
        b = handle.get_tensor("lora.model.layers.0.self_attn.q_proj.B").float()
        scale = float(handle.metadata()["lora_scale"])
    assert torch.allclose(trained, original + scale * b @ a, atol=1e-6)
    assert not torch.allclose(trained, original)


def test_the_shipped_object_encoder_finds_held_out_objects_with_their_colour_and_shape(folder):
    """The object encoder in the delta (training stage 1) on 48 held-out test scenes: the image
    tokens the language model reads are right (the full run measured 0.97 found, colour 1.00 and
    shape 0.995 of those on val)."""
    from lisa_ros.data.reasonseg import read_reasonseg
    from lisa_ros.data.scenes import SPLIT_SEEDS, write_split
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions
    import tempfile

    from lisa_ros.train.object_encoder import evaluate_encoder, load_split

    model = load_lisa("embedded", LoadOptions(precision="fp32", device="cpu")).model
    sam = model.config.sam
    with tempfile.TemporaryDirectory() as tmp:
        samples = read_reasonseg(write_split(Path(tmp) / "test", "test", 48, SPLIT_SEEDS["test"]))
        pixels, objects = load_split(samples, sam.image_size, sam.pixel_mean, sam.pixel_std, progress=False)
    report = evaluate_encoder(model.model.mm_object_encoder, pixels.float(), objects, model.config.mm_max_objects)
    assert report["found"] >= 0.9 and report["colour"] >= 0.95 and report["shape"] >= 0.95, report  # found 0.945 here


# ------------------------------------------------------------------------ end to end through the node
def _held_out_scenes(tmp_path_factory):
    from lisa_ros.data.reasonseg import read_reasonseg
    from lisa_ros.data.scenes import SPLIT_SEEDS, write_split

    folder = write_split(tmp_path_factory.mktemp("scenes") / "test", "test", E2E_SCENES, SPLIT_SEEDS["test"])
    return read_reasonseg(folder)


def _variant(rgb: np.ndarray, index: int):
    """(image message, the RGB the model should see): rgb8, bgr8 and an upscaled 640x480 frame in turn."""
    from lisa_ros.ros.conversions import numpy_to_image

    kind = index % 3
    if kind == 2:  # another size than training used: exercises resize, padding and mask upsampling
        rgb = cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_LINEAR)
    if kind == 1:
        return numpy_to_image(np.ascontiguousarray(rgb[..., ::-1]), "bgr8"), rgb
    return numpy_to_image(rgb, "rgb8"), rgb


def _turns(sample) -> list[str]:
    """The commands of a held-out sample: a follow-up's session first command, then its own."""
    first = [asked.removesuffix(" Please output segmentation mask.") for asked, _ in sample.history or []]
    return first + [sample.texts[0]]


@pytest.mark.ros
def test_node_answers_held_out_scenes_exactly_as_the_engine_does(ros_domain, spawn, tmp_path_factory, folder):
    """The node (default model parameter = the embedded model) against the ROS-free engine on the
    same held-out scenes, one of each query type: same answer text and the same masks, whatever
    the image encoding or size, a follow-up asked in the same session after its first command.
    A channel swap or a size/padding slip in the node's conversions changes the masks. The masks
    against the ground truth: floors the model reaches overall, on the referring commands, and
    per target on the several-target commands."""
    from lisa_ros.engine import LisaEngine
    from lisa_ros.evaluate.metrics import intersection_union, match_masks, query_iou
    from lisa_ros.engine import GenerationOptions
    from lisa_ros.model.options import LoadOptions
    from lisa_ros.data.scenes import REFERRING_TYPES, SEVERAL_TYPES
    from lisa_ros.msg import Status
    from lisa_ros.ros.conversions import image_to_numpy
    from lisa_ros.srv import ReasonSegment

    samples = _held_out_scenes(tmp_path_factory)
    # precision "auto", as the node's default: bf16 on a CPU with native bf16, fp32 elsewhere;
    # loaded as the node loads it (LisaEngine.load: in fp32 the linear layers are packed)
    engine = LisaEngine.load("embedded", LoadOptions(precision="auto", device="cpu"),
                             GenerationOptions(max_new_tokens=E2E_TOKENS))
    expected = []
    for index, sample in enumerate(samples):
        _, rgb = _variant(sample.rgb(), index)
        history = None
        for command in _turns(sample):  # the last turn's answer is the sample's
            answer, history = engine.answer(rgb, command, history=history)
        expected.append((answer.text, [m.label for m in answer.masks], [m.mask for m in answer.masks]))
    del engine

    node, ask = _served_node(ros_domain, spawn, _variant(samples[0].rgb(), 0)[0])
    truth_ious, referring, several = [], [], []
    for index, (sample, (text, labels, masks)) in enumerate(zip(samples, expected)):
        message, rgb = _variant(sample.rgb(), index)
        session = ""
        for command in _turns(sample):
            response = ask(ReasonSegment.Request(command=command, image=message, session_id=session))
            session = response.result.session_id
        # an answer without [SEG] (the model says nothing fits) is NO_TARGET, one with masks OK
        assert response.result.status.code == (Status.OK if labels else Status.NO_TARGET), response.result.status.message
        assert response.result.answer == text, (index, message.encoding)
        assert [o.label for o in response.result.objects] == labels
        got = [image_to_numpy(o.mask) > 0 for o in response.result.objects]
        assert len(got) == len(masks)
        for mine, theirs in zip(got, masks):
            assert mine.shape == theirs.shape
            if mine.any() or theirs.any():
                assert query_iou(*intersection_union(mine, theirs)) > 0.98, (index, message.encoding, message.width)
        height, width = sample.rgb().shape[:2]
        resize = lambda mask: cv2.resize(mask.astype(np.uint8), (rgb.shape[1], rgb.shape[0]),  # noqa: E731
                                         interpolation=cv2.INTER_NEAREST)
        prediction = (np.logical_or.reduce(got) if sample.several_targets else got[0]) if got \
            else np.zeros(rgb.shape[:2], bool)
        truth_ious.append(query_iou(*intersection_union(prediction, resize(sample.target(height, width)))))
        if sample.query_type in REFERRING_TYPES:
            referring.append(truth_ious[-1])
        if sample.query_type in SEVERAL_TYPES:
            several += match_masks(got, [resize(m) > 0 for m in sample.target_masks(height, width)])[0]
    node.destroy_node()
    # The oracle: the node's masks against the ground truth of held-out scenes.
    giou = float(np.mean(truth_ious))
    print(f"\nnode on {len(truth_ious)} held-out scenes: gIoU {giou:.3f} (per scene {np.round(truth_ious, 2).tolist()}); "
          f"referring {np.mean(referring):.3f}, several targets: matched IoU per target {np.mean(several):.3f}")
    assert len(referring) == len(REFERRING_TYPES) and len(several) >= 2 * len(SEVERAL_TYPES)
    assert giou >= GIOU_FLOOR, truth_ious
    assert np.mean(referring) >= REFERRING_FLOOR, referring
    assert np.mean(several) >= SEVERAL_FLOOR, several


def _served_node(ros_domain, spawn, image, *parameters: str):
    """The node (``max_new_tokens`` E2E_TOKENS and ``parameters``) in its own process, once it
    serves: (client node, ask(request) -> response)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from lisa_ros.srv import ReasonSegment

    arguments = [item for parameter in (f"max_new_tokens:={E2E_TOKENS}", *parameters) for item in ("-p", parameter)]
    spawn(ros_domain, "lisa_node_with_faults.py", "--ros-args", *arguments, ready_timeout=120)
    ctx = ros_domain.context()
    node = rclpy.create_node("e2e_client", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    client = node.create_client(ReasonSegment, "/lisa_ros/reason_segment")
    assert client.wait_for_service(timeout_sec=120)

    def ask(request):
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=180)
        assert future.done(), "no answer in time"
        return future.result()

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # until configured (the model loads in the background)
        response = ask(ReasonSegment.Request(command="ping", image=image))
        if response.result.status.code != response.result.status.NOT_READY:
            return node, ask
        time.sleep(1.0)
    raise AssertionError(f"the node did not configure in time: {response.result.status.message}")


def _model_diagnostics(ros_domain) -> dict[str, str]:
    """The values of the served node's model status on /diagnostics (the next array published)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    arrays = []
    node = rclpy.create_node("diagnostics_client", context=ros_domain.context())
    node.create_subscription(DiagnosticArray, "/diagnostics", arrays.append, 10)
    executor = SingleThreadedExecutor(context=ros_domain.context())
    executor.add_node(node)
    deadline = time.monotonic() + 10
    while not arrays and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.2)
    executor.remove_node(node)
    node.destroy_node()
    assert arrays, "no /diagnostics within 10 s"
    status = next(s for s in arrays[-1].status if s.name.endswith(": model"))
    return {value.key: value.value for value in status.values}


# ------------------------------------------------------------------- torchao on the CPU (issue 15)
TORCHAO_SCENES = 6  # one of each query type
# torchao int8 weight-only (fp32 compute) against fp32, measured with the shipped delta on the
# first 12 held-out test scenes (torch 2.13 + torchao 0.18, CPU; the same computations as this
# test). The averaged delta (2026-12-07): the first answer token's largest |logit difference|
# 0.502 of the fp32 logits' std on one scene (0.26..0.36 on the 11 others), the same first token
# on 12 of 12; masks with fp32's answer forced through both (the [SEG] state of the same tokens)
# IoU mean 0.996, min 0.987; answering freely, int8 gives fp32's answer text on 12 of 12. (The
# tenth run's delta, 2026-12-01: logits 0.403 at most, the bound was 0.5; forced IoU 0.995, min
# 0.964; same answers 9 of 12, 4 of the first 6.) The bounds keep the same margin over what the
# shipped delta measures: ~1.25x its largest logit difference, one answer fewer than measured.
# int4 (groups of 32) on this 135M model is not close (tenth delta: logits 3.7, forced-answer mask
# IoU mean 0.894, min 0.61, 4 of 12 answers unchanged; docs/MODEL_CORE.md, "Quantization on a
# Jetson (torchao)"); it is tested on the tiny checkpoint (test_model.py), not held to fp32 here.
TORCHAO_LOGIT_BOUND = 0.63  # max |logit difference| / std of the fp32 logits (measured 0.502)
TORCHAO_MASK_IOU = 0.95  # mean IoU of the masks from fp32's answer, forced through both (measured 0.996)
TORCHAO_SAME_ANSWERS = 5  # of TORCHAO_SCENES free answers equal to fp32's (measured 6)


def _torchao_options(quantization: str):
    from lisa_ros.model.options import LoadOptions

    return LoadOptions(precision="fp32", quantization=quantization, quantization_backend="torchao", device="cpu")


def test_torchao_int8_keeps_the_embedded_models_logits_and_masks_close_to_fp32(tmp_path_factory, folder):
    """torchao int8 weight-only (the language model's layers; SAM, projector and heads as trained)
    against fp32 on held-out scenes: the first answer token's logits within TORCHAO_LOGIT_BOUND of
    the fp32 logits' spread and the same first token; with fp32's answer forced through both
    models, the masks decoded from the [SEG] states of mean IoU >= TORCHAO_MASK_IOU; answering
    freely, at least TORCHAO_SAME_ANSWERS answers equal to fp32's."""
    quantization = "8bit"
    from lisa_ros.engine import GenerationOptions, LisaEngine
    from lisa_ros.evaluate.metrics import intersection_union, query_iou
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions

    samples = _held_out_scenes(tmp_path_factory)[:TORCHAO_SCENES]
    full = LisaEngine(load_lisa("embedded", LoadOptions(precision="fp32", device="cpu")), GenerationOptions(max_new_tokens=48))
    quantized = LisaEngine(load_lisa("embedded", _torchao_options(quantization)), GenerationOptions(max_new_tokens=48))
    spreads, ious, same, lines = [], [], 0, []
    for sample in samples:
        rgb = sample.rgb()
        frames = full.encode_frame(rgb), quantized.encode_frame(rgb)
        prompt, _ = full.build_prompt(sample.texts[0], explain=False)
        ids = full.tokenizer.encode_with_image(prompt)
        reference, logits = full.next_token_logits(frames[0], ids), quantized.next_token_logits(frames[1], ids)
        assert int(logits.argmax()) == int(reference.argmax())
        spreads.append(float((logits - reference).abs().max() / reference.std()))
        (expected, _), (got, _) = full.answer(frames[0], sample.texts[0]), quantized.answer(frames[1], sample.texts[0])
        same += expected.text == got.text
        if expected.masks:  # fp32's answer, [SEG] included, forced through both
            forced = ids + list(expected.token_ids)
            masks = [engine.decode_masks(engine.teacher_forced_seg_states(frame, forced)[:1], frame)[0][0] > 0
                     for engine, frame in zip((full, quantized), frames)]
            forced_iou = query_iou(*intersection_union(masks[0].cpu().numpy(), expected.masks[0].mask))
            assert forced_iou > 0.99  # forcing fp32's answer gives the mask fp32 generated (cached vs full sequence)
            ious.append(query_iou(*intersection_union(masks[1].cpu().numpy(), masks[0].cpu().numpy())))
        lines.append(f"{spreads[-1]:.3f} {ious[-1] if expected.masks else '-'} {expected.text!r} / {got.text!r}")
    print(f"\ntorchao {quantization}: max logit difference / std {max(spreads):.3f}, forced-answer mask IoU "
          f"{np.mean(ious):.3f}, same answers {same} of {len(samples)}\n" + "\n".join(lines))
    assert max(spreads) <= TORCHAO_LOGIT_BOUND, lines
    assert ious and np.mean(ious) >= TORCHAO_MASK_IOU, lines
    assert same >= TORCHAO_SAME_ANSWERS, lines


@pytest.mark.ros
def test_torchao_int8_end_to_end_through_the_cli_and_the_node(ros_domain, spawn, tmp_path_factory, folder, tmp_path):
    """`lisa-ros segment --quantization 8bit --quantization-backend torchao` and the node with
    ``quantization:=8bit quantization_backend:=torchao`` give the in-process torchao engine's
    answers and masks on held-out scenes."""
    import subprocess
    import sys


    from lisa_ros.engine import GenerationOptions, LisaEngine
    from lisa_ros.evaluate.metrics import intersection_union, query_iou
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions
    from lisa_ros.ros.conversions import image_to_numpy, numpy_to_image
    from lisa_ros.srv import ReasonSegment

    samples = _held_out_scenes(tmp_path_factory)[:2]
    engine = LisaEngine(load_lisa("embedded", _torchao_options("8bit")), GenerationOptions(max_new_tokens=48))
    expected = [engine.answer(sample.rgb(), sample.texts[0])[0] for sample in samples]
    del engine

    def same_mask(got: np.ndarray, answer) -> bool:
        want = answer.masks[0].mask if answer.masks else np.zeros(got.shape, bool)
        return (not got.any() and not want.any()) or query_iou(*intersection_union(got, want)) > 0.98

    # The CLI
    lisa_ros = str(Path(sys.executable).parent / "lisa-ros")
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), samples[0].rgb()[..., ::-1])
    run = subprocess.run([lisa_ros, "segment", "--model", "embedded", "--image", str(image), "--prompt", samples[0].texts[0],
                          "--precision", "fp32", "--quantization", "8bit", "--quantization-backend", "torchao",
                          "--max-new-tokens", "48", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert run.returncode == (0 if result["objects"] else 3), run.stderr[-2000:]  # 3: nothing segmented
    assert "Failed to load" not in run.stderr  # torchao's import noise is summarised, not printed
    assert result["answer"] == expected[0].text
    mask_files = [obj["mask"] for obj in result["objects"]]
    got = cv2.imread(str(tmp_path / "out" / mask_files[0]), cv2.IMREAD_GRAYSCALE) > 0 if mask_files else \
        np.zeros(samples[0].rgb().shape[:2], bool)
    assert same_mask(got, expected[0])

    # The node: its diagnostics say what it loaded, and its weights are the int8 model's
    node, ask = _served_node(ros_domain, spawn, numpy_to_image(samples[0].rgb(), "rgb8"), "precision:=fp32",
                             "quantization:=8bit", "quantization_backend:=torchao")
    model_status = _model_diagnostics(ros_domain)
    assert model_status["quantization"] == "8bit" and model_status["quantization_backend"] == "torchao"
    fp32_weights = load_lisa("embedded", LoadOptions(precision="fp32", device="cpu")).memory_bytes()["lisa"] / 2**20
    assert float(model_status["memory_weights_mb"]) < 0.6 * fp32_weights  # measured 360 of 663 MB
    for sample, answer in zip(samples, expected):
        response = ask(ReasonSegment.Request(command=sample.texts[0], image=numpy_to_image(sample.rgb(), "rgb8")))
        assert response.result.status.code in (response.result.status.OK, response.result.status.NO_TARGET)
        assert response.result.answer == answer.text
        objects = response.result.objects
        assert same_mask(image_to_numpy(objects[0].mask) > 0 if objects else np.zeros(sample.rgb().shape[:2], bool),
                         answer)
    node.destroy_node()


def test_embedded_benchmark_times_every_variant_with_the_same_masks(tmp_path, folder):
    """bench/embedded.py (issue 15 item 3) on one held-out scene and one timed round: each variant
    asked for reaches the table and the JSON; the encoder's faster path, drafting and the frame
    encoded ahead (also with oneDNN-packed linear layers) give "before"'s answer and mask, the
    frame ahead has no encoder time, and drafting takes
    fewer forward passes than tokens with a table filled from two other scenes. (The bf16 variants
    are left out: on a CPU without bf16 instructions they take minutes; bf16 loading and answers
    have their own tests.)"""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parent.parent / "bench" / "embedded.py"
    out = tmp_path / "embedded.json"
    run = subprocess.run([sys.executable, str(bench), "--scenes", "1", "--rounds", "2", "--json", str(out),
                          "--variants", "encoder,drafted,drafted+ahead,drafted+packed+ahead,encoder+int8", "--warm-scenes", "2"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["variants"]) == ["before", "encoder", "drafted", "drafted+ahead", "drafted+packed+ahead", "encoder+int8"]
    assert report["native_bf16"] in ("AMX", "AVX512-BF16", "none")
    assert report["timed_requests_per_variant"] == 1
    for name, variant in report["variants"].items():
        encoder_s, preparation_s = variant["median_s"]["sam_encoder"], variant["median_s"]["image_preparation"]
        assert variant["median_s"]["total"] > encoder_s and (encoder_s == 0 if name.endswith("ahead") else encoder_s > 0), name
        assert preparation_s == 0 if name.endswith("ahead") else preparation_s > 0, name  # the part's name is read
        assert variant["median_generated_tokens"] >= 1 and 0 < variant["median_decode_per_pass"] < variant["median_s"]["total"], name
        tokens, passes = variant["median_generated_tokens"], variant["median_forward_passes"]
        assert (passes < tokens if name.startswith("drafted") else passes == tokens), (name, passes, tokens)
    for name in ("encoder", "drafted", "drafted+ahead", "drafted+packed+ahead"):
        assert report["variants"][name]["same_answer"] == 1 and report["variants"][name]["mask_iou_vs_before"] > 0.98
    assert "ratio (total)" in run.stdout and "mask IoU vs before" in run.stdout and "decode ms per pass" in run.stdout
    unknown = subprocess.run([sys.executable, str(bench), "--variants", "encoder,fp8"], capture_output=True, text=True,
                             timeout=120)
    assert unknown.returncode == 2 and "fp8" in unknown.stderr


def test_language_model_dtype_benchmark_times_fp32_and_bf16(folder):
    """bench/lm_dtype.py (issue 15 item 3: does bf16 pay off on this CPU?) at small sizes: both
    dtypes reach the table with positive times and the ratio line."""
    import re
    import subprocess
    import sys

    bench = Path(__file__).resolve().parent.parent / "bench" / "lm_dtype.py"
    run = subprocess.run([sys.executable, str(bench), "--prompt-tokens", "8", "--new-tokens", "2", "--rounds", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(r"^(fp32|bf16)\s+([\d.]+)\s+([\d.]+)$", run.stdout, re.M)}
    assert set(rows) == {"fp32", "bf16"} and all(p > 0 and d > 0 for p, d in rows.values()), run.stdout
    assert re.search(r"bf16 against fp32: prefill [\d.]+x, decode [\d.]+x", run.stdout), run.stdout
