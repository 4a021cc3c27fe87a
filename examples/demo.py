#!/usr/bin/env python3
"""End-to-end demo: a synthetic RGB-D camera, the lisa_ros node (embedded model) and a client.

    make demo            (or: python examples/demo.py [--model FOLDER_OR_HUB_ID] [--out DIR] [--quick])

Three processes talk over real DDS. The camera plays held-out scenes (made by
lisa_ros.data.scenes with the test split's seed and phrasings, never seen in
training) with a registered depth image and CameraInfo. The client switches scenes and asks the
node through the service and the action: reasoning commands (one with an explanation, one whose
masks stream as action feedback), a plain referring command, a command with several targets (one
mask each), a multi-turn follow-up in the same session, and one where nothing fits. For every answer
it prints the text, score, box, 3D centroid, timings and the IoU against the scene's ground truth,
and writes an overlay (prediction tinted, ground truth outlined in white) to the output folder.
Then a second camera plays a held-out moving scene (the target leaves the view and comes back) and
the client follows the answer to its command with the ~/track action: per frame the node sends
the target's mask, state and 3D position; the client prints the states over time, the mean IoU
against the ground truth of each frame, and writes them as an animation (track.gif). That part is
also recorded, as `ros2 bag record` would (lisa_ros.ros.recording): the moving camera's stream
(compressed transports) and the node's tracks in `recording/` (MCAP), with the ground-truth mask of
every frame in `recording_masks/` (PNG named by stamp), so that `lisa-ros replay` can answer and
score it offline (the command is printed at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from lisa_ros.testing.processes import die_with_parent

SCENE_COUNT = 45  # the first 45 held-out test scenes: three of each query type, some where nothing fits
TABLE_DEPTH, OBJECT_DEPTH = 1.5, 1.3  # metres: the scene is a table top seen from above
FX = FY = 300.0


def write_scenes(folder: Path) -> Path:
    from lisa_ros.data.scenes import SPLIT_SEEDS, write_split

    return write_split(folder, "test", SCENE_COUNT, SPLIT_SEEDS["test"])


def load_scene(folder: Path, index: int) -> dict:
    import cv2
    import numpy as np

    from lisa_ros.data.reasonseg import rasterize_shapes

    annotation = json.loads((folder / f"{index:05d}.json").read_text())
    rgb = cv2.cvtColor(cv2.imread(str(folder / f"{index:05d}.jpg")), cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    objects = [rasterize_shapes([dict(o, label="target")], height, width) == 1 for o in annotation["objects"]]
    depth = np.full((height, width), TABLE_DEPTH, np.float32)
    for mask in objects:
        depth[mask] = OBJECT_DEPTH
    return {"rgb": rgb, "depth": depth, "annotation": annotation, "objects": objects,
            "target": rasterize_shapes(annotation["shapes"], height, width) == 1}


def first_scene(folder: Path, kind: str) -> int:
    """The index of the first scene of query type ``kind`` (one with a target), or with
    "nothing_fits" the first scene where nothing fits its query."""
    for index in range(SCENE_COUNT):
        annotation = json.loads((folder / f"{index:05d}.json").read_text())
        if (kind == "nothing_fits") == annotation["nothing_fits"] and kind in ("nothing_fits", annotation["query_type"]):
            return index
    raise LookupError(f"no {kind} scene among the first {SCENE_COUNT}")


def run_camera(scenes: Path) -> None:
    """Publishes the selected scene at 5 Hz (colour, depth, CameraInfo); /demo/select switches it."""
    import rclpy
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Int32

    from lisa_ros.ros.conversions import numpy_to_image

    rclpy.init()
    node = rclpy.create_node("demo_camera")
    latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    colour_pub = node.create_publisher(Image, "/demo/color/image_raw", qos_profile_sensor_data)
    depth_pub = node.create_publisher(Image, "/demo/depth/image_raw", qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, "/demo/color/camera_info", qos_profile_sensor_data)
    current_pub = node.create_publisher(Int32, "/demo/current_scene", latched)
    state = {"index": -1, "messages": None}

    def select(message: Int32) -> None:
        scene = load_scene(scenes, message.data)
        height, width = scene["rgb"].shape[:2]
        info = CameraInfo(width=width, height=height, k=[FX, 0, (width - 1) / 2, 0, FY, (height - 1) / 2, 0, 0, 1])
        state["messages"] = (numpy_to_image(scene["rgb"], "rgb8"), numpy_to_image(scene["depth"], "32FC1"), info)
        state["index"] = message.data

    node.create_subscription(Int32, "/demo/select", select, latched)

    def publish() -> None:
        if state["messages"] is None:
            return
        stamp = node.get_clock().now().to_msg()
        for publisher, message in zip((colour_pub, depth_pub, info_pub), state["messages"]):
            message.header.stamp, message.header.frame_id = stamp, "demo_color_optical_frame"
            publisher.publish(message)
        current_pub.publish(Int32(data=state["index"]))

    node.create_timer(0.2, publish)
    try:
        rclpy.spin(node)
    except Exception:
        pass


# (the first held-out scene of this query type, how to ask). "nothing_fits": the first scene where
# nothing fits its query (the answer says so, with no mask); "follow_up": the session's first
# command, then the follow-up in the same session.
SCRIPT = [
    ("roll", "service"),
    ("colour_knowledge", "service+explain"),
    ("hold_water", "action"),
    ("refer_colour_shape", "service"),  # a plain referring command
    ("all_of_colour", "service"),       # several targets: one [SEG] and one mask each
    ("follow_up", "service"),
    ("nothing_fits", "service"),
]
QUICK_SCRIPT = [("roll", "service"), ("hold_water", "action")]
TRACK_SEQUENCE = 0  # lisa_ros.data.scenes.motion: held-out "exit" sequence 0 of seed 3
TRACK_SECONDS = 8.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "camera"), default="main")
    parser.add_argument("--scenes", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="embedded", help="LISA checkpoint folder or hub id (default: embedded)")
    parser.add_argument("--out", default="demo_out", help="folder for the overlays and results.json")
    parser.add_argument("--quick", action="store_true", help="two commands only (CI)")
    args = parser.parse_args(argv)
    if args.role == "camera":
        run_camera(Path(args.scenes))
        return 0

    from lisa_ros.resources import config_path
    from lisa_ros.testing.processes import isolated_ros_environment

    env = isolated_ros_environment(int(os.environ.get("ROS_DOMAIN_ID") or random.randint(215, 232)),
                                   str(config_path("fastdds_localhost.xml")))
    os.environ.update(env)
    out = Path(args.out).resolve()
    for stale in ("replay", "replay-score"):  # what the replay command printed last time wrote
        shutil.rmtree(out / stale, ignore_errors=True)
    scenes = write_scenes(out / "scenes")
    if args.model == "embedded":  # assemble it here, with progress, rather than silently in the node
        from lisa_ros.model.embedded import embedded_checkpoint

        print("preparing the embedded model (assembled once from the installed packages, ~1 min) ...", flush=True)
        embedded_checkpoint()
    print(f"starting the node (model {args.model}), a synthetic RGB-D camera and a client; "
          f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}", flush=True)
    node = subprocess.Popen(
        [sys.executable, "-m", "lisa_ros.ros.node", "--ros-args", "-p", f"model:={args.model}",
         "-p", "camera.image_topic:=/demo/color/image_raw", "-p", "camera.depth_topic:=/demo/depth/image_raw",
         "-p", "camera.camera_info_topic:=/demo/color/camera_info", "-p", "max_new_tokens:=64",
         "-p", "cameras:=['camera','moving']", "-p", "moving.image_topic:=/moving/color/image_raw",
         "-p", "moving.depth_topic:=/moving/depth/image_raw",
         "-p", "moving.camera_info_topic:=/moving/color/camera_info",
         # The demo camera shares two busy cores with the model: tolerate its stalls.
         "-p", "max_frame_age:=5.0"],
        env=env, preexec_fn=die_with_parent)
    camera = subprocess.Popen([sys.executable, __file__, "--role", "camera", "--scenes", str(scenes)], env=env,
                              preexec_fn=die_with_parent)
    try:
        return client(out, scenes, QUICK_SCRIPT if args.quick else SCRIPT)
    finally:
        for process in (camera, node):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def outline(image, mask, colour, thickness: int) -> None:
    """Draw the outer outline of ``mask`` ((h, w) bool, scaled to the image's size) on ``image``."""
    import cv2
    import numpy as np

    scaled = cv2.resize(mask.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    edges, _ = cv2.findContours(scaled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, edges, -1, colour, thickness)


def client(out: Path, scenes: Path, script: list) -> int:
    import cv2
    import numpy as np
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile
    from std_msgs.msg import Int32

    from lisa_ros.action import ReasonSegment as ReasonSegmentAction
    from lisa_ros.evaluate.metrics import intersection_union, match_masks, query_iou
    from lisa_ros.msg import Status
    from lisa_ros.ros.conversions import image_to_numpy
    from lisa_ros.ros.messages import STATUS_NAMES, duration_seconds
    from lisa_ros.srv import ReasonSegment
    from lisa_ros.visualization import PALETTE, contact_sheet, draw_overlay

    rclpy.init()
    node = rclpy.create_node("demo_client")
    latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    select = node.create_publisher(Int32, "/demo/select", latched)
    current = {"index": -1}
    node.create_subscription(Int32, "/demo/current_scene", lambda m: current.update(index=m.data), latched)
    service = node.create_client(ReasonSegment, "/lisa_ros/reason_segment")
    action = ActionClient(node, ReasonSegmentAction, "/lisa_ros/reason_segment")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    def wait(future, timeout=300.0):
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            raise TimeoutError("no answer from the node")
        return future.result()

    def show_scene(index: int) -> None:
        select.publish(Int32(data=index))
        deadline = time.monotonic() + 30
        while current["index"] != index and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # a few frames of the new scene reach the node

    if not service.wait_for_service(timeout_sec=180):
        print("the node did not come up", file=sys.stderr)
        return 1
    show_scene(first_scene(scenes, script[0][0]))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # until the node is active and has a camera frame
        probe = wait(service.call_async(ReasonSegment.Request(command="ping")))
        if probe.result.status.code not in (Status.NOT_READY, Status.NO_FRAME):
            break
        time.sleep(0.5)

    out.mkdir(parents=True, exist_ok=True)
    records, all_ok = [], True

    def report(number: int, scene: dict, command: str, how: str, response, seconds: float, target,
               targets: list) -> None:
        nonlocal all_ok
        result, status = response.result, response.result.status
        served = status.code in (Status.OK, Status.NO_TARGET)  # NO_TARGET: the model says nothing fits
        all_ok &= served
        masks = [image_to_numpy(o.mask) > 0 for o in result.objects]
        prediction = masks[0] if masks else np.zeros(target.shape, bool)
        if len(targets) > 1:  # several targets: all the masks against all the targets
            prediction = np.logical_or.reduce(masks) if masks else prediction
        iou = query_iou(*intersection_union(prediction, target))
        print(f"\n[{number}] {how}: {command!r}")
        print(f"    {STATUS_NAMES.get(status.code, status.code)}{f' ({status.message})' if status.message else ''} "
              f"after {seconds:.2f} s")
        print(f"    answer: {result.answer!r}")
        if result.explanation:
            print(f"    explanation: {result.explanation!r}")
        for o in result.objects:
            p, box = o.pose.pose.position, o.box
            print(f"    object #{o.id} {o.label!r}: score {o.score:.2f}, box x={box.x_offset} y={box.y_offset} "
                  f"w={box.width} h={box.height}, centre ({p.x:+.3f}, {p.y:+.3f}, {p.z:.3f}) m in {o.pose.header.frame_id}")
        t = {stage: duration_seconds(getattr(result.timings, stage)) for stage in result.timings.get_fields_and_field_types()}
        print(f"    timings: total {t['total']:.2f} s = queue {t['queue_wait']:.2f} + encoding {t['image_encoding']:.2f} + "
              f"generation {t['generation']:.2f} + masks {t['mask_decoding']:.2f} (+ pre/post "
              f"{t['preprocess'] + t['postprocess']:.2f}); {result.generated_tokens} tokens")
        print(f"    IoU with the ground truth: {iou:.3f}")
        matched = []
        if len(targets) > 1:
            matched, missing, extra = match_masks(masks, targets)
            print(f"    {len(targets)} targets, {len(masks)} masks: matched IoUs "
                  f"{', '.join(f'{v:.3f}' for v in matched)}; {missing} missing, {extra} extra")
        # A light tint and each mask's outline in its colour, so the objects keep the colours the
        # commands are about; the answer is the overview's caption (and in results.json).
        overlay = draw_overlay(scene["rgb"], masks, [(o.box.x_offset, o.box.y_offset, o.box.width, o.box.height)
                                                     for o in result.objects],
                               [o.score for o in result.objects], alpha=0.2)
        overlay = cv2.resize(overlay, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        for index, mask in enumerate(masks):
            outline(overlay, mask, PALETTE[index % len(PALETTE)], 3)
        outline(overlay, target, (255, 255, 255), 1)
        name = f"{number:02d}_{scene['annotation']['query_type']}.png"
        cv2.imwrite(str(out / name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        records.append({"command": command, "how": how, "served": served,
                        "status": STATUS_NAMES.get(status.code, status.code), "answer": result.answer,
                        "explanation": result.explanation,
                        "objects": [{"id": o.id, "label": o.label, "score": round(float(o.score), 4),
                                     "centre": [o.pose.pose.position.x, o.pose.pose.position.y, o.pose.pose.position.z]}
                                    for o in result.objects],
                        "iou": round(iou, 4), "matched_ious": [round(v, 4) for v in matched],
                        "seconds": round(seconds, 3), "overlay": name})

    def feedback(message) -> None:
        f = message.feedback
        for o in f.objects:
            print(f"    [{duration_seconds(f.elapsed):5.2f} s] feedback: object #{o.id} {o.label!r} ready (score "
                  f"{o.score:.2f}) while the answer is still being written", flush=True)

    number = 0
    for kind, how in script:
        scene_index = first_scene(scenes, kind)
        scene = load_scene(scenes, scene_index)
        show_scene(scene_index)
        annotation = scene["annotation"]
        commands = [(annotation["text"][0], scene["target"], annotation.get("target_indices", []))]
        if annotation.get("history"):  # a follow-up: its session's first command comes first
            [(asked, _)] = annotation["history"]
            [first_targets] = annotation["history_targets"]
            first = np.logical_or.reduce([scene["objects"][i] for i in first_targets])
            commands.insert(0, (asked.removesuffix(" Please output segmentation mask."), first, first_targets))
        session = ""
        for turn, (command, target, target_indices) in enumerate(commands):
            number += 1
            started = time.monotonic()
            if how == "action":
                handle = wait(action.send_goal_async(ReasonSegmentAction.Goal(command=command),
                                                     feedback_callback=feedback))
                response = wait(handle.get_result_async()).result
            else:
                request = ReasonSegment.Request(command=command, explain=how.endswith("explain"), session_id=session)
                response = wait(service.call_async(request))
            session = response.result.session_id
            report(number, scene, command, how if not turn else "service, same session (multi-turn)", response,
                   time.monotonic() - started, target, [scene["objects"][i] for i in target_indices])

    tracked = follow_target(node, out, wait)
    bad = wait(service.call_async(ReasonSegment.Request(command="where?", camera="no_such_camera")))
    print(f"\n[bad input] a request for an unknown camera: {STATUS_NAMES.get(bad.result.status.code)} "
          f"{bad.result.status.message!r} (the node keeps serving)")
    (out / "results.json").write_text(json.dumps(records, indent=2))
    sheet = contact_sheet([cv2.cvtColor(cv2.imread(str(out / r["overlay"])), cv2.COLOR_BGR2RGB) for r in records],
                          [f"[{i}] {r['command']} -> {r['answer'].replace(' [SEG]', '')}"
                           for i, r in enumerate(records, 1)])
    cv2.imwrite(str(out / "overview.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    mean_iou = sum(r["iou"] for r in records) / max(1, len(records))
    print(f"\n{len(records)} answers, mean IoU {mean_iou:.3f}. Pictures (prediction tinted, ground truth outlined "
          f"in white): {out}/*.png, all on one page: {out}/overview.png; details: {out}/results.json")
    action.destroy()
    executor.shutdown()
    rclpy.try_shutdown()
    return 0 if all_ok and tracked and bad.result.status.code == Status.UNKNOWN_CAMERA else 1


def follow_target(node, out: Path, wait) -> bool:
    """Play a moving scene as the "moving" camera (from its first frame, so the target is in view
    when the command is asked), follow its target with ~/track, print and draw it. Whether the
    goal ran its course."""
    import shutil

    import cv2
    import numpy as np
    from PIL import Image as PilImage
    from rclpy.action import ActionClient
    from sensor_msgs.msg import CameraInfo, Image

    from lisa_ros.action import Track
    from lisa_ros.data.scenes.motion import make_moving_sequence
    from lisa_ros.msg import Status, TrackedObject, TrackedObjects
    from lisa_ros.ros.conversions import image_to_numpy
    from lisa_ros.ros.recording import TopicRecorder
    from lisa_ros.ros.messages import STATUS_NAMES, duration
    from lisa_ros.testing.sequence_camera import SequenceCamera
    from lisa_ros.visualization import draw_overlay

    sequence = make_moving_sequence(3, TRACK_SEQUENCE, "exit")
    camera = SequenceCamera(node, sequence, "moving")
    sent: dict = {}  # stamp -> frame index
    playing = threading.Event()
    playing.set()

    def play() -> None:
        count, start = 0, time.monotonic()
        while playing.is_set():
            header = camera.publish(count % len(sequence))
            sent[(header.stamp.sec, header.stamp.nanosec)] = count % len(sequence)
            truth = sequence.target_masks[count % len(sequence)].astype(np.uint8) * 255
            cv2.imwrite(str(masks / f"{header.stamp.sec}.{header.stamp.nanosec:09d}.png"), truth)
            count += 1
            time.sleep(max(0.0, start + count / sequence.fps - time.monotonic()))

    action = ActionClient(node, Track, "/lisa_ros/track")
    if not action.wait_for_server(timeout_sec=60):
        print("no ~/track action server", file=sys.stderr)
        return False
    recording, masks = out / "recording", out / "recording_masks"
    for folder in (recording, masks):  # a previous demo's
        shutil.rmtree(folder, ignore_errors=True)
    masks.mkdir(parents=True)
    recorder = TopicRecorder(node, recording, {"/moving/color/image_raw": Image, "/moving/depth/image_raw": Image,
                                               "/moving/color/camera_info": CameraInfo,
                                               "/lisa_ros/tracks": TrackedObjects}, compress=True)
    player = threading.Thread(target=play, daemon=True)
    player.start()
    time.sleep(1.0)  # the node has the camera's first frames
    print(f"\n[track] following {sequence.query!r} on the moving camera for {TRACK_SECONDS:g} s (the target "
          "leaves the view and comes back)", flush=True)
    updates: list = []
    goal = Track.Goal(command=sequence.query, camera="moving", reacquire=True, duration=duration(TRACK_SECONDS))
    try:
        handle = wait(action.send_goal_async(goal, feedback_callback=lambda m: updates.append(m.feedback)))
        result = wait(handle.get_result_async()).result
    finally:
        playing.clear()
        player.join(5)
        time.sleep(0.3)  # the last frames reach the recorder
        recording = recorder.close()
    names = {TrackedObject.TRACKING: "tracking", TrackedObject.OCCLUDED: "occluded",
             TrackedObject.UNCERTAIN: "uncertain", TrackedObject.LOST: "lost"}
    ious, timeline, pictures = [], [], []
    for update in updates[1:]:
        tracks = update.tracks
        index = sent.get((tracks.header.stamp.sec, tracks.header.stamp.nanosec))
        if index is None:
            continue
        target = tracks.objects[0]
        mask, truth = image_to_numpy(target.object.mask) > 0, sequence.target_masks[index]
        if sequence.target_fractions[index] >= 0.1:
            ious.append(float((mask & truth).sum() / max(1, (mask | truth).sum())))
        state = names[target.state]
        if not timeline or timeline[-1][1] != state:
            timeline.append((len(pictures), state, target.reason))
        shown = [o for o in tracks.objects if o.state != TrackedObject.LOST]
        boxes = [(o.object.box.x_offset, o.object.box.y_offset, o.object.box.width, o.object.box.height)
                 for o in shown]
        drawn = draw_overlay(sequence.frames[index], [image_to_numpy(o.object.mask) > 0 for o in shown], boxes,
                             [o.object.score for o in shown], f"#{target.object.id} {state} {target.reason}",
                             labels=[f"#{o.object.id} {names[o.state]}" for o in shown],
                             colours=[o.object.id for o in shown])
        pictures.append(PilImage.fromarray(drawn[::2, ::2]))
    status = result.status
    print(f"    {STATUS_NAMES.get(status.code, status.code)}: {status.message}; first answer {result.answer.answer!r}")
    print(f"    {result.frames} frames followed at {result.rate_hz:.1f} Hz (camera 15 Hz); mean IoU with the ground "
          f"truth of each frame {np.mean(ious) if ious else float('nan'):.3f} over {len(ious)} frames with the "
          f"target in view")
    for frame, state, reason in timeline:
        print(f"    frame {frame:3d}: {state}{f' ({reason})' if reason else ''}")
    if pictures:
        pictures[0].save(out / "track.gif", save_all=True, append_images=pictures[1:], duration=67, loop=0)
        print(f"    animation: {out}/track.gif", flush=True)
    frames = recorder.counts.get("/moving/color/image_raw/compressed", 0)
    print(f"    recorded: {recording} ({frames} colour frames, {recorder.counts.get('/lisa_ros/tracks', 0)} track "
          f"updates) and the ground truth of {len(sent)} frames in {masks}; answer and score it offline:\n"
          f"      {Path(sys.executable).parent / 'lisa-ros'} replay {recording} --command "
          f"{shlex.quote(sequence.query)} --every 10 --annotations {masks} --out {out / 'replay'}", flush=True)
    action.destroy()
    return status.code == Status.OK and result.frames > 0 and bool(pictures)


if __name__ == "__main__":
    sys.exit(main())
