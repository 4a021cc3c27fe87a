"""Camera input that passes as good but is not, over DDS against the running node (issue 29).

One node process (the tiny test-made checkpoint) with six cameras; this process publishes their
frames with the stamps, QoS and payloads each case needs, and is the client:

- ``ahead``: frames stamped ahead of (or behind) the node's clock, then silence;
- ``latched``: colour and depth, and a camera_info published once, transient local, before the
  node started (the documented ``qos_overrides`` recipe makes the node receive it);
- ``silent``: a topic nobody publishes; ``strict``: a reliable subscription (overridden, with
  every other policy a subscription has) that a best-effort camera cannot reach;
- ``mjpeg``: a compressed camera that sends damaged JPEG and PNG frames;
- ``packed``: depth as image_transport's compressedDepth.
"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from lifecycle_msgs.msg import State, Transition
from rclpy.qos import (
    DurabilityPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lisa_ros.msg import Status
from lisa_ros.srv import ReasonSegment
from lisa_ros.ros.conversions import numpy_to_compressed, numpy_to_image
from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint
from test_conversions import JPEG_DAMAGE, PNG_DAMAGE, config_header, damaged_jpeg, damaged_png, png16
from test_node import Client, explicit_image

pytestmark = pytest.mark.ros
Codes = Status
K = [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]
MAX_FRAME_AGE_S = 2.0
DEADLINE_NS = 2_000_000_000
LEASE_NS = 3_000_000_000

# The overrides under test: the latched camera_info recipe, and every policy of a subscription.
QOS_OVERRIDES = {
    "qos_overrides./latched/camera_info.subscription.durability": "transient_local",
    "qos_overrides./latched/camera_info.subscription.reliability": "reliable",
    "qos_overrides./strict/image_raw.subscription.reliability": "reliable",
    "qos_overrides./strict/image_raw.subscription.durability": "transient_local",
    "qos_overrides./strict/image_raw.subscription.history": "keep_last",
    "qos_overrides./strict/image_raw.subscription.depth": "3",
    "qos_overrides./strict/image_raw.subscription.deadline": str(DEADLINE_NS),
    "qos_overrides./strict/image_raw.subscription.liveliness": "manual_by_topic",
    "qos_overrides./strict/image_raw.subscription.liveliness_lease_duration": str(LEASE_NS),
}


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round(seconds % 1 * 1e9)) % 10**9)


class Camera:
    """Publishers of one camera in this process; :meth:`stream` publishes in a thread."""

    def __init__(self, client: Client, name: str, compressed: bool = False, depth_topic: str = "",
                 info: bool = False):
        node = client.node
        self.name, self.node = name, node
        self.colour = node.create_publisher(CompressedImage if compressed else Image,
                                            f"/{name}/image_raw" + ("/compressed" if compressed else ""),
                                            qos_profile_sensor_data)
        self.depth = (node.create_publisher(CompressedImage if depth_topic.endswith("compressedDepth") else Image,
                                            depth_topic, qos_profile_sensor_data) if depth_topic else None)
        self.info = node.create_publisher(CameraInfo, f"/{name}/camera_info", qos_profile_sensor_data) if info else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, colour, depth=None, offset_s: float = 0.0) -> None:
        """One frame stamped this node's clock now + ``offset_s``."""
        now = self.node.get_clock().now().nanoseconds * 1e-9 + offset_s
        for message, publisher in ((colour, self.colour), (depth, self.depth)):
            if message is not None:
                message.header.stamp, message.header.frame_id = stamp(now), f"{self.name}_optical"
                publisher.publish(message)
        if self.info is not None:
            self.info.publish(CameraInfo(header=colour.header, width=320, height=240, k=K))

    def stream(self, colour, depth=None, offset_s: float = 0.0, rate_hz: float = 15.0) -> None:
        self.stop()
        self._stop.clear()

        def run():
            while not self._stop.is_set():
                self.publish(colour, depth, offset_s)
                time.sleep(1 / rate_hz)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        time.sleep(0.5)  # several frames have arrived

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def rgb(width=320, height=240) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def node(module_ros_domain, module_spawn, tmp_path_factory):
    client = Client(module_ros_domain.context())
    # A driver that publishes its camera_info once, latched, before the node starts.
    latched = client.node.create_publisher(CameraInfo, "/latched/camera_info", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    latched.publish(CameraInfo(width=320, height=240, k=K))
    checkpoint = write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("inputs") / "lisa", emit_seg=True)
    params = {"model": str(checkpoint), "precision": "fp32", "queue_depth": "1", "max_new_tokens": "16",
              "max_masks": "256", "max_frame_age": str(MAX_FRAME_AGE_S),
              # latched first: the default camera, the one encode_ahead encodes
              "cameras": "['latched', 'ahead', 'silent', 'strict', 'mjpeg', 'packed']",
              "ahead.image_topic": "/ahead/image_raw", "latched.image_topic": "/latched/image_raw",
              "latched.depth_topic": "/latched/depth/image_raw", "latched.camera_info_topic": "/latched/camera_info",
              "silent.image_topic": "/silent/image_raw", "strict.image_topic": "/strict/image_raw",
              "mjpeg.image_topic": "/mjpeg/image_raw/compressed", "mjpeg.compressed": "true",
              "packed.image_topic": "/packed/image_raw", "packed.camera_info_topic": "/packed/camera_info",
              "packed.depth_topic": "/packed/depth/compressedDepth", **QOS_OVERRIDES}
    args = ["--ros-args"] + [item for key, value in params.items() for item in ("-p", f"{key}:={value}")]
    module_spawn(module_ros_domain, "lisa_node_with_faults.py", *args, ready_timeout=90)
    client.wait_for_state(State.PRIMARY_STATE_ACTIVE, timeout=180)
    client.cameras = {"ahead": Camera(client, "ahead"),
                      "latched": Camera(client, "latched", depth_topic="/latched/depth/image_raw"),
                      "strict": Camera(client, "strict"),
                      "mjpeg": Camera(client, "mjpeg", compressed=True),
                      "packed": Camera(client, "packed", depth_topic="/packed/depth/compressedDepth", info=True)}
    client.latched = latched
    yield client
    for camera in client.cameras.values():
        camera.stop()
    client.close()


