"""The lisa_ros lifecycle node: cameras in; ReasonSegment service and action; masks, text, 3D, rviz out.

This module is the lifecycle and the wiring only. One request's path is, in order:
:mod:`lisa_ros.ros.serving` (queue, worker, answers), :mod:`lisa_ros.ros.request` (the frame,
decoding, session, encoding, generation) and :mod:`lisa_ros.ros.outputs` (feedback, topics).

Threads: image callbacks only store the latest frame (lisa_ros.ros.cameras); every model call
runs on one worker thread fed by a bounded queue (full = BUSY at once); a MultiThreadedExecutor
with reentrant callback groups keeps images, cancels, parameters, diagnostics and lifecycle
transitions flowing during a multi-second inference. One model serves all cameras.

Lifecycle: configure loads the model (a failure leaves the node unconfigured, alive, and says
why); activate subscribes to the cameras and starts the worker; deactivate stops both; cleanup
frees the model and GPU memory. The service and the action exist in every state, so a request
made while the node is not active is answered (NOT_READY) instead of hanging.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
import time
import weakref

import rclpy
from rclpy.action import ActionServer, CancelResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from diagnostic_msgs.msg import DiagnosticArray

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.action import Track as TrackAction
from lisa_ros.resources import keep_large_blocks_out_of_the_heap, release_freed_memory
from lisa_ros.ros import camera_topics, diagnostics, parameters
from lisa_ros.ros.cameras import CameraInput
from lisa_ros.ros.outputs import Publishers
from lisa_ros.ros.qos import REQUEST_QOS, RESULT_TIMEOUT_S, action_qos
from lisa_ros.ros.request import RequestHandler, options_problem
from lisa_ros.ros.serving import Server
from lisa_ros.ros.spinning import spin
from lisa_ros.ros.tf import TfLookup, history_seconds
from lisa_ros.ros.tracks import Tracks
from lisa_ros.srv import ReasonSegment
from lisa_ros.transforms import TransformError

class LisaNode(LifecycleNodeMixin, Node):
    """See the module docstring. Node name ``lisa_ros``; everything is under ``~/``."""

    def __init__(self, **kwargs):
        Node.__init__(self, "lisa_ros", **kwargs)
        # Transitions (change_state, and autostart's) in one mutually exclusive group: one at a
        # time, and a long configure (model loading) blocks nothing else. The lifecycle queries
        # (get_state, available states/transitions, the graph) in a reentrant group, so a
        # lifecycle manager's get_state is answered during a minutes-long configure.
        self._lifecycle_group = MutuallyExclusiveCallbackGroup()
        LifecycleNodeMixin.__init__(self, enable_communication_interface=True, callback_group=self._lifecycle_group)
        self._move_lifecycle_queries(ReentrantCallbackGroup())
        self.parameter_problems = parameters.declare(self)
        # What was given at start may always be set again (model_roots limits other values).
        self._start_models = {name: self.get_parameter(name).value for name in parameters.MODEL_SOURCE_PARAMETERS}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.config: parameters.NodeConfig | None = None
        self.engine = None  # lisa_ros.engine.LisaEngine while configured
        self.cameras: dict[str, CameraInput] = {}
        self.load_error = ""
        self._handler: RequestHandler | None = None
        self._camera_subscriptions = []  # not _subscriptions/_publishers: rclpy's Node uses those names
        self._weights_bytes = 0
        self._hardware_id = ""
        # Object ids, unique within the node's life (not reset by a reload): SegmentedObject.id.
        self._object_ids = itertools.count(1)

        self._server = Server(self.get_parameter("queue_depth").value, self.get_logger(), self._describe_state,
                              request_timeout=lambda: self.get_parameter("request_timeout").value)
        self._outputs = Publishers(self)
        serving_group = ReentrantCallbackGroup()
        self._input_group = ReentrantCallbackGroup()
        self._tf = TfLookup(self, callback_group=self._input_group)
        self.create_service(ReasonSegment, "~/reason_segment", self._server.on_service, qos_profile=REQUEST_QOS,
                            callback_group=serving_group)
        self._action_server = ActionServer(
            self, ReasonSegmentAction, "~/reason_segment", execute_callback=self._server.on_goal,
            goal_callback=self._server.on_goal_request, cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=serving_group, result_timeout=RESULT_TIMEOUT_S, **action_qos())
        self._tracks = Tracks(self._server, lambda: self._handler, functools.partial(parameters.read_live, self),
                              self._tf, self._outputs.tracks.publish, lambda: self.state_name == "active",
                              self.get_parameter("max_tracks").value, self.get_logger())
        ActionServer(self, TrackAction, "~/track", execute_callback=self._tracks.on_goal,
                     cancel_callback=lambda _handle: CancelResponse.ACCEPT, callback_group=serving_group,
                     result_timeout=RESULT_TIMEOUT_S, **action_qos())
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Timers on the steady clock: under use_sim_time the node clock stands still until /clock
        # is published (a paused bag, a simulator not started yet), and autostart and diagnostics
        # must not wait for it.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup(), clock=steady)

        if self.get_parameter("autostart").value:
            # In the transitions' group: an external change_state waits for it (no race), and
            # it skips what an external manager has already done.
            self._autostart_timer = self.create_timer(0.0, self._autostart, callback_group=self._lifecycle_group,
                                                      clock=steady)

    def _move_lifecycle_queries(self, group) -> None:
        """Put the lifecycle services that only read the state machine into ``group``.
        (rclpy's mixin takes one group for all five; these attributes are the mixin's.)"""
        for service in (self._service_get_state, self._service_get_available_states,
                        self._service_get_available_transitions, self._service_get_transition_graph):
            self._lifecycle_group.entities.discard(weakref.ref(service))
            service.callback_group = group
            group.add_entity(service)

    def _on_set_parameters(self, changes):
        engine = self.engine  # new suffixes must suit the loaded model's tokenizer

        def suffix_problem(suffixes: dict) -> str:
            return options_problem(engine, dataclasses.replace(parameters.read_live(self), **suffixes)) if engine else ""
        return parameters.on_set(changes, self.get_parameter("model_roots").value, self._start_models,
                                 state=self.state_name, suffix_problem=suffix_problem)

    @property
    def state_name(self) -> str:
        """The lifecycle state's label (unconfigured, configuring, inactive, activating, active,
        ...; transition states included), or "error" while unconfigured after a failed configure."""
        label = self._state_machine.current_state[1]
        return "error" if label == "unconfigured" and self.load_error else label

    def _describe_state(self) -> str:
        """Why requests are refused with NOT_READY now."""
        return f"node is {self.state_name}, not active" + (f" ({self.load_error})" if self.load_error else "")

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        """Configure, then activate, unless a lifecycle manager got there first (each step only
        from the state it starts from)."""
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self._state_machine.current_state[1] == "unconfigured":
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return
        if self._state_machine.current_state[1] == "inactive":
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            # Parameters first: a bad value fails at once, before the model stack is imported.
            if self.parameter_problems:
                raise ValueError("invalid parameters: " + "; ".join(self.parameter_problems))
            config = self.config = parameters.read(self)
            from lisa_ros.engine import LisaEngine
            from lisa_ros.sessions import FrameCache, SessionStore

            self.get_logger().info(f"loading {config.model} (precision {config.precision}, quantization "
                                   f"{config.quantization} by {config.quantization_backend}, device {config.device}); "
                                   "this can take minutes")
            started = time.monotonic()
            self.engine = LisaEngine.load(config.model, config.load_options())  # options are passed per request
            problem = options_problem(self.engine, parameters.read_live(self))
            if problem:
                raise ValueError(problem)
        except Exception as exc:  # the node stays alive, unconfigured, and says why
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed: {self.load_error}")
            self._free_model()
            return TransitionCallbackReturn.FAILURE
        loaded = self.engine.loaded
        self._weights_bytes = loaded.memory_bytes()["total"]
        self._hardware_id = diagnostics.device_description(loaded.device)
        self.get_logger().info(f"model ready on {loaded.device} ({loaded.options.precision}) in "
                               f"{time.monotonic() - started:.1f} s ({self._weights_bytes / 2**20:.0f} MB of weights"
                               + (f"; {self.engine.packed_layers} linear layers packed by oneDNN)"
                                  if self.engine.packed_layers else ")"))
        self.cameras = {c.name: CameraInput.from_config(c, self._now_seconds) for c in config.cameras}
        self._handler = RequestHandler(
            self.engine, SessionStore(config.session_timeout, config.max_sessions), FrameCache(config.frame_cache_size),
            self.cameras, config.default_camera_name, config.session_timeout, self._outputs,
            read_live=functools.partial(parameters.read_live, self), tf=self._tf, logger=self.get_logger(),
            next_id=functools.partial(next, self._object_ids), background=self._tracks.model_work)
        self._start_tf()
        self.load_error = ""
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            for camera in self.config.cameras:
                self._camera_subscriptions += camera_topics.subscribe(self, camera, self.cameras[camera.name],
                                                                      self._input_group)
        except Exception as exc:  # e.g. an invalid topic name: say so, stay inactive
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self._unsubscribe()
            return TransitionCallbackReturn.FAILURE
        self._server.start(self._handler)
        self._tracks.start()
        names = ", ".join(f"{c.name} <- {self.resolve_topic_name(c.image_topic)}" for c in self.config.cameras)
        self.get_logger().info(f"active: serving {self.resolve_service_name('~/reason_segment')}; cameras: {names}")
        return super().on_activate(state)

    def _unsubscribe(self) -> None:
        for subscription in self._camera_subscriptions:
            self.destroy_subscription(subscription)
        for camera in self.cameras.values():
            camera.describe_silence = None
        self._camera_subscriptions = []

    def _stop_serving(self) -> None:
        """No new jobs, the running one stopped, the queued ones answered, the tracks ended; then
        no camera input."""
        self._tracks.stop()
        self._server.stop()
        self._unsubscribe()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def _free_model(self) -> None:
        """Drop the model, its encoded frames and sessions, and give the memory back to the system
        (lisa_ros.resources.release_freed_memory: cleanup must free it for the process)."""
        self.engine = None
        if self._handler is not None:
            self._handler.frame_cache.clear()
            self._handler = None
        release_freed_memory()

    def _start_tf(self) -> None:
        """Start the TF subscriptions (once), so the buffer holds history before a request names a
        target frame (a failure is logged; such requests then report it as transform_error)."""
        live = parameters.read_live(self)
        self._tf.keep_history(history_seconds(live.max_frame_age, live.request_timeout))
        try:
            self._tf.start()
        except TransformError as exc:
            self.get_logger().warning(f"no target-frame poses: {exc}")

    def _now_seconds(self) -> float:
        """The node's clock in seconds: ROS time, so sim time (/clock) under use_sim_time."""
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        try:
            model_info, memory = diagnostics.model_values(
                self.get_parameter("model").value, self.engine, self._hardware_id, self._weights_bytes, self.load_error,
                self._server.queue_fill)
            now, max_age = time.monotonic(), self.get_parameter("max_frame_age").value
            cameras = [diagnostics.camera_values(camera, now, max_age) for camera in self.cameras.values()]
            self._diagnostics_pub.publish(diagnostics.build(
                self.get_fully_qualified_name().lstrip("/"), self.get_clock().now().to_msg(), self.state_name,
                model_info, self._server.stats, cameras, memory))
        except Exception as exc:  # diagnostics must never take the node down
            self.get_logger().warning(f"diagnostics failed: {exc}", throttle_duration_sec=30.0)

def main(args: list[str] | None = None, node_class: type[LisaNode] = LisaNode) -> int:
    keep_large_blocks_out_of_the_heap()  # reloads must not grow the process
    rclpy.init(args=args if args is not None else sys.argv)
    node = node_class()
    # queue_depth callers waiting in the queue and as many waiting for a new frame before it
    # (serving.Server._submit) each hold a thread, and every track (its goal's life); four more for
    # cameras, transitions, the rest.
    threads = 2 * node.get_parameter("queue_depth").value + node.get_parameter("max_tracks").value + 4
    executor = MultiThreadedExecutor(num_threads=threads)
    executor.add_node(node)
    try:
        spin(executor, node.get_logger())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_serving()
        node._free_model()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
