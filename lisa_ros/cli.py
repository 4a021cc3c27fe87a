"""The `lisa-ros` command line tool, the package's one command line: thin wrappers over the core.

    lisa-ros segment --model M --image PATH --prompt TEXT --out DIR   (one question, files out)
    lisa-ros chat    --model M [--image PATH] [--out DIR]             (interactive, multi-turn)
    lisa-ros ask "COMMAND" [--camera NAME] [--image PATH] [--out DIR] (client of a running node)
    lisa-ros replay BAG --command TEXT --out OUT_BAG [--every N] [--annotations MASKS] [--node]
                                                                       (a recorded bag, answers into a bag, scored)
    lisa-ros train CONFIG.yaml                                         (LoRA/QLoRA fine-tuning, merged export)
    lisa-ros eval --model M --data DIR [--mode teacher-forced|generate] (gIoU / cIoU)
    lisa-ros scenes OUT_DIR [--splits ...] [--count-train N ...]      (scene datasets)
    lisa-ros embedded path|base|extract RUN_DIR|average A B            (the embedded default model)
    lisa-ros info                                                      (versions and locations)
    lisa-ros parameters                                                (the node's parameters, markdown)

Errors (missing file, unreadable image, bad model folder, bad option: every
:class:`~lisa_ros.errors.LisaError`) print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from lisa_ros.data.reasonseg import DATASET_TYPES
from lisa_ros.data.scenes.vocabulary import CAMERA_SHARE, DEFAULT_SIZE
from lisa_ros.errors import InvalidCommandError, LisaError, UsageError
from lisa_ros.model.options import (
    BACKEND_RULE,
    PRECISION_AUTO_RULE,
    PRECISION_CHOICES,
    QUANTIZATION_BACKEND_CHOICES,
    QUANTIZATION_CHOICES,
    GenerationOptions,
    LoadOptions,
)


class CliError(LisaError):
    """A user-facing error of the command line itself (a missing file, an empty prompt)."""


def _cmd_parameters(args: argparse.Namespace) -> int:
    from lisa_ros.ros.parameters import reference_markdown

    print(reference_markdown(), end="")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from lisa_ros import __version__
    from lisa_ros.resources import config_path

    print(f"lisa_ros {__version__}")
    print(f"python {sys.version.split()[0]}")
    for module in ("rclpy", "numpy", "cv2", "torch", "transformers", "bitsandbytes"):
        try:
            mod = __import__(module)
            print(f"{module} {getattr(mod, '__version__', 'installed')}")
        except Exception as exc:  # report, never fail: this is a diagnostic command
            print(f"{module} unavailable ({type(exc).__name__}: {exc})")
    try:
        import torch

        print(f"cuda available: {torch.cuda.is_available()}")
    except Exception:
        pass
    try:
        from lisa_ros.srv import ReasonSegment  # noqa: F401

        print("interfaces: lisa_ros.msg/srv/action importable")
    except Exception as exc:
        print(f"interfaces: NOT importable ({exc})")
    print(f"fast dds profile (robot): {config_path('fastdds.xml')}")
    print(f"fast dds profile (localhost only): {config_path('fastdds_localhost.xml')}")
    return 0


# ---------------------------------------------------------------------------------------------
# model commands


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded",
                        help="LISA checkpoint: a folder, a hub id (xinlai/LISA-7B-v1) or 'embedded' (default: the "
                             "small offline model shipped with lisa_ros)")
    parser.add_argument("--vision-tower", help="CLIP tower folder or hub id (default: from config.json)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=LoadOptions.precision,
                        help=PRECISION_AUTO_RULE)
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default="none",
                        help="4bit or 8bit weights for the language model (SAM stays 16-bit)")
    parser.add_argument("--quantization-backend", choices=QUANTIZATION_BACKEND_CHOICES,
                        default=LoadOptions.quantization_backend,
                        help=BACKEND_RULE)
    parser.add_argument("--quantize-heads", action="store_true",
                        help="also quantize lm_head, mm_projector, text_hidden_fcs (official behaviour)")
    parser.add_argument("--device", default=LoadOptions.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--max-new-tokens", type=int, default=GenerationOptions.max_new_tokens)
    parser.add_argument("--no-stop-after-seg", action="store_true",
                        help="keep generating after the [SEG] sentence when no explanation is asked")
    parser.add_argument("--draft-tokens", type=int, default=GenerationOptions.draft_tokens,
                        help="tokens guessed from earlier answers and checked per forward pass (the same greedy answer "
                             "in fewer passes); 0: one token per pass")


def _load_engine(args: argparse.Namespace):
    from lisa_ros.engine import LisaEngine

    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    if args.draft_tokens < 0:
        raise CliError("--draft-tokens must be 0 or more")
    options = LoadOptions(precision=args.precision, quantization=args.quantization,
                          quantization_backend=args.quantization_backend, device=args.device,
                          vision_tower=args.vision_tower, quantize_heads=args.quantize_heads)
    return LisaEngine.load(args.model, options, GenerationOptions(
        max_new_tokens=args.max_new_tokens, stop_after_seg=not args.no_stop_after_seg, draft_tokens=args.draft_tokens))


def read_rgb(path: str | Path):
    """An image file as (H, W, 3) uint8 RGB (alpha dropped, grey replicated, as LISA reads it)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise CliError(f"image {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CliError(f"cannot read {path} as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_outputs(answer, rgb, out: Path, prefix: str = "", read_s: float = 0.0) -> dict:
    """Write ``mask_<i>.png`` (0/255), ``overlay.png`` and result.json (:mod:`lisa_ros.result_file`,
    the format ``lisa-ros ask`` writes) for one answer; returns the JSON object. ``read_s``:
    seconds the image took to read (the ``preprocess`` stage)."""
    import cv2

    from lisa_ros.result_file import STATUS_CODES, object_entry, result_entry
    from lisa_ros.timing import engine_stages
    from lisa_ros.visualization import draw_overlay

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    objects = []
    for decoded in answer.masks:
        name = f"{prefix}mask_{decoded.index}.png"
        cv2.imwrite(str(out / name), decoded.mask.astype("uint8") * 255)
        objects.append(object_entry(decoded.index, decoded.label, decoded.score, decoded.box, mask=name))
    overlay = draw_overlay(rgb, [m.mask for m in answer.masks], [m.box for m in answer.masks],
                           [m.score for m in answer.masks], answer.text)
    cv2.imwrite(str(out / f"{prefix}overlay.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    name = "OK" if answer.masks else "NO_TARGET"
    timings = {"preprocess": read_s, **engine_stages(answer.timings),
               "postprocess": time.perf_counter() - started}
    timings["total"] = read_s + answer.timings.get("total", 0.0) + timings["postprocess"]
    result = result_entry(status_code=STATUS_CODES[name], status_name=name, status_message="; ".join(answer.caveats),
                          command=answer.command, answer=answer.text, explanation=answer.explanation, objects=objects,
                          warnings=answer.warnings, timings=timings, generated_tokens=answer.generated_tokens,
                          image_size=rgb.shape[:2])
    (out / f"{prefix}result.json").write_text(json.dumps(result, indent=2))
    return result


def _cmd_segment(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise CliError("--prompt is empty")
    started = time.perf_counter()
    rgb = read_rgb(args.image)  # before the (slow) model load: fail fast on a bad path
    read_s = time.perf_counter() - started
    engine = _load_engine(args)
    answer, _ = engine.answer(rgb, args.prompt, explain=args.explain)
    result = write_outputs(answer, rgb, Path(args.out), read_s=read_s)
    print(json.dumps(result))  # as `ask` prints its result, and with its exit status: 3 when nothing is segmented
    return 0 if result["success"] else 3


def _cmd_chat(args: argparse.Namespace) -> int:
    engine = _load_engine(args)
    out = Path(args.out)
    interactive = sys.stdin.isatty()
    rgb = read_rgb(args.image) if args.image else None
    frame, conversation, turn = None, None, 0
    print("commands: :image PATH (new image, new conversation), :reset, :explain on|off, :quit", flush=True)
    explain = args.explain
    while True:
        try:
            line = input("lisa> " if interactive else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in (":quit", ":q", ":exit"):
            break
        if line == ":reset":
            conversation = None
            print("conversation reset", flush=True)
            continue
        if line.startswith(":explain"):
            explain = line.split()[-1] == "on"
            print(f"explain {'on' if explain else 'off'}", flush=True)
            continue
        if line.startswith(":image"):
            try:
                rgb = read_rgb(line[len(":image"):].strip())
            except CliError as exc:
                print(f"error: {exc}", flush=True)
                continue
            frame, conversation = None, None
            print(f"image {rgb.shape[1]}x{rgb.shape[0]} loaded", flush=True)
            continue
        if rgb is None:
            print("error: no image yet: use :image PATH", flush=True)
            continue
        if frame is None:
            frame = engine.encode_frame(rgb)  # once per image, reused for every question
        try:
            answer, conversation = engine.answer(frame, line, explain=explain, history=conversation)
        except InvalidCommandError as exc:  # prompt syntax in the text, or too long: say so, go on
            print(f"error: {exc}", flush=True)
            continue
        write_outputs(answer, rgb, out, prefix=f"turn{turn}_")
        masks = ", ".join(f"turn{turn}_mask_{m.index}.png ({m.score:.2f})" for m in answer.masks) or "none"
        print(f"{answer.text}\n  masks: {masks}", flush=True)
        for note in answer.caveats:
            print(f"  note: {note}", flush=True)
        turn += 1
    return 0


def _min_stamp(text: str) -> str | float:
    """--min-stamp: "now" or seconds (argparse type)."""
    if text == "now":
        return text
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'now' nor seconds") from None
    if not 0 <= seconds < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is outside builtin_interfaces/Time (0 to 2^31 s)")
    return seconds


def _cmd_ask(args: argparse.Namespace) -> int:
    """Ask a running node (lisa_ros.ros.client.ask), print the summary; exit 0 with objects, 3
    when the model found nothing that fits (NO_TARGET), 1 when refused or failed."""
    from lisa_ros.ros.client import ask

    rgb = read_rgb(args.image) if args.image else None
    summary = ask(args.command_text, camera=args.camera or "", image=rgb, frame_id=args.frame_id,
                  explain=args.explain, session_id=args.session or "", target_frame=args.target_frame,
                  min_stamp=args.min_stamp, point_cloud=args.point_cloud, use_action=args.action,
                  name=args.service, namespace=args.namespace,
                  wait_s=args.wait, timeout_s=args.timeout, out=Path(args.out) if args.out else None,
                  on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(summary))  # ClientError (a LisaError) becomes main()'s one-line error, status 2
    return 0 if summary["success"] else 3 if summary["status"]["name"] == "NO_TARGET" else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from lisa_ros.data.reasonseg import read_dataset
    from lisa_ros.evaluate.runner import evaluate
    from lisa_ros.train.trainer import TrainConfig, Trainer

    path = Path(args.config)
    if not path.is_file():
        raise CliError(f"training config {path} does not exist")
    try:
        config = TrainConfig.from_yaml(path)
    except TypeError as exc:  # a key of the wrong kind in the YAML
        raise UsageError(f"{path}: {exc}") from exc
    trainer = Trainer(config)
    evaluate_fn = None
    if config.eval_data:
        eval_samples = read_dataset(config.eval_data["type"], config.eval_data["path"])
        evaluate_fn = lambda t: evaluate(t.engine, eval_samples, "teacher-forced", progress=False)["overall"]  # noqa: E731
    merged = trainer.train(evaluate_fn)
    print(json.dumps({"steps": trainer.step, "metrics": str(trainer.log_path), "merged_model": str(merged) if merged else None}))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from lisa_ros.data.reasonseg import read_dataset
    from lisa_ros.evaluate.runner import evaluate, json_ready

    samples = read_dataset(args.format, args.data)
    engine = _load_engine(args)
    report = evaluate(engine, samples, args.mode, args.out)
    print(json.dumps(json_ready(report), allow_nan=False))
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def _cmd_scenes(args: argparse.Namespace) -> int:
    """Write reasoning-scene splits and print, per split, the count per type and the "pick any
    object" baseline gIoU a useful model must beat."""
    from collections import Counter

    from lisa_ros.data.scenes import QUERY_TYPES, SPLIT_SEEDS, SPLITS, write_split
    from lisa_ros.evaluate.baseline import any_object_baseline

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise UsageError(f"unknown split(s) {unknown} (choose from {', '.join(SPLITS)})")
    if not 0.0 <= args.camera_share <= 1.0:
        raise UsageError(f"--camera-share must be in [0, 1], got {args.camera_share}")
    counts = {"train": args.count_train, "val": args.count_val, "test": args.count_test, "camera": args.count_camera}
    for split in splits:
        seed = SPLIT_SEEDS[split] + args.seed_offset
        if seed < 0:
            raise UsageError("--seed-offset makes a seed negative")
        folder = write_split(Path(args.out_dir) / split, split, counts[split], seed, args.size,
                             progress=not args.no_progress, camera_share=args.camera_share)
        per_type = Counter(QUERY_TYPES[i % len(QUERY_TYPES)] for i in range(counts[split]))
        summary = ", ".join(f"{name} {per_type[name]}" for name in QUERY_TYPES)
        baseline = f"; any-object baseline gIoU {any_object_baseline(folder)['giou']:.3f}" if counts[split] else ""
        print(f"{split}: {counts[split]} scenes (seed {seed}) in {folder}: {summary}{baseline}", flush=True)
    return 0


def _cmd_embedded(args: argparse.Namespace) -> int:
    from lisa_ros.model.embedded import embedded_checkpoint

    if args.action == "extract":
        from lisa_ros.train.run_outputs import extract_delta

        if len(args.paths) != 1:
            raise CliError("extract needs RUN_DIR (the output_dir of a lisa-ros train run)")
        print(extract_delta(args.paths[0], *([args.out] if args.out else [])))
    elif args.action == "average":
        from lisa_ros.model.delta import average_deltas, read_delta, write_delta

        if len(args.paths) != 2 or not args.out or args.weight is None:
            raise CliError("average needs two delta files, --weight W (of the second, 0 to 1) and --out FILE")
        if not 0.0 <= args.weight <= 1.0:
            raise CliError(f"--weight {args.weight} is outside 0 to 1")
        for path in args.paths:
            if not Path(path).is_file():
                raise CliError(f"{path} does not exist")
        print(write_delta(args.out, *average_deltas(read_delta(args.paths[0]), read_delta(args.paths[1]), args.weight)))
    else:
        if args.paths or args.weight is not None or args.out:
            raise CliError(f"{args.action} takes no paths, --out or --weight")
        print(embedded_checkpoint(trained=args.action == "path"))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from lisa_ros.ros.bags import find_topics, header_stamps_ns, log_window, open_bag
    from lisa_ros.ros.replay import ReplayOptions, replay

    if not args.command_text.strip():
        raise CliError("--command is empty")
    if args.every is not None and args.every < 1:
        raise CliError("--every must be 1 or more")
    if args.correct_every < 1:
        raise CliError("--correct-every must be 1 or more")
    if args.track and args.node:
        raise CliError("--track replays offline; with --node, follow through the node's ~/track action")
    out = Path(args.out)
    if out.exists():
        raise CliError(f"{args.out} already exists: choose another --out or remove it")
    score, report = None, None
    if args.annotations:
        from lisa_ros.evaluate.annotations import read_annotations
        from lisa_ros.evaluate.recorded import RecordedScore

        score = RecordedScore(read_annotations(args.annotations))
        report = Path(args.report) if args.report else out.with_name(f"{out.name}-score")
        if report.exists():
            raise CliError(f"{report} already exists: choose another --report or remove it")
    elif args.report:
        raise CliError("--report needs --annotations (the masks to score against)")
    reader = open_bag(args.bag)  # before the (slow) model load: fail fast on a bad bag or annotations
    try:
        topics = find_topics(reader, args.camera_topic, args.depth_topic, args.camera_info_topic)
        if score is not None:
            score.check_stamps(header_stamps_ns(reader, topics.colour, *log_window(reader, args.start, args.end)))
    finally:
        reader.close()
    options = ReplayOptions(args.command_text, every=args.every, at=args.at, start=args.start, end=args.end,
                            explain=args.explain, camera_topic=args.camera_topic, depth_topic=args.depth_topic,
                            camera_info_topic=args.camera_info_topic, storage=args.storage,
                            copy_inputs=not args.no_inputs, target_frame=args.target_frame.lstrip("/"),
                            track=args.track, correct_every=args.correct_every)
    if args.node:
        from lisa_ros.ros.live_replay import replay_live

        summary = replay_live(args.bag, args.out, options, node_name=args.node_name, camera=args.node_camera,
                              rate=args.rate, progress=not args.no_progress, score=score)
    else:
        summary = replay(args.bag, args.out, _load_engine(args), options, progress=not args.no_progress, score=score)
    print(summary.text())
    if score is not None:
        print(score.text())
        print(f"score: {score.write(report)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lisa-ros", description="Reasoning segmentation (LISA) tools.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print versions, interface and DDS profile locations")
    info.set_defaults(func=_cmd_info)

    parameters = sub.add_parser("parameters", help="print the node's parameters (markdown: docs/PARAMETERS.md)")
    parameters.set_defaults(func=_cmd_parameters)

    segment = sub.add_parser("segment", help="answer one command about one image; write masks")
    _add_model_arguments(segment)
    segment.add_argument("--image", required=True, help="image file (jpg, png, ...)")
    segment.add_argument("--prompt", required=True, help='e.g. "what should I use to reach the shelf?"')
    segment.add_argument("--explain", action="store_true", help="ask for an explanation too")
    segment.add_argument("--out", required=True, help="output folder: result.json, mask_<i>.png, overlay.png")
    segment.set_defaults(func=_cmd_segment)

    chat = sub.add_parser("chat", help="interactive multi-turn segmentation")
    _add_model_arguments(chat)
    chat.add_argument("--image", help="first image (or :image PATH later)")
    chat.add_argument("--explain", action="store_true")
    chat.add_argument("--out", default="lisa_chat_out", help="where each turn's masks and overlay go")
    chat.set_defaults(func=_cmd_chat)

    ask = sub.add_parser("ask", help="ask a running lisa_ros node (no ros2 CLI needed); exit 0 with objects, "
                                     "3 when nothing fits (NO_TARGET), 1 when refused or failed")
    ask.add_argument("command_text", metavar="COMMAND", help='e.g. "what should I use to reach the shelf?"')
    ask.add_argument("--camera", help="configured camera name (default: the node's default camera)")
    ask.add_argument("--image", help="send this image file instead of using the camera's latest frame")
    ask.add_argument("--frame-id", default="camera_color_optical_frame", help="frame_id for --image")
    ask.add_argument("--explain", action="store_true")
    ask.add_argument("--session", help="continue this conversation (session_id of an earlier answer)")
    ask.add_argument("--target-frame", default="", help="frame for the objects' target poses, e.g. odom "
                                                        "(default: the node's target_frame)")
    ask.add_argument("--min-stamp", type=_min_stamp, help="only a frame taken at or after this time: 'now' "
                                                          "(this client's clock) or seconds in the ROS clock")
    ask.add_argument("--point-cloud", action="store_true", help="the result carries the objects' points "
                                                                "(--out gets points.npy)")
    ask.add_argument("--action", action="store_true", help="use the action: progress and early objects on stderr")
    ask.add_argument("--service", default="lisa_ros/reason_segment",
                     help="service/action name; a relative one is resolved in --namespace")
    ask.add_argument("--namespace", default=os.environ.get("ROS_NAMESPACE", ""),
                     help="namespace of the node, e.g. robot1 (default: $ROS_NAMESPACE, else none)")
    ask.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the node")
    ask.add_argument("--timeout", type=float, help="seconds the node may take (the request's timeout; then "
                                                   "DEADLINE_EXCEEDED; default: the node's request_timeout)")
    ask.add_argument("--out", help="folder for result.json and mask_<id>.png")
    ask.set_defaults(func=_cmd_ask)

    replay_parser = sub.add_parser("replay", help="answer a command on the camera frames of a recorded bag (rosbag2, "
                                                  "MCAP or sqlite3) and write the answers to an output bag, offline")
    _add_model_arguments(replay_parser)
    replay_parser.add_argument("bag", help="a rosbag2 folder, or one .mcap file")
    replay_parser.add_argument("--command", dest="command_text", required=True,
                               help='what to ask about each chosen frame, e.g. "the red ball"')
    replay_parser.add_argument("--out", required=True, help="the output bag (a new rosbag2 folder)")
    replay_parser.add_argument("--every", type=int,
                               help="answer every N-th colour frame (default: every frame, or the annotated ones)")
    replay_parser.add_argument("--at", type=float, nargs="+",
                               help="instead: the first frame stamped at or after each of these times (seconds)")
    replay_parser.add_argument("--start", type=float, help="seconds from the bag's start where replay begins")
    replay_parser.add_argument("--end", type=float, help="seconds from the bag's start where replay ends")
    replay_parser.add_argument("--explain", action="store_true", help="ask for an explanation too")
    replay_parser.add_argument("--camera-topic", help="colour topic (default: found from the bag's types)")
    replay_parser.add_argument("--depth-topic", help="registered depth topic (default: found, if any)")
    replay_parser.add_argument("--camera-info-topic", help="CameraInfo topic (default: beside the colour topic)")
    replay_parser.add_argument("--target-frame", default="", help="frame for the objects' target poses and "
                               "detections_3d, from the bag's /tf and /tf_static (default: none)")
    replay_parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="of the output bag")
    replay_parser.add_argument("--no-inputs", action="store_true", help="write only the answers, not the input topics")
    replay_parser.add_argument("--track", action="store_true", help="follow the first chosen frame's answer on "
                               "every later frame (as ~/track does), written to /lisa_ros/tracks; scored per frame")
    replay_parser.add_argument("--correct-every", type=int, default=5, help="with --track: one model pass (SAM "
                               "correction, or asking again for a lost object) every N frames (default 5)")
    replay_parser.add_argument("--node", action="store_true",
                               help="play the bag in real time (and /clock) to a running node (--node-name) and ask "
                               "it through its service; run the node with use_sim_time:=true and its camera topics "
                               "set to the bag's")
    replay_parser.add_argument("--node-name", default="/lisa_ros", help="with --node: the node (default /lisa_ros)")
    replay_parser.add_argument("--node-camera", default="", help="with --node: the node's camera to ask "
                               "(default: its default camera)")
    replay_parser.add_argument("--rate", type=float, default=1.0, help="with --node: playback speed (x real time)")
    replay_parser.add_argument("--annotations", help="ground-truth masks to score the answers against: a folder "
                               "of mono8 PNG masks named by frame stamp (5.300000000.png) or a COCO RLE JSON file; "
                               "the annotated frames are answered unless --every/--at choose")
    replay_parser.add_argument("--report", help="folder for the score (score.json, frames.csv, iou.png; default "
                               "OUT-score)")
    replay_parser.add_argument("--no-progress", action="store_true")
    replay_parser.set_defaults(func=_cmd_replay)

    train = sub.add_parser("train", help="fine-tune (LoRA or QLoRA) from a released LISA checkpoint; see examples/train_robot.yaml")
    train.add_argument("config", help="YAML training config")
    train.set_defaults(func=_cmd_train)

    evaluation = sub.add_parser("eval", help="gIoU / cIoU on ReasonSeg-format (or robot-format) data")
    _add_model_arguments(evaluation)
    evaluation.add_argument("--data", required=True, help="a ReasonSeg split folder (*.jpg + *.json)")
    evaluation.add_argument("--format", choices=DATASET_TYPES, default="reasonseg")
    evaluation.add_argument("--mode", choices=("teacher-forced", "generate", "alignment"), default="teacher-forced",
                            help="teacher-forced = the official protocol (assistant turn '[SEG].'); generate = the "
                                 "model answers; alignment = questions about the scenes' objects (colour, where, "
                                 "count, list), exact-match accuracy")
    evaluation.add_argument("--out", help="folder for report.json and samples.csv")
    evaluation.set_defaults(func=_cmd_eval)

    scenes = sub.add_parser("scenes", help="write procedural reasoning-scene splits (ReasonSeg format)")
    scenes.add_argument("out_dir", help="output folder; each split goes to OUT_DIR/<split>/")
    scenes.add_argument("--splits", default="train,val,test",
                        help="comma-separated (train,val,test; camera: the camera-like probe split)")
    scenes.add_argument("--count-train", type=int, default=4500)
    scenes.add_argument("--count-val", type=int, default=300)
    scenes.add_argument("--count-test", type=int, default=300)
    scenes.add_argument("--count-camera", type=int, default=150)
    scenes.add_argument("--camera-share", type=float, default=CAMERA_SHARE,
                        help="share of camera-like train and val scenes, with their own sizes (0.3; the camera "
                             "split is all camera-like, the test split none)")
    scenes.add_argument("--seed-offset", type=int, default=0, help="added to each split's seed")
    scenes.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE,
                        help="WIDTHxHEIGHT (320x240) of the default scenes (camera-like ones have their own)")
    scenes.add_argument("--no-progress", action="store_true")
    scenes.set_defaults(func=_cmd_scenes)

    embedded = sub.add_parser("embedded", help="the embedded default model: assemble it, or extract a run's delta")
    embedded.add_argument("action", choices=("path", "base", "extract", "average"),
                          help="path: the trained model's folder (assembled once); base: the untrained base "
                               "(what training starts from); extract: write RUN_DIR's trained delta; average: "
                               "the weight average of two deltas of one base, one trained on from the other")
    embedded.add_argument("paths", nargs="*", metavar="PATH",
                          help="for extract: RUN_DIR, the output_dir of a lisa-ros train run; for average: two delta files")
    embedded.add_argument("--out", help="for extract: the delta file (default: the package's own); for average: the "
                                        "delta file to write")
    embedded.add_argument("--weight", type=float, help="for average: the second delta's weight, 0 to 1")
    embedded.set_defaults(func=_cmd_embedded)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except LisaError as exc:
        print(f"lisa-ros: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