def camera_status(client, name: str, newer_than: int):
    """The camera's DiagnosticStatus from a /diagnostics message received after index ``newer_than``."""
    assert client.wait_for(lambda: len(client.received["diagnostics"]) > newer_than + 1, 10)
    return next(s for s in client.received["diagnostics"][-1].status if s.name.endswith(f"camera {name}"))


# ----------------------------------------------------------------------------- stamps and clocks

@pytest.mark.parametrize("offset_s", [30.0, 3600.0, -30.0, -3600.0])
def test_a_camera_stamping_ahead_or_behind_the_node_is_named_and_goes_stale_when_it_stops(node, offset_s):
    """A camera stamping ahead (+30 s, +1 h) used to stay fresh forever once it stopped: answered
    OK about its last picture, diagnostics "age 0", min_stamp = now satisfied by an old frame.
    Now its frames age from their arrival, and the clock problem is named."""
    camera = node.cameras["ahead"]
    word = "ahead of" if offset_s > 0 else "behind"
    camera.stream(numpy_to_image(rgb(), "rgb8"), offset_s=offset_s)
    try:
        live = node.ask(command="where is the cup?", camera="ahead")
        if offset_s > 0:  # served, with the problem said
            assert live.result.status.code == Codes.OK, live.result.status.message
            assert f"{offset_s:.1f} s {word} this node's clock" in live.result.status.message
        else:  # old by its stamp: stale at once, and why
            assert live.result.status.code == Codes.STALE_FRAME
            assert f"{-offset_s:.1f} s {word} this node's clock" in live.result.status.message
        count = len(node.received["diagnostics"])
        status = camera_status(node, "ahead", count)
        assert status.level == status.WARN and word in status.message
    finally:
        camera.stop()
    time.sleep(MAX_FRAME_AGE_S + 0.5)  # the camera is dead
    stale = node.ask(command="where is the cup?", camera="ahead")
    assert stale.result.status.code == Codes.STALE_FRAME, stale.result.status.message
    assert word in stale.result.status.message
    now = node.node.get_clock().now().nanoseconds * 1e-9
    waited = node.wait(node.service.call_async(ReasonSegment.Request(
        command="where is the cup?", camera="ahead", min_stamp=stamp(now), timeout=Duration(sec=1, nanosec=500_000_000))))
    assert waited.result.status.code == Codes.DEADLINE_EXCEEDED and "min_stamp" in waited.result.status.message


