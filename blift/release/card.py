"""The dataset card (``README.md``) of a release, rendered from the release folder alone.

Inputs: ``release.json`` (what the release holds and how it was made), ``stats.json`` (the
run's filter accounting, copied next to it), the released Parquet files, and the table schemas.
Because the card is a function of the folder, it can be re-rendered at any time (after a
takedown, before a push) and never drifts from the data. Every number it prints is read from
those files; where a fact is missing (no stats.json, no takedown contact) the card says so
instead of guessing.

The YAML front matter carries what ``datasets`` and the Hub read: ``configs`` (which shards
make which config and split) and ``dataset_info`` (features and split sizes). ``datasets``
checks the split sizes when it loads, so a stale card fails loudly instead of lying.
Features are written in the Hub's YAML feature syntax (``dtype: string``, ``list: ...``,
``struct: [...]``), produced here from Arrow types so that rendering does not import
``datasets``; the tests compare it with what ``datasets`` itself writes.

The body comes from a Jinja2 template (``cards/dataset_card.md.j2``; see ``cards/README.md``
to customise it). Plots are written by :mod:`blift.release.plots` into ``assets/``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

import blift
from blift import schemas, tables
from blift.errors import BliftError
from blift.release import plots
from blift.release.features import HF_META, column_doc, release_column
from blift.release.manifest import (
    STATS_NAME,
    ReleaseConfig,
    ReleaseManifest,
    read_manifest,
)

CARD_NAME = "README.md"
TEMPLATE_NAME = "dataset_card.md.j2"
TAGS = ["blift", "receiver-behavior"]
SPLIT_ORDER = ("train", "validation", "test")
OTHER_LICENSE_NAME = "source-platform-terms"  # license "other": content stays under its authors' and platforms' terms
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
_PLATFORM_NAMES = {"reddit": "Reddit", "youtube": "YouTube"}
_BEHAVIOR_WORDS = {"score": "Reddit scores", "upvote_ratio": "upvote ratios", "comments": "comment counts",
                   "view_count": "views", "like_count": "likes"}
_PLATFORM_TERMS = {
    "reddit": ("Reddit", "https://www.redditinc.com/policies/user-agreement",
               "https://redditinc.com/policies/data-api-terms"),
    "youtube": ("YouTube", "https://www.youtube.com/t/terms", None),
}


class CardError(BliftError):
    """The card cannot be rendered truthfully (manifest and files disagree, bad template...)."""


# --------------------------------------------------------------------------- front matter


@dataclass
class CardConfig:
    """One config of a release as the card's front matter shows it."""

    name: str
    source: str  # run dataset folder it was built from
    schema: str  # blift table schema of its rows
    rows: dict[str, int] = field(default_factory=dict)  # split -> rows, splits with files only
    default: bool = False
    features: list[dict[str, Any]] | None = None  # Hub YAML features; None leaves dataset_info out
    download_size: int | None = None  # bytes of its Parquet files


def size_category(rows: int) -> str:
    for limit, label in _SIZES:
        if rows < limit:
            return label
    return "n>1B"


def front_matter(configs: list[CardConfig], *, pretty_name: str, license: str, language: list[str] | None = None,
                 task_categories: list[str] | None = None, tags: list[str] | None = None) -> dict[str, Any]:
    """The YAML metadata block as a dict (also what the tests parse back).

    ``size_categories`` follows the default config's rows; ``configs`` lists every split that has
    files and nothing else; ``dataset_info`` is added for the configs that carry features."""
    main = next((c for c in configs if c.default), configs[0])
    meta: dict[str, Any] = {"license": license}
    if license == "other":  # the Hub asks for a name and a link: the card's terms section is the link
        meta.update({"license_name": OTHER_LICENSE_NAME, "license_link": "README.md"})
    if language:
        meta["language"] = list(language)
    meta.update({
        "pretty_name": pretty_name,
        "task_categories": list(task_categories or ["image-text-to-text"]),
        "size_categories": [size_category(sum(main.rows.values()))],
        "tags": list(tags or TAGS),
        "configs": [
            {
                "config_name": c.name,
                "data_files": [{"split": split, "path": f"data/{c.name}/{split}-*"} for split in c.rows],
                **({"default": True} if c.default else {}),
            }
            for c in configs
        ],
    })
    infos = []
    for c in configs:
        if c.features is None:
            continue
        info: dict[str, Any] = {"config_name": c.name, "features": c.features,
                                "splits": [{"name": s, "num_examples": n} for s, n in c.rows.items()]}
        if c.download_size is not None:
            info["download_size"] = c.download_size
        infos.append(info)
    if infos:
        meta["dataset_info"] = infos
    return meta


