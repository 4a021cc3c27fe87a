"""The one exception family of lisa_ros: every error we raise on purpose is a :class:`LisaError`.

Callers that turn failures into user-facing answers (the CLI's one-line errors, the node's
``success=false`` replies) catch :class:`LisaError` once instead of a tuple of unrelated types.
Each subclass also derives from the built-in type it refines (``ImportError``, ``ValueError``), so
code written against the built-in types keeps working. Nothing here imports anything.
"""
from __future__ import annotations


class LisaError(Exception):
    """Base of every error lisa_ros raises on purpose; the message says what and why."""


class MissingDependencyError(LisaError, ImportError):
    """A package lisa_ros needs is not installed; the message names the install command."""


class CheckpointError(LisaError):
    """A model folder, hub id or model name that cannot be loaded as LISA."""


class TokenizerError(CheckpointError, ValueError):
    """A tokenizer folder that is missing files or lacks the tokens LISA needs."""


class DataError(LisaError, ValueError):
    """A dataset folder or file that cannot be read; the message says which and why."""


class InvalidImageError(LisaError, ValueError):
    """An image the model cannot take: not ``(H, W, 3)`` uint8, empty, or too thin for the image
    encoder (the node answers INVALID_IMAGE)."""


class ImageConversionError(InvalidImageError):
    """A ROS image message that cannot be converted (malformed, unsupported encoding, too large)."""


class InvalidCommandError(LisaError, ValueError):
    """A command the model cannot take as text: it contains the prompt's reserved tokens, or it
    does not fit the model's context (the node answers INVALID_COMMAND)."""


class UsageError(LisaError, ValueError):
    """A command-line option or configuration value that is not valid."""
