"""lisa_ros.ros.request: one request's path in process, without DDS: which frame it answers (the
newest, one encoded ahead, one newer than min_stamp), decoding colour, depth and camera_info and
what they disagree on, and the outputs made once per mask. The engine is a stand-in where the
logic under test needs no model (named as such); the node over DDS is in test_node.py."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.msg import Status as Codes
from lisa_ros.ros.cameras import stamp_seconds
from lisa_ros.ros.conversions import numpy_to_image
from lisa_ros.srv import ReasonSegment
from test_node import explicit_image

pytestmark = pytest.mark.ros
K = [525.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]


class _CountingEncoder:
    """Stands in for LisaEngine.encode_frame (the ROS-side logic under test needs no model)."""

    def __init__(self):
        self.frames = 0
        self.prefilled = []

    def encode_frame(self, rgb, prefill=False):
        self.frames += 1
        self.prefilled.append(prefill)
        return f"encoded-{self.frames}"


def test_encode_ahead_encodes_the_default_cameras_newest_frame_and_hands_it_out_only_while_fresh():
    from builtin_interfaces.msg import Time

    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.parameters import default_live
    from lisa_ros.ros.request import RequestHandler, frame_source
    from lisa_ros.sessions import FrameCache, SessionStore

    monotonic, wall = [100.0], [1000.0]
    cameras = {name: CameraInput(name, clock=lambda: monotonic[0], stamp_clock=lambda: wall[0])
               for name in ("front", "wrist")}

    def publish(name="front", age_s=0.0, encoding="rgb8"):
        message = numpy_to_image(np.zeros((8, 8, 3), np.uint8), "rgb8")
        message.encoding = encoding
        stamp = wall[0] - age_s
        message.header.stamp = Time(sec=int(stamp), nanosec=int(stamp % 1 * 1e9))
        cameras[name].on_color(message)

    def live(**changes):
        return default_live(**{**dict(max_new_tokens=16, segment_suffix="", explain_suffix="", max_command_length=100,
                                      max_image_pixels=10**6, encode_ahead=True, publish_debug_image=False,
                                      publish_markers=False), **changes})

    parameters = [live()]
    encoder, cache, stopping = _CountingEncoder(), FrameCache(4), threading.Event()
    handler = RequestHandler(encoder, SessionStore(), cache, cameras, "front", 600.0, None, lambda: parameters[0])
    assert not handler.idle(stopping) and handler.usable_ahead(parameters[0]) is None  # no frame yet
    publish("wrist")
    assert not handler.idle(stopping)  # only the default camera is encoded ahead
    publish()
    assert handler.idle(stopping) and encoder.frames == 1 and ("front", 1) in cache
    assert not handler.idle(stopping) and encoder.frames == 1  # the same newest frame: nothing to do
    assert handler.usable_ahead(parameters[0]).sequence == 1
    assert handler.usable_ahead(live(encode_ahead=False)) is None
    # a newer frame within one encoding (plus two idle polls) of it: still taken
    monotonic[0] += 0.05
    publish()
    assert handler.usable_ahead(parameters[0]).sequence == 1
    request = ReasonSegment.Request(command="where is the cup?")
    source = frame_source(request, cameras, "front", 1.0, encoded_ahead=handler.usable_ahead(parameters[0]))
    assert source.cache_key == ("front", 1)
    request.min_stamp = cameras["front"].latest().color.header.stamp  # asks for the newer one
    request.min_stamp.nanosec += 1
    wall[0] += 0.001
    monotonic[0] += 0.001
    publish()  # frame 3, stamped after min_stamp
    source = frame_source(request, cameras, "front", 1.0, encoded_ahead=handler.usable_ahead(parameters[0]))
    assert source.cache_key == ("front", 3)
    # a newer frame that came long after it (e.g. the request waited behind others): not taken
    monotonic[0] += 0.5
    publish()
    assert handler.usable_ahead(parameters[0]) is None
    assert handler.idle(stopping) and encoder.frames == 2 and handler.usable_ahead(parameters[0]).sequence == 4
    assert ("front", 1) not in cache and ("front", 4) in cache  # never used: replaced, one slot
    # older than max_frame_age: neither handed out nor encoded ahead
    wall[0] += 2.0
    assert handler.usable_ahead(parameters[0]) is None
    publish(age_s=1.5)
    assert not handler.idle(stopping) and encoder.frames == 2
    # an undecodable frame is skipped (the request about it will say why); the next one is encoded
    publish(encoding="no_such_encoding")
    assert not handler.idle(stopping) and encoder.frames == 2
    publish()
    assert handler.idle(stopping) and encoder.frames == 3
    # no frame cache, or stopping: nothing is encoded
    publish()
    parameters[0] = live()
    handler.frame_cache = FrameCache(0)
    assert not handler.idle(stopping)
    handler.frame_cache = cache
    stopping.set()
    assert not handler.idle(stopping) and encoder.frames == 3
    assert encoder.prefilled == [True] * 3  # frames encoded ahead also hold the prompt's start


@pytest.mark.parametrize("depth_lag", [0, 3])
@pytest.mark.parametrize("rate_hz", [15.0, 30.0, 60.0, 90.0])
def test_a_frame_encoded_ahead_keeps_its_depth_and_is_used_when_encoding_takes_longer_than_max_frame_age(
        rate_hz, depth_lag):
    """An RGB-D camera at ``rate_hz`` while one encoding takes 1.2 s (more than max_frame_age,
    1 s, and more than the camera input's 10 depth frames span); its depth arrives with colour,
    or ``depth_lag`` frames later (so the frame encoded ahead has none yet when its encoding
    starts). The frame encoded ahead keeps its depth, and a request takes it with that depth.
    (Before: 3D was lost at 30 Hz and above, and with max_frame_age 1 s nothing was encoded
    ahead at all.)"""
    from builtin_interfaces.msg import Time

    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.parameters import default_live
    from lisa_ros.ros.request import RequestHandler, frame_source
    from lisa_ros.sessions import FrameCache, SessionStore

    monotonic, wall = [100.0], [1000.0]
    camera = CameraInput("front", depth_slop=0.005, clock=lambda: monotonic[0], stamp_clock=lambda: wall[0])
    cameras = {"front": camera}

    def frame(encoding):
        message = numpy_to_image(np.zeros((8, 8) if encoding == "32FC1" else (8, 8, 3),
                                          np.float32 if encoding == "32FC1" else np.uint8), encoding)
        message.header.stamp = Time(sec=int(wall[0]), nanosec=int(round(wall[0] % 1 * 1e9)))
        return message

    depths = []

    def tick():  # one camera period: colour, and depth ``depth_lag`` periods late
        monotonic[0] += 1 / rate_hz
        wall[0] += 1 / rate_hz
        camera.on_color(frame("rgb8"))
        depths.append(frame("32FC1"))
        if len(depths) > depth_lag:
            camera.on_depth(depths.pop(0))

    class SlowEncoder(_CountingEncoder):
        def encode_frame(self, rgb, prefill=False):
            for _ in range(int(1.2 * rate_hz)):  # the camera keeps publishing during the encoding
                tick()
            return super().encode_frame(rgb, prefill)

    live = default_live(max_new_tokens=16, segment_suffix="", explain_suffix="", max_command_length=100,
                        max_image_pixels=10**6, encode_ahead=True, publish_debug_image=False, publish_markers=False)
    handler = RequestHandler(SlowEncoder(), SessionStore(), FrameCache(4), cameras, "front", 600.0, None, lambda: live)
    for _ in range(3):
        tick()
    for _ in range(3):  # encode ahead three times in a row, as an idle worker does
        assert handler.idle(threading.Event())
    ahead = handler.ahead
    assert ahead.depth is not None and ahead.depth.header.stamp == ahead.color.header.stamp
    assert len(camera._depth) == 10 and all(d.header.stamp != ahead.color.header.stamp for d in camera._depth)
    usable = handler.usable_ahead(live)
    assert usable is ahead
    source = frame_source(ReasonSegment.Request(command="where is the cup?"), cameras, "front", 1.0,
                          encoded_ahead=usable)
    assert source.cache_key == ahead.cache_key and source.depth is ahead.depth


@pytest.mark.parametrize("depth_comes", [True, False])
def test_a_min_stamp_request_gets_the_new_frame_with_its_depth(depth_comes):
    """An RGB-D camera whose depth comes 0.1 s after colour: a request with min_stamp used to
    take the newest frame that had depth (older than min_stamp: STALE_FRAME although the new
    frame was there). Now the wait also waits for the new frame's depth (0.25 s at most) and the
    request gets the new frame, with its depth when it came, else without."""
    from builtin_interfaces.msg import Time

    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import frame_source, wait_for_min_stamp

    camera = CameraInput("front", depth_slop=0.01)
    cameras = {"front": camera}

    def message(encoding, seconds):
        msg = numpy_to_image(np.zeros((8, 8) if encoding == "32FC1" else (8, 8, 3),
                                      np.float32 if encoding == "32FC1" else np.uint8), encoding)
        msg.header.stamp = Time(sec=int(seconds), nanosec=int(round(seconds % 1 * 1e9)))
        return msg

    old = time.time() - 0.5
    camera.on_color(message("rgb8", old))
    camera.on_depth(message("32FC1", old))
    min_stamp = time.time()
    request = ReasonSegment.Request(command="x", min_stamp=Time(sec=int(min_stamp), nanosec=int(min_stamp % 1 * 1e9)))

    def camera_thread():
        time.sleep(0.1)
        new = time.time()
        camera.on_color(message("rgb8", new))
        if depth_comes:
            time.sleep(0.1)
            camera.on_depth(message("32FC1", new))

    thread = threading.Thread(target=camera_thread)
    thread.start()
    wait_for_min_stamp(request, cameras, "front", deadline=time.monotonic() + 5.0)
    thread.join()
    source = frame_source(request, cameras, "front", 0.0)
    assert stamp_seconds(source.header) >= min_stamp
    assert (source.depth is not None) == depth_comes


def test_the_frame_cache_key_covers_every_field_that_defines_the_pixels():
    from lisa_ros.ros.request import image_cache_key

    base = dict(width=4, height=2, encoding="rgb8", step=12, is_bigendian=0, data=bytes(range(24)))
    key = image_cache_key(Image(**base))
    same_pixels = Image(**base)
    same_pixels.header.frame_id, same_pixels.header.stamp.sec = "elsewhere", 7
    assert image_cache_key(same_pixels) == key  # the same image re-sent: a cache hit
    for field, value in (("width", 2), ("height", 1), ("encoding", "bgr8"), ("step", 24), ("is_bigendian", 1),
                         ("data", bytes(range(1, 25)))):
        assert image_cache_key(Image(**{**base, field: value})) != key, field


class _Recorder:
    def __init__(self, subscribers: int = 0):
        self.messages = []
        self.subscribers = subscribers

    def publish(self, msg):
        self.messages.append(msg)

    def get_subscription_count(self):
        return self.subscribers


class _PublishingNode:
    """Enough of a node for lisa_ros.ros.outputs.Publishers: records what is published, by topic;
    ``subscribed``: the topics someone subscribes to (the others: nobody)."""

    def __init__(self, subscribed=("~/debug_image",)):
        self.topics: dict[str, _Recorder] = {}
        self.subscribed = subscribed

    def create_publisher(self, _msg_type, name, _qos, **_options):
        return self.topics.setdefault(name, _Recorder(int(name in self.subscribed)))


class _Goal:
    is_cancel_requested = False

    def __init__(self, request):
        self.request = request
        self.feedback = []

    def publish_feedback(self, feedback):
        self.feedback.append(feedback)


class _TwoMaskEngine:
    """Answers every command with two masks (left and right half), streamed through on_mask."""

    def encode_frame(self, rgb):
        return rgb.shape

    def answer(self, frame, command, explain=False, history=None, options=None, on_mask=None, on_token=None,
               should_stop=None):
        from lisa_ros.engine import Answer, DecodedMask, mask_box
        from lisa_ros.model.prompts import Conversation

        # this request's, from the live parameters
        assert options is not None and options.max_new_tokens == 16 and options.draft_tokens == 3
        height, width = frame[:2]
        masks = []
        for index, columns in enumerate((slice(0, width // 2), slice(width // 2, width))):
            mask = np.zeros((height, width), bool)
            mask[:, columns] = True
            masks.append(DecodedMask(index, mask, 0.9, mask_box(mask), index, 0.0))
            if on_mask is not None:
                on_mask(masks[-1])
            on_token("Sure, [SEG]", index + 1)
        conversation = Conversation()
        conversation.ask(command)
        conversation.answer("Sure, [SEG] and [SEG].")
        return Answer(command, "prompt", "Sure, [SEG] and [SEG].", "", masks, [1, 2, 3],
                      {"prefill": 0.01, "decode": 0.02, "mask_decode": 0.005}), conversation


@pytest.mark.parametrize("kind", ["action", "service"])
def test_one_request_converts_each_mask_and_its_3d_once(monkeypatch, kind):
    from lisa_ros.ros import messages, outputs
    from lisa_ros.ros.parameters import default_live
    from lisa_ros.ros.request import RequestHandler
    from lisa_ros.ros.serving import Job
    from lisa_ros.sessions import FrameCache, SessionStore

    converted, located = [], []
    real_mask_to_image, real_geometry = outputs.mask_to_image, messages.geometry
    monkeypatch.setattr(outputs, "mask_to_image", lambda mask, header=None: converted.append(mask) or real_mask_to_image(mask, header))
    monkeypatch.setattr(messages, "geometry", lambda *args: located.append(args) or real_geometry(*args))
    live = default_live(max_new_tokens=16, draft_tokens=3, segment_suffix="", explain_suffix="",
                        max_command_length=100, max_image_pixels=10**6, max_frame_age=0.0)
    node = _PublishingNode()
    handler = RequestHandler(_TwoMaskEngine(), SessionStore(), FrameCache(2), {}, "front", 600.0,
                             outputs.Publishers(node), lambda: live)
    fields = dict(command="where is the cup?", image=explicit_image(640, 480),
                  depth=numpy_to_image(np.full((480, 640), 1.5, np.float32), "32FC1"),
                  camera_info=CameraInfo(width=640, height=480, k=K))
    goal = _Goal(ReasonSegmentAction.Goal(**fields)) if kind == "action" else None
    job = Job(goal.request if goal else ReasonSegment.Request(**fields), goal_handle=goal)

    code, message, timings = handler(job, threading.Event())

    assert code == Codes.OK and message == "" and set(timings) == set(messages.STAGES)
    assert len(located) == 2  # one geometry per mask: feedback, poses, detections and markers share it
    assert len(converted) == 3  # one Image per mask, plus the union published on ~/mask
    result = job.result
    assert [o.pose.pose.position.z for o in result.objects] == [pytest.approx(1.5)] * 2
    assert [o.id for o in result.objects] == [1, 2] and result.status.code == Codes.OK
    (published,) = node.topics["~/result"].messages  # the client's result, its session id as a digest
    assert published.session_id == messages.public_session_id(result.session_id) != result.session_id
    published.session_id = result.session_id
    assert published == result
    assert len(node.topics["~/markers"].messages[0].markers) == 1 + 3 * 2
    assert node.topics["~/debug_image"].messages[0].header == result.header
    (detections,) = node.topics["~/detections"].messages
    assert [d.id for d in detections.detections] == ["1", "2"]
    assert not node.topics["~/points"].messages  # nobody subscribes, nobody asked: no cloud built
    if goal is not None:
        streamed = [o for f in goal.feedback for o in f.objects]
        assert streamed == list(result.objects)


def test_frame_sources_are_typed_and_say_what_is_missing():
    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import FrameSource, RequestError, decode, frame_source

    cameras = {"front": CameraInput("front")}
    own = frame_source(ReasonSegment.Request(command="x", image=explicit_image()), cameras, "front", 1.0)
    assert isinstance(own, FrameSource) and own.camera == "" and own.cache_key[0] == "request"
    assert own.depth is None and own.camera_info is None and not own.depth_expected
    for camera, code in (("nope", Codes.UNKNOWN_CAMERA), ("", Codes.NO_FRAME)):
        with pytest.raises(RequestError) as refused:
            frame_source(ReasonSegment.Request(command="x", camera=camera), cameras, "front", 1.0)
        assert refused.value.code == code
    now = time.time()  # in step with the node's clock: no clock note
    cameras["front"].on_color(explicit_image(frame="front_optical", stamp=(int(now), int(now % 1 * 1e9))))
    cameras["front"].on_depth(numpy_to_image(np.ones((60, 80), np.float32), "32FC1"))  # another stamp
    latest = frame_source(ReasonSegment.Request(command="x"), cameras, "front", 0.0)
    assert latest.camera == "front" and latest.header.frame_id == "front_optical" and latest.cache_key == ("front", 1)
    assert latest.depth is None and latest.depth_expected
    decoded = decode(latest, 10**6)
    assert decoded.rgb.shape == (120, 160, 3) and decoded.depth_m is None
    assert decoded.notes == ["no depth frame within depth_slop of the colour frame: no 3D"]


@pytest.mark.parametrize("disagreement,expected", [
    ("depth_frame", "not registered to colour"),  # an unaligned depth stream of the same size
    ("depth_size", "registered to colour"),
    ("info_frame", "another camera"),  # the depth camera's camera_info on the colour image
    ("info_aspect", "another aspect ratio"),
    ("info_frame_and_depth_frame", "not registered to colour"),
])
def test_depth_and_camera_info_that_disagree_with_the_colour_image_give_2d_and_a_warning(disagreement, expected):
    """Inputs that disagree are never quiet 3D: the answer is in 2D with a note, and the camera's
    diagnostics WARN. Agreeing inputs (empty frame_ids count as agreeing; camera_info of the
    same aspect at another resolution is scaled) give 3D."""
    from diagnostic_msgs.msg import DiagnosticStatus

    from lisa_ros.ros import diagnostics
    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import RequestHandler, decode, frame_source

    def decoded(kind):
        camera = CameraInput("front")
        now = time.time()  # stamped now: the camera is in step with the node's (wall) clock
        colour = explicit_image(640, 480, stamp=(int(now), int(now % 1 * 1e9)), frame="front_color_optical_frame")
        depth = numpy_to_image(np.ones((240, 320) if kind == "depth_size" else (480, 640), np.float32), "32FC1")
        depth.header.stamp = colour.header.stamp
        depth.header.frame_id = "front_depth_optical_frame" if "depth_frame" in kind else colour.header.frame_id
        info = CameraInfo(width=640, height=360 if kind == "info_aspect" else 480, k=K)
        info.header.frame_id = "front_depth_optical_frame" if "info_frame" in kind else ""
        if kind == "scaled":
            info.width, info.height, info.header.frame_id = 1280, 960, colour.header.frame_id
        camera.on_camera_info(info)
        camera.on_color(colour)
        camera.on_depth(depth)
        source = frame_source(ReasonSegment.Request(command="x"), {"front": camera}, "front", 0.0)
        frame = decode(source, 10**7)
        RequestHandler(None, None, None, {"front": camera}, "front", 600.0, None, None).note_inputs(source, frame)
        values = diagnostics.camera_values(camera, time.monotonic(), 0.0)
        status = diagnostics.build("lisa_ros", None, "active", {}, diagnostics.RequestStats(), [values], {}).status[-1]
        return frame, status

    frame, status = decoded(disagreement)
    assert frame.depth_m is None or frame.intrinsics is None  # no 3D
    assert expected in frame.input_problem and any(expected in note for note in frame.notes)
    assert status.level == DiagnosticStatus.WARN and expected in status.message
    for agreeing in ("none", "scaled"):
        frame, status = decoded(agreeing)
        assert frame.depth_m is not None and frame.intrinsics is not None and not frame.input_problem
        assert status.level == DiagnosticStatus.OK, status.message


def test_rectified_images_use_p_raw_ones_k_and_16uc1_follows_depth_scale():
    from lisa_ros.ros.cameras import CameraInput
    from lisa_ros.ros.request import decode, frame_source

    colour = explicit_image(640, 480)
    depth = numpy_to_image(np.full((480, 640), 1500, np.uint16), "16UC1")
    depth.header = colour.header
    info = CameraInfo(width=640, height=480, k=K, d=[0.1, -0.05, 0.0, 0.0, 0.0],
                      p=[500.0, 0.0, 322.0, 0.0, 0.0, 498.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def decoded(**camera_options):
        camera = CameraInput("front", **camera_options)
        camera.on_camera_info(info)
        camera.on_color(colour)
        camera.on_depth(depth)
        return decode(frame_source(ReasonSegment.Request(command="x"), {"front": camera}, "front", 0.0), 10**7)

    raw = decoded()
    assert (raw.intrinsics.fx, raw.intrinsics.cx) == (525.0, 319.5)  # K
    assert any("rectified" in note for note in raw.notes)  # d is not zero: 3D is approximate
    assert float(np.nanmedian(raw.depth_m)) == pytest.approx(1.5)  # millimetres
    rectified = decoded(rectified=True, depth_scale=0.0001)
    assert (rectified.intrinsics.fx, rectified.intrinsics.fy, rectified.intrinsics.cx, rectified.intrinsics.cy) == (
        500.0, 498.0, 322.0, 241.0)  # P
    assert not any("rectified" in note for note in rectified.notes)
    assert float(np.nanmedian(rectified.depth_m)) == pytest.approx(0.15)  # 0.1 mm units


def test_the_camera_info_in_the_result_describes_the_image_the_3d_used():
    """Unchanged at its own size; for an image at half the camera_info's size, K and P scaled the
    way the 3D scaled the intrinsics (pixel centres kept), Tx with the focal length, ROI cleared."""
    from lisa_ros.geometry import Intrinsics
    from lisa_ros.ros.messages import camera_info_at

    info = CameraInfo(width=640, height=480, k=K, p=[525.0, 0.0, 319.5, -52.5, 0.0, 520.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0],
                      d=[0.1, 0.0, 0.0, 0.0, 0.0], distortion_model="plumb_bob")
    info.roi.width = 100
    same = camera_info_at(info, 640, 480)
    assert same == info and same is not info
    half = camera_info_at(info, 320, 240)
    expected = Intrinsics.from_k(K, 640, 480).scaled_to(320, 240)
    assert (half.width, half.height) == (320, 240) and list(half.d) == list(info.d) and half.roi.width == 0
    assert [half.k[0], half.k[4], half.k[2], half.k[5]] == [expected.fx, expected.fy, expected.cx, expected.cy]
    assert [half.p[0], half.p[5], half.p[2], half.p[6]] == [expected.fx, expected.fy, expected.cx, expected.cy]
    assert half.p[3] == pytest.approx(-52.5 / 2) and list(info.k) == K  # the source is untouched