# --------------------------------------------------------------------------- features


def _dtype(t: pa.DataType, where: str) -> str:
    """The ``datasets`` Value dtype of an Arrow scalar type (same names ``datasets`` writes)."""
    simple = {pa.null(): "null", pa.bool_(): "bool", pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32",
              pa.int64(): "int64", pa.uint8(): "uint8", pa.uint16(): "uint16", pa.uint32(): "uint32",
              pa.uint64(): "uint64", pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64",
              pa.string(): "string", pa.large_string(): "large_string", pa.binary(): "binary",
              pa.large_binary(): "large_binary", pa.date32(): "date32", pa.date64(): "date64"}
    if t in simple:
        return simple[t]
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, tz={t.tz}]" if t.tz else f"timestamp[{t.unit}]"
    if pa.types.is_time32(t) or pa.types.is_time64(t) or pa.types.is_duration(t):
        return str(t)
    raise CardError(f"{where}: Arrow type {t} has no dataset card feature type")


def _simplify_list(key: str, inner: dict[str, Any]) -> dict[str, Any]:
    """``list: {dtype: x}`` -> ``list: x`` and ``list: {struct: [...]}`` -> ``list: [...]`` (Hub syntax)."""
    if list(inner) == ["dtype"] and isinstance(inner["dtype"], str):
        return {key: inner["dtype"]}
    if list(inner) == ["struct"]:
        return {key: inner["struct"]}
    return {key: inner}


def arrow_feature(t: pa.DataType, where: str = "") -> dict[str, Any]:
    """One column's feature in the Hub YAML syntax, without its ``name``."""
    if pa.types.is_struct(t):
        return {"struct": [{"name": t.field(i).name, **arrow_feature(t.field(i).type, f"{where}.{t.field(i).name}")}
                           for i in range(t.num_fields)]}
    if pa.types.is_large_list(t):
        return _simplify_list("large_list", arrow_feature(t.value_type, where))
    if pa.types.is_fixed_size_list(t):
        return {**_simplify_list("list", arrow_feature(t.value_type, where)), "length": t.list_size}
    if pa.types.is_list(t):
        return _simplify_list("list", arrow_feature(t.value_type, where))
    return {"dtype": _dtype(t, where)}


