"""The controllable text-to-image protocol (spatial control: ControlAR's `controlar-multigen` task drives it).

Each request's condition carries {"prompt": str, "control": str, "control_type": str}: the prompt, the path of a
control-map image (PNG, the size of the image to generate: canny edges 0/255, a HED map, a depth map, a
segmentation colour map) and the control type ("canny", "hed", "depth", "seg"). `generate` returns one uint8 RGB
image per request, stacked as an array (N, H, W, 3), each drawn from a random stream seeded by its
`Request.seed`, so that outputs do not depend on batching. A method is conditioned on one control type and
refuses requests of another.
"""

from __future__ import annotations

from typing import ClassVar

MODALITY = "controllable-text-to-image"
#: Control types a request may carry (ControlAR's released controls; lineart has no released 512 px model).
CONTROL_TYPES = ("canny", "hed", "depth", "seg")


class ControlConditioned:
    """Declares the one control type a method is conditioned on (`control_type`), so a task refuses the pairing
    up front; a method without this declaration takes whatever control type the task's requests carry."""

    control_type: ClassVar[str] = ""
