"""Training and evaluation: metrics, rasterisation, losses, tokenization labels, LoRA targets,
overfitting a fixed batch, train -> merge -> strict load -> same masks, and the CLI commands."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lisa_ros.data.reasonseg import Sample, rasterize_shapes, read_reasonseg, read_robot_jsonl
from lisa_ros.data.synthetic import write_reasonseg, write_robot_jsonl
from lisa_ros.errors import DataError
from lisa_ros.evaluate.metrics import IoUAccumulator, intersection_union
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from lisa_ros.train.losses import IGNORE_INDEX, LossWeights, combine, mask_bce, mask_dice
from lisa_ros.train.conversations import training_tokens

LISA_ROS = str(Path(sys.executable).parent / "lisa-ros")


# ------------------------------------------------------------------------------------ metrics


def test_iou_by_hand():
    target = np.array([[1, 1, 0, 255], [0, 1, 0, 255]], np.uint8)
    prediction = np.array([[1, 0, 1, 1], [0, 1, 0, 1]], bool)
    # valid pixels: the first three columns. I = 2 (0,0),(1,1); |P| = 3; |G| = 3; U = 4
    assert intersection_union(prediction, target) == (2, 4)
    accumulator = IoUAccumulator()
    assert accumulator.add(prediction, target) == pytest.approx(2 / (4 + 1e-5))
    # empty prediction on an empty target counts as perfect; a miss counts as 0
    assert accumulator.add(np.zeros((2, 2), bool), np.zeros((2, 2), np.uint8)) == 1.0
    assert accumulator.add(np.zeros((2, 2), bool), np.ones((2, 2), np.uint8)) == 0.0
    assert accumulator.giou == pytest.approx((0.5 + 1.0 + 0.0) / 3, abs=1e-5)
    assert accumulator.ciou == pytest.approx((2 + 0 + 0) / (4 + 0 + 4), abs=1e-9)


def test_several_target_masks_are_matched_one_to_one():
    """Masks matched to targets for the largest total IoU; unmatched targets score 0 (missing),
    unmatched masks are extra."""
    from lisa_ros.evaluate.metrics import SeveralAccumulator, match_masks

    def box(x0, x1):
        mask = np.zeros((10, 20), bool)
        mask[2:8, x0:x1] = True
        return mask

    left, right = box(0, 6), box(10, 16)
    half_left = box(0, 3)  # IoU 0.5 with left
    # given in the other order: still matched to their own targets
    assert match_masks([right, left], [left, right]) == (pytest.approx([1.0, 1.0]), 0, 0)
    assert match_masks([half_left], [left, right]) == (pytest.approx([0.5, 0.0], abs=1e-4), 1, 0)
    assert match_masks([left, half_left, right], [left, right]) == (pytest.approx([1.0, 1.0]), 0, 1)
    assert match_masks([], [left, right]) == ([0.0, 0.0], 2, 0)
    # one mask over both targets: it matches one of them, by the better IoU; the other is missing
    both = left | right
    per_target, missing, extra = match_masks([both], [left, right])
    assert per_target == pytest.approx([0.5, 0.0], abs=1e-4) and (missing, extra) == (1, 0)  # the first, on a tie
    # a mask beside every target is no match: the targets are missing and the mask is extra
    beside = np.zeros((10, 20), bool)
    beside[0, 18:] = True
    assert match_masks([beside, left], [left, right]) == (pytest.approx([1.0, 0.0]), 1, 1)
    assert match_masks([beside], [left, right]) == ([0.0, 0.0], 2, 1)
    several = SeveralAccumulator()
    several.add([right, left], [left, right])
    several.add([half_left], [left, right])
    summary = several.summary()
    assert summary == {"queries": 2, "targets": 4, "mean_matched_iou": pytest.approx(2.5 / 4, abs=1e-4),
                       "missing_masks": 1, "extra_masks": 0}


def test_ignore_pixels_never_count_and_value_two_is_not_target():
    target = np.array([[255, 255], [2, 1]], np.uint8)
    prediction = np.ones((2, 2), bool)
    # (0,*) ignored; the 2 counts as prediction area but not as target: I = 1, U = 2 + 1 - 1
    assert intersection_union(prediction, target) == (1, 2)
    assert math.isnan(IoUAccumulator().giou)


# ------------------------------------------------------------------------------------ data


def test_rasterisation_draws_small_shapes_over_large_and_skips_flags():
    big = {"label": "target", "points": [[0, 0], [9, 0], [9, 9], [0, 9]]}
    small_ignore = {"label": "ignore", "points": [[2, 2], [5, 2], [5, 5], [2, 5]]}
    flag = {"label": "flag", "points": [[0, 0], [9, 0], [9, 9]]}
    for order in ([big, small_ignore, flag], [small_ignore, flag, big]):
        mask = rasterize_shapes(order, 12, 12)
        assert mask[3, 3] == 255 and mask[0, 0] == 1 and mask[8, 8] == 1 and mask[11, 11] == 0
        assert set(np.unique(mask)) == {0, 1, 255}


def test_reasonseg_and_robot_folders_are_read(tmp_path):
    samples = read_reasonseg(write_reasonseg(tmp_path / "rs", count=4))
    assert len(samples) == 4 and {s.is_sentence for s in samples} == {True, False}
    target = samples[0].target(96, 128)
    assert (target == 1).any() and (target == 255).any()
    robot = read_robot_jsonl(write_robot_jsonl(tmp_path / "robot", count=3))
    assert len(robot) == 3 and robot[0].mask.max() == 1 and robot[0].explanation
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data.jsonl").write_text('{"image": "x.png"}\n')
    with pytest.raises(DataError, match="needs image, instruction and mask"):
        read_robot_jsonl(tmp_path / "broken")
    with pytest.raises(DataError):
        read_reasonseg(tmp_path / "missing")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("train") / "lisa")


def test_training_labels_supervise_only_the_answer_and_eos(checkpoint):
    from lisa_ros.model.tokenization import LisaTokenizer

    tokenizer = LisaTokenizer.from_pretrained(checkpoint)
    ids, labels = training_tokens(tokenizer, "What is the cup in this image? Please output segmentation mask.",
                                  "Sure, [SEG].")
    supervised = [token for token in labels if token != IGNORE_INDEX]
    assert supervised == tokenizer.encode("Sure, [SEG].</s>")  # what training tokenization gives
    assert supervised[-1] == tokenizer.eos_token_id and tokenizer.seg_token_id in supervised
    assert labels[0] == IGNORE_INDEX and len(ids) == len(labels)
    assert tokenizer.decode(ids[len(ids) - len(supervised) - 1:len(ids) - len(supervised)]).endswith(":")


# ------------------------------------------------------------------------------------ losses


def test_losses_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    p = torch.sigmoid(logits)
    expected_bce = float(-(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean())
    assert float(mask_bce(logits, target)) == pytest.approx(expected_bce, rel=1e-5)
    s, eps = 1000.0, 1e-6
    expected_dice = 1 - (2 * float((p / s * target).sum()) + eps) / (float((p / s).sum()) + float((target / s).sum()) + eps)
    assert float(mask_dice(logits, target)) == pytest.approx(expected_dice, rel=1e-5)
    parts = combine(torch.tensor(6.0), 3, [logits, logits], [target, target], LossWeights())
    assert float(parts["ce"]) == pytest.approx(2.0)
    assert float(parts["loss"]) == pytest.approx(2.0 + 2.0 * expected_bce + 0.5 * expected_dice, rel=1e-5)
    no_masks = combine(torch.tensor(6.0), 3, [], [], LossWeights())
    assert float(no_masks["bce"]) == 0.0 and float(no_masks["loss"]) == pytest.approx(2.0)


# ------------------------------------------------------------------------------------ training


def _config(tmp_path, checkpoint, data, **overrides):
    from lisa_ros.train.config import TrainConfig

    values = dict(model=str(checkpoint) if checkpoint else None, data=[{"type": "robot", "path": str(data)}], output_dir=str(tmp_path / "run"),
                  steps=2, batch_size=2, grad_accumulation=1, lr=1e-3, warmup_steps=1, precision="fp32",
                  gradient_checkpointing=False, save_every=1)
    values.update(overrides)
    return TrainConfig(**values)


def test_lora_goes_on_the_llm_attention_only_and_the_right_modules_train(tmp_path, checkpoint):
    from lisa_ros.train.trainer import Trainer

    trainer = Trainer(_config(tmp_path, checkpoint, write_robot_jsonl(tmp_path / "d", count=2)), progress=False)
    lora_modules = {name.rsplit(".lora_A", 1)[0] for name, _ in trainer.model.named_parameters() if ".lora_A." in name}
    layers = trainer.loaded.model.config.num_hidden_layers
    assert lora_modules == {f"base_model.model.model.layers.{i}.self_attn.{p}" for i in range(layers) for p in ("q_proj", "v_proj")}
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("embed_tokens" in n for n in trainable) and any("lm_head" in n for n in trainable)
    assert any("mask_decoder" in n for n in trainable) and any("text_hidden_fcs" in n for n in trainable)
    for frozen in ("image_encoder", "prompt_encoder", "mm_projector"):
        assert not any(frozen in n for n in trainable), frozen
    llm = [n for n in trainable if n.startswith("base_model.model.model.layers.")]
    assert llm and all(".lora_" in n for n in llm)  # the LLaMA layers train through LoRA only


@pytest.mark.slow
def test_a_tiny_model_overfits_a_fixed_batch(tmp_path, checkpoint):
    import time

    from lisa_ros.evaluate.runner import evaluate
    from lisa_ros.train.trainer import Trainer

    trainer = Trainer(_config(tmp_path, checkpoint, write_robot_jsonl(tmp_path / "d", count=8)), progress=False)
    batch = list(trainer.samples)
    optimizer = torch.optim.AdamW(trainer.params, lr=1e-3, betas=(0.9, 0.95))
    started, giou = time.monotonic(), 0.0
    for step in range(1, 121):
        parts = trainer.batch_loss(batch)
        optimizer.zero_grad()
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainer.params, 1.0)
        optimizer.step()
        if step % 20 == 0:
            trainer.model.eval()
            giou = evaluate(trainer.engine, batch, "teacher-forced", progress=False)["overall"]["giou"]
            trainer.model.train()
            if giou >= 0.95:
                break
    print(f"\noverfit: gIoU {giou:.3f} after {step} steps, {time.monotonic() - started:.1f} s")
    assert giou >= 0.95


def test_train_resume_merge_and_load_give_the_same_masks(tmp_path, checkpoint):
    from lisa_ros.engine import LisaEngine
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions
    from lisa_ros.train.trainer import Trainer

    data = write_robot_jsonl(tmp_path / "d", count=4)
    trainer = Trainer(_config(tmp_path, checkpoint, data, steps=2, export=False), progress=False)
    trainer.train()
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)

    resumed = Trainer(_config(tmp_path, checkpoint, data, steps=3), progress=False)
    assert resumed.step == 2  # picked up checkpoint.pt
    merged = resumed.train()
    assert resumed.step == 3 and (merged / "pytorch_model.bin.index.json").is_file()

    sample = read_robot_jsonl(data)[0]
    rgb = sample.rgb()
    resumed.model.eval()

    def mask_logits(engine):
        from lisa_ros.evaluate.runner import evaluation_question
        from lisa_ros.model.prompts import Conversation

        frame = engine.encode_frame(rgb)
        conversation = Conversation()
        conversation.ask(evaluation_question(sample))
        ids = engine.tokenizer.encode_with_image(conversation.prompt() + " [SEG].</s>")
        return engine.decode_masks(engine.teacher_forced_seg_states(frame, ids), frame)[0]

    trained = mask_logits(resumed.engine)
    exported = mask_logits(LisaEngine(load_lisa(merged, LoadOptions(precision="fp32"))))  # strict load
    untrained = mask_logits(LisaEngine(load_lisa(checkpoint, LoadOptions(precision="fp32"))))
    torch.testing.assert_close(exported, trained, atol=1e-3, rtol=1e-3)  # merge reproduces the adapter
    assert (exported - untrained).abs().max() > 1e-2  # ...and the training is in the export


def test_a_run_starts_from_an_extracted_delta_with_every_trained_weight(tmp_path, checkpoint):
    """init_from a delta file (the shipped embedded model's way to train on): every trained weight,
    LoRA factors and the added rows included, comes back to fp16 precision; a delta made with
    another LoRA scale is refused."""
    from lisa_ros.errors import UsageError
    from lisa_ros.train.run_outputs import extract_delta
    from lisa_ros.train.trainer import Trainer

    data = write_robot_jsonl(tmp_path / "d", count=4)
    trainer = Trainer(_config(tmp_path, checkpoint, data, steps=2, export=False, embedding_rows="added"), progress=False)
    trainer.train()
    delta = extract_delta(tmp_path / "run", tmp_path / "delta.safetensors")
    trained = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}

    fresh = Trainer(_config(tmp_path, checkpoint, data, output_dir=str(tmp_path / "run2"), embedding_rows="added",
                            init_from=str(delta), init_parts=[""]), progress=False)
    assert fresh.step == 0 and fresh.warmed_up and fresh.objects_trained
    restored = {n: p.detach() for n, p in fresh.model.named_parameters() if p.requires_grad}
    assert restored.keys() == trained.keys() and any(".lora_B." in n for n in trained)
    for name, value in trained.items():
        torch.testing.assert_close(restored[name], value, atol=2e-3, rtol=2e-3, msg=name)
    assert any((trained[n] != 0).any() for n in trained if ".lora_B." in n)  # LoRA B trained away from 0

    with pytest.raises(UsageError, match="LoRA scale"):
        Trainer(_config(tmp_path, checkpoint, data, output_dir=str(tmp_path / "run3"), embedding_rows="added",
                        init_from=str(delta), init_parts=[""], lora_alpha=99), progress=False)


def test_train_and_eval_commands_end_to_end(tmp_path, checkpoint):
    data = write_robot_jsonl(tmp_path / "d", count=4)
    val = write_reasonseg(tmp_path / "val", count=4)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(checkpoint), "data": [{"type": "robot", "path": str(data)}],
        "eval_data": {"type": "reasonseg", "path": str(val)}, "output_dir": str(tmp_path / "run"),
        "steps": 2, "batch_size": 1, "grad_accumulation": 2, "warmup_steps": 1, "eval_every": 2,
        "precision": "fp32", "gradient_checkpointing": True}))
    run = subprocess.run([LISA_ROS, "train", str(config)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "training" in run.stderr  # the progress bar
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    log = [json.loads(line) for line in Path(summary["metrics"]).read_text().splitlines()]
    assert "giou" in log[-1]["eval"]

    for mode in ("teacher-forced", "generate"):
        out = tmp_path / f"eval-{mode}"
        run = subprocess.run([LISA_ROS, "eval", "--model", summary["merged_model"], "--data", str(val),
                              "--mode", mode, "--out", str(out), "--max-new-tokens", "8"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads((out / "report.json").read_text())
        assert report["overall"]["queries"] == 4 and report["short"]["queries"] == 2 and report["long"]["queries"] == 2
        assert 0.0 <= report["overall"]["giou"] <= 1.0 and 0.0 <= report["overall"]["ciou"] <= 1.0
        rows = (out / "samples.csv").read_text().splitlines()
        assert len(rows) == 5 and rows[0].startswith("image,query,query_type,is_sentence")
    bad = subprocess.run([LISA_ROS, "eval", "--model", str(checkpoint), "--data", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_report_json_is_strict_json_with_null_for_nan(tmp_path):
    """A metric with nothing to measure is NaN; report.json holds null there (NaN is not JSON)."""
    from lisa_ros.evaluate.runner import write_report

    write_report(tmp_path, {"overall": {"giou": 0.5, "ciou": float("nan")},
                            "per_type": {"roll": {"giou": float("inf"), "names": [float("nan"), 1.0]}}}, [{"image": "a"}])

    def refuse(constant):
        raise AssertionError(f"{constant} in report.json")

    report = json.loads((tmp_path / "report.json").read_text(), parse_constant=refuse)
    assert report == {"overall": {"giou": 0.5, "ciou": None}, "per_type": {"roll": {"giou": None, "names": [None, 1.0]}}}


def test_checked_in_training_configs_are_valid():
    from lisa_ros.train.config import TrainConfig

    configs = sorted((Path(__file__).parents[1] / "training").glob("*.yaml"))
    assert len(configs) >= 2
    for path in configs:
        config = TrainConfig.from_yaml(path)
        assert config.model == "embedded-base" and config.data, path


def test_a_bad_training_config_is_one_clear_error(tmp_path, capsys):
    from lisa_ros.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("model: x\ndata: []\noutput_dir: out\nlearning_rate: 1\n")
    assert main(["train", str(config)]) == 2
    assert "unknown keys ['learning_rate']" in capsys.readouterr().err


def test_nothing_fits_share_sets_the_share_of_refusal_rows():
    """With nothing_fits_share 0.25 a quarter of the drawn rows are "nothing fits" samples (they are
    a tenth of the data here); with 0 the draw is uniform; out-of-range shares are refused."""
    import random
    from types import SimpleNamespace

    from lisa_ros.errors import UsageError
    from lisa_ros.train.config import TrainConfig
    from lisa_ros.train.trainer import Trainer

    samples = [SimpleNamespace(nothing_fits=i % 10 == 0) for i in range(1000)]
    for share, expected in ((0.25, 0.25), (0.0, 0.10)):
        fake = SimpleNamespace(config=SimpleNamespace(nothing_fits_share=share, query_type_weights={}),
                               rng=random.Random(0), samples=samples,
                               ordinary_samples=[s for s in samples if not s.nothing_fits],
                               nothing_fits_samples=[s for s in samples if s.nothing_fits])
        drawn = [Trainer.draw_sample(fake).nothing_fits for _ in range(20000)]
        assert sum(drawn) / len(drawn) == pytest.approx(expected, abs=0.01)
    with pytest.raises(UsageError, match="nothing_fits_share"):
        TrainConfig(data=[{"type": "reasonseg", "path": "x"}], output_dir="o", model="m", nothing_fits_share=1.0).validate()


def test_query_type_weights_and_framed_commands_shape_the_drawn_conversations(tmp_path):
    """query_type_weights draws ordinary samples in proportion to their type's weight (refusal
    rows keep their share); framed_commands says a sample's target in a structure of the command
    grammar, with the sample's own slots and answer; unknown types and bad shares are refused."""
    import itertools
    import random
    from types import SimpleNamespace

    from lisa_ros.data.scenes.framing import framed_templates
    from lisa_ros.errors import UsageError
    from lisa_ros.train.config import TrainConfig
    from lisa_ros.train.trainer import Trainer

    samples = [SimpleNamespace(nothing_fits=i % 10 == 0, query_type="a" if i % 2 else "b") for i in range(1000)]
    ordinary = [s for s in samples if not s.nothing_fits]
    config = SimpleNamespace(nothing_fits_share=0.2, query_type_weights={"b": 3.0})
    fake = SimpleNamespace(config=config, rng=random.Random(0), samples=samples, ordinary_samples=ordinary,
                           nothing_fits_samples=[s for s in samples if s.nothing_fits],
                           _cumulative_weights=list(itertools.accumulate(3.0 if s.query_type == "b" else 1.0
                                                                         for s in ordinary)))
    drawn = [Trainer.draw_sample(fake) for _ in range(20000)]
    assert sum(s.nothing_fits for s in drawn) / len(drawn) == pytest.approx(0.2, abs=0.01)
    kept = [s for s in drawn if not s.nothing_fits]  # 400 "b" and 500 "a" ordinary samples, b weighs 3
    assert sum(s.query_type == "b" for s in kept) / len(kept) == pytest.approx(1200 / 1700, abs=0.015)

    sample = Sample(tmp_path / "x.png", ["Find the red cup."], True, None, answer="It is the red cup [SEG].",
                    query_type="refer_colour_shape", slots={"colour": "red", "shape": "cup"})
    framed = {t.format(colour="red", shape="cup") for frame in framed_templates("refer_colour_shape") for t in frame}
    for share in (0.0, 1.0):
        config = SimpleNamespace(alignment=0.0, explanatory=0.0, framed_commands=share)
        fake = SimpleNamespace(config=config, rng=random.Random(1))
        asked = [Trainer.conversation(fake, sample) for _ in range(50)]
        assert all(a[2] == "It is the red cup [SEG]." and a[0] == [] for a in asked)
        commands = {question.removesuffix(" Please respond with segmentation mask.")
                    .removesuffix(" Please output segmentation mask.") for _, question, _, _ in asked}
        assert commands == {"Find the red cup."} if share == 0.0 else (len(commands) > 30 and commands <= framed)
    for bad in ({"framed_commands": 1.5}, {"query_type_weights": {"refer_size": -1}}):
        with pytest.raises(UsageError):
            TrainConfig(data=[{"type": "reasonseg", "path": "x"}], output_dir="o", model="m", **bad).validate()


