"""ROS 2 Humble: the node and the client on rclpy as Humble has it (issue 28).

Humble's rclpy is not installable here, so test/support/humble_rclpy.py presents this lane's rclpy
to lisa_ros code with Humble's API only (recorded from rclpy 3.3.15's sources): a module, name,
method or keyword argument Humble lacks is refused, and each refusal is printed. The node must then
behave as on Kilted (lifecycle, requests, TF, the action, parameter changes applied and refused, a
reload), with no refusal at all: lisa_ros makes no rclpy call newer than Humble, so it needs no
fallback. (Its one such call, the post-set parameter callback, was folded into the on-set callback
that Humble has.)
"""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import State, Transition

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.msg import Status
from test_node import Client, _assert_target_poses, _publish_tf_tree, _tf_request, node_arguments

pytestmark = pytest.mark.ros

SUPPORT = Path(__file__).parent / "support"
# rclpy names newer than Humble that lisa_ros may probe, each with a fallback doing the same job on
# Humble (e.g. "rclpy.node.Node.add_pre_set_parameters_callback" behind a hasattr). None today.
DECLARED_FALLBACKS: set[str] = set()


def refusals(process) -> list[str]:
    """The refused rclpy uses (HUMBLE-REFUSED lines) that no declared fallback covers."""
    lines = [line.split()[1] for line in process.lines() if line.startswith("HUMBLE-REFUSED")]
    return [name for name in lines if name not in DECLARED_FALLBACKS]


def test_the_shaped_rclpy_refuses_what_humble_lacks_and_keeps_what_it_has(ros_domain):
    """The check itself: newer calls made from a lisa_ros module fail as on Humble, Humble's own
    calls work, and rclpy's own (newer) code still runs underneath."""
    probe = textwrap.dedent("""
        import sys, types
        sys.path.insert(0, sys.argv[1])
        import humble_rclpy
        humble_rclpy.shape()
        import rclpy
        from rclpy.clock import Clock, ClockType
        source = '''
        import rclpy
        from rclpy.clock import Clock, ClockType
        import functools, importlib, threading
        def import_event_handler():
            import rclpy.event_handler
        def deferred_autostart(node):
            late = functools.partial(node.create_timer, 1.0, lambda: None, autostart=False)
            errors = []
            def run_it():
                try:
                    late()
                except TypeError as exc:
                    errors.append(exc)
            thread = threading.Thread(target=run_it)
            thread.start()
            thread.join()
            if errors:
                raise errors[0]
        def node_as_context_manager(node):
            with node:
                pass
        def run(node):
            outcomes = {}
            for name, call in {
                "post-set callback (Iron)": lambda: node.add_post_set_parameters_callback(lambda p: None),
                "pre-set callback (Iron)": lambda: node.add_pre_set_parameters_callback(lambda p: p),
                "timer autostart (Jazzy)": lambda: node.create_timer(1.0, lambda: None, autostart=False),
                "timer autostart, called later elsewhere": lambda: deferred_autostart(node),
                "event_handler module (Iron)": import_event_handler,
                "event_handler by importlib": lambda: importlib.import_module("rclpy.event_handler"),
                "with node (Kilted)": lambda: node_as_context_manager(node),
            }.items():
                try:
                    call()
                    outcomes[name] = "ran"
                except (AttributeError, TypeError, ImportError) as exc:
                    outcomes[name] = type(exc).__name__
            outcomes["has post-set"] = hasattr(node, "add_post_set_parameters_callback")
            node.create_timer(1.0, lambda: None, clock=Clock(clock_type=ClockType.STEADY_TIME))
            node.add_on_set_parameters_callback(lambda p: None)
            outcomes["humble calls"] = "ran"
            return outcomes
        '''
        module = types.ModuleType("lisa_ros.humble_probe")
        exec(compile(source, "lisa_ros/humble_probe.py", "exec"), module.__dict__)
        rclpy.init()
        node = rclpy.create_node("probe")
        node.add_post_set_parameters_callback(lambda p: None)  # not lisa_ros: the full API
        print("OUTCOMES", __import__("json").dumps(module.run(node)))
        node.destroy_node()
        rclpy.shutdown()
    """)
    run = subprocess.run([sys.executable, "-c", probe, str(SUPPORT)], env=ros_domain.env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    outcomes = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("OUTCOMES"))[9:])
    # Node became a context manager in Kilted: refused there (AttributeError); Jazzy's rclpy has no
    # __enter__ at all, so Python itself says TypeError, as on Humble.
    assert outcomes.pop("with node (Kilted)") in ("AttributeError", "TypeError")
    assert outcomes == {"post-set callback (Iron)": "AttributeError", "pre-set callback (Iron)": "AttributeError",
                        "timer autostart (Jazzy)": "TypeError", "timer autostart, called later elsewhere": "TypeError",
                        "event_handler module (Iron)": "ImportError", "event_handler by importlib": "ImportError",
                        "has post-set": False, "humble calls": "ran"}
    assert sum(line.startswith("HUMBLE-REFUSED") for line in run.stdout.splitlines()) >= 7


