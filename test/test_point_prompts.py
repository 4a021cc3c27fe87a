"""Point prompts (the [SEG] target of a new model), the decoder warm-up, the point loss and the
trainer's on-disk frame cache, on the tiny checkpoint and on generated reasoning scenes."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lisa_ros.model.sam import point_prompt_tokens, sam_modeling
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from lisa_ros.train.losses import LossWeights, combine
from lisa_ros.train.point_prompts import interior_point, random_interior_point, to_sam_frame


def _cup_mask() -> np.ndarray:
    """A U shape: its centroid lies in the empty middle, outside the mask."""
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:18] = mask[10:50, 42:50] = mask[42:50, 10:50] = True
    return mask


def test_interior_point_is_inside_where_the_centroid_is_not():
    mask = _cup_mask()
    ys, xs = np.nonzero(mask)
    assert not mask[int(round(ys.mean())), int(round(xs.mean()))]
    x, y = interior_point(mask)
    assert mask[int(y), int(x)]
    square = np.zeros((40, 50), bool)
    square[5:26, 20:41] = True  # 21 x 21: the deepest pixel is the middle one
    assert interior_point(square) == (30.0, 15.0)


def test_random_interior_points_stay_deep_inside():
    mask = _cup_mask()
    rng = random.Random(0)
    points = {random_interior_point(mask, rng) for _ in range(50)}
    assert len(points) > 5  # it varies
    for x, y in points:  # depth >= half the maximum (4 px of an 8 px wide arm): never on the border
        assert mask[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].all()


def test_points_are_scaled_like_the_sam_input():
    scaled = to_sam_frame(np.array([[320.0, 240.0], [10.0, 20.0]]), (192, 256), (240, 320))
    np.testing.assert_allclose(scaled, [[256.0, 192.0], [8.0, 16.0]])


def test_the_point_token_is_what_sams_prompt_encoder_makes_of_one_positive_point():
    torch.manual_seed(0)
    encoder = sam_modeling().PromptEncoder(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(64, 64), mask_in_chans=4)
    points = torch.tensor([[10.0, 20.0], [63.0, 0.0]])
    tokens = point_prompt_tokens(encoder, points)
    sparse, _ = encoder(points=(points[:, None], torch.ones(2, 1)), boxes=None, masks=None)
    assert tokens.shape == (2, 32)
    torch.testing.assert_close(tokens, sparse[:, 0])  # sparse[:, 1] is SAM's padding point
    assert not torch.allclose(tokens[0], tokens[1])


def test_point_errors_join_the_loss_with_their_weight():
    logits, target = torch.zeros(2, 2), torch.ones(2, 2)
    base = combine(torch.tensor(2.0), 1, [logits], [target], LossWeights())
    weighted = combine(torch.tensor(2.0), 1, [logits], [target], LossWeights(point=3.0),
                       [torch.tensor(0.5), torch.tensor(1.5)])
    assert float(weighted["point"]) == pytest.approx(1.0)
    assert float(weighted["loss"]) == pytest.approx(float(base["loss"]) + 3.0)
    assert "point" not in base


# ------------------------------------------------------------------------------------ trainer


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from lisa_ros.data.scenes import write_split

    return write_split(tmp_path_factory.mktemp("scenes") / "train", "train", 4, seed=0, size=(96, 72))


def _trainer(tmp_path, checkpoint, scenes, **overrides):
    from lisa_ros.train.config import TrainConfig
    from lisa_ros.train.trainer import Trainer

    values = dict(model=str(checkpoint), data=[{"type": "reasonseg", "path": str(scenes)}],
                  output_dir=str(tmp_path / "run"), steps=1, batch_size=2, grad_accumulation=1, lr=1e-3,
                  warmup_steps=0, precision="fp32", gradient_checkpointing=False, save_every=1, export=False,
                  frame_cache=str(tmp_path / "frames"), loss_weights={"point": 1.0})
    values.update(overrides)
    return Trainer(TrainConfig(**values), progress=False)


def test_frame_cache_warm_up_and_point_loss(tmp_path, scenes):
    checkpoint = write_tiny_lisa_checkpoint(tmp_path / "lisa")
    lora = r"model\.layers\.\d+\.self_attn\.(q_proj|v_proj)|model\.visual_model\.mask_decoder\.transformer\..*(q_proj|v_proj)"
    trainer = _trainer(tmp_path, checkpoint, scenes, decoder_warmup_steps=3, lora_target=lora)
    assert all(len(s.objects) >= 3 for s in trainer.samples)  # the scenes list every object
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.encode_all()
    assert len(list((tmp_path / "frames").glob("*.pt"))) == 4
    trainer.warm_up_decoder()
    changed = {n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert changed and all("mask_decoder" in n for n in changed)  # the warm-up trains the decoder only
    assert any(".lora_B." in n for n in changed)  # the decoder's LoRA factors too

    trainer.train()  # one step, with the point loss logged
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["warmup_step"] for r in records if "warmup_step" in r] == [1, 2, 3]
    step = [r for r in records if "step" in r]
    assert len(step) == 1 and step[0]["point"] > 0

    # A second trainer reads the encoded images back instead of encoding them again, and resumes
    # after the warm-up rather than repeating it.
    again = _trainer(tmp_path, checkpoint, scenes, decoder_warmup_steps=3, steps=2, lora_target=lora)
    assert again.warmed_up and again.step == 1
    again.engine.encode_frame = None  # any encoding now would fail
    for sample in trainer.samples:
        first, second = trainer._frame(sample), again._frame(sample)
        torch.testing.assert_close(first[0].image_embedding, second[0].image_embedding)
        torch.testing.assert_close(first[0].image_tokens, second[0].image_tokens)
        torch.testing.assert_close(first[2], second[2])  # the target's point token
        assert first[0].resized_size == second[0].resized_size and first[0].original_size == second[0].original_size
