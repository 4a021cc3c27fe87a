"""lisa_ros.visualization: overlays and the contact sheet the demo's overview is made of (ROS-free;
also on Python 3.10 and 3.12)."""
from __future__ import annotations

import numpy as np
import pytest

from lisa_ros.visualization import PALETTE, contact_sheet, draw_overlay


def test_an_overlay_tints_each_mask_in_its_colour_and_leaves_the_rest():
    rgb = np.full((100, 200, 3), 100, np.uint8)
    first, second = np.zeros((100, 200), bool), np.zeros((100, 200), bool)
    first[60:80, 10:40], second[60:90, 150:190] = True, True
    out = draw_overlay(rgb, [first, second], [(10, 60, 30, 20), (150, 60, 40, 30)], [0.9, 0.5], alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and (rgb == 100).all()  # a new array
    for (y, x), colour in (((70, 25), PALETTE[0]), ((75, 170), PALETTE[1])):  # inside, off the box's lines
        assert np.abs(out[y, x].astype(int) - (np.array(colour) + 100) / 2).max() <= 1
    assert (out[95, 60:140] == 100).all()  # untouched: no mask, box or banner there


def test_a_contact_sheet_puts_tiles_on_a_grid_under_their_captions():
    tiles = [np.full((50, 100, 3), value, np.uint8) for value in (10, 60, 110, 160)]
    long_caption = "what should I use to reach the shelf? " * 4
    sheet = contact_sheet(tiles, ["a", "b", long_caption, "d"], columns=3, tile_width=200)
    gap, tile_h = 8, 100  # tiles scaled to 200 wide keep their aspect: 100 high
    assert sheet.shape[1] == gap + 3 * (200 + gap)
    rows_of_text = (sheet.shape[0] - gap) // 2 - gap - tile_h  # caption height, the same in every cell
    assert rows_of_text > 3 * 16  # the long caption wrapped onto several lines
    cell = rows_of_text + tile_h + gap
    for index, value in enumerate((10, 60, 110, 160)):
        x, y = gap + (index % 3) * (200 + gap), gap + (index // 3) * cell + rows_of_text
        assert (sheet[y:y + tile_h, x:x + 200] == value).all(), index
    assert (sheet[gap + cell + rows_of_text:, gap + 200 + gap:] == 255).all()  # the empty cells stay white


def test_a_contact_sheet_needs_one_caption_per_tile():
    with pytest.raises(ValueError, match="one caption per tile"):
        contact_sheet([np.zeros((4, 4, 3), np.uint8)], [])
    with pytest.raises(ValueError):
        contact_sheet([], [])
    with pytest.raises(ValueError, match="column"):
        contact_sheet([np.zeros((4, 4, 3), np.uint8)], ["a"], columns=0)


def test_a_caption_word_wider_than_its_tile_stays_in_its_cell():
    tiles = [np.full((20, 100, 3), 128, np.uint8)] * 2
    sheet = contact_sheet(tiles, ["W" * 60, ""], columns=2, tile_width=100)
    right_cell = sheet[:, 8 + 100 + 8:]
    assert (right_cell[:20] == 255).all()  # the long word of the left caption did not spill over
