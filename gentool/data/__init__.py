"""Training data: image folders, .npz arrays and the built-in synthetic sets, as one uint8 tensor.

Images are decoded once with Pillow (`decode`), fitted to the model's size (shorter side resized,
centre cropped) and kept as a single (N, C, H, W) uint8 tensor (`dataset`). Decoded folders and
arrays are cached on disk, keyed by a fingerprint of their content and the preprocessing
(`cache`), so a second run decodes nothing. Batches are slices of that tensor, scaled to the
model's value range on the device (`batches`).

Sources (`sources`):
- a folder of images, searched recursively; when every image lies in an immediate sub-folder, the
  sub-folders name the classes (sorted) and the images are labelled;
- an ``.npz`` file with ``images`` (uint8, (N, H, W), (N, H, W, C) or (N, C, H, W)) and optional
  ``labels`` (N,) and ``class_names``;
- ``builtin:faces`` (cartoon faces) or ``builtin:shapes`` (labelled shapes), generated
  deterministically; used when no source is given.
"""

from gentool.data.batches import BatchLoader
from gentool.data.cache import cache_dir
from gentool.data.dataset import DataWarning, ImageDataset, check_fits, to_uint8, to_value_range
from gentool.data.decode import load_image
from gentool.data.sources import (
    BUILTIN_PREFIX,
    BUILTIN_SETS,
    DEFAULT_IMAGE_SIZE,
    builtin_arrays,
    default_source,
    load_dataset,
    write_builtin_set,
)

__all__ = [
    "BUILTIN_PREFIX",
    "BUILTIN_SETS",
    "DEFAULT_IMAGE_SIZE",
    "BatchLoader",
    "DataWarning",
    "ImageDataset",
    "builtin_arrays",
    "cache_dir",
    "check_fits",
    "default_source",
    "load_dataset",
    "load_image",
    "to_uint8",
    "to_value_range",
    "write_builtin_set",
]