def _snake(name: str) -> str:
    """``datasets``' camelcase_to_snakecase (Image -> image, Array2D -> array2_d)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def hf_feature(obj: Any) -> dict[str, Any]:
    """A feature from ``datasets``' JSON form (Parquet ``huggingface`` metadata) in the YAML syntax.

    Used for columns a writer stored with a ``datasets`` feature of its own (``Image`` for
    embedded image bytes...), which the Arrow type alone cannot express."""
    if isinstance(obj, list):  # legacy list form
        return _simplify_list("list", hf_feature(obj[0]))
    obj = dict(obj)
    kind = obj.pop("_type", None)
    if kind is None:
        return {"struct": [{"name": k, **hf_feature(v)} for k, v in obj.items()]}
    if kind == "Value":
        return {"dtype": obj["dtype"]}
    if kind in ("List", "LargeList", "Sequence"):
        inner = hf_feature(obj.pop("feature"))
        out = _simplify_list("large_list" if kind == "LargeList" else "list", inner)
        if obj.get("length", -1) != -1:
            out["length"] = obj["length"]
        return out
    return {"dtype": _snake(kind)} if not obj else {"dtype": {_snake(kind): obj}}


@dataclass
class Column:
    name: str
    type: str  # as schemas/ writes it
    doc: str
    feature: dict[str, Any]


def config_columns(release_dir: Path, name: str, config: ReleaseConfig) -> tuple[list[Column], list[str]]:
    """Columns of a config as its shards hold them, typed and documented from ``schemas/``.

    Returns (columns, names of schema columns the release left out). The shards decide which
    columns exist (a release drops ``raw``, adds ``image``...). A column's feature is the one
    the shard's ``huggingface`` metadata declares (what ``load_dataset`` uses: ``Image``,
    ``Array4D``), else the one its Arrow type gives. Every shard must have the same columns,
    because ``datasets`` casts all of them to the one feature set the card declares."""
    files = plots.config_files(release_dir, config)
    if not files:
        raise CardError(f"{release_dir}: config {name!r} lists no files in release.json")
    first = pq.read_schema(files[0])
    for path in files[1:]:
        other = pq.read_schema(path)
        if [(f.name, f.type) for f in other] != [(f.name, f.type) for f in first]:
            raise CardError(f"{path}: columns differ from {files[0].name} of config {name!r}; "
                            f"datasets needs one schema per config")
    schema = schemas.get(config.schema_name)
    declared = {c["name"]: c for c in schema.columns}
    try:
        hf_meta = json.loads((first.metadata or {}).get(HF_META, b"{}") or b"{}")
    except json.JSONDecodeError as exc:
        raise CardError(f"{files[0]}: unreadable huggingface metadata ({exc})") from exc
    hf_features = (hf_meta.get("info") or {}).get("features") or {}
    out = []
    for fld in first:
        where = f"{files[0]}: column {fld.name!r}"
        feature = hf_feature(hf_features[fld.name]) if fld.name in hf_features else arrow_feature(fld.type, where)
        spec = declared.get(fld.name)
        added = release_column(config.schema_name, fld.name)
        if spec is not None and schema.arrow.field(fld.name).type == fld.type:
            type_text = str(spec["type"])
        elif added is not None:
            type_text = added.type
        else:
            type_text = str(fld.type)
        try:
            doc = column_doc(config.schema_name, fld.name)
        except KeyError:
            doc = ""
        out.append(Column(fld.name, type_text, doc, feature))
    omitted = [c for c in declared if c not in first.names]
    return out, omitted


# --------------------------------------------------------------------------- reading the folder


def cards_dir() -> Path:
    """``cards/`` of a source checkout, or the copy packed into the wheel (``blift/_cards``)."""
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg.parent / "cards", pkg / "_cards"):
        if (cand / TEMPLATE_NAME).is_file():
            return cand
    raise CardError(f"no cards folder with {TEMPLATE_NAME} found next to {pkg}")


def read_stats(release_dir: Path) -> dict[str, Any] | None:
    path = Path(release_dir) / STATS_NAME
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CardError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(stats, dict) or not isinstance(stats.get("stages", {}), dict):
        raise CardError(f"{path}: expected an object with a 'stages' object (blift run stats)")
    return stats


def _check_rows(release_dir: Path, manifest: ReleaseManifest) -> None:
    """The manifest's row counts must be the shards' own (Parquet footers): the card prints them."""
    for name, cfg in manifest.configs.items():
        for split, sf in cfg.splits.items():
            total = 0
            for rel in sf.files:
                path = Path(release_dir) / rel
                if not path.is_file():
                    raise CardError(f"{release_dir}: config {name!r}, split {split!r}: file {rel} listed in "
                                    f"release.json is missing")
                total += pq.ParquetFile(path).metadata.num_rows
            if total != sf.rows:
                raise CardError(f"{release_dir}: config {name!r}, split {split!r}: release.json says {sf.rows} rows, "
                                f"the files hold {total}; re-run the writer (or the takedown) before the card")


def _media_kinds(release_dir: Path, manifest: ReleaseManifest) -> set[str]:
    """``image`` / ``video``: the kinds of the instruction records (the task), else of the released items."""
    for schemas_wanted in (("instructions",), ("items",)):
        kinds: set[str] = set()
        for cfg in manifest.configs.values():
            if cfg.schema_name in schemas_wanted:
                t = plots.read_columns(plots.config_files(release_dir, cfg), ("media_kind",))
                if "media_kind" in t.column_names:
                    values = set(pc.unique(t.column("media_kind")).to_pylist())
                    kinds |= {"video" if v == "video" else "image" for v in values
                              if v in ("image", "gallery", "video")}
        if kinds:
            return kinds
    return set()


@dataclass
class Languages:
    codes: list[str]
    how: str  # one sentence for the card


def _languages(manifest: ReleaseManifest) -> Languages:
    """The languages the run's clean stage recorded (release.json): a card never identifies them
    itself, so it renders fast, offline and the same every time. They describe comments and titles,
    so a release with neither lists none."""
    if not any(c.schema_name in ("comments", "items") for c in manifest.configs.values()):
        return Languages([], "not determined: the release has no comment texts or titles")
    langs = manifest.languages
    if langs is None:
        return Languages([], "not recorded: the run's stats.json names no languages its clean stage kept")
    if langs.filtered:
        return Languages(langs.codes, f"the languages the `{langs.stage}` stage kept comments in")
    total = sum(langs.counts.values())
    ranked = sorted(langs.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    shares = ", ".join(f"{c} {100 * n / total:.0f}%" for c, n in ranked if n / total >= 0.01)
    return Languages(langs.codes, f"found by the `{langs.stage}` stage on the {total:,} comments it kept, without "
                                  f"filtering by language: {shares}; languages with at least "
                                  f"{langs.min_share or 0:.0%} are listed")


_WINDOW_LABELS = {"created_at_min": "first item created", "created_at_max": "last item created",
                  "collected_at_min": "first collected", "collected_at_max": "last collected"}


def _window(release_dir: Path, manifest: ReleaseManifest) -> list[tuple[str, str]]:
    """Collection window rows: the manifest's, else first/last times found in the items or records."""
    window = manifest.collection_window
    keys = [k for k in _WINDOW_LABELS if k in window] + sorted(k for k in window if k not in _WINDOW_LABELS)
    rows = [(_WINDOW_LABELS.get(k, k.replace("_", " ")), _when(window[k])) for k in keys if window[k] is not None]
    if rows:
        return rows
    for schema_name in ("items", "instructions"):
        for cfg in manifest.configs.values():
            if cfg.schema_name != schema_name:
                continue
            t = plots.read_columns(plots.config_files(release_dir, cfg), ("created_at", "collected_at"))
            for col in ("created_at", "collected_at"):
                if col in t.column_names and t.column(col).null_count < t.num_rows:
                    mm = pc.min_max(t.column(col)).as_py()
                    rows += [(_WINDOW_LABELS[f"{col}_min"], _when(mm["min"])),
                             (_WINDOW_LABELS[f"{col}_max"], _when(mm["max"]))]
            return rows
    return rows


