"""Training the embedded model's object encoder (:mod:`lisa_ros.model.objects`) on scene splits.

Supervision comes from the scenes' annotations (every object's polygon, colour and shape), so
the encoder trains alone, before the language model, in minutes on a CPU:

* targets on the ``grid`` x ``grid`` map: a Gaussian bump (sigma 1 cell) at each object's
  deepest interior pixel; at that cell its colour, shape, log-area and the centre's offset;
* loss: CenterNet's penalty-reduced focal loss on the heatmap, cross-entropy for colour and shape
  and L1 for log-area and offset at the centre cells;
* report: on a validation split, the share of objects found (a peak within one cell of the
  centre), and of those the colour, shape and size-word accuracy.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lisa_ros.data.reasonseg import Sample, rasterize_shapes
from lisa_ros.errors import DataError
from lisa_ros.model.objects import COLOUR_WORDS, SHAPE_WORDS, ObjectEncoder, detect, size_word
from lisa_ros.model.preprocess import sam_preprocess


def _deepest_point(mask: np.ndarray) -> tuple[float, float]:
    depth = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    return float(x), float(y)


def encoder_input(sample: Sample, image_size: int, pixel_mean, pixel_std) -> tuple[torch.Tensor, list[dict]]:
    """(``[3, S, S]`` SAM-preprocessed pixels, the objects in the SAM frame: x, y normalised to
    the square, colour and shape indices, area as a fraction of the square; each object also
    carries ``width``, the unpadded image's width as a fraction of the square)."""
    rgb = sample.rgb()
    prepared = sam_preprocess(rgb, image_size, pixel_mean, pixel_std)
    height, width = rgb.shape[:2]
    scale = prepared.resized_size[0] / height
    objects = []
    for obj in sample.objects or []:
        colour, shape = obj["label"].split()
        mask = rasterize_shapes([{"label": "object", "points": obj["points"]}], height, width) == 1
        if not mask.any():
            continue
        x, y = obj["point"] if "point" in obj else _deepest_point(mask)
        objects.append({"x": (x + 0.5) * scale / image_size, "y": (y + 0.5) * scale / image_size,
                        "colour": COLOUR_WORDS.index(colour), "shape": SHAPE_WORDS.index(shape),
                        "area": float(mask.sum()) * scale * scale / image_size ** 2,
                        "width": prepared.resized_size[1] / image_size})
    return prepared.pixels[0], objects


def targets(objects: list[dict], grid: int) -> dict[str, torch.Tensor]:
    """The training targets of one image on a ``grid`` x ``grid`` map (see the module doc)."""
    heat = torch.zeros(1, grid, grid)
    colour = torch.full((grid, grid), -100, dtype=torch.long)
    shape = torch.full((grid, grid), -100, dtype=torch.long)
    log_area = torch.zeros(1, grid, grid)
    offset = torch.zeros(2, grid, grid)
    centre = torch.zeros(grid, grid, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    for obj in objects:
        cx, cy = obj["x"] * grid, obj["y"] * grid
        col, row = min(grid - 1, int(cx)), min(grid - 1, int(cy))
        bump = torch.exp(-((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2) / 2.0)
        heat[0] = torch.maximum(heat[0], bump)
        heat[0, row, col] = 1.0
        colour[row, col], shape[row, col] = obj["colour"], obj["shape"]
        log_area[0, row, col] = math.log(obj["area"])
        offset[:, row, col] = torch.tensor([cx - col, cy - row])
        centre[row, col] = True
    return {"heatmap": heat, "colour": colour, "shape": shape, "log_area": log_area, "offset": offset, "centre": centre}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    loss = -(positive * (1 - p) ** alpha * torch.log(p)
             + (1 - positive) * (1 - target) ** beta * p ** alpha * torch.log(1 - p))
    return loss.sum() / positive.sum().clamp(min=1)


def encoder_loss(maps: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    centre = batch["centre"]
    loss = focal_loss(maps["heatmap"], batch["heatmap"])
    loss = loss + F.cross_entropy(maps["colour"], batch["colour"], ignore_index=-100)
    loss = loss + F.cross_entropy(maps["shape"], batch["shape"], ignore_index=-100)
    mask = centre[:, None].float()
    count = mask.sum().clamp(min=1)
    loss = loss + (F.l1_loss(maps["log_area"], batch["log_area"], reduction="none") * mask).sum() / count
    loss = loss + (F.l1_loss(maps["offset"], batch["offset"], reduction="none") * mask).sum() / count * 2
    return loss


def _stack(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def evaluate_encoder(encoder: ObjectEncoder, pixels: torch.Tensor, objects: list[list[dict]], max_objects: int) -> dict:
    """Share of objects found (a detection within one cell of the centre) and, of those, the
    share with the right colour, shape and size word (size relative to the padded square)."""
    encoder.eval()
    found = right_colour = right_shape = right_size = total = 0
    with torch.no_grad():
        for start in range(0, len(pixels), 32):
            maps = encoder(pixels[start:start + 32])
            grid = maps["heatmap"].shape[-1]
            for detections, truth in zip(detect(maps, max_objects), objects[start:start + 32]):
                for obj in truth:
                    total += 1
                    near = [d for d in detections if abs(d.x - obj["x"]) * grid <= 1 and abs(d.y - obj["y"]) * grid <= 1]
                    if not near:
                        continue
                    best = min(near, key=lambda d: (d.x - obj["x"]) ** 2 + (d.y - obj["y"]) ** 2)
                    found += 1
                    right_colour += best.colour == COLOUR_WORDS[obj["colour"]]
                    right_shape += best.shape == SHAPE_WORDS[obj["shape"]]
                    right_size += size_word(best.area) == size_word(obj["area"])
    encoder.train()
    return {"objects": total, "found": found / max(total, 1), "colour": right_colour / max(found, 1),
            "shape": right_shape / max(found, 1), "size": right_size / max(found, 1)}


def load_split(samples: list[Sample], image_size: int, pixel_mean, pixel_std, progress: bool = True):
    """Every sample's encoder input: (``[N, 3, S, S]`` pixels, per-sample object lists)."""
    from tqdm import tqdm

    pixels, objects = [], []
    for sample in tqdm(samples, desc="reading scenes", unit="image", disable=not progress):
        if not sample.objects and not sample.nothing_fits:
            raise DataError(f"{sample.image_path}: the object encoder needs annotations that list every object")
        image, found = encoder_input(sample, image_size, pixel_mean, pixel_std)
        pixels.append(image.to(torch.float16))  # 0.4 MB per 256 px image
        objects.append(found)
    return torch.stack(pixels), objects


def train_object_encoder(encoder: ObjectEncoder, train: tuple, val: tuple, epochs: int = 12, batch_size: int = 32,
                         lr: float = 2e-3, max_objects: int = 6, log: Path | None = None, seed: int = 0,
                         progress: bool = True) -> dict:
    """Train ``encoder`` on ``train`` = :func:`load_split` output; returns the last validation
    report. AdamW with cosine decay; horizontal flips as augmentation."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    pixels, objects = train
    grid = encoder(pixels[:1].float())["heatmap"].shape[-1]
    steps = epochs * math.ceil(len(pixels) / batch_size)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    encoder.train()
    report: dict = {}
    bar = tqdm(total=steps, desc="object encoder", unit="step", disable=not progress)
    for epoch in range(epochs):
        order = list(range(len(pixels)))
        rng.shuffle(order)
        started = time.perf_counter()
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            images, items = [], []
            for i in index:
                image, found = pixels[i].float(), objects[i]
                if found and rng.random() < 0.5:  # mirror the image inside its unpadded width
                    fraction = found[0]["width"]
                    width = round(fraction * image.shape[-1])
                    image = image.clone()
                    image[:, :, :width] = image[:, :, :width].flip(-1)
                    found = [{**o, "x": fraction - o["x"]} for o in found]
                images.append(image)
                items.append(targets(found, grid))
            loss = encoder_loss(encoder(torch.stack(images)), _stack(items))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}")
        report = {"epoch": epoch + 1, "loss": round(float(loss), 4), "seconds": round(time.perf_counter() - started, 1),
                  **evaluate_encoder(encoder, val[0].float(), val[1], max_objects)}
        if log is not None:
            with Path(log).open("a") as handle:
                handle.write(json.dumps(report) + "\n")
    bar.close()
    encoder.eval()
    return report