def test_sample_rejects_unreadable_images(tmp_path):
    sample = Sample(tmp_path / "missing.png", ["x"], True, np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError):
        sample.rgb()


def test_qlora_trains_adapters_over_a_4_bit_base(tmp_path, checkpoint):
    from lisa_ros.train.trainer import Trainer

    config = _config(tmp_path, checkpoint, write_robot_jsonl(tmp_path / "d", count=2), qlora=True,
                     precision="bf16", gradient_checkpointing=True, steps=1, export=False)
    trainer = Trainer(config, progress=False)
    q_proj = trainer.loaded.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == "Linear4bit"  # the frozen base stays 4-bit
    lora_b = next(p for n, p in trainer.model.named_parameters() if "layers.0.self_attn.q_proj.lora_B" in n)
    before = lora_b.detach().clone()  # B starts at 0 and gets the first gradient (A does not)
    trainer.train()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["loss"]) and record["loss"] > 0
    assert not torch.equal(before, lora_b.detach())


def _tiny_llava(tmp_path, lisa_checkpoint):
    """A base LLaVA-7B-style folder (no SAM, no projection, no [SEG]) and a SAM .pth, made from a
    tiny LISA checkpoint."""
    import shutil

    from lisa_ros.train.from_llava import read_state_dict

    llava = tmp_path / "llava"
    llava.mkdir()
    for name in ("tokenizer.model", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy2(lisa_checkpoint / name, llava / name)
    added = json.loads((lisa_checkpoint / "added_tokens.json").read_text())
    seg = added.pop("[SEG]")
    (llava / "added_tokens.json").write_text(json.dumps(added))
    config = json.loads((lisa_checkpoint / "config.json").read_text())
    for key in ("train_mask_decoder", "out_dim", "sam_config"):
        config.pop(key)
    config["vocab_size"] = seg
    (llava / "config.json").write_text(json.dumps(config))
    state = read_state_dict(lisa_checkpoint)
    sam = {k[len("model.visual_model."):]: v for k, v in state.items() if k.startswith("model.visual_model.")}
    base = {k: v for k, v in state.items() if not k.startswith(("model.visual_model.", "model.text_hidden_fcs."))}
    base["model.embed_tokens.weight"] = base["model.embed_tokens.weight"][:seg].clone()
    base["lm_head.weight"] = base["lm_head.weight"][:seg].clone()
    base["model.vision_tower.vision_tower.dummy"] = torch.zeros(1)  # bases may carry CLIP keys
    torch.save(base, llava / "pytorch_model.bin")
    torch.save(sam, tmp_path / "sam.pth")
    return llava, tmp_path / "sam.pth", seg, base, sam


def test_lisa_is_built_from_a_base_llava_and_sam_weights(tmp_path, checkpoint):
    from lisa_ros.model.loading import load_lisa
    from lisa_ros.model.options import LoadOptions
    from lisa_ros.train.from_llava import build_from_llava
    from lisa_ros.train.trainer import Trainer

    llava, sam_path, seg, base, sam = _tiny_llava(tmp_path, checkpoint)
    built = build_from_llava(llava, sam_path, tmp_path / "lisa-from-llava")
    loaded = load_lisa(built, LoadOptions(precision="fp32"))  # strict: every key present
    assert loaded.tokenizer.seg_token_id == seg  # after <im_patch>, <im_start>, <im_end>, as in LISA-7B
    state = loaded.model.state_dict()
    torch.testing.assert_close(state["model.visual_model.mask_decoder.iou_token.weight"], sam["mask_decoder.iou_token.weight"])
    torch.testing.assert_close(state["model.embed_tokens.weight"][:seg], base["model.embed_tokens.weight"])
    assert state["model.embed_tokens.weight"][seg].std() > 0  # the new row is initialised
    with pytest.raises(ValueError, match="already a LISA checkpoint"):
        build_from_llava(checkpoint, sam_path, tmp_path / "again")

    config = _config(tmp_path, None, write_robot_jsonl(tmp_path / "d", count=2), base_llava=str(llava),
                     sam_checkpoint=str(sam_path), steps=1, export=False)
    trainer = Trainer(config, progress=False)
    trainer.train()
    assert (tmp_path / "run" / "initial" / "config.json").is_file() and trainer.step == 1


def test_one_padded_batch_gives_the_per_conversation_losses(tmp_path, checkpoint):
    """The batched forward (right padding, attention mask) must give each conversation exactly
    what it gets alone: the CE sums and the [SEG] prompts (via the point loss) agree."""
    from lisa_ros.train.trainer import Trainer

    trainer = Trainer(_config(tmp_path, checkpoint, write_robot_jsonl(tmp_path / "d", count=3),
                              loss_weights={"ce": 1.0, "bce": 2.0, "dice": 0.5, "point": 1.0}), progress=False)
    samples = trainer.samples
    # Fixed conversations of different lengths (one without [SEG]), and a fixed point per [SEG].
    fixed = {samples[0].image_path: ([], "Where is the red box? Please output segmentation mask.", "Sure, [SEG].", None),
             samples[1].image_path: ([], "What should I pick up first if I want to open the door? Please output "
                                     "segmentation mask.", "It is [SEG]. The handle opens it.", [(40.0, 30.0)]),
             samples[2].image_path: ([], "Is there a cup?", "No, there is none.", None)}
    trainer.conversation = lambda sample: fixed[sample.image_path]
    trainer.model.eval()  # no dropout: the same numbers every time
    with torch.no_grad():
        together = trainer.batch_loss(samples)
        alone = [trainer.batch_loss([sample]) for sample in samples]
    counts = [len([t for t in training_tokens(trainer.loaded.tokenizer, q, a)[1] if t != IGNORE_INDEX])
              for _, q, a, _ in fixed.values()]
    expected_ce = sum(float(part["ce"]) * count for part, count in zip(alone, counts)) / sum(counts)
    assert float(together["ce"]) == pytest.approx(expected_ce, rel=1e-4)
    expected_point = (float(alone[0]["point"]) + float(alone[1]["point"])) / 2  # one [SEG] each
    assert float(together["point"]) == pytest.approx(expected_point, rel=1e-4)
    # Only the first [SEG] has a mask target (the second points at a pixel: an alignment question).
    assert float(alone[0]["dice"]) > 0 and float(alone[1]["dice"]) == 0
    assert float(together["dice"]) == pytest.approx(float(alone[0]["dice"]), rel=1e-4)


def test_follow_ups_supervise_the_last_answer_and_each_seg_points_at_its_own_target(tmp_path, checkpoint):
    """A follow-up trains on the session as the engine renders it: the earlier turn is context
    (its answer and its [SEG] unsupervised); an answer with several [SEG]s regresses the k-th
    prompt onto the k-th target's point token."""
    from lisa_ros.model.modeling import gather_seg_states
    from lisa_ros.train.trainer import Trainer

    trainer = Trainer(_config(tmp_path, checkpoint, write_robot_jsonl(tmp_path / "d", count=1),
                              loss_weights={"ce": 1.0, "bce": 0.0, "dice": 0.0, "point": 1.0}), progress=False)
    tokenizer, lisa = trainer.loaded.tokenizer, trainer.lisa
    history = [("Segment the red ball. Please output segmentation mask.", "It is the red ball [SEG].")]
    question, answer = "And the cup and the star?", "They are the cup [SEG] and the star [SEG]."
    ids, labels = training_tokens(tokenizer, question, answer, history)
    supervised = [token for token in labels if token != IGNORE_INDEX]
    assert supervised == tokenizer.encode(answer + "</s>")  # the last answer only
    assert ids.count(tokenizer.seg_token_id) == 3 and supervised.count(tokenizer.seg_token_id) == 2
    alone_ids, _ = training_tokens(tokenizer, question, answer)
    assert len(ids) > len(alone_ids)  # the history is in the prompt

    [sample] = trainer.samples
    frame = trainer._frame(sample)[0]
    points = [(10.0, 12.0), (50.0, 40.0)]
    trainer.model.eval()
    losses = {}
    for order in ("as named", "swapped"):
        chosen = points if order == "as named" else points[::-1]
        trainer.conversation = lambda _sample, chosen=chosen: (history, question, answer, chosen)
        with torch.no_grad():
            losses[order] = float(trainer.batch_loss([sample])["point"])
    # by hand: the prompts of the answer's two [SEG]s against the two points' tokens, in order
    with torch.no_grad():
        tokens = torch.stack([trainer._point_token(p, frame) for p in points])
        spliced = lisa.embed_with_image_tokens(torch.tensor([ids]), frame.image_tokens, torch.ones(1, len(ids), dtype=torch.long))
        hidden = lisa.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                            use_cache=False).last_hidden_state[0]
        states = gather_seg_states(hidden, ids, tokenizer.seg_token_id, frame.image_tokens.shape[1])
        prompts = lisa.project_seg_hidden_states(states[-2:])
        expected = float(torch.stack([((p - t) ** 2).mean() for p, t in zip(prompts, tokens)]).mean())
    assert losses["as named"] == pytest.approx(expected, rel=1e-4)
    assert losses["swapped"] != pytest.approx(losses["as named"], rel=1e-3)