def test_a_min_stamp_wait_holds_neither_the_worker_nor_a_deactivation(node):
    """A request waiting for a new frame of a dead camera used to hold the only worker (queue
    depth 1 here: the next request was BUSY) and answered CANCELLED on deactivate."""
    now = node.node.get_clock().now().nanoseconds * 1e-9
    waiting = node.service.call_async(ReasonSegment.Request(command="where is the cup?", camera="ahead",
                                                            min_stamp=stamp(now + 1.0)))
    time.sleep(0.5)
    started = time.monotonic()
    other = node.ask(command="where is the cup?", image=explicit_image())
    assert other.result.status.code == Codes.OK, other.result.status.message
    assert not waiting.done() and time.monotonic() - started < 4.0
    # the waiting room has queue_depth (1) places: one more waiter is BUSY at once
    started = time.monotonic()
    second = node.ask(command="where is the cup?", camera="ahead", min_stamp=stamp(now + 1.0))
    assert second.result.status.code == Codes.BUSY and "min_stamp" in second.result.status.message
    assert time.monotonic() - started < 2.0 and not waiting.done()
    assert node.transition(Transition.TRANSITION_DEACTIVATE)
    try:
        answer = node.wait(waiting, 10)
        assert answer.result.status.code == Codes.NOT_READY and "deactivated" in answer.result.status.message
    finally:
        assert node.transition(Transition.TRANSITION_ACTIVATE)


# ----------------------------------------------------------------------------- QoS and silence

def test_a_latched_camera_info_reaches_the_node_through_the_documented_override(node):
    """The camera_info was published once, transient local, before the node started; with
    ``qos_overrides./latched/camera_info.subscription.durability: transient_local`` (rclpy's
    default overriding options declare no durability parameter, so it was dropped) the node has
    it and answers in 3D."""
    camera = node.cameras["latched"]
    camera.stream(numpy_to_image(rgb(), "rgb8"), numpy_to_image(np.full((240, 320), 1.5, np.float32), "32FC1"))
    try:
        response = node.ask(command="where is the cup?", camera="latched")
    finally:
        camera.stop()
    result = response.result
    assert result.status.code == Codes.OK, result.status.message
    assert "camera_info" not in result.status.message and not result.no_3d
    assert result.objects and all(o.pose.pose.position.z == pytest.approx(1.5, abs=0.01) for o in result.objects)


def test_every_subscription_policy_can_be_overridden(node):
    """What the graph reports of the node's subscription is what the parameters asked for."""
    infos = [i for i in node.node.get_subscriptions_info_by_topic("/strict/image_raw") if i.node_name == "lisa_ros"]
    assert len(infos) == 1
    qos = infos[0].qos_profile
    assert qos.reliability == ReliabilityPolicy.RELIABLE and qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert qos.deadline.nanoseconds == DEADLINE_NS and qos.liveliness == LivelinessPolicy.MANUAL_BY_TOPIC
    assert qos.liveliness_lease_duration.nanoseconds == LEASE_NS
    ok, reason = node.set_parameter("qos_overrides./strict/image_raw.subscription.depth", 7)
    assert not ok  # read-only: QoS is fixed once subscribed


