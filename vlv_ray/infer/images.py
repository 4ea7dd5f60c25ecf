"""Inference inputs: image files, folders, or storage URIs of either, decoded like training.

The same decode as the training pipeline (draft JPEG, EXIF orientation, any mode → RGB,
centre crop, resize) so a model sees at inference what it saw in training.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from vlv_ray import storage
from vlv_ray.data.shards import IMAGE_SUFFIXES, DataError


def expand(items: list[str], **kw) -> list[str]:
    """Files stay; folders (local or in storage) become their image files, sorted."""
    out: list[str] = []
    for item in items:
        if item.lower().endswith(IMAGE_SUFFIXES):
            if not storage.exists(item, **kw):
                raise DataError(f"{item}: no such image")
            out.append(item)
            continue
        try:
            found = [u for u in storage.list_files(item, **kw) if u.lower().endswith(IMAGE_SUFFIXES)]
        except NotADirectoryError:  # a file that is not an image: a .txt, say
            found = []
        if not found:
            raise DataError(f"{item}: not an image and not a folder holding any "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        out += sorted(found)
    return out


def batches(uris: list[str], resolution: int, batch_size: int, **kw) -> Iterator[tuple[list[str], np.ndarray]]:
    """(uris, uint8 [n, res, res, 3]) in order; an undecodable image is an error naming it."""
    from vlv_ray.data.decode import BadImage, decode_image

    for i in range(0, len(uris), batch_size):
        chunk = uris[i:i + batch_size]
        arrays = []
        for uri in chunk:
            try:
                arrays.append(decode_image(storage.read_bytes(uri, **kw), resolution))
            except BadImage as e:
                raise DataError(f"{uri}: cannot be used as an image ({e.reason})") from None
        yield chunk, np.stack(arrays)
