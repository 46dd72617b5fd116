"""Object-detection operators: RoiAlign (opsets 10, 16) and NonMaxSuppression (opsets 10, 11)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphdnn.errors import GraphError
from graphdnn.ops._util import compute_dtype
from graphdnn.ops.registry import register
from graphdnn.ops.static import as_floats, as_ints


# ------------------------------------------------------------------------------------------------
# RoiAlign
# ------------------------------------------------------------------------------------------------
def _axis_samples(
    start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, pooled: int, samples: int, size: int
) -> tuple[torch.Tensor, ...]:
    """Sample coordinates along one axis for every RoI: ``start + p * bin + (i + .5) * bin / grid`` for
    ``p < pooled``, ``i < samples``, shaped [R, pooled, samples]. Returns (low index, high index, low
    weight, high weight, out-of-range flag) with the bilinear setup of the ONNX reference (coordinates
    clamped at 0, the last row/column repeated past ``size - 1``), and [R, samples]: ``i < grid``."""
    dtype = start.dtype
    p = torch.arange(pooled, dtype=dtype, device=start.device).reshape(1, -1, 1)
    i = torch.arange(samples, dtype=dtype, device=start.device).reshape(1, 1, -1)
    start, bin_size = start.reshape(-1, 1, 1), bin_size.reshape(-1, 1, 1)
    g = grid.reshape(-1, 1, 1)
    coord = start + p * bin_size + (i + 0.5) * bin_size / g.clamp_min(1).to(dtype)
    outside = (coord < -1.0) | (coord > size)
    coord = coord.clamp_min(0)
    low = coord.floor().to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    in_grid = i.reshape(1, -1).to(torch.int64) < grid.reshape(-1, 1)
    return low, high, 1.0 - frac, frac, outside, in_grid


def _roi_align(
    x: torch.Tensor,
    rois: torch.Tensor,
    batch_indices: torch.Tensor,
    half_pixel: bool,
    mode: str,
    output_height: int,
    output_width: int,
    sampling_ratio: int,
    spatial_scale: float,
) -> torch.Tensor:
    if mode not in ("avg", "max"):
        raise GraphError(f"RoiAlign: mode must be 'avg' or 'max', not {mode!r}")
    n, c, h, w = x.shape
    r = rois.shape[0]
    if r == 0:
        return x.new_zeros(0, c, output_height, output_width)
    work = compute_dtype(x.dtype)
    boxes = rois.to(work) * spatial_scale - (0.5 if half_pixel else 0.0)
    start_w, start_h, end_w, end_h = boxes.unbind(1)
    roi_w, roi_h = end_w - start_w, end_h - start_h
    if not half_pixel:  # legacy mode: malformed RoIs are forced to 1x1
        roi_w, roi_h = roi_w.clamp_min(1.0), roi_h.clamp_min(1.0)
    bin_h, bin_w = roi_h / output_height, roi_w / output_width
    if sampling_ratio > 0:
        grid_h = torch.full((r,), sampling_ratio, dtype=torch.int64, device=x.device)
        grid_w = grid_h
        gh = gw = sampling_ratio
    else:  # adaptive: ceil(roi / pooled) points per bin, a different count per RoI
        grid_h = torch.ceil(roi_h / output_height).to(torch.int64).clamp_min(0)
        grid_w = torch.ceil(roi_w / output_width).to(torch.int64).clamp_min(0)
        gh, gw = int(grid_h.max()), int(grid_w.max())
    y_lo, y_hi, y_wlo, y_whi, y_out, y_in = _axis_samples(start_h, bin_h, grid_h, output_height, gh, h)
    x_lo, x_hi, x_wlo, x_whi, x_out, x_in = _axis_samples(start_w, bin_w, grid_w, output_width, gw, w)
    rows = x.to(work).permute(0, 2, 3, 1).reshape(n * h * w, c)  # one row of channels per pixel
    base = (batch_indices.to(torch.int64) * (h * w)).reshape(-1, 1, 1)
    bins = output_height * output_width
    acc = torch.full((r, bins, c), 0.0 if mode == "avg" else float("-inf"), dtype=work, device=x.device)
    for iy in range(gh):  # one sample row of every bin of every RoI at a time
        y_corners = ((y_lo[:, :, iy, None], y_wlo[:, :, iy, None]), (y_hi[:, :, iy, None], y_whi[:, :, iy, None]))
        index, weight, used = [], [], []
        for ix in range(gw):
            x_corners = ((x_lo[:, None, :, ix], x_wlo[:, None, :, ix]), (x_hi[:, None, :, ix], x_whi[:, None, :, ix]))
            # samples outside the map get weight 0, as in the reference; so do those past a RoI's own grid
            keep = ~(y_out[:, :, iy, None] | x_out[:, None, :, ix])
            in_grid = (y_in[:, iy] & x_in[:, ix]).reshape(r, 1, 1)
            for yi, wy in y_corners:
                for xi, wx in x_corners:
                    index.append((base + yi * w + xi).reshape(r, bins))
                    weight.append(torch.where(keep & in_grid, wy * wx, 0.0).reshape(r, bins))
            used.append(in_grid.reshape(r, 1, 1))
        if mode == "avg":  # weighted sum of the corner pixels' channel rows, without materializing them
            acc = acc + F.embedding_bag(torch.stack(index, -1).reshape(r * bins, -1), rows,
                                        per_sample_weights=torch.stack(weight, -1).reshape(r * bins, -1),
                                        mode="sum").reshape(r, bins, c)
            continue
        for sample in range(gw):  # max: the largest weighted corner value (as in the reference), maxed over samples
            terms = [
                weight[k].unsqueeze(-1) * rows.index_select(0, index[k].reshape(-1)).reshape(r, bins, c)
                for k in range(4 * sample, 4 * sample + 4)
            ]
            val = torch.maximum(torch.maximum(terms[0], terms[1]), torch.maximum(terms[2], terms[3]))
            acc = torch.where(used[sample], torch.maximum(acc, val), acc)
    count = (grid_h * grid_w).reshape(r, 1, 1)
    if mode == "avg":
        acc = acc / count.clamp_min(1).to(work)
    else:  # a RoI without samples gives 0
        acc = torch.where(count == 0, 0.0, acc)
    return acc.permute(0, 2, 1).reshape(r, c, output_height, output_width).to(x.dtype)


@register("RoiAlign", since=10)
def roi_align_v10(
    x: torch.Tensor,
    rois: torch.Tensor,
    batch_indices: torch.Tensor,
    *,
    mode: str = "avg",
    output_height: int = 1,
    output_width: int = 1,
    sampling_ratio: int = 0,
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """Opset 10 has no ``coordinate_transformation_mode``: it behaves as ``output_half_pixel``."""
    return _roi_align(x, rois, batch_indices, False, mode, output_height, output_width, sampling_ratio, spatial_scale)


@register("RoiAlign", since=16)
def roi_align(
    x: torch.Tensor,
    rois: torch.Tensor,
    batch_indices: torch.Tensor,
    *,
    coordinate_transformation_mode: str = "half_pixel",
    mode: str = "avg",
    output_height: int = 1,
    output_width: int = 1,
    sampling_ratio: int = 0,
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """Pool each RoI ``[x1, y1, x2, y2]`` (scaled by ``spatial_scale``; shifted by -0.5 in ``half_pixel``
    mode) of image ``batch_indices[r]`` into an ``output_height x output_width`` grid of bins, each the
    average (or max) of ``sampling_ratio``^2 bilinear samples (adaptive ``ceil(roi / bins)`` when 0)."""
    if coordinate_transformation_mode not in ("half_pixel", "output_half_pixel"):
        raise GraphError(f"RoiAlign: unknown coordinate_transformation_mode {coordinate_transformation_mode!r}")
    half_pixel = coordinate_transformation_mode == "half_pixel"
    return _roi_align(x, rois, batch_indices, half_pixel, mode, output_height, output_width, sampling_ratio,
                      spatial_scale)


# ------------------------------------------------------------------------------------------------
# NonMaxSuppression
# ------------------------------------------------------------------------------------------------
#: Candidates whose IoU rows are computed at once (memory: this many rows of the candidate count).
_NMS_BLOCK = 256


def _corners(boxes: torch.Tensor, center_point_box: int) -> tuple[torch.Tensor, ...]:
    """(x_min, x_max, y_min, y_max) of boxes given as [y1, x1, y2, x2] (any diagonal pair of corners)
    or, with ``center_point_box=1``, as [x_center, y_center, width, height]."""
    if center_point_box:
        cx, cy, bw, bh = boxes.unbind(-1)
        return cx - bw / 2, cx + bw / 2, cy - bh / 2, cy + bh / 2
    y1, x1, y2, x2 = boxes.unbind(-1)
    return torch.minimum(x1, x2), torch.maximum(x1, x2), torch.minimum(y1, y2), torch.maximum(y1, y2)


def _suppression_rows(
    corners: tuple[torch.Tensor, ...], areas: torch.Tensor, start: int, stop: int, iou_threshold: float
) -> torch.Tensor:
    """[stop - start, N]: whether box j (column) has an IoU with box i (row, ``start <= i < stop``)
    strictly above ``iou_threshold``; degenerate boxes and empty intersections never suppress."""
    x_min, x_max, y_min, y_max = corners
    rows = slice(start, stop)
    ix = torch.minimum(x_max, x_max[rows, None]) - torch.maximum(x_min, x_min[rows, None])
    iy = torch.minimum(y_max, y_max[rows, None]) - torch.maximum(y_min, y_min[rows, None])
    inter = ix * iy
    a_row = areas[rows, None]
    union = areas + a_row - inter
    ok = (ix > 0) & (iy > 0) & (inter > 0) & (areas > 0) & (a_row > 0) & (union > 0)
    return ok & (inter / torch.where(ok, union, 1.0) > iou_threshold)


@register("NonMaxSuppression", since=10, static_inputs=(2, 3, 4))
def non_max_suppression(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    max_output_boxes_per_class: Any = None,
    iou_threshold: Any = None,
    score_threshold: Any = None,
    *,
    center_point_box: int = 0,
) -> torch.Tensor:
    """Greedy per-(batch, class) NMS. Boxes [B, N, 4], scores [B, K, N]; returns [M, 3] int64 rows
    (batch, class, box). Candidates scoring above ``score_threshold`` (when given) are visited by
    descending score (lower index first on ties); one is kept unless its IoU with a kept box exceeds
    ``iou_threshold``, until ``max_output_boxes_per_class`` are kept (0 or absent: none)."""
    limit = as_ints(max_output_boxes_per_class) if max_output_boxes_per_class is not None else []
    limit = max(limit[0], 0) if limit else 0
    iou = as_floats(iou_threshold)
    iou_thr = iou[0] if iou else 0.0
    score = as_floats(score_threshold)
    score_thr = score[0] if score else None
    selected: list[tuple[int, int, int]] = []
    if limit > 0:
        for b in range(boxes.shape[0]):
            corners = _corners(boxes[b], center_point_box)
            areas = (corners[1] - corners[0]) * (corners[3] - corners[2])
            for k in range(scores.shape[1]):
                s = scores[b, k]
                order = torch.sort(s, descending=True, stable=True).indices
                if score_thr is not None:
                    order = order[s[order] > score_thr]
                # candidates in visiting order; the bookkeeping of the greedy pass lives in numpy
                cand = tuple(c[order] for c in corners)
                cand_areas = areas[order]
                box_ids = order.tolist()
                suppressed = np.zeros(len(box_ids), dtype=bool)
                rows, first = None, 0  # IoU rows computed a block of candidates at a time
                kept = 0
                for j, box in enumerate(box_ids):
                    if suppressed[j]:
                        continue
                    selected.append((b, k, box))
                    kept += 1
                    if kept >= limit:
                        break
                    if rows is None or j >= first + _NMS_BLOCK:
                        first = j
                        rows = _suppression_rows(cand, cand_areas, j, j + _NMS_BLOCK, iou_thr).cpu().numpy()
                    suppressed |= rows[j - first]
    return torch.tensor(selected, dtype=torch.int64, device=boxes.device).reshape(-1, 3)