def test_a_silent_camera_says_which_topic_and_what_is_published_instead(node):
    response = node.ask(command="where is the cup?", camera="silent")
    message = response.result.status.message
    assert response.result.status.code == Codes.NO_FRAME
    assert "no publisher on /silent/image_raw" in message and "/ahead/image_raw" in message
    count = len(node.received["diagnostics"])
    status = camera_status(node, "silent", count)
    assert status.level == status.WARN and "no publisher on /silent/image_raw" in status.message


def test_a_camera_whose_qos_cannot_reach_the_node_is_named(node):
    camera = node.cameras["strict"]
    camera.stream(numpy_to_image(rgb(), "rgb8"))
    try:
        response = node.ask(command="where is the cup?", camera="strict")
    finally:
        camera.stop()
    message = response.result.status.message
    assert response.result.status.code == Codes.NO_FRAME
    assert "1 publisher(s) on /strict/image_raw" in message and "incompatible" in message
    assert "best_effort" in message and "reliable" in message


# ----------------------------------------------------------------------------- payloads

@pytest.mark.parametrize("kind", [("jpeg", k) for k in JPEG_DAMAGE] + [("png", k) for k in PNG_DAMAGE])
def test_a_damaged_compressed_frame_is_refused_not_segmented(node, kind):
    """An MJPEG camera that lost packets sends frames that decode with a grey lower half; they
    were segmented as if intact (a confident mask of the wrong object)."""
    fmt, damage = kind
    camera = node.cameras["mjpeg"]
    data = damaged_jpeg(damage) if fmt == "jpeg" else damaged_png(damage)
    camera.stream(CompressedImage(format=f"rgb8; {fmt} compressed bgr8", data=data))
    try:
        refused = node.ask(command="where is the cup?", camera="mjpeg")
        assert refused.result.status.code == Codes.INVALID_IMAGE, refused.result.status.message
        assert f"{fmt} data is corrupt or truncated" in refused.result.status.message
        camera.stream(numpy_to_compressed(rgb(), "rgb8", fmt))
        intact = node.ask(command="where is the cup?", camera="mjpeg")
        assert intact.result.status.code == Codes.OK, intact.result.status.message
    finally:
        camera.stop()


def compressed_depth(depth_mm: np.ndarray) -> CompressedImage:
    """image_transport's compressedDepth for 16UC1: its 12-byte header, then a 16-bit PNG."""
    return CompressedImage(format="16UC1; compressedDepth png", data=config_header() + png16(depth_mm))


def test_compressed_depth_gives_3d(node):
    camera = node.cameras["packed"]
    camera.stream(numpy_to_image(rgb(), "rgb8"), compressed_depth(np.full((240, 320), 2500, np.uint16)))
    try:
        response = node.ask(command="where is the cup?", camera="packed")
    finally:
        camera.stop()
    result = response.result
    assert result.status.code == Codes.OK and not result.no_3d, result.status.message
    assert result.objects and all(o.pose.pose.position.z == pytest.approx(2.5, abs=0.01) for o in result.objects)


# ----------------------------------------------------------------------------- text

def test_suffix_parameters_refuse_prompt_syntax_and_overlong_text_and_the_node_keeps_serving(node, tmp_path):
    """segment_suffix "<image> ..." was accepted and then every request failed (MODEL_ERROR);
    a special token of the base model silently changed answers; a long suffix was blamed on the
    command. Every string the loaded tokenizer reserves is refused, for both suffixes."""
    from lisa_ros.model.tokenization import load_tokenizer

    checkpoint = write_tiny_lisa_checkpoint(tmp_path / "lisa", emit_seg=True)
    reserved = load_tokenizer(checkpoint).reserved_strings()
    assert {"<image>", "[SEG]", "</s>"} <= set(reserved)
    for name in ("segment_suffix", "explain_suffix"):
        for token in reserved:
            ok, reason = node.set_parameter(name, f"Please {token} output segmentation mask.")
            assert not ok and name in reason and repr(token) in reason, (token, reason)
        ok, reason = node.set_parameter(name, "Please output segmentation mask. " * 200)
        assert not ok and name in reason and "characters" in reason  # over MAX_SUFFIX_LENGTH
        ok, reason = node.set_parameter(name, "q, " * 333)  # 999 characters, 1000 tokens for the tiny tokenizer
        assert not ok and name in reason and "too long" in reason  # over the tiny model's 512-token context
    assert node.set_parameter("segment_suffix", "Please output the segmentation mask.")[0]
    response = node.ask(command="where is the cup?", image=explicit_image())
    assert response.result.status.code == Codes.OK, response.result.status.message
    assert node.set_parameter("segment_suffix", "Please output segmentation mask.")[0]