@pytest.fixture(scope="module")
def humble_node(module_ros_domain, module_spawn, tmp_path_factory):
    from lisa_ros.testing.checkpoints import write_tiny_lisa_checkpoint

    checkpoint = write_tiny_lisa_checkpoint(tmp_path_factory.mktemp("humble") / "lisa", emit_seg=True)
    module_spawn(module_ros_domain, "camera_publisher.py", "front:rgbd")
    process = module_spawn(module_ros_domain, "lisa_node_on_humble_rclpy.py", *node_arguments(checkpoint),
                           ready_timeout=90)
    client = Client(module_ros_domain.context())
    client.env = module_ros_domain.env
    client.wait_for_state(State.PRIMARY_STATE_ACTIVE)
    assert client.wait_for(lambda: client.ask(command="ping", camera="front").result.status.code != Status.NO_FRAME,
                           30)
    client.process = process
    yield client
    client.close()


def test_the_node_on_humble_rclpy_serves_and_applies_and_refuses_parameters(humble_node):
    node = humble_node
    response = node.ask(command="where is the cup?", camera="front")
    assert response.success and response.result.objects, response.result.status.message

    # Refused as on Kilted (the on-set callback, which Humble has, does all the checking).
    assert node.set_parameter("max_new_tokens", 0)[0] is False                  # out of range
    assert node.set_parameter("queue_depth", 3)[0] is False                     # read-only
    ok, reason = node.set_parameter("quantization", "4bit")                     # needs a reload
    assert ok is False and "unconfigured" in reason
    ok, reason = node.set_parameter("model", "/etc/../root/model")              # outside model_roots
    assert ok is False and "model_roots" in reason
    # Applied: the next request generates at most the new limit.
    assert node.set_parameter("max_new_tokens", 2)[0] is True
    short = node.ask(command="where is the cup?", camera="front")
    assert short.success or short.result.status.code == Status.NO_TARGET, short.result.status.message
    assert 0 < short.result.generated_tokens <= 2
    assert node.set_parameter("max_new_tokens", 16)[0] is True

    # TF (the node's own buffer, or tf2_ros where installed): a pose in the frame asked for.
    _publish_tf_tree(node)
    in_base = node.ask(**_tf_request(target_frame="base_link"))
    assert in_base.success and not in_base.result.no_target_pose, in_base.result.transform_error
    assert _assert_target_poses(in_base.result.objects, "base_link") >= 1

    # The action (Humble's ActionServer/ActionClient API).
    goal = ReasonSegmentAction.Goal(command="where is the cup?", camera="front")
    assert node.action.wait_for_server(timeout_sec=30)
    handle = node.wait(node.action.send_goal_async(goal))
    assert handle.accepted
    outcome = node.wait(handle.get_result_async())
    assert outcome.status == GoalStatus.STATUS_SUCCEEDED and outcome.result.result.objects

    # A reload: parameters that need one are applied while unconfigured.
    assert node.transition(Transition.TRANSITION_DEACTIVATE) and node.transition(Transition.TRANSITION_CLEANUP)
    assert node.set_parameter("precision", "fp32")[0] is True
    assert node.transition(Transition.TRANSITION_CONFIGURE) and node.transition(Transition.TRANSITION_ACTIVATE)
    assert node.wait_for(lambda: node.ask(command="where is the cup?", camera="front").success, 30)
    assert refusals(node.process) == []