def _when(value: datetime | str | None) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


def _communities(release_dir: Path, manifest: ReleaseManifest, top: int = 15) -> tuple[list[tuple[str, str, int]], int]:
    """(platform, community, items) for the largest communities of the items config, and how many there are."""
    for cfg in manifest.configs.values():
        if cfg.schema_name == "items":
            t = plots.read_columns(plots.config_files(release_dir, cfg), ("platform", "community"))
            if "community" not in t.column_names:
                return [], 0
            counts = Counter(zip(t.column("platform").to_pylist(), t.column("community").to_pylist()))
            counts.pop(("reddit", None), None)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0][0]), str(kv[0][1])))
            return [(p, c or "(unknown)", n) for (p, c), n in ranked[:top]], len(counts)
    return [], 0


# --------------------------------------------------------------------------- rendering


def _md(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _num(value: float | int | None, ratio: bool = False) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.3f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _filter_context(stats: dict[str, Any] | None) -> dict[str, Any]:
    if stats is None:
        return {"present": False}
    stages, dropped, errors, langs, settings = [], [], [], [], []
    for name, st in stats.get("stages", {}).items():
        settings += [{"stage": name, "setting": str(k), "value": _setting(v)}
                     for k, v in (st.get("settings") or {}).items()]
        drops = {str(k): int(v) for k, v in (st.get("dropped") or {}).items()}
        errs = {str(k): int(v) for k, v in (st.get("errors") or {}).items()}
        out = st.get("out") or {}
        stages.append({
            "name": name,
            "shards": f"{st.get('shards_done', '?')}/{st.get('shards', '?')}",
            "records_in": _num(st.get("records_in")),
            "out": ", ".join(f"{k} {int(v):,}" for k, v in out.items()) or "-",
            "dropped": _num(sum(drops.values())),
            "errors": _num(sum(errs.values())),
        })
        dropped += [{"stage": name, "reason": r, "records": _num(n)} for r, n in
                    sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))]
        errors += [{"stage": name, "error_class": c, "records": _num(n)} for c, n in sorted(errs.items())]
        lang = {k[5:]: int(v) for k, v in (st.get("counters") or {}).items() if k.startswith("lang_")}
        if lang:
            langs.append({"stage": name, "counts": ", ".join(
                f"{c} {n:,}" for c, n in sorted(lang.items(), key=lambda kv: (-kv[1], kv[0])))})
    return {"present": True, "pipeline": stats.get("pipeline"), "blift_version": stats.get("blift_version"),
            "written_at": stats.get("written_at"), "failed_shards": stats.get("failed_shards"),
            "stages": stages, "dropped": dropped, "errors": errors, "languages": langs, "settings": settings}