def test_a_several_target_sample_trains_one_mask_and_one_point_per_target(tmp_path, checkpoint):
    """A scene whose answer names several objects: the k-th [SEG] is trained towards the k-th
    target's mask and deepest point (the answer's order); an answer with another count of [SEG]
    than targets is refused as a data error; an alignment question about the image (one [SEG] or
    none) trains without one."""
    from lisa_ros.data.scenes import write_split
    from lisa_ros.train.trainer import Trainer

    folder = write_split(tmp_path / "scenes", "test", 12, 2)  # sample 11: all_of_colour
    config = _config(tmp_path, checkpoint, folder, loss_weights={"ce": 1.0, "bce": 1.0, "dice": 1.0, "point": 1.0})
    config.data = [{"type": "reasonseg", "path": str(folder)}]
    trainer = Trainer(config, progress=False)
    sample = next(s for s in trainer.samples if s.several_targets)
    frame, targets, tokens = trainer._frame(sample)
    assert len(targets) == len(tokens) == len(sample.target_indices) == sample.answer.count("[SEG]")
    height, width = frame.original_size
    for k, index in enumerate(sample.target_indices):
        drawn = rasterize_shapes([{"label": "target", "points": sample.objects[index]["points"]}], height, width)
        assert np.array_equal(targets[k] > 0, drawn == 1)
        torch.testing.assert_close(tokens[k], trainer._point_token(tuple(sample.objects[index]["point"]), frame))
    trainer.conversation = lambda _sample: ([], "Segment all the red objects.", sample.answer, None)
    trainer.model.eval()
    with torch.no_grad():
        parts = trainer.batch_loss([sample])
    assert float(parts["dice"]) > 0 and float(parts["point"]) > 0
    trainer.conversation = lambda _sample: ([], "Segment all the red objects.", "It is the red ball [SEG].", None)
    with pytest.raises(DataError, match="1 \\[SEG\\] for"):
        trainer.batch_loss([sample])
    # an alignment question about the same image answers in words: nothing to match, no error
    trainer.config.alignment = 1.0
    trainer.conversation = lambda _sample: Trainer.conversation(trainer, _sample)
    asked = set()
    for _ in range(40):
        history, question, answer, points = trainer.conversation(sample)
        asked.add(answer.count("[SEG]"))
        assert points is not None and len(points) == answer.count("[SEG]")
    assert asked == {0, 1}
    with torch.no_grad():
        assert float(trainer.batch_loss([sample])["ce"]) > 0


def test_answer_counts_report_naming_false_masks_and_refusals(tmp_path):
    from lisa_ros.evaluate.runner import AnswerCounts

    objects = [{"label": "red ball", "points": []}, {"label": "blue cup", "points": []}]
    target = Sample(tmp_path / "a.jpg", ["q"], True, None, objects=objects, target_index=1)
    empty = Sample(tmp_path / "b.jpg", ["q"], True, None, objects=objects, nothing_fits=True)
    counts = AnswerCounts()
    counts.add(target, "Sure, it is the blue cup at the top [SEG].", True)
    counts.add(target, "Sure, it is the red ball on the left [SEG].", True)
    counts.add(target, "Sorry, nothing fits.", False)
    counts.add(empty, "Sorry, there is no cup here.", False)
    counts.add(empty, "Sure, it is the blue cup [SEG].", True)
    summary = counts.summary()
    assert summary["named_target"] == pytest.approx(1 / 3, abs=1e-4) and summary["refusal_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["false_mask_rate"] == 0.5 and summary["nothing_fits_queries"] == 2
    assert target.target_label == "blue cup" and empty.target_label is None