@pytest.mark.parametrize("how", [[], ["--action"]], ids=["service", "action"])
def test_lisa_ros_ask_on_humble_rclpy(humble_node, module_ros_domain, how):
    run = subprocess.run([sys.executable, str(SUPPORT / "humble_cli.py"), "ask", "where is the cup?", "--camera",
                          "front", *how], env=module_ros_domain.env, capture_output=True, text=True, timeout=180)
    assert run.returncode in (0, 3), run.stdout + run.stderr  # OK or NO_TARGET
    assert "HUMBLE-REFUSED" not in run.stdout + run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["status"]["code"] in (Status.OK, Status.NO_TARGET)
    assert refusals(humble_node.process) == []


def _humble_api():
    spec = importlib.util.spec_from_file_location("humble_rclpy_api", SUPPORT / "humble_rclpy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # reads the recorded API; shapes nothing
    return module


def rclpy_uses(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(rclpy module, name or Class.attribute, line) for every import from rclpy and every
    attribute read on a name imported from rclpy (``ReliabilityPolicy.BEST_EFFORT``), anywhere."""
    imported: dict[str, tuple[str, str]] = {}  # local name -> (module, name); name "" for a module
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                (node.module == "rclpy" or node.module.startswith("rclpy.")):
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module, alias.name)
                uses.append((node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "rclpy" or alias.name.startswith("rclpy."):
                    uses.append((alias.name, "", node.lineno))
                    if alias.asname:
                        imported[alias.asname] = (alias.name, "")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported:
            module, name = imported[node.value.id]
            if name:
                uses.append((module, f"{name}.{node.attr}", node.lineno))
    return uses


def test_lisa_ros_source_uses_only_humbles_rclpy_names():
    """Static, over every module of lisa_ros (all paths, not only those a test runs): each rclpy
    module imported exists in Humble, each name imported from one exists there, and each
    attribute read on an imported class (enum members included, which the shaped rclpy cannot
    refuse) is one Humble's class has."""
    humble = _humble_api()
    newer = []
    for path in sorted((Path(__file__).resolve().parents[1] / "lisa_ros").rglob("*.py")):
        for module, name, line in rclpy_uses(ast.parse(path.read_text())):
            where = f"{path.name}:{line}"
            if module not in humble.API:
                newer.append(f"{where} module {module}")
            elif name and "." not in name:
                if name not in humble.API[module]["names"] and f"{module}.{name}" not in humble.API:
                    newer.append(f"{where} {module}.{name}")
            elif name:
                owner, attribute = name.split(".", 1)
                if owner in humble.API[module]["classes"] and attribute not in humble.humble_members(owner):
                    newer.append(f"{where} {module}.{name}")
    assert newer == [], newer


def test_the_static_scan_finds_newer_names():
    source = textwrap.dedent("""
        import rclpy.event_handler
        from rclpy.qos import ReliabilityPolicy, QoSProfile
        from rclpy.node import Node
        def f():
            from rclpy.type_hash import TypeHash
            return ReliabilityPolicy.BEST_AVAILABLE, ReliabilityPolicy.BEST_EFFORT, Node.get_logger
    """)
    humble = _humble_api()
    uses = rclpy_uses(ast.parse(source))
    refused = [(m, n) for m, n, _ in uses if m not in humble.API or (n and "." not in n and n not in humble.API[m]["names"])
               or ("." in n and n.split(".")[1] not in humble.humble_members(n.split(".")[0]))]
    assert sorted(refused) == [("rclpy.event_handler", ""), ("rclpy.qos", "ReliabilityPolicy.BEST_AVAILABLE"),
                               ("rclpy.type_hash", "TypeHash")]
