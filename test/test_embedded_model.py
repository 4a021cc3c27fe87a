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
from pathlib import Path
import time

import cv2
import numpy as np
import pytest
import torch

from lisa_ros.model.delta import DELTA_FILE, apply_delta, delta_from_trainable
from lisa_ros.model.embedded import ADDED_TOKENS, embedded_checkpoint
from lisa_ros.model.tokenization import IMAGE_TOKEN_INDEX, SEG_TOKEN, ByteLevelLisaTokenizer, load_tokenizer

E2E_SCENES = 12  # two of each query type
GIOU_FLOOR = 0.50  # shipped delta: 0.503 on these 12 scenes (the previous one: 0.637; [SEG] one early: 0.386); "pick any object": about 0.23


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

    from lisa_ros.train.objects import evaluate_encoder, load_split

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


@pytest.mark.ros
def test_node_answers_held_out_scenes_exactly_as_the_engine_does(ros_domain, spawn, tmp_path_factory, folder):
    """The node (default model parameter = the embedded model) against the ROS-free engine on the
    same held-out scenes: same answer text and the same mask, whatever the image encoding or size.
    A channel swap or a size/padding slip in the node's conversions changes the masks."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from lisa_ros.engine import LisaEngine
    from lisa_ros.evaluate.metrics import intersection_union, query_iou
    from lisa_ros.engine import GenerationOptions
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions
    from lisa_ros.ros.conversions import image_to_numpy
    from lisa_ros.srv import ReasonSegment

    samples = _held_out_scenes(tmp_path_factory)
    engine = LisaEngine(load_lisa("embedded", LoadOptions(precision="fp32", device="cpu")),
                        GenerationOptions(max_new_tokens=48))
    expected = []
    for index, sample in enumerate(samples):
        _, rgb = _variant(sample.rgb(), index)
        answer, _ = engine.answer(rgb, sample.texts[0])
        expected.append((answer.text, answer.masks[0].mask if answer.masks else np.zeros(rgb.shape[:2], bool)))
    del engine

    spawn(ros_domain, "lisa_node_with_faults.py", "--ros-args", "-p", "max_new_tokens:=48", ready_timeout=120)
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
        message, _ = _variant(samples[0].rgb(), 0)
        if ask(ReasonSegment.Request(command="ping", image=message)).error_code != ReasonSegment.Response.NOT_READY:
            break
        time.sleep(1.0)

    truth_ious = []
    for index, (sample, (text, mask)) in enumerate(zip(samples, expected)):
        message, rgb = _variant(sample.rgb(), index)
        response = ask(ReasonSegment.Request(command=sample.texts[0], image=message))
        assert response.success, response.message
        assert response.result.answer == text, (index, message.encoding)
        masks = response.result.masks
        got = image_to_numpy(masks[0]) > 0 if masks else np.zeros(mask.shape, bool)
        assert got.shape == mask.shape
        if mask.any() or got.any():
            assert query_iou(*intersection_union(got, mask)) > 0.98, (index, message.encoding, message.width)
        truth = cv2.resize(sample.target(*sample.rgb().shape[:2]), (rgb.shape[1], rgb.shape[0]),
                           interpolation=cv2.INTER_NEAREST)
        truth_ious.append(query_iou(*intersection_union(got, truth)))
    node.destroy_node()
    # The oracle: the node's masks against the ground truth of held-out scenes.
    giou = float(np.mean(truth_ious))
    print(f"\nnode on {len(truth_ious)} held-out scenes: gIoU {giou:.3f} (per scene {np.round(truth_ious, 2).tolist()})")
    assert giou >= GIOU_FLOOR, truth_ious