@pytest.mark.parametrize("command", ["\ufeff", "\u200b\u200d", " \ufeff\u2060 ", "\u202e\u202c"])
def test_a_command_of_invisible_characters_is_empty(node, command):
    response = node.ask(command=command, image=explicit_image())
    assert response.result.status.code == Codes.INVALID_COMMAND and "empty" in response.result.status.message


@pytest.mark.parametrize("rate_hz", [15.0, 30.0, 60.0])
def test_answers_about_frames_encoded_ahead_keep_their_depth(node, rate_hz):
    """encode_ahead with an RGB-D camera: the frame encoded ahead used to lose its depth (paired
    only when a request came, after the 10 depth frames kept had moved past it)."""
    camera = node.cameras["latched"]
    assert node.set_parameter("encode_ahead", True)[0]
    camera.stream(numpy_to_image(rgb(), "rgb8"), numpy_to_image(np.full((240, 320), 1.5, np.float32), "32FC1"),
                  rate_hz=rate_hz)
    try:
        time.sleep(1.0)
        responses = [node.ask(command="where is the cup?", camera="latched") for _ in range(3)]
    finally:
        camera.stop()
        assert node.set_parameter("encode_ahead", False)[0]
    for response in responses:
        result = response.result
        assert result.status.code == Codes.OK and not result.no_3d, result.status.message
        assert "depth" not in result.status.message
    assert any(r.result.timings.image_encoding == Duration() for r in responses)  # a frame encoded ahead


@pytest.mark.parametrize("result_masks", ["instances", "label_image", "none"])
def test_results_carry_the_masks_asked_for_and_the_debug_image_comes_compressed(node, result_masks, tmp_path):
    debug: list = []
    subscription = node.node.create_subscription(CompressedImage, "/lisa_ros/debug_image/compressed", debug.append, 10)
    assert node.set_parameter("result_masks", result_masks)[0]
    try:
        time.sleep(0.5)  # the subscription is matched
        result = node.ask(command="where is the cup?", image=explicit_image()).result
        assert result.status.code == Codes.OK and result.objects, result.status.message
        assert all(bool(o.mask.data) == (result_masks == "instances") for o in result.objects)
        assert bool(result.instance_labels.data) == (result_masks != "none")
        assert all(o.box.width > 0 for o in result.objects)  # the rest stays
        from lisa_ros.ros.client import write_masks

        names = write_masks(result, tmp_path / result_masks)  # what lisa-ros ask --out writes
        assert (None in names) == (result_masks == "none")
        for index, name in enumerate(names, 1):
            if name is not None:
                written = cv2.imread(str(tmp_path / result_masks / name), cv2.IMREAD_GRAYSCALE)
                assert written.shape == (120, 160) and written.max() == 255
        assert node.wait_for(lambda: debug, 10)
        picture = cv2.imdecode(np.frombuffer(bytes(debug[-1].data), np.uint8), cv2.IMREAD_COLOR)
        assert "jpeg" in debug[-1].format and picture.shape == (120, 160, 3)
        assert debug[-1].header.stamp == result.header.stamp
    finally:
        assert node.set_parameter("result_masks", "instances")[0]
        node.node.destroy_subscription(subscription)
    assert not node.set_parameter("result_masks", "some")[0]
