#!/usr/bin/env python3
"""Following a reasoned target on held-out moving scenes, in real time, with the embedded model.

Each sequence (:func:`lisa_ros.data.scenes.motion.make_moving_sequence`, split "test": seeds and
phrasings training never used) is played as a camera at ``--fps``: a camera thread hands each
frame over at its time (its stamp is its arrival), a tracking thread runs
:meth:`Follower.step` on the newest frame (frames that arrive while it is busy are skipped, as a
node with a one-deep camera queue does), and a model thread runs :meth:`Follower.model_pass`
whenever the model is free (SAM corrections, re-asking the command for a lost target). The
track starts from the model's own answer to the sequence's query about frame 0 (full reasoning).

Printed per sequence and overall:

* ``J``: mean IoU with the ground truth over the frames the tracker answered while at least
  10 % of the target was visible (the DAVIS region measure); ``>0.5``: share of those frames
  with IoU > 0.5; ``held``: the same J for the first answer's mask held still (the baseline);
* ``fps``: frames tracked per second against the camera's rate; ``latency``: median and 95th
  percentile from a frame's arrival to its masks;
* ``loss``: (exit sequences) seconds from the target's last visible frame to the first frame
  reported ``lost`` (negative: reported while a sliver was still in view);
* ``reacq``: (exit sequences) seconds from the frame the target is back (half of it in view) to
  the first frame it is ``tracking`` again with IoU > 0.5, under the same id;
* ``J(gt start)``: the same tracker started from the ground-truth mask of frame 0 instead of
  the model's answer (the tracker alone, not the reasoning).

Then the latency of reasoning requests (``engine.answer`` on a held-out scene) with no track
running and while one runs, and that track's rate meanwhile (the other way round).

    python bench/track.py                        # 4 kinds x 3 sequences, about 4 minutes on 2 cores
    python bench/track.py --sequences 1 --gif runs/track.gif
    python bench/track.py --sequences 0         # only the reasoning requests alone and while tracking
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from lisa_ros.data.scenes import split_scene
from lisa_ros.data.scenes.motion import MOTION_KINDS, make_moving_sequence
from lisa_ros.engine import LisaEngine
from lisa_ros.model.options import LoadOptions
from lisa_ros.tracking import LOST, TRACKING
from lisa_ros.tracking.follow import FollowOptions, Follower, NoTargetError
from lisa_ros.tracking.tracker import Tracker, iou
from lisa_ros.visualization import draw_overlay

VISIBLE = 0.1  # a frame counts for J when at least this share of the target is visible
BACK = 0.5  # the target is "back" once this share of it is in view again


def play(engine: LisaEngine, sequence, options: FollowOptions, engine_lock: threading.Lock) -> dict:
    """Play ``sequence`` in real time through a Follower; per tracked frame, its index, arrival,
    finish time and objects."""
    fps = sequence.fps
    follower = Follower(engine, sequence.query, options, engine_lock)
    newest = {"index": -1}
    arrivals = [0.0] * len(sequence)
    arrived = threading.Condition()
    done = threading.Event()
    records, errors = [], []
    start = time.monotonic() + 0.05

    def camera():
        for index, _ in enumerate(sequence.frames):
            delay = start + index / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with arrived:
                arrivals[index] = time.monotonic()
                newest["index"] = index
                arrived.notify_all()
        done.set()
        with arrived:
            arrived.notify_all()

    def tracking():
        seen = 0
        while True:
            with arrived:
                while newest["index"] < seen and not done.is_set():
                    arrived.wait(0.1)
                index = newest["index"]
            if index < seen:
                return
            seen = index + 1
            objects = follower.step(sequence.frames[index], arrivals[index])
            if objects is not None:
                records.append({"index": index, "arrival": arrivals[index], "done": time.monotonic(), "objects": objects})
            if done.is_set() and index == len(sequence) - 1:
                return

    def model():
        try:
            follower.start(sequence.frames[0], arrivals[0] or start)
        except NoTargetError as error:
            errors.append(str(error))
            return
        while not done.is_set():
            if not follower.model_pass():
                time.sleep(0.02)

    threads = [threading.Thread(target=f, daemon=True) for f in (camera, tracking, model)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"records": records, "arrivals": arrivals, "follower": follower, "error": errors[0] if errors else ""}


def score(sequence, played: dict) -> dict:
    """The figures of one played sequence (see the module docstring)."""
    records, arrivals = played["records"], played["arrivals"]
    fractions = sequence.target_fractions
    result = {"kind": sequence.kind, "index": sequence.index, "query": sequence.query, "error": played["error"],
              "frames": len(sequence), "tracked": len(records)}
    if not records:
        return result
    follower = played["follower"]
    first_mask = next(m.mask for m in follower.answer.masks if m.mask.any())
    target_id = min(o.id for o in records[0]["objects"])

    def target(record):
        return next((o for o in record["objects"] if o.id == target_id), None)

    counted = [r for r in records if fractions[r["index"]] >= VISIBLE]
    ious = [iou(target(r).mask, sequence.target_masks[r["index"]]) for r in counted]
    held = [iou(first_mask, sequence.target_masks[r["index"]]) for r in counted]
    span = records[-1]["arrival"] - records[0]["arrival"]
    latencies = [r["done"] - r["arrival"] for r in records]
    result.update({"J": float(np.mean(ious)) if ious else float("nan"),
                   "above_half": float(np.mean(np.array(ious) > 0.5)) if ious else float("nan"),
                   "held": float(np.mean(held)) if held else float("nan"),
                   "fps": (len(records) - 1) / span if span > 0 else float("nan"),
                   "latency_median": statistics.median(latencies),
                   "latency_p95": float(np.percentile(latencies, 95)),
                   "corrections": follower.corrections, "reacquisitions": follower.reacquisitions})
    if sequence.kind == "exit":
        gone = np.flatnonzero(fractions == 0)
        if len(gone):
            left = int(gone[0])
            last_visible = left - 1
            lost = [r for r in records if r["index"] >= last_visible - sequence.fps and target(r).state == LOST]
            result["loss_s"] = lost[0]["done"] - arrivals[last_visible] if lost else float("nan")
            back = [i for i in range(int(gone[-1]), len(sequence)) if fractions[i] >= BACK]
            if back:
                returned = back[0]
                again = [r for r in records if r["index"] >= returned and target(r).state == TRACKING
                         and iou(target(r).mask, sequence.target_masks[r["index"]]) > 0.5]
                result["reacquire_s"] = again[0]["done"] - arrivals[returned] if again else float("nan")
    return result


def tracker_alone(sequence) -> float:
    """J of the tracker started from the ground-truth mask of frame 0, every frame, no model."""
    tracker = Tracker(sequence.frames[0], [sequence.target_masks[0]], 0.0)
    ious = []
    for index in range(1, len(sequence)):
        found = tracker.step(sequence.frames[index], index / sequence.fps)[0]
        if sequence.target_fractions[index] >= VISIBLE:
            ious.append(iou(found.mask, sequence.target_masks[index]))
    return float(np.mean(ious))


def write_gif(sequence, played: dict, path: Path) -> None:
    """The sequence as played: each tracked frame with its masks, ids, states and scores."""
    from PIL import Image

    images = []
    for record in played["records"]:
        objects = record["objects"]
        rgb = sequence.frames[record["index"]]
        shown = [o for o in objects if o.mask.any()]
        text = f"{sequence.query}  |  " + ", ".join(f"#{o.id} {o.state}" for o in objects)
        drawn = draw_overlay(rgb, [o.mask for o in shown], [o.box for o in shown], [o.score for o in shown],
                             text, labels=[f"#{o.id} {o.state} {o.score:.2f}" for o in shown],
                             colours=[o.id for o in shown])
        images.append(Image.fromarray(cv2.resize(drawn, (rgb.shape[1] // 2, rgb.shape[0] // 2))))
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / sequence.fps), loop=0)


def reasoning_latency(engine: LisaEngine, engine_lock: threading.Lock, sequence, options: FollowOptions,
                      requests: int) -> tuple[list[float], list[float], dict]:
    """Latencies of ``requests`` reasoning requests alone, then while ``sequence`` is tracked;
    and the figures of that track (its rate while the requests were served)."""
    scenes = [split_scene(1, "test", i, (640, 480)) for i in range(requests)]

    def ask(scene) -> float:
        started = time.monotonic()
        with engine_lock:
            engine.answer(scene.rgb, scene.query)
        return time.monotonic() - started

    alone = [ask(scene) for scene in scenes]
    during: list[float] = []

    def requester():
        time.sleep(2.0)  # the track is running by then
        for scene in scenes:
            during.append(ask(scene))
            time.sleep(0.3)

    thread = threading.Thread(target=requester, daemon=True)
    thread.start()
    played = play(engine, sequence, options, engine_lock)
    thread.join()
    return alone, during, score(sequence, played)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=3, help="sequences per kind")
    parser.add_argument("--kinds", default=",".join(MOTION_KINDS))
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-reacquire", action="store_true")
    parser.add_argument("--no-correct", action="store_true")
    parser.add_argument("--seg-prompt", action="store_true", help="add the [SEG] prompt to the box in corrections")
    parser.add_argument("--requests", type=int, default=5, help="reasoning requests alone and while tracking")
    parser.add_argument("--gif", type=Path, help="write the first sequence as played")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    engine = LisaEngine.load("embedded", LoadOptions(precision="fp32", device="cpu"))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"{cpu}, {torch.get_num_threads()} torch threads, camera {args.fps:g} Hz, {args.seconds:g} s sequences",
          flush=True)
    options = FollowOptions(reacquire=not args.no_reacquire, correct=not args.no_correct, seg_prompt=args.seg_prompt)
    lock = threading.Lock()
    engine.answer(split_scene(2, "val", 0, (640, 480)).rgb, "warm up")  # first-call costs out of the timings
    results = []
    print(f"{'sequence':<12} {'J':>5} {'>0.5':>5} {'held':>5} {'J(gt start)':>11} {'fps':>5} {'lat ms':>11} "
          f"{'loss s':>6} {'reacq s':>7}  query")
    for kind in args.kinds.split(","):
        for index in range(args.sequences):
            sequence = make_moving_sequence(args.seed, index, kind, "test", (640, 480), args.seconds, args.fps)
            played = play(engine, sequence, options, lock)
            result = score(sequence, played)
            result["J_gt_start"] = tracker_alone(sequence)
            results.append(result)
            if args.gif and len(results) == 1:
                write_gif(sequence, played, args.gif)
            if result.get("error"):
                print(f"{kind}/{index:<6} no track: {result['error']}", flush=True)
                continue
            print(f"{kind + '/' + str(index):<12} {result['J']:5.2f} {result['above_half']:5.2f} {result['held']:5.2f} "
                  f"{result['J_gt_start']:11.2f} {result['fps']:5.1f} "
                  f"{1000 * result['latency_median']:5.0f}/{1000 * result['latency_p95']:<5.0f} "
                  f"{result.get('loss_s', float('nan')):6.2f} {result.get('reacquire_s', float('nan')):7.2f}  "
                  f"{sequence.query}", flush=True)
    tracked = [r for r in results if "J" in r]
    if tracked:
        print_overall(results, tracked)
    if args.requests:
        sequence = make_moving_sequence(args.seed, 0, "move", "test", (640, 480), args.seconds, args.fps)
        alone, during, track = reasoning_latency(engine, lock, sequence, options, args.requests)
        print(f"reasoning requests: median {statistics.median(alone):.2f} s alone, "
              f"{statistics.median(during):.2f} s while a track runs ({len(during)} requests); "
              f"that track meanwhile: {track.get('fps', float('nan')):.1f} frames per second, J {track.get('J', float('nan')):.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))


def print_overall(results: list[dict], tracked: list[dict]) -> None:
    print(f"overall: J {np.mean([r['J'] for r in tracked]):.3f} (held still {np.mean([r['held'] for r in tracked]):.3f}, "
          f"tracker from ground truth {np.mean([r['J_gt_start'] for r in results]):.3f}), "
          f"sequences above the held-still baseline {sum(r['J'] > r['held'] for r in tracked)}/{len(tracked)}, "
          f"no track {len(results) - len(tracked)}; fps min {min(r['fps'] for r in tracked):.1f} "
          f"median {statistics.median(r['fps'] for r in tracked):.1f}")
    losses = [r["loss_s"] for r in tracked if "loss_s" in r]
    reacquired = [r["reacquire_s"] for r in tracked if "reacquire_s" in r]
    if losses:
        print(f"loss reported after (s): {', '.join(f'{v:.2f}' for v in losses)}; "
              f"re-acquired after (s): {', '.join(f'{v:.2f}' for v in reacquired)}")


if __name__ == "__main__":
    main()
