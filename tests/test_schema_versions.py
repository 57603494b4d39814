"""Additive schema versions: a shard written before a table gained nullable columns stays readable."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blift import schemas, tables
from blift.errors import SchemaError


def _v1_videos(path, uid="youtube:abc"):
    """A videos shard as blift wrote it at v1 (no view/like/comment counts, no heatmap)."""
    schema = schemas.get("videos")
    v1 = [f for f in schema.arrow if f.name not in schema.added_after(1)]
    table = pa.Table.from_pylist([{"uid": uid, "file_status": "ok", "duration_s": 12.5}], schema=pa.schema(v1))
    meta = {schemas.META_NAME: b"videos", schemas.META_VERSION: b"1"}
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_an_older_additive_version_reads_with_the_new_columns_null(tmp_path):
    schema = schemas.get("videos")
    assert schema.version == 2 and schema.reads_from == 1
    assert schema.added_after(1) == ["view_count", "like_count", "comment_count", "heatmap"]
    _v1_videos(tmp_path / "part-0.parquet")
    table = tables.read_shard(tmp_path / "part-0.parquet", "videos")
    assert table.schema.names == schema.arrow.names
    row = table.to_pylist()[0]
    assert row["uid"] == "youtube:abc" and row["duration_s"] == 12.5
    assert row["view_count"] is None and row["heatmap"] is None
    # and mixes with shards of the current version
    tables.write_rows(tmp_path / "part-1.parquet", [{"uid": "youtube:def", "file_status": "ok", "view_count": 7}],
                      "videos")
    both = tables.read_dataset(tmp_path, "videos")
    assert sorted(both.column("view_count").to_pylist(), key=str) == [7, None]


def test_a_version_before_reads_from_or_after_the_current_is_refused(tmp_path):
    _v1_videos(tmp_path / "part-0.parquet")
    meta = pq.read_schema(tmp_path / "part-0.parquet").metadata
    for version in (b"0", b"3"):
        table = pq.read_table(tmp_path / "part-0.parquet")
        pq.write_table(table.replace_schema_metadata({**meta, schemas.META_VERSION: version}),
                       tmp_path / "bad.parquet")
        with pytest.raises(SchemaError, match=rf"bad.parquet.*v{version.decode()}.*reads v1\.\.v2"):
            tables.read_shard(tmp_path / "bad.parquet", "videos")


def test_a_since_column_must_be_nullable(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nversion: 2\ncolumns:\n"
                    "  - {name: a, type: string}\n  - {name: b, type: int64, nullable: false, since: 2}\n")
    with pytest.raises(SchemaError, match="'b'.*since 2 needs a nullable column"):
        schemas._load(path)