def _setting(value: Any) -> str:
    """A stage setting as the card shows it: lists joined, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_setting(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


def _takedowns(manifest: ReleaseManifest) -> list[dict[str, Any]]:
    out = []
    for td in manifest.takedowns:
        rows = ", ".join(f"{c} {n:,}" for c, n in sorted(td.rows_removed.items())) or "-"
        out.append({"date": td.date.date().isoformat(), "ids_listed": _num(td.ids_listed),
                    "items_removed": _num(td.items_removed), "authors_removed": _num(td.authors_removed),
                    "rows_removed": rows, "media_removed": _num(td.media_removed)})
    return out


def build_context(release_dir: Path, *, repo_id: str | None = None) -> dict[str, Any]:
    """Everything the template needs, read from the folder; also writes the plots into ``assets/``."""
    release_dir = Path(release_dir)
    manifest = read_manifest(release_dir)
    if not manifest.configs:
        raise CardError(f"{release_dir}: release.json lists no configs")
    _check_rows(release_dir, manifest)
    stats = read_stats(release_dir)

    names = list(manifest.configs)
    default = next((n for n in names if manifest.configs[n].default), names[0])
    names = [default] + [n for n in names if n != default]  # release.json sorts its keys: default first
    configs: list[Any] = []
    fields_ctx: list[dict[str, Any]] = []
    config_rows: list[Any] = []
    for name in names:
        cfg = manifest.configs[name]
        columns, omitted = config_columns(release_dir, name, cfg)
        files = plots.config_files(release_dir, cfg)
        size = sum(p.stat().st_size for p in files)
        rows = {s: cfg.splits[s].rows for s in _split_order(cfg)}
        configs.append(CardConfig(name=name, source=cfg.source, schema=cfg.schema_name, rows=rows,
                                  default=name == default, features=[{"name": c.name, **c.feature} for c in columns],
                                  download_size=size))
        for split in _split_order(cfg):
            sf = cfg.splits[split]
            config_rows.append({"name": name, "default": name == default, "source": cfg.source, "schema":
                                cfg.schema_name, "split": split, "rows": _num(sf.rows), "files": len(sf.files)})
        fields_ctx.append({"name": name, "schema": cfg.schema_name,
                           "schema_version": schemas.get(cfg.schema_name).version, "size": _bytes(size),
                           "columns": [{"name": c.name, "type": c.type, "doc": c.doc} for c in columns],
                           "omitted": omitted})

    kinds = _media_kinds(release_dir, manifest)
    tasks = [t for k, t in (("image", "image-text-to-text"), ("video", "video-text-to-text")) if k in kinds]
    langs = _languages(manifest)
    platforms = sorted(manifest.platforms) or sorted(
        {p for c in manifest.configs.values() for p in _platforms_in(release_dir, c)})
    pretty_name = manifest.pretty_name or f"{release_dir.resolve().name} (BLIFT-style)"
    meta = front_matter(configs, pretty_name=pretty_name, license=manifest.license, language=langs.codes,
                        task_categories=tasks or None, tags=TAGS + [p for p in platforms if p not in TAGS])

    behavior = plots.read_behavior(release_dir, manifest.configs)
    plot_list = plots.write_plots(release_dir, behavior)
    summaries = plots.summarize(behavior) if behavior is not None else []
    communities, n_communities = _communities(release_dir, manifest)
    behaviors = [_BEHAVIOR_WORDS[s.metric] for s in summaries if s.metric in _BEHAVIOR_WORDS]
    if behavior is not None and behavior.replays:
        behaviors.append("most-replayed graphs")
    if any(c.schema_name == "comments" for c in manifest.configs.values()):
        behaviors.append("comment texts")
    main = manifest.configs[default]
    record_kinds = _tasks(release_dir, manifest)
    return {
        "front_matter": yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False,
                                       width=1000),
        "meta": meta,
        "pretty_name": pretty_name,
        "license": manifest.license,
        "blift_version": manifest.blift_version,
        "card_blift_version": blift.__version__,
        "created_at": _when(manifest.created_at),
        "pipeline": manifest.pipeline,
        "pipeline_config_hash": manifest.pipeline_config_hash,
        "platforms": platforms,
        "platform_names": [_PLATFORM_NAMES.get(p, p) for p in platforms],
        "behaviors": behaviors,
        "platform_terms": [{"name": _PLATFORM_TERMS[p][0], "terms": _PLATFORM_TERMS[p][1],
                            "api_terms": _PLATFORM_TERMS[p][2]} for p in platforms if p in _PLATFORM_TERMS],
        "has_reddit": "reddit" in platforms,
        "has_youtube": "youtube" in platforms,
        "estimated_comment_times": _estimated_comment_times(release_dir, manifest),
        "media_kinds": sorted(kinds),
        "window": _window(release_dir, manifest),
        "communities": [{"platform": p, "name": _md(c), "count": _num(n)} for p, c, n in communities],
        "communities_total": n_communities,
        "configs": config_rows,
        "config_names": names,
        "fields": fields_ctx,
        "default_config": default,
        "default_split": next(iter(_split_order(main)), "train"),
        "default_schema": main.schema_name,
        "has_instructions": any(c.schema_name == "instructions" for c in manifest.configs.values()),
        "tasks": record_kinds,
        # blift's own record kinds the card explains when the release holds them
        "generic_records": any(str(t["template"]).startswith("generic_") for t in record_kinds),
        "annotation_records": any(str(t["template"]).startswith("video_annotations_") for t in record_kinds),
        "images": manifest.images,
        "videos": manifest.videos,
        "media_files": _num(manifest.media_files),
        "media_bytes": _bytes(manifest.media_bytes),
        "has_media": manifest.media_files > 0,
        "raw_omitted": any("raw" in f["omitted"] for f in fields_ctx),
        "raw_included": any(c["name"] == "raw" for f in fields_ctx for c in f["columns"]),
        "language": {"codes": langs.codes, "how": langs.how},
        "behavior_source": behavior.source if behavior is not None else None,
        "behavior_items": _num(behavior.items) if behavior is not None else "0",
        "summaries": [{"label": s.label, "count": _num(s.items), "min": _num(s.minimum, s.ratio),
                       "median": _num(s.median, s.ratio), "mean": _num(s.mean, s.ratio),
                       "max": _num(s.maximum, s.ratio)} for s in summaries],
        "plots": [{"file": p.file, "title": p.title, "caption": p.caption} for p in plot_list],
        "scenes_source": behavior.scenes_source if behavior is not None else None,
        "filters": _filter_context(stats),
        "takedowns": _takedowns(manifest),
        "takedown_contact": manifest.takedown_contact,
        "repo": repo_id or release_dir.resolve().name,
        "repo_is_hub": repo_id is not None,
    }


def _tasks(release_dir: Path, manifest: ReleaseManifest) -> list[dict[str, Any]]:
    """Instruction records per task, media kind and template (version) across the instruction configs."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for cfg in manifest.configs.values():
        if cfg.schema_name == "instructions":
            t = plots.read_columns(plots.config_files(release_dir, cfg),
                                   ("task", "media_kind", "template", "template_version"))
            counts.update((task, kind, f"{tpl} v{ver}") for task, kind, tpl, ver in zip(
                *(t.column(c).to_pylist() for c in ("task", "media_kind", "template", "template_version"))))
    return [{"task": task, "media_kind": kind, "template": tpl, "records": _num(n)}
            for (task, kind, tpl), n in sorted(counts.items())]


