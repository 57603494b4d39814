"""blift table schemas -> ``datasets.Features``: what ``load_dataset`` sees in each release config.

The release writer stamps every shard with the ``huggingface`` schema metadata (the features as
JSON, exactly what ``Dataset.to_parquet`` writes). ``datasets`` reads it back, so media columns
decode (``Image()`` gives a PIL image, ``Array4D`` a nested uint8 array) and every other column
keeps its exact type. The card renders its ``dataset_info.features`` from the same Arrow types
and its column table from :func:`column_doc`, so the card, the shards and ``load_dataset``
never disagree.

Columns a release adds to a blift table (they are not in ``schemas/``) are declared here, with
their meaning, in :data:`RELEASE_COLUMNS`; shards name them in the ``blift.release_columns``
metadata key so schema checks can tell them from unknown columns.

``datasets`` is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from blift import schemas
from blift.tables import (
    META_RELEASE_COLUMNS,  # comma-separated columns a release adds (read_shard skips them)
)

if TYPE_CHECKING:  # pragma: no cover
    import datasets

HF_META = b"huggingface"

#: Columns whose rows carry media bytes (row groups are kept small for them).
IMAGE_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])


@dataclass(frozen=True)
class ReleaseColumn:
    """A column a release adds to the rows of a blift table."""

    name: str
    type: str  # as the card shows it
    doc: str


#: Columns of the run's ``scene_behavior`` table (the instruct stage writes it) joined onto the scenes config.
SCENE_BEHAVIOR_COLUMNS = ("replay_mean", "replay_peak", "transcript")


def _scene_behavior_columns() -> tuple[ReleaseColumn, ...]:
    """The joined columns with the type and meaning ``schemas/scene_behavior.yaml`` gives them (one source)."""
    declared = {c["name"]: c for c in schemas.get("scene_behavior").columns}
    return tuple(ReleaseColumn(n, declared[n]["type"], declared[n]["doc"]) for n in SCENE_BEHAVIOR_COLUMNS)


#: Per blift schema: the columns the release adds, in order, with their meaning (the card's source).
RELEASE_COLUMNS: dict[str, tuple[ReleaseColumn, ...]] = {
    "instructions": (
        ReleaseColumn("image", "Image", "with images=bytes only: the record's image (the file `media[0]` names), "
                      "as `{bytes, path}`; `load_dataset` decodes it to a PIL image. Null for video records."),
        ReleaseColumn("video_frames", "Array4D(uint8, (frames, 3, H, W))",
                      "with videos=frames only: the record's sampled video frames (the `.npy` `media[0]` names), "
                      "channels first, uint8. Null for image records and videos without frames. `datasets` "
                      "returns nested lists (numpy format gives int64: use `np.asarray(x, dtype=np.uint8)`)."),
    ),
    "scenes": (
        *_scene_behavior_columns(),
        ReleaseColumn("keyframe", "Image", "with images=bytes only: the scene's keyframe JPEG as `{bytes, path}`; "
                      "null when the scene has no keyframe"),
    ),
}

#: Which added columns are media of which kind.
IMAGE_COLUMNS = frozenset({"image", "keyframe"})
FRAMES_COLUMNS = frozenset({"video_frames"})
MEDIA_COLUMNS = IMAGE_COLUMNS | FRAMES_COLUMNS


def release_column(schema_name: str, column: str) -> ReleaseColumn | None:
    return next((c for c in RELEASE_COLUMNS.get(schema_name, ()) if c.name == column), None)


def column_doc(schema_name: str, column: str) -> str:
    """The one-line meaning of ``column`` in a config built from ``schema_name`` (schemas/ or an added column)."""
    added = release_column(schema_name, column)
    if added is not None:
        return added.doc
    try:
        return schemas.get(schema_name).column_doc(column)
    except KeyError:
        raise KeyError(f"config of schema {schema_name!r} has no documented column {column!r}") from None


def frames_type(shape: tuple[int, int, int]) -> pa.DataType:
    """Arrow type of the ``video_frames`` column: the extension type of ``Array4D((None, *shape), uint8)``."""
    import datasets

    return datasets.Array4D(shape=(None, *shape), dtype="uint8")()


def frames_array(arrays: list[Any], shape: tuple[int, int, int]) -> pa.Array:
    """A ``video_frames`` column from numpy arrays ``(T, *shape)`` (``None`` for rows without frames).

    Builds the nested lists from one flat buffer (no per-value Python objects), so a 9 MB clip
    costs a memory copy, not millions of Python ints.
    """
    import numpy as np

    ext = frames_type(shape)
    c, h, w = shape
    present = [a for a in arrays if a is not None]
    flat = pa.array(np.concatenate([a.reshape(-1) for a in present]) if present else np.zeros(0, np.uint8),
                    type=pa.uint8())
    inner: pa.Array = flat
    n = len(flat)
    for size in (w, h, c):
        n //= size
        inner = pa.ListArray.from_arrays(pa.array(np.arange(0, n * size + 1, size, dtype=np.int32)), inner)
    offsets, mask, pos = [0], [], 0
    for a in arrays:
        pos += 0 if a is None else int(a.shape[0])
        offsets.append(pos)
        mask.append(a is None)
    outer = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), inner, mask=pa.array(mask, type=pa.bool_()))
    return pa.ExtensionArray.from_storage(ext, outer.cast(ext.storage_type))


def features_for(schema: pa.Schema) -> "datasets.Features":
    """The ``datasets`` features of a release table: generated from the Arrow types, with the media
    columns typed as media (``Image()`` for image structs, ``Array4D`` for frames)."""
    import datasets

    plain = pa.schema([pa.field(f.name, f.type) for f in schema])  # no metadata: generate from the types
    out = {}
    for f in plain:
        if f.name in IMAGE_COLUMNS and f.type == IMAGE_STRUCT:
            out[f.name] = datasets.Image()
        elif isinstance(f.type, pa.ExtensionType):
            out[f.name] = datasets.Features.from_arrow_schema(pa.schema([f]))[f.name]
        else:
            out[f.name] = datasets.features.features.generate_from_arrow_type(f.type)
    return datasets.Features(out)


def with_features_metadata(table: pa.Table, schema_name: str | None = None) -> pa.Table:
    """Stamp ``table`` with its ``huggingface`` features metadata (and the release-added columns),
    keeping its other metadata (the blift schema stamp)."""
    feats = features_for(table.schema)
    meta = dict(table.schema.metadata or {})
    meta[HF_META] = json.dumps({"info": {"features": feats.to_dict()}}, sort_keys=True).encode()
    if schema_name is not None:
        added = [c.name for c in RELEASE_COLUMNS.get(schema_name, ()) if c.name in table.column_names]
        if added:
            meta[META_RELEASE_COLUMNS] = ",".join(added).encode()
        else:
            meta.pop(META_RELEASE_COLUMNS, None)
    return table.replace_schema_metadata(meta)


def restore_media_types(table: pa.Table) -> pa.Table:
    """Re-wrap columns read back without the ``datasets`` extension types registered.

    A shard read with plain pyarrow (a takedown rewriting a split) gives ``video_frames`` as its
    storage type (nested lists); writing it back like that would make ``load_dataset`` see plain
    lists. The ``huggingface`` metadata says what each column is: columns whose type is the
    storage of the declared extension type are wrapped again.
    """
    meta = (table.schema.metadata or {}).get(HF_META)
    if not meta:
        return table
    import datasets

    feats = datasets.Features.from_dict(json.loads(meta)["info"]["features"])
    target = feats.arrow_schema
    for i, f in enumerate(table.schema):
        if f.name not in target.names:
            continue
        want = target.field(f.name).type
        if isinstance(want, pa.ExtensionType) and f.type != want and f.type == want.storage_type:
            col = table.column(i)
            wrapped = pa.chunked_array([pa.ExtensionArray.from_storage(want, c) for c in col.chunks], type=want)
            table = table.set_column(i, pa.field(f.name, want, nullable=f.nullable), wrapped)
    return table


def read_features(path: Path) -> "datasets.Features":
    """What ``load_dataset`` will see for the shard at ``path`` (its metadata, else its Arrow types)."""
    import datasets

    return datasets.Features.from_arrow_schema(pq.read_schema(path))
