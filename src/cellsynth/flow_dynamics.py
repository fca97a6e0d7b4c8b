"""Cellpose's mask reconstruction (``dynamics.compute_masks``) as batched PyTorch: flow fields to instance masks.

The steps, each a plain function named after the Cellpose step it implements:

1. :func:`unit_flows_and_foreground`: the flows and the foreground (cell probability above threshold);
2. :func:`follow_flows`: every foreground pixel follows the flows for ``niter`` Euler steps;
3. :func:`find_sinks`: the end points are binned; dense bins seed objects that grow over their
   neighbours, and every pixel takes the object its end point fell into;
4. :func:`remove_by_size`: objects larger than a share of the crop (or smaller than ``min_size``) go;
5. :func:`flow_errors`: the flow-error check, the mean squared difference between the given flows and
   those recomputed from each object (Cellpose's ``flow_threshold``);
6. :func:`fill_holes`: holes inside objects are filled, then objects are numbered
   (:func:`sequential_ids`).

:func:`masks_from_flows` runs them over a whole batch on one device; :func:`cellsynth.encoding.decode_batch`
is the public entry point. Agreement with Cellpose is tested in ``tests/test_encoding.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

# Probabilities 0 and 1 have infinite logits; clamp them for the logit map.
_PROBABILITY_EPS = 1e-6
# Cellpose's get_masks constants: a histogram bin seeds an object when it holds
# more than _SEED_MIN_COUNT end points and is the maximum of its 5x5
# neighbourhood; objects then grow _GROWTH_STEPS steps (3x3 neighbourhood)
# over bins holding more than _GROWTH_MIN_COUNT end points.
_SEED_MIN_COUNT = 10
_SEED_POOL_SIZE = 5
_GROWTH_STEPS = 5
_GROWTH_MIN_COUNT = 2
# The flow-error diffusion packs per-object tiles into shelves about this
# wide, and on CPU diffuses groups of whole shelves of about this many pixels
# at a time, so that its float64 working set stays in cache.
_SHELF_WIDTH = 256
_CPU_BAND_PIXELS = 1 << 17


def foreground(encoded: np.ndarray | torch.Tensor, cellprob_threshold: float,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``(B, H, W)`` bool: the pixels of ``(B, H, W, 3)`` encoded fields (0..255) that the decoder follows,
    those whose probability logit exceeds ``cellprob_threshold``."""
    values = torch.as_tensor(encoded, device=device).to(torch.float32)
    return torch.logit(values[..., 0] / 255.0, eps=_PROBABILITY_EPS) > cellprob_threshold


def unit_flows_and_foreground(
    encoded: np.ndarray, cellprob_threshold: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 2, H, W)`` float32 unit flows ``[dx, dy]`` and ``(B, H, W)`` bool :func:`foreground`."""
    values = torch.as_tensor(encoded, device=device).to(torch.float32)
    unit_flows = (values[..., 1:] / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
    return unit_flows, foreground(values, cellprob_threshold, device)


def sequential_ids(labels: np.ndarray) -> np.ndarray:
    """Map the ids present to 1..N (in increasing order), 0 stays 0; int32. Unlike skimage's
    ``relabel_sequential`` it returns the relabelled array alone."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    new_ids = np.cumsum(present).astype(np.int32)
    new_ids[0] = 0
    return new_ids[labels]


