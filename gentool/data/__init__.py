"""Training data: image folders, zip archives, .npz arrays and the built-in synthetic sets, as one
uint8 tensor.

Images are decoded once with Pillow, in worker processes (`decoding`, `gentool.image_files`),
fitted to the model's size (shorter side resized, centre cropped) and written as they are decoded
into a cache entry on disk (`pixels`), which every later run maps rather than reads (`cache`).
The entry is keyed by the source's listing (names, sizes, times) and the preprocessing, so a
restart decodes nothing and reads no image. Batches are gathered from the mapped tensor and
scaled to the model's value range on the device, copied one batch ahead on a GPU (`batches`).

Sources (`sources`):
- a folder of images, searched recursively; when every image lies in an immediate sub-folder, the
  sub-folders name the classes (sorted) and the images are labelled (`folders`);
- a zip archive of images, labelled as a folder is by the folders inside it (`zips`);
- an ``.npz`` file with ``images`` (uint8, (N, H, W), (N, H, W, C) or (N, C, H, W)) and optional
  ``labels`` (N,) and ``class_names`` (`arrays`);
- ``builtin:faces`` (cartoon faces) or ``builtin:shapes`` (labelled shapes), generated
  deterministically; used when no source is given.
"""

from gentool.data.batches import BatchLoader
from gentool.data.cache import cache_dir
from gentool.data.dataset import (
    DataWarning,
    ImageDataset,
    check_fits,
    labels_by_name,
    to_uint8,
    to_value_range,
)
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
    "labels_by_name",
    "load_dataset",
    "load_image",
    "to_uint8",
    "to_value_range",
    "write_builtin_set",
]
