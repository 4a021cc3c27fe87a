"""The real lisa_ros node with fault injection for failures that cannot happen on demand here
(not part of the package). A command containing SIMULATE_OOM makes the model raise
torch.cuda.OutOfMemoryError (no GPU here); SIMULATE_CPU_OOM raises MemoryError; SIMULATE_FAILURE
raises a RuntimeError before generating, SIMULATE_FAILURE_MID after the third generated token;
SIMULATE_SLOW makes each generated token take 50 ms longer.
--slow-configure=S (before --ros-args) makes configure take S seconds longer, like loading a 7B
model. Everything else is the unmodified node. Prints "ready" once the node object exists."""
from __future__ import annotations

import sys
import time

import torch

from lisa_ros.ros import node as node_module

SLOW_CONFIGURE_S = next((float(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--slow-configure=")), 0.0)


class NodeWithFaults(node_module.LisaNode):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        print("ready", flush=True)

    def on_configure(self, state):
        time.sleep(SLOW_CONFIGURE_S)
        outcome = super().on_configure(state)
        if self.engine is not None:
            real_answer = self.engine.answer

            def answer(frame, command, **kwargs):
                if "SIMULATE_OOM" in command:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
                if "SIMULATE_CPU_OOM" in command:
                    raise MemoryError("simulated: cannot allocate 3.2 GiB")
                if "SIMULATE_FAILURE_MID" in command:
                    on_token = kwargs.get("on_token")

                    def failing(text, count):
                        if on_token is not None:
                            on_token(text, count)
                        if count >= 3:
                            raise RuntimeError("simulated failure in the middle of generation")

                    kwargs["on_token"] = failing
                elif "SIMULATE_SLOW" in command:  # a 7B model on a small GPU: 20 tokens per second
                    on_token = kwargs.get("on_token")

                    def slow(text, count):
                        time.sleep(0.05)
                        if on_token is not None:
                            on_token(text, count)

                    kwargs["on_token"] = slow
                elif "SIMULATE_FAILURE" in command:
                    raise RuntimeError("simulated model failure")
                return real_answer(frame, command, **kwargs)

            self.engine.answer = answer
        return outcome


if __name__ == "__main__":
    sys.exit(node_module.main([a for a in sys.argv if not a.startswith("--slow-configure=")],
                              node_class=NodeWithFaults))