@torch.no_grad()
def masks_from_flows(
    encoded: np.ndarray,
    *,
    niter: int,
    cellprob_threshold: float,
    flow_threshold: float | None,
    min_size: int,
    max_size_fraction: float,
    device: torch.device,
) -> np.ndarray:
    """Batched equivalent of Cellpose's compute_masks + fill_holes_and_remove_small_masks.

    Every foreground pixel follows the flows (:func:`follow_flows`), end
    points are grouped into objects (:func:`find_sinks`), then objects
    larger than ``max_size_fraction`` of the crop, failing the flow-error check
    (:func:`flow_errors`) or smaller than ``min_size`` are dropped, holes are
    filled (:func:`fill_holes`) and objects numbered 1..N per crop. All but
    the hole filling run on ``device`` over the whole batch. Cellpose drops
    small objects a second time after filling holes; filling only grows or
    absorbs objects, so that pass would change nothing and is left out.

    Parameters
    ----------
    encoded
        ``(B, H, W, 3)`` cellpose_flow images.

    Returns
    -------
    np.ndarray
        ``(B, H, W)`` int32 labels, sequential per item.
    """
    batch, height, width, _ = encoded.shape
    unit_flows, foreground = unit_flows_and_foreground(encoded, cellprob_threshold, device)
    labels = torch.zeros(batch * height * width, dtype=torch.int64, device=device)
    pixel_index = torch.nonzero(foreground.view(-1)).squeeze(1)
    if len(pixel_index):
        end_points = follow_flows(unit_flows * foreground.unsqueeze(1), pixel_index, niter)
        labels[pixel_index] = find_sinks(end_points, (batch, height, width))
        labels = remove_by_size(labels, max_size=max_size_fraction * height * width)
    labels = labels.view(batch, height, width)
    if flow_threshold is not None and flow_threshold > 0 and bool(labels.any()):
        errors = flow_errors(labels, unit_flows)
        labels = torch.where((errors > flow_threshold)[labels], 0, labels)
    if min_size > 0:
        labels = remove_by_size(labels.view(-1), min_size=min_size).view(batch, height, width)
    # Object ids are unique across the batch, so each crop can be finished
    # alone; int32 halves the copy to the host.
    return np.stack([sequential_ids(fill_holes(crop)) for crop in labels.to(torch.int32).cpu().numpy()])


