"""Where a model comes from: a local folder, a hub id, or the name of the embedded model.

docs/MODEL.md §4: a released checkpoint is a folder or a Hugging Face hub id (downloaded, or found in the
local cache, with huggingface_hub). ``embedded`` / ``embedded-base`` name the small model lisa_ros
assembles from registry packages (:mod:`lisa_ros.model.embedded`).
"""
from __future__ import annotations

from pathlib import Path

from lisa_ros.errors import CheckpointError
from lisa_ros.model.embedded import resolve_embedded


def resolve_folder(source: str | Path, what: str = "model") -> Path:
    """The folder of ``source``; :class:`CheckpointError` saying why when there is none.

    ``what`` names the thing in messages ("model", "vision tower"); only a model may be one of the
    embedded names."""
    if what == "model":
        embedded = resolve_embedded(str(source))
        if embedded is not None:
            return embedded
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{what} {source} is a file, not a checkpoint folder")
    text = str(source)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(f"{what} folder {source} does not exist (and is not a hub id like owner/name)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as exc:  # offline, unknown repo, no permission...
        raise CheckpointError(f"cannot get {what} {text!r} from the Hugging Face hub: "
                              f"{type(exc).__name__}: {exc}") from exc
