"""Follow the objects of one answer on every later frame, without the language model.

The answer's reasoning happens once; then each object is followed:

* **every frame** (a few ms): dense optical flow moves the object's *shape* (its mask at the last
  trusted frame, the template) by the similarity transform its visible pixels moved by
  (:mod:`lisa_ros.tracking.motion`); inside the moved shape, the pixels whose colour is the
  object's are its visible mask (:mod:`lisa_ros.tracking.appearance`), so an occluder is cut out
  and the flow is never fitted on it. A hidden object keeps moving at its last velocity, slowing.
* **whenever an image encoding is ready** (the image encoder is far slower than a camera:
  :meth:`Tracker.snapshot` when an encoding of the current frame starts, :meth:`Tracker.correct`
  when it is done): SAM's mask decoder, prompted by the box of the shape at that frame, segments
  the object again. When the decoder's predicted IoU and its agreement with the followed mask are
  both good, its mask becomes the new template (carried forward by the motion since that frame);
  when they disagree twice running the object is ``uncertain``.

States (:data:`TRACKING`, :data:`OCCLUDED`, :data:`UNCERTAIN`, :data:`LOST`), each with a
reason: occluded when under ``occluded_below`` of its shape's pixels in view look like it; lost
when its shape has left the view (a partly hidden object is followed over the border by a
matched filter of its shape against its colours), or when hidden for longer than
``hidden_timeout_s``. A lost object's mask is empty; it is looked for over the whole frame by its
shape and colours (``redetect``, no model) and continues under its id when found, or when
:meth:`Tracker.reacquire` gives it a new mask (the command asked again). Masks are bool ``(H, W)`` at the frame's size; motion is estimated at a working size whose
long side is at most ``work_size`` pixels. ROS-free; one thread calls a tracker at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from lisa_ros.engine import mask_box
from lisa_ros.tracking.appearance import ColourModel
from lisa_ros.tracking.motion import FlowField, fit_similarity

TRACKING, OCCLUDED, UNCERTAIN, LOST = "tracking", "occluded", "uncertain", "lost"
STATES = (TRACKING, OCCLUDED, UNCERTAIN, LOST)


@dataclass(frozen=True)
class TrackerOptions:
    """``work_size``: long side (px) of the frames the flow runs on; ``max_scale_step``: the most
    a shape's scale may change from one frame to the next by flow (0: rigid, the size changes
    only by corrections; flow over plain regions is biased towards shrinking); ``mask_margin_px``:
    how far outside its shape an object's colours still count as its mask; ``occluded_below``: share of
    the shape's in-view pixels that must look like the object, below which it is occluded;
    ``hidden_below``: the same share below which it is hidden (no flow fit, kept moving at its
    last velocity); ``hidden_timeout_s``: hidden longer than this, it is lost; ``left_view_below``:
    share of the shape's area in view below which it has left the view (lost);
    ``min_predicted_iou``, ``min_agreement`` and ``min_colour_share``: a correction is trusted when
    SAM's predicted IoU, the IoU between SAM's mask and the followed mask, and the share of SAM's
    mask whose colours are the object's all reach these; ``velocity_decay``: per-frame factor
    on a hidden object's velocity; ``colour_adaptation``: weight of a trusted correction's colours
    in the colour model; ``redetect``: look for a lost object over the whole frame by its shape
    and colours (:meth:`Tracker._redetect`, no model) and continue it when found;
    ``redetect_above``: the least score for that, as a share of its area."""

    work_size: int = 320
    max_scale_step: float = 0.0
    mask_margin_px: int = 3
    occluded_below: float = 0.6
    hidden_below: float = 0.1
    hidden_timeout_s: float = 2.0
    left_view_below: float = 0.05
    min_predicted_iou: float = 0.6
    min_agreement: float = 0.5
    min_colour_share: float = 0.8
    velocity_decay: float = 0.9
    colour_adaptation: float = 0.2
    redetect: bool = True
    redetect_above: float = 0.5


@dataclass
class TrackedObject:
    """One object on one frame: ``id`` (the answer's mask index unless given), ``label`` (the
    answer's words for it), ``mask`` bool (H, W) (empty when lost), ``box`` (x, y, width, height)
    pixels (zeros when empty), ``score`` in [0, 1] (visible share of the shape times the last
    correction's quality), ``state`` (one of :data:`STATES`) and ``reason`` (why it is not
    ``tracking``; "" when it is), ``visible_fraction`` (pixels that look like it over the shape's
    pixels in view), ``seconds_in_state``."""

    id: int
    label: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    score: float
    state: str
    reason: str
    visible_fraction: float
    seconds_in_state: float


@dataclass
class _Track:
    id: int
    label: str
    template: np.ndarray  # bool (h, w) crop of the trusted mask
    pose: np.ndarray  # 3x3: template pixels -> current frame pixels
    colour: ColourModel
    seg_state: object = None  # the [SEG] hidden state [H] (torch), for re-detection by the decoder
    visible: np.ndarray | None = None
    shift: np.ndarray = field(default_factory=lambda: np.zeros(2))  # last frame's move of its centre, px
    state: str = TRACKING
    reason: str = ""
    state_since: float = 0.0
    hidden_since: float | None = None
    quality: float = 1.0
    disagreements: int = 0

    @property
    def template_area(self) -> float:
        return float(self.template.sum()) * abs(float(np.linalg.det(self.pose[:2, :2])))


@dataclass
class Snapshot:
    """What a correction needs of the frame whose encoding started: its index and stamp, and per
    object id its pose and visible mask then."""

    frame_index: int
    stamp: float
    poses: dict[int, np.ndarray]
    visible: dict[int, np.ndarray]


@dataclass
class Correction:
    """What one correction found for one object: ``predicted_iou`` (SAM's), ``agreement`` (IoU with
    the followed mask at that frame), ``trusted`` (the template was replaced)."""

    id: int
    predicted_iou: float
    agreement: float
    trusted: bool


RING_PX = 3  # width of the ring around a shape that must not be of its colour, working-size pixels


def _matched_filter(inside: np.ndarray) -> np.ndarray:
    """The kernel that scores a place for a shape (``inside``: float32 (h, w), 1 in the shape):
    +1 over the shape, -1 over a ring of :data:`RING_PX` around it, 0 elsewhere; correlated with
    a map of "has the object's colour" (1/0), it gives the shape's pixels of that colour minus
    the ring's."""
    padded = cv2.copyMakeBorder(inside, RING_PX, RING_PX, RING_PX, RING_PX, cv2.BORDER_CONSTANT)
    ring = np.clip(cv2.dilate(padded, np.ones((2 * RING_PX + 1,) * 2, np.uint8)) - padded, 0, 1)
    return padded - ring


def translation(x: float, y: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, 2] = (x, y)
    return matrix


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


class Tracker:
    """Follows objects from their first masks (see the module docstring).

    ``rgb``: the uint8 (H, W, 3) frame the masks are about; ``masks``: bool (H, W) each; ``ids``,
    ``labels``: one per mask (default 0.. and ""); ``seg_states``: the [SEG] hidden states that
    made them (kept for re-detection), or None; ``stamp``: the frame's time in seconds. Raises
    ValueError for masks of another size than the frame, or an empty mask."""

    def __init__(self, rgb: np.ndarray, masks: list[np.ndarray], stamp: float, ids: list[int] | None = None,
                 labels: list[str] | None = None, seg_states: list | None = None,
                 options: TrackerOptions | None = None):
        self.options = options or TrackerOptions()
        self.size = rgb.shape[:2]
        self.scale = min(1.0, self.options.work_size / max(self.size))
        self.work_shape = (max(1, round(self.size[1] * self.scale)), max(1, round(self.size[0] * self.scale)))
        self._flow = FlowField()
        self._rng = np.random.default_rng(0)
        self.frame_index = 0
        self.stamp = float(stamp)
        self._grey = self._working_grey(rgb)
        self._rgb = rgb
        ids = list(range(len(masks))) if ids is None else list(ids)
        labels = [""] * len(masks) if labels is None else list(labels)
        seg_states = [None] * len(masks) if seg_states is None else list(seg_states)
        self.tracks: list[_Track] = []
        for mask, track_id, label, seg_state in zip(masks, ids, labels, seg_states):
            self.tracks.append(self._new_track(rgb, np.asarray(mask, bool), track_id, label, seg_state))

    def _new_track(self, rgb: np.ndarray, mask: np.ndarray, track_id: int, label: str, seg_state) -> _Track:
        if mask.shape != self.size:
            raise ValueError(f"mask {mask.shape} is not the frame's size {self.size}")
        if not mask.any():
            raise ValueError(f"mask of object {track_id} is empty: nothing to follow")
        x, y, w, h = mask_box(mask)
        track = _Track(track_id, label, mask[y:y + h, x:x + w].copy(), translation(x, y),
                       ColourModel.from_mask(rgb, mask), seg_state, mask, state_since=self.stamp)
        return track

    @property
    def rgb(self) -> np.ndarray:
        """The last frame stepped onto (the one :meth:`snapshot` is about)."""
        return self._rgb

    # ------------------------------------------------------------------ per frame
    def _working_grey(self, rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return grey if self.scale == 1.0 else cv2.resize(grey, self.work_shape, interpolation=cv2.INTER_AREA)

    def _shape(self, track: _Track, pose: np.ndarray | None = None) -> np.ndarray:
        """The template moved by ``pose`` (default the current one): bool (H, W), cut at the view."""
        pose = track.pose if pose is None else pose
        return cv2.warpAffine(track.template.astype(np.uint8), pose[:2], (self.size[1], self.size[0]),
                              flags=cv2.INTER_NEAREST).astype(bool)

    def step(self, rgb: np.ndarray, stamp: float) -> list[TrackedObject]:
        """Follow every object onto the next frame (uint8 (H, W, 3), the first frame's size) taken
        at ``stamp`` seconds. Raises ValueError for a frame of another size."""
        if rgb.shape[:2] != self.size:
            raise ValueError(f"frame {rgb.shape[:2]} is not the size the track started with {self.size}")
        grey = self._working_grey(rgb)
        flow = self._flow.compute(self._grey, grey)
        self._grey, self._rgb, self.frame_index, self.stamp = grey, rgb, self.frame_index + 1, float(stamp)
        to_work = np.diag([self.scale, self.scale, 1.0])
        from_work = np.diag([1 / self.scale, 1 / self.scale, 1.0])
        for track in self.tracks:
            if track.state == LOST:
                if self.options.redetect and self._redetect(track, rgb):
                    self._observe(track, rgb)
                continue
            self._move(track, flow, to_work, from_work)
            self._observe(track, rgb)
        return self.objects()

    def _move(self, track: _Track, flow: np.ndarray, to_work: np.ndarray, from_work: np.ndarray) -> None:
        """Move ``track.pose`` onto the new frame: the similarity its visible pixels moved by when
        it is in plain view; when partly or wholly hidden, its last shift, slowing down (the
        flow beside an occluder is the occluder's; :meth:`_search` then finds it)."""
        ys, xs = np.nonzero(track.visible)
        points = np.stack([xs, ys], axis=1) * self.scale
        fit = (fit_similarity(flow, points, self._rng, max_scale_step=self.options.max_scale_step)
               if track.state in (TRACKING, UNCERTAIN) else None)
        if fit is not None and fit.found and fit.inliers >= 0.5:
            step = from_work @ fit.matrix @ to_work
            before = track.pose @ self._template_centre(track)
            track.shift = (step @ before - before)[:2]
        else:  # partly or wholly hidden: the flow next to an occluder is the occluder's
            track.shift = track.shift * self.options.velocity_decay
            step = translation(*track.shift)
        track.pose = step @ track.pose

    @staticmethod
    def _template_centre(track: _Track) -> np.ndarray:
        ys, xs = np.nonzero(track.template)
        return np.array([xs.mean(), ys.mean(), 1.0])

    def _look(self, track: _Track, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """Set ``track.visible``: the pixels of its shape, grown by ``mask_margin_px`` (a shape a
        pixel or two off still gives the whole object), whose colours are the object's. Returns
        the shape (cut at the view) and the share of its pixels that look like the object."""
        shape = self._shape(track)
        margin = self.options.mask_margin_px
        grown = shape if margin <= 0 else cv2.dilate(
            shape.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2)).astype(bool)
        track.visible = track.colour.object_pixels(rgb, grown)
        return shape, float((track.visible & shape).sum()) / max(1.0, float(shape.sum()))

    def _observe(self, track: _Track, rgb: np.ndarray) -> None:
        """The visible mask and state of ``track`` at its current pose on ``rgb``."""
        options = self.options
        shape, seen = self._look(track, rgb)
        hidden = seen < options.occluded_below
        if self._search(track, rgb, grow_fraction=0.6 if hidden else 0.0, grow_px=16 if hidden else 6):
            shape, seen = self._look(track, rgb)
        in_view = float(shape.sum()) / max(1.0, track.template_area)
        if in_view < options.left_view_below:
            self._set_state(track, LOST, "left the view")
            return
        if seen < options.hidden_below and in_view < 0.9:  # hidden, with its shape across the border
            self._set_state(track, LOST, "left the view")
            return
        if seen < options.hidden_below:
            if track.hidden_since is None:
                track.hidden_since = self.stamp
            hidden_for = self.stamp - track.hidden_since
            if hidden_for > options.hidden_timeout_s:
                self._set_state(track, LOST, f"hidden for more than {options.hidden_timeout_s:g} s")
            else:
                self._set_state(track, OCCLUDED, "hidden: nothing where it was followed looks like it")
            return
        track.hidden_since = None
        if seen < options.occluded_below:
            self._set_state(track, OCCLUDED, f"partly hidden: {seen:.0%} of its shape in view looks like it")
        elif track.disagreements >= 2:
            self._set_state(track, UNCERTAIN, "the mask decoder disagrees with the followed mask")
        else:
            self._set_state(track, TRACKING, "")

    def _whole_shape(self, track: _Track) -> tuple[np.ndarray, float, float]:
        """The object's whole shape as it is posed now, uncut by the view: float32 (h, w), 1 in
        the shape, and the frame coordinates (x, y) of its top-left corner (may be outside)."""
        linear = track.pose.copy()
        height, width = track.template.shape
        corners = track.pose[:2, :2] @ np.array([[0, width, 0, width], [0, 0, height, height]], float)
        low = corners.min(axis=1)
        linear[:2, 2] = -low
        size = np.ceil(corners.max(axis=1) - low).astype(int) + 1
        whole = cv2.warpAffine(track.template.astype(np.uint8), linear[:2], (int(size[0]), int(size[1])),
                               flags=cv2.INTER_NEAREST).astype(np.float32)
        left, top = track.pose[:2, 2] + low
        return whole, float(left), float(top)

    def _scores(self, track: _Track, rgb: np.ndarray, whole: np.ndarray, window: tuple[int, int, int, int]):
        """The matched filter's score of every place of ``whole`` (the shape, full size) in
        ``window`` = (x0, y0, x1, y1), frame pixels that may reach outside the image (no evidence
        there: a shape may hang over the border). Returns the scores at the working size (the
        kernel's top-left :data:`RING_PX` before the shape's) and the shape's working-size area;
        None when the window holds no image or is smaller than the shape."""
        x0, y0, x1, y1 = window
        cx0, cy0 = max(0, x0), max(0, y0)
        cx1, cy1 = min(self.size[1], x1), min(self.size[0], y1)
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        region = np.zeros(self.size, bool)
        region[cy0:cy1, cx0:cx1] = True
        evidence = track.colour.object_pixels(rgb, region)[cy0:cy1, cx0:cx1].astype(np.float32)
        evidence = cv2.copyMakeBorder(evidence, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_CONSTANT)
        scale = self.scale
        small = lambda image: cv2.resize(image, (max(1, round(image.shape[1] * scale)),  # noqa: E731
                                                 max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        evidence, inside = small(evidence), small(whole)
        kernel = _matched_filter(inside)
        if kernel.shape[0] > evidence.shape[0] or kernel.shape[1] > evidence.shape[1]:
            return None
        return cv2.matchTemplate(evidence, kernel, cv2.TM_CCORR), float(inside.sum())

    def _search(self, track: _Track, rgb: np.ndarray, grow_fraction: float, grow_px: int) -> bool:
        """Look around a partly or wholly hidden object for where its shape best fits pixels of
        its colour, with a ring around the shape that must *not* be of its colour (so a larger
        object of the same colour does not fit); move it there and return True when that place
        is better than where it is. Runs at the working size over the shape's box grown by
        ``grow_fraction`` of its size plus ``grow_px`` each way; the shape may hang over the
        image's border (an object leaving the view is followed out of it)."""
        whole, left, top = self._whole_shape(track)
        h, w = whole.shape
        # The window holds the kernel (the shape and its ring, RING_PX working pixels) plus the room.
        grow = int(grow_fraction * max(w, h)) + grow_px + int(np.ceil(RING_PX / self.scale))
        x0, y0 = int(np.floor(left)) - grow, int(np.floor(top)) - grow
        found = self._scores(track, rgb, whole, (x0, y0, x0 + w + 2 * grow, y0 + h + 2 * grow))
        if found is None:
            return False
        scores, area = found
        scale = self.scale
        best = float(scores.max())
        # Where the shape is now, in the score map (the kernel's top-left is RING_PX before it).
        here_x = int(round((left - x0) * scale)) - RING_PX
        here_y = int(round((top - y0) * scale)) - RING_PX
        here = scores[np.clip(here_y, 0, scores.shape[0] - 1), np.clip(here_x, 0, scores.shape[1] - 1)]
        # A wide search (the object hidden) must find a clearly better place; a local one may
        # nudge the shape by a pixel or two.
        margin = (0.05 if grow_fraction > 0 else 0.005) * area
        if best < self.options.hidden_below * area * 2 or best <= here + margin:
            return False
        # Among places nearly as good as the best, the nearest to where it was expected.
        ys, xs = np.nonzero(scores >= best - margin)
        nearest = int(np.argmin((xs - here_x) ** 2 + (ys - here_y) ** 2))
        dx, dy = (xs[nearest] - here_x) / scale, (ys[nearest] - here_y) / scale
        track.pose = translation(dx, dy) @ track.pose
        track.shift = track.shift + np.array([dx, dy]) * 0.5
        return True

    def _redetect(self, track: _Track, rgb: np.ndarray) -> bool:
        """Look over the whole frame for a lost object: where its whole shape (as last followed,
        turned and scaled as then) best fits pixels of its colour with a ring around it that is
        not, at least half of it in view. Place it there and return True when such a place
        covers at least ``redetect_above`` of its area more than its ring; False otherwise."""
        whole, left, top = self._whole_shape(track)
        h, w = whole.shape
        pad_x, pad_y = w // 2, h // 2  # half the shape may hang over the border
        found = self._scores(track, rgb, whole, (-pad_x, -pad_y, self.size[1] + pad_x, self.size[0] + pad_y))
        if found is None:
            return False
        scores, area = found
        if float(scores.max()) < self.options.redetect_above * area:
            return False
        y, x = np.unravel_index(int(scores.argmax()), scores.shape)
        new_left = (x + RING_PX) / self.scale - pad_x  # the whole shape's top-left, frame pixels
        new_top = (y + RING_PX) / self.scale - pad_y
        track.pose = translation(new_left - left, new_top - top) @ track.pose
        track.shift = np.zeros(2)
        track.hidden_since = None
        return True

    def _set_state(self, track: _Track, state: str, reason: str) -> None:
        if state != track.state:
            track.state_since = self.stamp
        track.state, track.reason = state, reason
        if state == LOST:
            track.visible = np.zeros(self.size, bool)

    def objects(self) -> list[TrackedObject]:
        """Every object as of the last frame."""
        found = []
        for track in self.tracks:
            mask = track.visible if track.visible is not None else np.zeros(self.size, bool)
            seen = 0.0
            if track.state != LOST:  # the share _observe judges by: the shape's pixels that look like it
                shape = self._shape(track)
                seen = float((mask & shape).sum()) / max(1.0, float(shape.sum()))
            found.append(TrackedObject(track.id, track.label, mask, mask_box(mask), seen * track.quality,
                                       track.state, track.reason, seen, self.stamp - track.state_since))
        return found

    # ------------------------------------------------------------------ corrections by SAM
    def snapshot(self) -> Snapshot:
        """The current frame's poses and visible masks, to take when its encoding starts."""
        live = [t for t in self.tracks if t.state != LOST]
        return Snapshot(self.frame_index, self.stamp, {t.id: t.pose.copy() for t in live},
                        {t.id: t.visible.copy() for t in live})

    def correction_boxes(self, snapshot: Snapshot) -> dict[int, tuple[int, int, int, int]]:
        """Per object id, the (x0, y0, x1, y1) box (pixels, inclusive-exclusive) of its shape at
        the snapshot's frame, cut at the view: the decoder's prompt. Objects without one (lost
        since, or out of view then) are left out."""
        boxes = {}
        for track in self.tracks:
            pose = snapshot.poses.get(track.id)
            if pose is None or track.state == LOST:
                continue
            x, y, w, h = mask_box(self._shape(track, pose))
            if w and h:
                boxes[track.id] = (x, y, x + w, y + h)
        return boxes

    def correct(self, snapshot: Snapshot, masks: dict[int, np.ndarray], predicted_ious: dict[int, float],
                rgb: np.ndarray) -> list[Correction]:
        """Apply the decoder's masks (bool (H, W) per object id, about the snapshot's frame, whose
        pixels are ``rgb``) with their predicted IoUs. A mask is trusted when both its predicted
        IoU and its IoU with the followed mask then reach the options' minimums, and the object
        was neither occluded nor cut by the border then (the template must be the whole object):
        it becomes the template, moved by the motion since the snapshot."""
        options, results = self.options, []
        for track in self.tracks:
            if track.id not in masks or track.state == LOST or track.id not in snapshot.poses:
                continue
            mask, predicted = np.asarray(masks[track.id], bool), float(predicted_ious[track.id])
            followed = snapshot.visible[track.id]
            agreement = iou(mask, followed)
            shape_then = self._shape(track, snapshot.poses[track.id])
            seen_then = float(followed.sum()) / max(1.0, float(shape_then.sum()))
            whole_then = float(shape_then.sum()) / max(1.0, track.template_area) >= 0.95  # not cut by the border
            # The decoder can spill over the background with a confident IoU estimate: its mask
            # must also look like the object (a share of its pixels of the object's colours).
            looks_like = (float(track.colour.object_pixels(rgb, mask).sum()) / max(1.0, float(mask.sum()))
                          >= options.min_colour_share)
            good = predicted >= options.min_predicted_iou and agreement >= options.min_agreement and looks_like
            trusted = good and seen_then >= options.occluded_below and whole_then and mask.any()
            if trusted:
                since = track.pose @ np.linalg.inv(snapshot.poses[track.id])  # motion after the snapshot
                x, y, w, h = mask_box(mask)
                track.template = mask[y:y + h, x:x + w].copy()
                track.pose = since @ translation(x, y)
                fresh = ColourModel.from_mask(rgb, mask)
                track.colour = track.colour.blend(fresh, options.colour_adaptation)
                track.quality = float(np.sqrt(predicted * agreement))
                track.disagreements = 0
            elif seen_then >= options.occluded_below:
                track.disagreements = 0 if good else track.disagreements + 1
            results.append(Correction(track.id, predicted, agreement, trusted))
        return results

    # ------------------------------------------------------------------ lost and found
    def matches(self, track_id: int, rgb: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        """How much ``mask`` on ``rgb`` looks like object ``track_id``: (colour similarity in [0, 1],
        area ratio new / known, >= 1 means larger)."""
        track = self._track(track_id)
        area = float(np.asarray(mask, bool).sum())
        return (track.colour.similarity(ColourModel.from_mask(rgb, np.asarray(mask, bool))),
                area / max(1.0, track.template_area))

    def reacquire(self, track_id: int, rgb: np.ndarray, mask: np.ndarray) -> None:
        """Continue object ``track_id`` from ``mask`` (bool (H, W)) on ``rgb``, a frame at most a
        few seconds old: a new template and colours, placed on the newest frame where its shape
        best fits its colours (:meth:`_search`). Raises KeyError for an unknown id and ValueError
        for an empty mask."""
        track = self._track(track_id)
        fresh = self._new_track(rgb, np.asarray(mask, bool), track.id, track.label, track.seg_state)
        fresh.colour = track.colour.blend(fresh.colour, 0.5)
        fresh.state_since = self.stamp
        self.tracks[self.tracks.index(track)] = fresh
        self._observe(fresh, self._rgb)

    def _track(self, track_id: int) -> _Track:
        for track in self.tracks:
            if track.id == track_id:
                return track
        raise KeyError(f"no object {track_id} in this track")