def follow_flows(flows: torch.Tensor, pixel_index: torch.Tensor, niter: int) -> torch.Tensor:
    """Euler-integrate foreground pixels along the flow field.

    Each step samples the flow bilinearly at every point's position, moves the
    point by it and clamps it to the image, as Cellpose's steps_interp does.

    Parameters
    ----------
    flows
        ``(B, 2, H, W)`` float32 flows ``[dx, dy]`` in pixels per step, zero
        outside the foreground.
    pixel_index
        ``(N,)`` int64 flat indices into ``(B, H, W)`` of the pixels to move,
        increasing.
    niter
        Number of steps.

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64 flat indices into ``(B, H, W)`` of the pixel each point
        ends in (positions floored, as Cellpose truncates them).
    """
    batch, _, height, width = flows.shape
    device = flows.device
    crop = pixel_index // (height * width)
    # Points live in grid_sample's coordinates ([-1, 1] from the centre of the
    # first to the centre of the last pixel, align_corners=True), so a step is
    # one sample, one add and one clamp; flows are rescaled to match. Pixel
    # = (grid + 1) * half_extent maps the clamped ends -1 and 1 exactly.
    half_extent = torch.tensor([max(width - 1, 1) / 2, max(height - 1, 1) / 2], dtype=torch.float32, device=device)
    grid_flows = flows / half_extent.view(1, 2, 1, 1)
    start = torch.stack([pixel_index % width, (pixel_index // width) % height], dim=1) / half_extent - 1.0
    # grid_sample parallelises over crops, and on CPU a few crops at a time keep
    # their flow fields in cache; a GPU takes the whole batch at once.
    crops_per_pass = batch if device.type != "cpu" else 2 * torch.get_num_threads()
    counts = torch.bincount(crop, minlength=batch)
    offsets = torch.cumsum(counts, 0) - counts
    ends = torch.empty_like(start)
    for first in range(0, batch, crops_per_pass):
        last = min(first + crops_per_pass, batch)
        lo, hi = int(offsets[first]), int(offsets[last - 1] + counts[last - 1])
        if hi == lo:
            continue
        # Crops hold different numbers of points: pad each to the longest.
        local_crop = crop[lo:hi] - first
        slot = torch.arange(lo, hi, device=device) - offsets[crop[lo:hi]]
        # Stored channel-first like grid_sample's output, so that the update
        # is a contiguous add; grid_sample reads the permuted view as its grid.
        positions = torch.zeros(last - first, 2, 1, int(counts[first:last].max()), device=device)
        positions[local_crop, :, 0, slot] = start[lo:hi]
        grid = positions.permute(0, 2, 3, 1)
        field = grid_flows[first:last]
        for _ in range(niter):
            positions += F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)
            positions.clamp_(-1.0, 1.0)
        ends[lo:hi] = positions[local_crop, :, 0, slot]
    column, row = ((ends + 1.0) * half_extent).floor().long().unbind(1)
    column = column.clamp_(0, width - 1)
    row = row.clamp_(0, height - 1)
    return (crop * height + row) * width + column


def find_sinks(end_index: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Group end points into objects, as Cellpose's get_masks does.

    A histogram of end points is made per crop. Seeds are bins that hold more
    than 10 points and are the maximum of their 5x5 neighbourhood. Each seed
    claims the bins reachable in 5 steps (8-neighbourhood) through bins holding
    more than 2 points; where claims overlap the seed with more points wins.
    Every point takes the object of the bin it ends in (0 if unclaimed).

    Parameters
    ----------
    end_index
        ``(N,)`` int64 flat indices into ``shape`` = ``(B, H, W)``.

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64 object ids, unique across the batch, 0 = none.
    """
    counts = torch.bincount(end_index, minlength=shape[0] * shape[1] * shape[2]).to(torch.float32).view(shape)
    is_seed = (counts >= _max_filter(counts, _SEED_POOL_SIZE)) & (counts > _SEED_MIN_COUNT)
    seed_index = torch.nonzero(is_seed.view(-1)).squeeze(1)
    # Rank seeds by point count: a claim by a higher rank wins an overlap, and
    # max-filtering the ranks resolves all claims in the same passes.
    order = torch.argsort(counts.view(-1)[seed_index], stable=True)
    rank = torch.zeros_like(counts)
    rank.view(-1)[seed_index[order]] = torch.arange(1, len(order) + 1, dtype=rank.dtype, device=rank.device)
    can_grow = counts > _GROWTH_MIN_COUNT
    for _ in range(_GROWTH_STEPS):
        rank = _max_filter(rank, 3).mul_(can_grow)
    return rank.view(-1)[end_index].long()


def _max_filter(images: torch.Tensor, size: int) -> torch.Tensor:
    """Maximum over a ``size x size`` window (odd size) of ``(B, H, W)`` images.

    Pixels outside the image are ignored. Computed separably from shifted
    slices: max_pool2d is many times slower on CPU.
    """
    result = images.clone()
    for axis in (1, 2):
        source = result.clone()
        length = images.shape[axis]
        for shift in range(1, min(size // 2, length - 1) + 1):
            kept = length - shift
            # Each pixel meets the pixels `shift` before and after it.
            for start, neighbour_start in ((0, shift), (shift, 0)):
                window = result.narrow(axis, start, kept)
                torch.maximum(window, source.narrow(axis, neighbour_start, kept), out=window)
    return result


def remove_by_size(labels: torch.Tensor, *, min_size: int = 0, max_size: float = float("inf")) -> torch.Tensor:
    """Zero the objects with fewer than ``min_size`` or more than ``max_size`` pixels."""
    sizes = torch.bincount(labels)
    drop = (sizes < min_size) | (sizes > max_size)
    drop[0] = False
    return torch.where(drop[labels], 0, labels)


def flow_errors(labels: torch.Tensor, unit_flows: torch.Tensor) -> torch.Tensor:
    """Cellpose's flow error of every object, batched.

    The flows of each object are recomputed as Cellpose's masks_to_flows_cpu
    does: heat diffuses from the object's centre (the object pixel nearest its
    mean position) for ``2 * (h + w + 4)`` steps, ``h x w`` being the bounding
    box, each step averaging the 3x3 neighbourhood with other pixels held at 0;
    the flow is the normalised central difference of the heat. The error is
    the mean over the object's pixels of the squared difference to
    ``unit_flows``, summed over both components. All objects of the batch
    diffuse side by side in one packed canvas (:class:`_TileCanvas`).

    Sums are taken in another order than Cellpose's, so the heat differs in
    the last bits. That matters only where the gradient is rounding noise, at
    the centre of an exactly symmetric object: there both flows point in an
    arbitrary direction, which can move the error by up to ``4 / size``.

    Parameters
    ----------
    labels
        ``(B, H, W)`` int64 object ids, unique across the batch.
    unit_flows
        ``(B, 2, H, W)`` float32 ``[dx, dy]``.

    Returns
    -------
    torch.Tensor
        ``(max id + 1,)`` float64 errors; 0 for ids not present.
    """
    _, height, width = labels.shape
    device = labels.device
    flat = labels.view(-1)
    pixel = torch.nonzero(flat).squeeze(1)
    obj = flat[pixel]
    n_ids = int(obj.max()) + 1
    row = (pixel // width) % height
    col = pixel % width

    def per_object(values: torch.Tensor, reduce: str) -> torch.Tensor:
        initial = torch.zeros(n_ids, dtype=values.dtype, device=device)
        return initial.scatter_reduce(0, obj, values, reduce, include_self=False)

    size = torch.bincount(obj, minlength=n_ids)
    top, left = per_object(row, "amin"), per_object(col, "amin")
    # Coordinates in the object's tile: its bounding box plus a 1-pixel zero
    # ring, the frame in which Cellpose computes the centre (so that distance
    # ties are broken identically).
    tile_row = row - top[obj] + 1
    tile_col = col - left[obj] + 1
    tile_height = per_object(row, "amax") - top + 3
    tile_width = per_object(col, "amax") - left + 3
    mean_row = per_object(tile_row.double(), "sum") / size.clamp(min=1)
    mean_col = per_object(tile_col.double(), "sum") / size.clamp(min=1)
    distance = (tile_col - mean_col[obj]) ** 2 + (tile_row - mean_row[obj]) ** 2
    nearest = distance == per_object(distance, "amin")[obj]
    # Among equally near pixels Cellpose takes the first in row-major order.
    center = torch.full((n_ids,), len(flat), dtype=torch.int64, device=device)
    center = center.scatter_reduce(0, obj[nearest], pixel[nearest], "amin")
    center_row = (center // width) % height - top + 1
    center_col = center % width - left + 1
    niter = 2 * (tile_height + tile_width)

    # Tiles run in order of decreasing step count, so those still running are
    # a prefix of the canvas; pixels are sorted the same way so that the tiles
    # finishing at one step own a contiguous run of pixels.
    ids = torch.nonzero(size).squeeze(1)
    ids = ids[torch.argsort(niter[ids], descending=True, stable=True)]
    packing_rank = torch.empty(n_ids, dtype=torch.int64, device=device)
    packing_rank[ids] = torch.arange(len(ids), device=device)
    pixel_order = torch.argsort(packing_rank[obj], stable=True)
    canvas = _TileCanvas(tile_height[ids], tile_width[ids])
    origin = torch.zeros(n_ids, dtype=torch.int64, device=device)
    origin[ids] = canvas.origin
    inside_index = origin[obj] + tile_row * canvas.width + tile_col
    center_index = origin[ids] + center_row[ids] * canvas.width + center_col[ids]
    gradient = canvas.diffuse(inside_index[pixel_order], center_index, niter[ids], size[ids])
    flow_row, flow_col = torch.empty_like(gradient).index_copy_(1, pixel_order, gradient)
    norm = 1e-60 + torch.sqrt(flow_row**2 + flow_col**2)
    given = unit_flows.permute(0, 2, 3, 1).reshape(-1, 2)[pixel].double()
    squared = (flow_col / norm - given[:, 0]) ** 2 + (flow_row / norm - given[:, 1]) ** 2
    return torch.zeros(n_ids, dtype=torch.float64, device=device).index_add_(0, obj, squared) / size.clamp(min=1)


class _TileCanvas:
    """Per-object tiles packed into rows ("shelves") of one float64 image.

    Each tile is an object's bounding box plus a ring of zeros; neighbouring
    tiles share their rings, which stay 0, so the objects diffuse
    independently in one pass over the canvas.

    Parameters
    ----------
    tile_height, tile_width
        ``(n,)`` int64 tile sizes including the ring, in packing order.
    """

    def __init__(self, tile_height: torch.Tensor, tile_width: torch.Tensor) -> None:
        device = tile_height.device
        # Tiles are laid in one long strip, each starting on its left
        # neighbour's right ring column, and the strip is cut into shelves
        # every _SHELF_WIDTH columns; a tile across a cut stays whole and
        # overhangs its shelf (the canvas is wide enough).
        strip_start = torch.cumsum(tile_width - 1, 0) - (tile_width - 1)
        shelf = strip_start // _SHELF_WIDTH
        n_shelves = int(shelf[-1]) + 1
        # Shelves share their ring rows; a shelf left empty behind a wide
        # tile gets height 1, which takes no rows.
        shelf_height = torch.ones(n_shelves, dtype=torch.int64, device=device).scatter_reduce(
            0, shelf, tile_height, "amax"
        )
        shelf_top = torch.cumsum(shelf_height - 1, 0) - (shelf_height - 1)
        self.width = _SHELF_WIDTH + int(tile_width.max())
        self.height = int(shelf_top[-1] + shelf_height[-1])
        self.origin = shelf_top[shelf] * self.width + strip_start - shelf * _SHELF_WIDTH
        self.shelf_of_tile = shelf.tolist()
        self.shelf_top = shelf_top.tolist()
        self.shelf_bottom = (shelf_top + shelf_height).tolist()

    def diffuse(
        self, inside_index: torch.Tensor, center_index: torch.Tensor, niter: torch.Tensor, size: torch.Tensor
    ) -> torch.Tensor:
        """Run Cellpose's heat diffusion in every tile and return its gradient.

        Each step adds 1 at a tile's source and then replaces every object
        pixel by the mean of its 3x3 neighbourhood, pixels outside the object
        counting as 0 (float64 as in Cellpose: far from the source the heat is
        too small for float32).

        Parameters
        ----------
        inside_index
            ``(N,)`` canvas flat indices of the object pixels, grouped by tile
            in packing order.
        center_index
            ``(n,)`` canvas flat index of each tile's source pixel.
        niter
            ``(n,)`` steps per tile, non-increasing.
        size
            ``(n,)`` object pixels per tile.

        Returns
        -------
        torch.Tensor
            ``(2, N)`` float64 heat differences ``[down - up, right - left]``
            at the object pixels, each taken after its tile's last step.
        """
        device = inside_index.device
        width = self.width
        weight = torch.zeros(self.height * width, dtype=torch.float64, device=device)
        weight[inside_index] = 1.0 / 9.0
        # Averaging is linear, so the source's share of each step is fixed:
        # its 3x3 neighbourhood, weighted like any other pixel.
        source = torch.zeros_like(weight)
        for offset in (-width - 1, -width, -width + 1, -1, 0, 1, width - 1, width, width + 1):
            source[center_index + offset] = 1.0
        source = (source * weight).view(self.height, width)
        weight = weight.view(self.height, width)
        heat = torch.zeros(self.height, width, dtype=torch.float64, device=device)
        gradient = torch.empty(2, len(inside_index), dtype=torch.float64, device=device)
        pixel_start = [0, *torch.cumsum(size, 0).tolist()]
        niter_list = niter.tolist()
        # On CPU, bands of whole shelves stay in cache for all their steps.
        band_rows = _CPU_BAND_PIXELS // width if device.type == "cpu" else self.height
        for first, last in self._bands(band_rows):
            top = self.shelf_top[self.shelf_of_tile[first]]
            bottom = self.shelf_bottom[self.shelf_of_tile[last - 1]]
            pixels = slice(pixel_start[first], pixel_start[last])
            _diffuse_band(
                heat[top:bottom],
                source[top:bottom],
                weight[top:bottom],
                niter_list[first:last],
                [self.shelf_bottom[shelf] - top for shelf in self.shelf_of_tile[first:last]],
                [end - pixel_start[first] for end in pixel_start[first + 1 : last + 1]],
                inside_index[pixels] - top * width,
                gradient[:, pixels],
            )
        return gradient

    def _bands(self, max_rows: int) -> list[tuple[int, int]]:
        """Tile ranges ``[first, last)`` of consecutive whole shelves spanning at most
        ``max_rows`` rows each (or one shelf, if taller)."""
        bands = []
        first = 0
        for tile in range(1, len(self.shelf_of_tile)):
            shelf = self.shelf_of_tile[tile]
            new_shelf = shelf != self.shelf_of_tile[tile - 1]
            if new_shelf and self.shelf_bottom[shelf] - self.shelf_top[self.shelf_of_tile[first]] > max_rows:
                bands.append((first, tile))
                first = tile
        bands.append((first, len(self.shelf_of_tile)))
        return bands


def _diffuse_band(
    heat: torch.Tensor,
    source: torch.Tensor,
    weight: torch.Tensor,
    niter: list[int],
    tile_bottom: list[int],
    pixel_end: list[int],
    inside_index: torch.Tensor,
    gradient: torch.Tensor,
) -> None:
    """Diffuse the tiles of one band of a :class:`_TileCanvas`.

    Parameters
    ----------
    heat, source, weight
        ``(rows, width)`` float64 views of the band: heat (zeros, updated in
        place), the source's share of a step and 1/9 on object pixels.
    niter
        Steps per tile, non-increasing, so the tiles still running are a prefix.
    tile_bottom
        Per tile, the band row below its shelf.
    pixel_end
        Per tile, the end of its run in ``inside_index``.
    inside_index
        Flat indices into ``heat`` of the object pixels, grouped by tile.
    gradient
        ``(2, len(inside_index))`` output: ``[down - up, right - left]`` heat
        differences after each tile's last step.
    """
    width = heat.shape[1]
    # Sums of 3 rows, then of 3 columns of those: buffers reused every step.
    row_sums = torch.empty(heat.shape[0] - 2, width, dtype=heat.dtype, device=heat.device)
    box_sums = torch.empty(heat.shape[0] - 2, width - 2, dtype=heat.dtype, device=heat.device)
    flat_heat = heat.view(-1)
    last = len(niter) - 1
    for step in range(1, niter[0] + 1):
        rows = tile_bottom[last]
        active = heat[:rows]
        sums = torch.add(active[:-2], active[1:-1], out=row_sums[: rows - 2]).add_(active[2:])
        box = torch.add(sums[:, :-2], sums[:, 1:-1], out=box_sums[: rows - 2]).add_(sums[:, 2:])
        torch.addcmul(source[1 : rows - 1, 1:-1], box, weight[1 : rows - 1, 1:-1], out=active[1:-1, 1:-1])
        finished = last
        while finished >= 0 and niter[finished] == step:
            finished -= 1
        if finished < last:
            done = slice(pixel_end[finished] if finished >= 0 else 0, pixel_end[last])
            at = inside_index[done]
            gradient[0, done] = flat_heat[at + width] - flat_heat[at - width]
            gradient[1, done] = flat_heat[at + 1] - flat_heat[at - 1]
            last = finished


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill every object's holes as Cellpose does (fill_voids per object).

    A hole of object ``i`` is a 4-connected region of pixels not in ``i`` that
    ``i`` encloses; it may hold background and whole other objects or pieces of
    them, which ``i`` absorbs. Split the image into 4-connected regions of one
    value. Call *outer* the background regions on the image border, *exposed*
    the object regions on the image border or touching outer background, and
    *sheltered* every other pixel. A connected area of sheltered pixels whose
    exposed neighbours all belong to one object is enclosed by it and absorbed
    whole. One bordered by several objects is enclosed by none of them (a path
    through another leads out), so only the objects with sheltered pieces
    inside it can hold holes, and those are filled one by one. Sheltered
    pixels are few (small pockets between touching objects, holes), so most
    of the work is one labelling pass over the image.

    Parameters
    ----------
    labels
        ``(H, W)`` integer object ids; modified in place and returned.
    """
    # background=-1: background regions are numbered too.
    regions, n_regions = connected_components(labels, background=-1, connectivity=1, return_num=True)
    region_label = np.zeros(n_regions + 1, np.int64)
    region_label[regions] = labels
    on_border = np.zeros(n_regions + 1, bool)
    for side in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
        on_border[regions[side]] = True
    is_outer = on_border & (region_label == 0)
    outer = is_outer[regions]
    is_exposed = on_border.copy()
    is_exposed[regions[_grow_by_one(outer)]] = True
    sheltered = ~is_exposed[regions]
    if not sheltered.any():
        return labels

    areas, n_areas = ndi.label(sheltered)
    # Exposed pixels next to a sheltered area, paired with every such area.
    rim_rows, rim_cols = np.nonzero(_grow_by_one(sheltered) & ~sheltered)
    neighbour_areas = np.stack(
        [
            areas[np.maximum(rim_rows - 1, 0), rim_cols],
            areas[np.minimum(rim_rows + 1, labels.shape[0] - 1), rim_cols],
            areas[rim_rows, np.maximum(rim_cols - 1, 0)],
            areas[rim_rows, np.minimum(rim_cols + 1, labels.shape[1] - 1)],
        ]
    ).astype(np.int64)
    rim_label = np.broadcast_to(labels[rim_rows, rim_cols], neighbour_areas.shape)
    touching = neighbour_areas > 0
    n_labels = int(labels.max()) + 1
    pair_key = np.unique(neighbour_areas[touching] * n_labels + rim_label[touching])
    touching_area, touching_label = np.divmod(pair_key, n_labels)
    single = np.bincount(touching_area, minlength=n_areas + 1)[touching_area] == 1
    enclosing_label = np.zeros(n_areas + 1, np.int64)
    enclosing_label[touching_area[single]] = touching_label[single]
    absorbing = enclosing_label[areas]
    absorbed = absorbing > 0
    labels[absorbed] = absorbing[absorbed]

    inner = np.unique(labels[(areas > 0) & ~absorbed])
    inner = inner[inner > 0]
    if inner.size:
        boxes = ndi.find_objects(labels)
        for obj in inner:
            box = boxes[obj - 1]
            labels[box][ndi.binary_fill_holes(labels[box] == obj)] = obj
    return labels


def _grow_by_one(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus its 4-neighbours."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown
