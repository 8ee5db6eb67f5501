"""Pictures for the chapters: image grids, noise schedules, loss curves, trajectories, sliders.

    from ddlearn.viz import make_grid, show_images, plot_schedules, plot_losses, explore
    make_grid(pipe(batch_size=8).images)          # a list of PIL images -> one PIL grid
    show_images(x)                                # a (B, C, H, W) tensor in [-1, 1] -> grid
    explore(lambda t: show_images(add_noise(x, t)), range(0, 1000, 100), "t")

Every interactive view has a static fallback: `explore` draws every value's picture, labelled
with its value, as one image (what a PDF, CI or a viewer without a kernel shows), then adds an
ipywidgets slider when widgets are there.
"""

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ddlearn.data.transforms import denormalize, numpy_to_pil, pt_to_numpy


def to_pil_list(images) -> list:
    """PIL list, (B, C, H, W) tensor in [-1, 1], or (B, H, W, C) array in [0, 1] -> list of PIL."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (list, tuple)) and all(isinstance(im, Image.Image) for im in images):
        return list(images)
    if isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        return numpy_to_pil(pt_to_numpy(denormalize(x.float())))
    array = np.asarray(images)
    return numpy_to_pil(array if array.dtype == np.uint8 else np.clip(array, 0, 1))


def make_grid(images, nrow: int = None, size: int = None, padding: int = 2, row_labels=None,
              col_labels=None, font_size: int = 12) -> Image.Image:
    """Images side by side, `nrow` per row (default: a near-square grid), each resized to `size`.

    `row_labels` (one per row) are written left of the rows and `col_labels` (one per column)
    above the columns, inside the picture, so a saved or shared figure still says what it shows.
    """
    images = to_pil_list(images)
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    w, h = (size, size) if size else images[0].size
    rows = math.ceil(len(images) / nrow)
    for labels, n, what in ((row_labels, rows, "rows"), (col_labels, nrow, "columns")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"make_grid: {len(labels)} labels for {n} {what}; give one per "
                             f"{what[:-1]} ({len(images)} images, nrow={nrow})")
    labelled = bool(row_labels or col_labels)
    font = _font(font_size) if labelled else None  # no font work for a plain grid
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))) if labelled else None
    left = math.ceil(max(measure.textlength(str(t), font=font) for t in row_labels)) + 2 * padding \
        if row_labels else 0
    top = font_size + 2 * padding if col_labels else 0
    grid = Image.new("RGB", (left + nrow * w + (nrow + 1) * padding,
                             top + rows * h + (rows + 1) * padding), "white")
    for i, im in enumerate(images):
        x = left + padding + (i % nrow) * (w + padding)
        y = top + padding + (i // nrow) * (h + padding)
        grid.paste(im.convert("RGB").resize((w, h), Image.NEAREST), (x, y))
    draw = ImageDraw.Draw(grid)
    for r, label in enumerate(row_labels or []):
        y = top + padding + r * (h + padding) + (h - font_size) / 2
        draw.text((padding, y), str(label), fill="black", font=font)
    for c, label in enumerate(col_labels or []):
        x = left + padding + c * (w + padding) + (w - measure.textlength(str(label), font=font)) / 2
        draw.text((x, padding), str(label), fill="black", font=font)
    return grid


def show_images(x, nrow: int = None, size: int = None) -> Image.Image:
    """The seeds' helper: a batch of images in [-1, 1] -> one PIL grid."""
    return make_grid(x, nrow=nrow, size=size)


def upscale(image: Image.Image, factor: int = 4) -> Image.Image:
    """Tiny images are easier to see big (nearest neighbour keeps the pixels honest)."""
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def plot_schedules(schedulers: dict, ax=None):
    """√ᾱ_t (signal) and √(1-ᾱ_t) (noise) against t for {name: scheduler}."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    for name, scheduler in schedulers.items():
        abar = scheduler.alphas_cumprod
        line, = ax.plot(abar.sqrt(), label=f"{name}: √ᾱ_t (signal)")
        ax.plot((1 - abar).sqrt(), "--", color=line.get_color(), label=f"{name}: √(1-ᾱ_t) (noise)")
    ax.set(xlabel="timestep t", ylabel="coefficient", title="How much signal and noise x_t holds")
    ax.legend(fontsize=8)
    return ax


def plot_losses(losses, smooth: int = 50):
    """The loss curve on linear and log scales, raw and smoothed (moving average)."""
    import matplotlib.pyplot as plt

    losses = np.asarray(losses, dtype=float)
    k = max(1, min(smooth, len(losses) // 5 or 1))
    smoothed = np.convolve(losses, np.ones(k) / k, mode="valid")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, scale in zip(axes, ("linear", "log"), strict=True):
        ax.plot(losses, alpha=0.3, label="loss")
        ax.plot(np.arange(k - 1, len(losses)), smoothed, label=f"moving average ({k})")
        ax.set(yscale=scale, xlabel="step", title=f"training loss ({scale} scale)")
        ax.legend()
    return fig


def _font(size: int):
    """Pillow's built-in font at `size` pixels (older Pillow: its fixed bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def labelled_grid(images, labels, max_width: int = 1024, gap: int = 16,
                  font_size: int = 14) -> Image.Image:
    """Each image with its label drawn above it, a `gap` between them, wrapped into rows so the
    picture stays under `max_width` pixels wide (what `explore` shows to static viewers)."""
    images = [im.convert("RGB") for im in images]
    font = _font(font_size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_widths = [draw.textlength(label, font=font) for label in labels]
    cell_w = max(max(im.width for im in images), math.ceil(max(text_widths)))
    label_h = font_size + 6
    cell_h = label_h + max(im.height for im in images)
    columns = max(1, min(len(images), (max_width - gap) // (cell_w + gap)))
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * (cell_w + gap) + gap, rows * (cell_h + gap) + gap), "white")
    draw = ImageDraw.Draw(grid)
    for i, (im, label, text_w) in enumerate(zip(images, labels, text_widths, strict=True)):
        x = gap + (i % columns) * (cell_w + gap)
        y = gap + (i // columns) * (cell_h + gap)
        draw.text((x + (cell_w - text_w) / 2, y), label, fill="black", font=font)
        grid.paste(im, (x + (cell_w - im.width) // 2, y + label_h))
    return grid


def explore(fn, values, name: str = "value", size: int = None) -> None:
    """Show fn(v) for every v, each labelled "name = v", as one static picture; then (if
    ipywidgets is there) a slider over v that shows fn(v) alone.

    `fn` returns a PIL image; `size`, if given, is the height each one is shown at in the
    static picture. The picture is what CI and static viewers (GitHub, the course site) see.
    Returns None, so a notebook cell ending in `explore(...)` shows nothing more."""
    from IPython.display import display

    values = list(values)
    images = [fn(v) for v in values]
    if size:
        images = [im.resize((max(1, round(im.width * size / im.height)), size), Image.NEAREST)
                  for im in images]
    display(labelled_grid(images, [f"{name} = {v}" for v in values]))
    try:
        import ipywidgets as widgets
    except ImportError:
        return None
    slider = widgets.SelectionSlider(options=values, value=values[0], description=name,
                                     style={"description_width": "initial"})
    widgets.interact(lambda **kw: display(fn(kw[name])), **{name: slider})
    return None
