"""Importing torchao without its import-time noise (issue 15, item 5).

When torchao is installed, transformers imports it with its quantizers, and torchao logs one
warning per optional kernel library this machine cannot load (``_C_mxfp8``, ``_C_cutlass_90a``:
MX-FP8 and Hopper kernels, unused by int8/int4 weight-only), and torch one deprecation warning per
torchao enum it registers, then and later (``<enum ...> is an Enum subclass and is now natively
supported by torch.compile``). :func:`import_torchao_quietly` imports torchao first with its records
collected and summarised in one debug line, and drops torch's enum deprecation for good;
:mod:`lisa_ros.model.configuration` and :mod:`lisa_ros.model.modeling` call it before importing transformers. Imports torch only when
torchao is installed.
"""
from __future__ import annotations

import importlib.util
import logging
import sys

log = logging.getLogger(__name__)
NOISY_LOGGERS = ("torchao",)


def _not_an_enum_deprecation(record: logging.LogRecord) -> bool:
    return "is an Enum subclass and is now natively supported" not in record.getMessage()


def import_torchao_quietly():
    """``torchao.quantization``, or None when torchao is not installed."""
    if "torchao" not in sys.modules:
        if importlib.util.find_spec("torchao") is None:
            return None
        pytree = logging.getLogger("torch.utils._pytree")
        if _not_an_enum_deprecation not in pytree.filters:
            pytree.addFilter(_not_an_enum_deprecation)
        with captured_records(*NOISY_LOGGERS) as records:
            import torchao  # noqa: F401
        skipped = []
        for message in (record.getMessage() for record in records):
            if message.startswith("Failed to load"):
                skipped.append(message.split(":")[0].rsplit("/", 1)[-1])
            else:  # anything else (an older torch: "Skipping import of cpp extensions ...")
                log.debug("torchao: %s", message)
        if skipped:
            log.debug("torchao: optional kernel libraries not loaded (not used by int8/int4 weight-only): %s",
                      ", ".join(skipped))
    import torchao.quantization

    return torchao.quantization


class captured_records:
    """Collects the records of the named loggers for one block instead of printing them."""

    def __init__(self, *names: str):
        self.loggers = [logging.getLogger(name) for name in names]

    def __enter__(self) -> list[logging.LogRecord]:
        self.records: list[logging.LogRecord] = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        self.saved = [(logger.propagate, list(logger.handlers)) for logger in self.loggers]
        for logger in self.loggers:
            logger.handlers = [self.handler]
            logger.propagate = False
        return self.records

    def __exit__(self, *exc_info) -> None:
        for logger, (propagate, handlers) in zip(self.loggers, self.saved):
            logger.handlers = handlers
            logger.propagate = propagate
