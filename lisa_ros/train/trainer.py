"""Fine-tuning LISA (docs/MODEL.md §5): LoRA or QLoRA, from a released LISA checkpoint, on your own data.

What trains is set by the run's :class:`~lisa_ros.train.config.TrainConfig` (docs/MODEL.md §5.1 by default:
LoRA on the language model's ``q_proj``/``v_proj``, plus ``embed_tokens``, ``lm_head``, the SAM mask
decoder and ``text_hidden_fcs``). Everything else is frozen. Starting from a released checkpoint keeps its trained decoder and projection (the official
code re-initialises them). QLoRA keeps the frozen base in 4 bit so a 7B fits one 24 GB GPU.

Loop: AdamW (betas 0.9/0.95, no weight decay), linear warmup then linear decay to 0, gradient
clipping 1.0, accumulation, optional evaluation every N steps, a JSON-lines metrics log, a resumable
checkpoint of the trainable weights, and at the end a merged export in the released layout.

A new model (the embedded one, whose projector, [SEG] rows and prompt path start untrained) widens
or narrows this with ``lora_target`` (a regex over full module names), ``trainable`` (name parts of
fully trained parameters) and ``embedding_rows: added`` (only the added tokens' rows of
``embed_tokens``/``lm_head`` change, so the trained delta stays small).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lisa_ros.data.reasonseg import Sample, rasterize_shapes, read_dataset
from lisa_ros.data.scenes.framing import framed_command
from lisa_ros.data.scenes.questions import alignment_example
from lisa_ros.engine import EncodedFrame, GenerationOptions, LisaEngine
from lisa_ros.errors import CheckpointError, DataError, UsageError
from lisa_ros.model.delta import read_delta, trainable_from_delta
from lisa_ros.model.loading import load_lisa
from lisa_ros.model.modeling import expand_at_image, gather_seg_states
from lisa_ros.model.options import LoadOptions
from lisa_ros.model.preprocess import sam_preprocess
from lisa_ros.model.sam import point_prompt_tokens
from lisa_ros.model.tokenization import SEG_TOKEN
from lisa_ros.train.config import TrainConfig, add_lora
from lisa_ros.train.run_outputs import export_merged
from lisa_ros.train.losses import IGNORE_INDEX, LossWeights, combine, mask_bce, mask_dice
from lisa_ros.train.point_prompts import interior_point, random_interior_point, to_sam_frame
from lisa_ros.train.conversations import question_and_answer, training_tokens


WARMUP_WEIGHTS = LossWeights()  # BCE 2, DICE 0.5 (docs/MODEL.md §5.2)


def restrict_to_rows(model, rows: list[int]) -> None:
    """Zero the gradient of every row of embed_tokens/lm_head except ``rows`` (Adam without weight
    decay then leaves those rows exactly unchanged)."""
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and name.endswith(("embed_tokens.weight", "lm_head.weight")):
            keep = torch.zeros(parameter.shape[0], 1, dtype=parameter.dtype, device=parameter.device)
            keep[rows] = 1
            parameter.register_hook(lambda grad, keep=keep: grad * keep)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


class Trainer:
    def __init__(self, config: TrainConfig, progress: bool = True):
        config.validate()
        self.config = config
        self.progress = progress
        self.out = Path(config.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if config.base_llava:  # LISA is built once from the base; resumed runs reuse it
            initial = self.out / "initial"
            if not (initial / "config.json").is_file():
                from lisa_ros.train.from_llava import build_from_llava

                build_from_llava(config.base_llava, config.sam_checkpoint, initial, seed=config.seed)
            config.model, config.base_llava = str(initial), None
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.rng = random.Random(config.seed)
        # QLoRA computes in 16 bit: fp32 falls back to bf16 there.
        precision = "bf16" if config.qlora and config.precision == "fp32" else config.precision
        options = LoadOptions(precision=precision,
                              quantization="4bit" if config.qlora else "none", device=config.device,
                              vision_tower=config.vision_tower)
        self.loaded = load_lisa(config.model, options)
        model = self.loaded.model
        if config.qlora:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
        elif config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = add_lora(model, config)
        if config.embedding_rows == "added":
            if config.weight_decay:
                raise UsageError("embedding_rows: added needs weight_decay 0 (decay would move frozen rows)")
            restrict_to_rows(self.model, sorted(self.loaded.tokenizer.added_tokens.values()))
        self.engine = LisaEngine(self.loaded, GenerationOptions())
        self.samples: list[Sample] = [s for spec in config.data for s in read_dataset(spec["type"], spec["path"])]
        self.ordinary_samples = [s for s in self.samples if not s.nothing_fits]
        self.nothing_fits_samples = [s for s in self.samples if s.nothing_fits]
        if config.nothing_fits_share and not (self.ordinary_samples and self.nothing_fits_samples):
            raise UsageError("nothing_fits_share needs both ordinary and 'nothing fits' samples in `data`")
        unknown = set(config.query_type_weights) - {s.query_type for s in self.samples}
        if unknown:
            raise UsageError(f"`query_type_weights` names query types the data does not have: {sorted(unknown)}")
        # cumulative weights of the pool draw_sample draws ordinary samples from
        pool = self.ordinary_samples if config.nothing_fits_share else self.samples
        self._cumulative_weights = list(itertools.accumulate(
            float(config.query_type_weights.get(s.query_type, 1.0)) for s in pool))
        if config.query_type_weights and not (self._cumulative_weights and self._cumulative_weights[-1] > 0):
            raise UsageError("`query_type_weights` leaves no sample to draw (every type present weighs 0)")
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._projector_trains = any(p.requires_grad for p in self.loaded.model.model.mm_projector.parameters())
        self.lisa = self.loaded.model  # the LisaForCausalLM inside the peft wrapper: its maths, with autograd
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        total, warmup = max(1, config.steps), max(0, config.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: (step + 1) / warmup if step < warmup
            else max(0.0, (total - step) / max(1, total - warmup)))
        self.weights = LossWeights(**config.loss_weights)
        self.step = 0
        self._frames: dict[str, tuple[EncodedFrame, np.ndarray, torch.Tensor]] = {}
        self._object_masks: dict[str, list[np.ndarray]] = {}
        self.warmed_up = config.decoder_warmup_steps == 0
        self.objects_trained = config.object_encoder_epochs == 0
        self.log_path = self.out / "metrics.jsonl"
        self.checkpoint_path = self.out / "checkpoint.pt"
        if config.resume and self.checkpoint_path.is_file():
            self._load_checkpoint()
        elif config.init_from:
            self._init_from(Path(config.init_from))

    # ------------------------------------------------------------------ encoded images
    @property
    def _uses_objects(self) -> bool:  # image tokens from the (trainable) object encoder: never cached
        return self.lisa.encoder_reads_sam_input

    def _needs_embedding(self) -> bool:
        """Whether frames need the SAM image embedding: for mask losses, the decoder warm-up, or
        image tokens made from it."""
        return bool(self.weights.bce or self.weights.dice or not self.warmed_up or not self._uses_objects)

    def _frame(self, sample: Sample) -> tuple[EncodedFrame, np.ndarray, torch.Tensor]:
        """(encoded image, ``[T, H, W]`` 0/1 float targets, ``[T, 256]`` the point-prompt tokens
        of the targets' deepest pixels), one per target in the order the answer names them (T = 1
        for a sample with one target mask, all its target pixels)."""
        key = str(sample.image_path)
        if key not in self._frames:  # the encoders are frozen here: encode each image once
            frame = self._encoded(sample)
            target = np.where(sample.target(*frame.original_size) == 1, 1, 0).astype(np.float32)  # ignore -> 0
            several = sample.target_masks(*frame.original_size) if sample.several_targets else []
            targets = np.stack(several).astype(np.float32) if several else target[None]
            tokens = torch.zeros(0)
            if self.weights.point and target.any():  # only the point loss needs them
                tokens = torch.stack([self._point_token(point, frame) for point in self._target_points(sample, target)])
            self._frames[key] = (frame, targets, tokens)
        return self._frames[key]

    @staticmethod
    def _target_points(sample: Sample, target: np.ndarray) -> list[tuple[float, float]]:
        """(x, y) source pixels deepest inside each target, in the answer's order (from the
        annotation when it has them; else one, inside the whole target mask)."""
        indices = sample.all_target_indices
        if indices and all("point" in sample.objects[i] for i in indices):
            return [tuple(sample.objects[i]["point"]) for i in indices]
        return [interior_point(target)]

    def _point_token(self, point: tuple[float, float], frame: EncodedFrame) -> torch.Tensor:
        """``[256]``: SAM's token for a positive point at source pixel ``point``."""
        scaled = to_sam_frame(np.array([point]), frame.resized_size, frame.original_size)
        with torch.no_grad():
            return point_prompt_tokens(self.lisa.visual_model.prompt_encoder, torch.from_numpy(scaled))[0]

    def _encoded(self, sample: Sample) -> EncodedFrame:
        """The image through the frozen encoders; the SAM embedding read from ``frame_cache``
        when it is there. An ``objects`` model's tokens come from its object encoder, always
        computed afresh (cheap, and the encoder may have just been trained)."""
        if not self._uses_objects:
            path = self._cache_path(sample, "frame")
            if path is not None and path.is_file():
                stored = torch.load(path, weights_only=True)
                device = self.loaded.device
                features = stored["encoder_features"].to(device)
                with torch.no_grad():
                    tokens = self.lisa.project_image_features(features)
                return EncodedFrame(stored["image_embedding"].to(device), tokens, tuple(stored["resized_size"]),
                                    tuple(stored["original_size"]), {}, features)
            with torch.no_grad():
                frame = self.engine.encode_frame(sample.rgb())
            self._store(path, {"image_embedding": frame.image_embedding.cpu(),
                               "encoder_features": frame.encoder_features.cpu(),
                               "resized_size": list(frame.resized_size), "original_size": list(frame.original_size)})
            return frame
        rgb = sample.rgb()
        sam_config = self.lisa.config.sam
        sam_input = sam_preprocess(rgb, sam_config.image_size, sam_config.pixel_mean, sam_config.pixel_std)
        pixels = sam_input.pixels.to(self.loaded.device)
        with torch.no_grad():
            features = self.lisa.encoder_features(pixels, None, [sam_input.resized_size])
            tokens = self.lisa.project_image_features(features)
            embedding = None
            if self._needs_embedding():
                path = self._cache_path(sample, "embedding")
                if path is not None and path.is_file():
                    embedding = torch.load(path, weights_only=True)["image_embedding"].to(self.loaded.device)
                else:
                    embedding = self.lisa.sam_image_embedding(pixels)
                    self._store(path, {"image_embedding": embedding.cpu()})
        return EncodedFrame(embedding, tokens, sam_input.resized_size, sam_input.original_size, {}, features)

    def _cache_path(self, sample: Sample, kind: str) -> Path | None:
        if not self.config.frame_cache:
            return None
        stat = Path(sample.image_path).stat()
        key = (f"{kind}|{self.config.model}|{self.config.precision}|{Path(sample.image_path).resolve()}|"
               f"{stat.st_size}|{stat.st_mtime_ns}")  # another model, precision or image file: encode again
        return Path(self.config.frame_cache) / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.pt"

    @staticmethod
    def _store(path: Path | None, tensors: dict) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(tensors, temporary)
        temporary.replace(path)  # never a half-written file after a crash

    def encode_all(self, samples: list[Sample] | None = None) -> None:
        """Encode every training image (or ``samples``) before the first step, with progress,
        so steps cost the same."""
        from tqdm import tqdm

        for sample in tqdm(samples or self.samples, desc="encoding images", unit="image", disable=not self.progress):
            self._frame(sample)

    # ------------------------------------------------------------------ object encoder
    def train_object_encoder(self) -> dict:
        """An ``objects`` model: train its object encoder on the training scenes (validated on
        ``eval_data`` when given), then freeze it. See :mod:`lisa_ros.train.object_encoder`."""
        from lisa_ros.train.object_encoder import load_split, train_object_encoder

        config, sam = self.config, self.lisa.config.sam
        encoder = self.lisa.model.mm_object_encoder
        train = load_split(self.samples, sam.image_size, sam.pixel_mean, sam.pixel_std, self.progress)
        val_samples = read_dataset(config.eval_data["type"], config.eval_data["path"]) if config.eval_data else self.samples[:64]
        val = load_split(val_samples, sam.image_size, sam.pixel_mean, sam.pixel_std, self.progress)
        with torch.enable_grad():
            report = train_object_encoder(encoder, train, val, epochs=config.object_encoder_epochs, lr=config.object_encoder_lr,
                                          max_objects=self.lisa.config.mm_max_objects, log=self.log_path, seed=config.seed,
                                          progress=self.progress)
        encoder.eval()
        self._frames.clear()  # tokens made by the untrained encoder
        self.objects_trained = True
        self._save_checkpoint()
        return report

    # ------------------------------------------------------------------ decoder warm-up
    def _objects(self, sample: Sample) -> list[np.ndarray]:
        """Every annotated object of the sample's image (its target when it lists no objects)."""
        key = str(sample.image_path)
        if key not in self._object_masks:
            frame, targets, _ = self._frame(sample)
            height, width = frame.original_size
            polygons = [[{"label": "target", "points": o["points"]}] for o in sample.objects or []]
            masks = [rasterize_shapes(p, height, width) == 1 for p in polygons] or [t > 0 for t in targets]
            self._object_masks[key] = [m for m in masks if m.any()]
        return self._object_masks[key]

    def _warmup_samples(self) -> list[Sample]:
        limit = self.config.decoder_warmup_images
        return self.samples[:limit] if limit else self.samples

    def warm_up_decoder(self) -> None:
        """Train the mask decoder's trainable parts on one-point prompts (see point_prompts.py)."""
        from tqdm import tqdm

        config = self.config
        decoder = [p for n, p in self.model.named_parameters() if p.requires_grad and "mask_decoder" in n]
        if not decoder:
            raise ValueError("decoder_warmup_steps needs trainable mask-decoder parameters")
        optimizer = torch.optim.AdamW(decoder, lr=config.decoder_warmup_lr, betas=config.betas, weight_decay=0.0)
        steps = config.decoder_warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
        encoder = self.lisa.visual_model.prompt_encoder
        for step in tqdm(range(steps), desc="decoder warm-up", unit="step", disable=not self.progress):
            started = time.perf_counter()
            losses = []
            for _ in range(config.batch_size):
                sample = self.rng.choice(self._warmup_samples())
                frame, _, _ = self._frame(sample)
                objects = self._objects(sample)
                if not objects:
                    continue
                mask = self.rng.choice(objects)
                point = to_sam_frame(np.array([random_interior_point(mask, self.rng)]),
                                     frame.resized_size, frame.original_size)
                with torch.no_grad():
                    token = point_prompt_tokens(encoder, torch.from_numpy(point))
                token = token + config.decoder_warmup_noise * torch.randn_like(token)
                logits = self.lisa.decode_mask_logits(token, frame.image_embedding, frame.resized_size,
                                                      frame.original_size)[0]
                target = torch.from_numpy(mask.astype(np.float32)).to(logits.device)
                # The warm-up always uses LISA's mask loss, whatever the main stage's weights are.
                losses.append(WARMUP_WEIGHTS.bce * mask_bce(logits, target) + WARMUP_WEIGHTS.dice * mask_dice(logits, target))
            if not losses:
                continue
            loss = torch.stack(losses).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder, config.clip_grad)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % config.log_every == 0:
                with self.log_path.open("a") as log:
                    log.write(json.dumps({"warmup_step": step + 1, "loss": round(float(loss.detach()), 6),
                                          "seconds": round(time.perf_counter() - started, 3)}) + "\n")
        self.warmed_up = True
        self._save_checkpoint()

    # ------------------------------------------------------------------ one micro-batch
    def draw_sample(self) -> Sample:
        """One training sample: uniform over the data, or with ``nothing_fits_share`` > 0 a
        "nothing fits" sample with that probability and an ordinary one otherwise; ordinary ones
        weighted by their query type with ``query_type_weights``."""
        share = self.config.nothing_fits_share
        if share and self.rng.random() < share:
            return self.rng.choice(self.nothing_fits_samples)
        pool = self.ordinary_samples if share else self.samples
        if not self.config.query_type_weights:
            return self.rng.choice(pool)
        return self.rng.choices(pool, cum_weights=self._cumulative_weights)[0]

    def conversation(self, sample: Sample) -> tuple[list[tuple[str, str]], str, str, list[tuple[float, float]] | None]:
        """(earlier turns, question, answer, the source pixels the answer's [SEG]s should point
        at, in order (empty for an alignment answer without [SEG]), or None for the sample's own
        targets) of one training conversation about
        ``sample``: an alignment question with probability ``alignment`` (when the sample lists
        its objects), else its own query after its history (a follow-up's first turn), said in a
        structure of the command grammar with probability ``framed_commands``."""
        if self.config.alignment and self.rng.random() < self.config.alignment:
            example = alignment_example(sample, self.rng)
            if example is not None:
                task, question, answer = example
                points = []  # no [SEG] in the answer, whatever the sample's own targets
                if task == "refer":
                    label = answer.split("it is the ", 1)[1]
                    points = [next(tuple(o["point"]) for o in sample.objects if label.startswith(o["label"] + " "))]
                return [], question, answer, points
        explanatory = bool(sample.explanation) and self.rng.random() < self.config.explanatory
        text = self.rng.choice(sample.texts)
        if self.config.framed_commands and sample.slots and self.rng.random() < self.config.framed_commands:
            text = framed_command(sample.query_type or "", sample.slots, self.rng) or text
        question, answer = question_and_answer(sample, text, self.rng, explanatory)
        return list(sample.history or []), question, answer, None

    def batch_loss(self, batch: list[Sample]) -> dict[str, torch.Tensor]:
        """The loss of one micro-batch: every conversation in ONE padded forward (right padding,
        attention mask), CE on the answers, and per [SEG] the mask and point terms."""
        tokenizer, lisa, device = self.loaded.tokenizer, self.lisa, self.loaded.device
        rows = []
        for sample in batch:
            frame, targets, target_tokens = self._frame(sample)
            history, question, answer, points = self.conversation(sample)
            ids, labels = training_tokens(tokenizer, question, answer, history)
            segs = answer.count(SEG_TOKEN)
            if points is not None:  # an alignment question: its own object, or none
                target_tokens = (torch.stack([self._point_token(p, frame) for p in points])
                                 if points and self.weights.point else torch.zeros(0))
            elif len(targets) > 1 and segs != len(targets):
                raise DataError(f"{sample.image_path}: the answer has {segs} [SEG] for {len(targets)} targets")
            mask_targets = targets if points is None else None  # an alignment [SEG] has no mask here
            rows.append((ids, labels, frame, mask_targets, target_tokens, segs))
        length = max(len(ids) for ids, *_ in rows)
        input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, device=device)
        labels = torch.full((len(rows), length), IGNORE_INDEX, device=device)
        attention = torch.zeros((len(rows), length), dtype=torch.long, device=device)
        for b, (ids, row_labels, *_rest) in enumerate(rows):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            labels[b, :len(ids)] = torch.tensor(row_labels)
            attention[b, :len(ids)] = 1
        if self._projector_trains:  # the cached projection would be stale: project again, with autograd
            image_tokens = torch.cat([lisa.project_image_features(row[2].encoder_features) for row in rows])
        else:
            image_tokens = torch.cat([row[2].image_tokens for row in rows])
        num_image_tokens = image_tokens.shape[1]
        spliced = lisa.embed_with_image_tokens(input_ids, image_tokens, attention)
        expanded = expand_at_image(labels, input_ids, num_image_tokens, IGNORE_INDEX)
        hidden = lisa.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                            use_cache=False).last_hidden_state
        supervised = expanded[:, 1:] != IGNORE_INDEX
        logits = lisa.lm_head(hidden[:, :-1][supervised]).float()
        ce_sum = torch.nn.functional.cross_entropy(logits, expanded[:, 1:][supervised], reduction="sum")
        ce_count = int(supervised.sum())
        mask_logits, targets, point_errors = [], [], []
        for b, (ids, _labels, frame, mask_targets, tokens, answer_segs) in enumerate(rows):
            states = gather_seg_states(hidden[b], ids, tokenizer.seg_token_id, num_image_tokens)
            states = states[len(states) - answer_segs:]  # the last answer's [SEG]s, not the history's
            if not len(states):
                continue
            prompts = lisa.project_seg_hidden_states(states)
            if (self.weights.bce or self.weights.dice) and mask_targets is not None and frame.image_embedding is not None:
                decoded = lisa.decode_mask_logits(prompts, frame.image_embedding, frame.resized_size, frame.original_size)
                mask_logits += list(decoded)  # the k-th [SEG] against the k-th target (or every one against the one)
                chosen = mask_targets if len(mask_targets) == decoded.shape[0] else [mask_targets[0]] * decoded.shape[0]
                targets += [torch.from_numpy(np.ascontiguousarray(t)).to(device) for t in chosen]
            if self.weights.point and tokens.numel():  # the k-th [SEG] points at the k-th target
                point_errors += [((p.float() - token.to(p.device)) ** 2).mean() for p, token in zip(prompts, tokens)]
        return combine(ce_sum, ce_count, mask_logits, targets, self.weights,
                       point_errors if self.weights.point else None)

    # ------------------------------------------------------------------ loop
    def train(self, evaluate=None) -> Path | None:
        from tqdm import tqdm

        config = self.config
        self.model.train()
        if not self.objects_trained:
            self.train_object_encoder()
        if not self.warmed_up:
            self.encode_all(self._warmup_samples())
            self.warm_up_decoder()
        if config.frame_cache:
            self.encode_all()
        bar = tqdm(total=config.steps, initial=self.step, desc="training", unit="step", disable=not self.progress)
        last = min(config.steps, config.stop_at or config.steps)
        while self.step < last:
            started = time.perf_counter()
            totals = {"loss": 0.0, "ce": 0.0, "bce": 0.0, "dice": 0.0, **({"point": 0.0} if self.weights.point else {})}
            for _ in range(config.grad_accumulation):
                batch = [self.draw_sample() for _ in range(config.batch_size)]
                parts = self.batch_loss(batch)
                (parts["loss"] / config.grad_accumulation).backward()
                for key in totals:
                    totals[key] += float(parts[key].detach()) / config.grad_accumulation
            norm = torch.nn.utils.clip_grad_norm_(self.params, config.clip_grad)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            record = {"step": self.step, **{k: round(v, 6) for k, v in totals.items()},
                      "grad_norm": round(float(norm), 4), "lr": self.scheduler.get_last_lr()[0],
                      "seconds": round(time.perf_counter() - started, 3)}
            if evaluate is not None and config.eval_every and self.step % config.eval_every == 0:
                record["eval"] = evaluate(self)
                self.model.train()
            if self.step % config.log_every == 0 or "eval" in record:
                with self.log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{totals['loss']:.3f}", ce=f"{totals['ce']:.3f}", dice=f"{totals['dice']:.3f}")
            bar.update(1)
            if self.step % config.save_every == 0 or self.step == last:
                self._save_checkpoint()
        bar.close()
        self.model.eval()
        return self.export() if config.export else None

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        state = {"step": self.step, "warmed_up": self.warmed_up, "objects_trained": self.objects_trained,
                 "trainable": trainable_state(self.model),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": self.rng.getstate(), "torch_rng": torch.get_rng_state(), "config": asdict(self.config)}
        temporary = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(self.checkpoint_path)  # never a half-written checkpoint after a crash

    def _load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, weights_only=False)
        parameters = dict(self.model.named_parameters())
        missing = set(state["trainable"]) - set(parameters)
        if missing:
            raise ValueError(f"{self.checkpoint_path} does not match this model ({len(missing)} unknown weights)")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                parameters[name].copy_(value.to(parameters[name].device, parameters[name].dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        self.warmed_up = state.get("warmed_up", True)
        self.objects_trained = state.get("objects_trained", True)

    def _init_from(self, path: Path) -> None:
        """Copy the finished stages of another run (see ``TrainConfig.init_from``): its trained
        weights whose names contain one of ``init_parts``; the stages they finish are skipped. The
        run is a ``checkpoint.pt`` or a delta file (``.safetensors``, :mod:`lisa_ros.model.delta`):
        a delta comes from a finished run, so its object encoder and decoder warm-up count as done.
        The optimizer starts afresh (a delta holds no optimizer state)."""
        if not path.is_file():
            raise UsageError(f"init_from: {path} does not exist")
        parameters = dict(self.model.named_parameters())
        if path.suffix == ".safetensors":  # a delta (e.g. the shipped one): every part it holds is trained
            tensors, metadata = read_delta(path)
            try:
                trainable = trainable_from_delta(tensors, metadata, self.config.lora_alpha / self.config.lora_r, parameters)
            except CheckpointError as error:
                raise UsageError(f"init_from: {error}") from error
            uncovered = [name for name, parameter in parameters.items() if parameter.requires_grad
                         and any(part in name for part in self.config.init_parts) and name not in trainable]
            if uncovered:
                raise UsageError(f"init_from: the delta {path} holds no value for {len(uncovered)} trained "
                                 f"weights of this run (e.g. {uncovered[0]}): narrow init_parts or trainable")
            state = {"trainable": trainable, "objects_trained": True, "warmed_up": True}
        else:
            state = torch.load(path, weights_only=False, map_location="cpu")
        chosen = {name: value for name, value in state["trainable"].items()
                  if any(part in name for part in self.config.init_parts)}
        unknown = [name for name in chosen if name not in parameters]
        if not chosen or unknown:
            raise UsageError(f"init_from: {path} has no weights for {self.config.init_parts}" if not chosen else
                             f"init_from: {len(unknown)} weights of {path} do not fit this model (e.g. {unknown[0]})")
        with torch.no_grad():
            for name, value in chosen.items():
                parameters[name].copy_(value.to(parameters[name].device, parameters[name].dtype))
        if any("mm_object_encoder" in name for name in chosen) and state.get("objects_trained", False):
            self.objects_trained = "objects" not in self.config.retrain
        if any("mask_decoder" in name for name in chosen) and state.get("warmed_up", False):
            self.warmed_up = "decoder" not in self.config.retrain

    def export(self) -> Path:
        """Merge LoRA into the weights and write a released-layout folder the loader reads strictly."""
        return export_merged(self.config, trainable_state(self.model), self.out / "merged")