def _split_order(cfg: ReleaseConfig) -> list[str]:
    """train, validation, test first (release.json sorts its keys), then any other split by name."""
    known = [s for s in SPLIT_ORDER if s in cfg.splits]
    return known + sorted(s for s in cfg.splits if s not in SPLIT_ORDER)


def _estimated_comment_times(release_dir: Path, manifest: ReleaseManifest) -> tuple[int, int] | None:
    """(videos whose comment times yt-dlp estimated, videos with the flag) from a ``videos`` config."""
    for cfg in manifest.configs.values():
        if cfg.schema_name == "videos":
            t = plots.read_columns(plots.config_files(release_dir, cfg), ("comment_times_estimated",))
            if "comment_times_estimated" not in t.column_names:
                return None
            flags = [v for v in t.column("comment_times_estimated").to_pylist() if v is not None]
            return sum(flags), len(flags)
    return None


def _platforms_in(release_dir: Path, cfg: ReleaseConfig) -> set[str]:
    t = plots.read_columns(plots.config_files(release_dir, cfg), ("platform",))
    return set(pc.unique(t.column("platform")).to_pylist()) - {None} if "platform" in t.column_names else set()


def _environment(folder: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = _md
    return env


def render_card(release_dir: Path, *, template: Path | None = None, repo_id: str | None = None) -> str:
    """``README.md`` text of the release in ``release_dir``; writes the card plots into ``assets/``.

    ``template`` is a Jinja2 file to use instead of ``cards/dataset_card.md.j2`` (see
    ``cards/README.md``); ``repo_id`` is the Hub repo the card's load examples name (default:
    the folder name)."""
    context = build_context(release_dir, repo_id=repo_id)
    path = Path(template) if template is not None else cards_dir() / TEMPLATE_NAME
    if not path.is_file():
        raise CardError(f"card template {path} not found")
    try:
        text = _environment(path.parent).get_template(path.name).render(**context)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise CardError(f"{path}{f':{line}' if line else ''}: card template error: {exc}") from exc
    _check_front_matter(text, path)
    return text


def _check_front_matter(text: str, template: Path) -> None:
    """A custom template must keep the metadata block first: ``datasets`` finds configs only there."""
    parts = text.split("---\n", 2)
    if not text.startswith("---\n") or len(parts) < 3:
        raise CardError(f"{template}: the rendered card must start with the '---' YAML block ({{{{ front_matter }}}})")
    try:
        meta = yaml.safe_load(parts[1])
    except yaml.YAMLError as exc:
        raise CardError(f"{template}: the card's YAML block does not parse ({exc})") from exc
    if not isinstance(meta, dict) or "configs" not in meta:
        raise CardError(f"{template}: the card's YAML block has no 'configs'; keep {{{{ front_matter }}}} in it")


def write_card(release_dir: Path, *, template: Path | None = None, repo_id: str | None = None) -> Path:
    """Render the card and write ``<release>/README.md`` atomically; returns its path."""
    text = render_card(release_dir, template=template, repo_id=repo_id)
    path = Path(release_dir) / CARD_NAME
    tables.atomic_write_bytes(path, text.encode("utf-8"))
    return path
