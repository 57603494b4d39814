"""Behavior distributions of a release, as numbers and as PNG plots for the dataset card.

Everything here is computed from the released Parquet files, so what the card shows is what a
user downloads. Behavior is read from the release's ``items`` config (one row per post or video)
when it has one, else from the ``targets`` of its ``behavior`` instruction records (one per item).

Plots are deterministic: matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch), the library's default style whatever the user's ``matplotlibrc`` says, a fixed
figure size and dpi, and no ``Software`` entry in the PNG metadata. The same release gives the
same bytes, so re-rendering a card after a takedown only changes the plots whose data changed.
A plot is drawn only when there is data for it; with no data the card says so instead.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.style
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from blift import tables
from blift.release.manifest import ReleaseConfig

FIGSIZE = (6.4, 3.6)  # inches
DPI = 100
MAX_REPLAYS = 4
# Every file name this module may write under assets/: older copies that a new render does not
# produce (a takedown removed the last video...) are deleted, files with other names are left alone.
PLOT_NAMES = ("upvotes.png", "upvote_ratio.png", "like_ratio.png", "comments_per_item.png", "views.png",
              *(f"replay_{i}.png" for i in range(1, MAX_REPLAYS + 1)))


@dataclass
class Replay:
    """One video's most-replayed graph and, when the release has a scenes config, its scene cuts."""

    uid: str
    start_s: list[float]
    end_s: list[float]
    value: list[float]
    cuts_s: list[float] = field(default_factory=list)  # scene starts after the first scene


@dataclass
class Behavior:
    """One value per item and metric (NaN where the item has none), plus example replay graphs."""

    source: str  # where the values come from, for the card ("config `items`" ...)
    platform: np.ndarray  # str per item
    score: np.ndarray
    upvote_ratio: np.ndarray
    num_comments: np.ndarray  # reddit: comment count reported by the platform
    comment_count: np.ndarray  # youtube: comment count reported by the platform
    view_count: np.ndarray
    like_count: np.ndarray
    like_ratio: np.ndarray  # likes / views (views > 0)
    replays: list[Replay] = field(default_factory=list)
    scenes_source: str | None = None  # config the scene cuts come from

    @property
    def items(self) -> int:
        return int(self.platform.size)

    def comments_per_item(self) -> np.ndarray:
        """The platform-reported comment count, whichever platform's column holds it."""
        return np.where(np.isnan(self.num_comments), self.comment_count, self.num_comments)


@dataclass
class Summary:
    """Distribution of one metric over the items that have it."""

    metric: str
    label: str
    items: int
    minimum: float
    median: float
    mean: float
    maximum: float
    ratio: bool  # a 0..1 value (formatted with decimals, not thousands)


@dataclass
class Plot:
    """A PNG written under assets/ and what the card says about it."""

    file: str  # path relative to the release root
    title: str
    caption: str


METRICS: tuple[tuple[str, str, bool], ...] = (
    ("score", "Reddit score (upvotes minus downvotes)", False),
    ("upvote_ratio", "Reddit upvote ratio", True),
    ("comments", "comments per item (platform count)", False),
    ("view_count", "YouTube views", False),
    ("like_count", "YouTube likes", False),
    ("like_ratio", "YouTube like ratio (likes / views)", True),
)


def _values(behavior: Behavior, metric: str) -> np.ndarray:
    arr = behavior.comments_per_item() if metric == "comments" else getattr(behavior, metric)
    return arr[~np.isnan(arr)]


def summarize(behavior: Behavior) -> list[Summary]:
    """Min / median / mean / max of each metric that at least one item has."""
    out = []
    for metric, label, ratio in METRICS:
        vals = _values(behavior, metric)
        if vals.size:
            out.append(Summary(metric, label, int(vals.size), float(vals.min()), float(np.median(vals)),
                               float(vals.mean()), float(vals.max()), ratio))
    return out


# --------------------------------------------------------------------------- reading

_ITEM_COLUMNS = ("uid", "platform", "score", "upvote_ratio", "num_comments", "comment_count", "view_count",
                 "like_count")
_TARGET_FIELDS = ("score", "upvote_ratio", "num_comments", "view_count", "like_count", "like_ratio")


def config_files(release_dir: Path, config: ReleaseConfig) -> list[Path]:
    return [Path(release_dir) / f for split in config.splits.values() for f in split.files]


def read_columns(files: list[Path], columns: tuple[str, ...]) -> pa.Table:
    """The named columns of a config's shards (those the shards have), in file order."""
    parts = []
    for path in files:
        names = pq.read_schema(path).names
        parts.append(pq.read_table(path, columns=[c for c in columns if c in names]))
    return pa.concat_tables(parts, promote_options="default") if parts else pa.table({})


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table.column(name).cast(pa.float64()).to_numpy()


def _like_ratio(likes: np.ndarray, views: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((views > 0) & ~np.isnan(likes), likes / views, np.nan)


def read_behavior(release_dir: Path, configs: dict[str, ReleaseConfig]) -> Behavior | None:
    """Per-item behavior from the first ``items`` config, else from ``behavior`` instruction targets."""
    by_schema: dict[str, str] = {}
    for name, cfg in configs.items():
        by_schema.setdefault(cfg.schema_name, name)
    if "items" in by_schema:
        name = by_schema["items"]
        files = config_files(release_dir, configs[name])
        t = read_columns(files, _ITEM_COLUMNS)
        views, likes = _floats(t, "view_count"), _floats(t, "like_count")
        behavior = Behavior(
            source=f"config `{name}` (one row per item)",
            platform=np.array(t.column("platform").to_pylist(), dtype=object),
            score=_floats(t, "score"), upvote_ratio=_floats(t, "upvote_ratio"),
            num_comments=_floats(t, "num_comments"), comment_count=_floats(t, "comment_count"),
            view_count=views, like_count=likes, like_ratio=_like_ratio(likes, views))
        behavior.replays = _replays(files)
    elif "instructions" in by_schema:
        name = by_schema["instructions"]
        t = read_columns(config_files(release_dir, configs[name]), ("uid", "platform", "task", "targets"))
        t = t.filter(pc.equal(t.column("task"), "behavior"))
        first: dict[str, int] = {}
        for i, uid in enumerate(t.column("uid").to_pylist()):
            first.setdefault(uid, i)
        t = t.take(sorted(first.values()))
        targets = t.column("targets").combine_chunks() if t.num_rows else None
        cols = {f: (targets.field(f).cast(pa.float64()).to_numpy(zero_copy_only=False)
                    if targets is not None else np.array([])) for f in _TARGET_FIELDS}
        platform = np.array(t.column("platform").to_pylist(), dtype=object)
        reddit = platform == "reddit"
        behavior = Behavior(
            source=f"config `{name}`, targets of its `behavior` records (one per item)",
            platform=platform, score=cols["score"], upvote_ratio=cols["upvote_ratio"],
            num_comments=np.where(reddit, cols["num_comments"], np.nan),
            comment_count=np.where(reddit, np.nan, cols["num_comments"]),
            view_count=cols["view_count"], like_count=cols["like_count"], like_ratio=cols["like_ratio"])
    else:
        return None
    if behavior.replays and "scenes" in by_schema:
        behavior.scenes_source = by_schema["scenes"]
        _add_scene_cuts(behavior.replays, config_files(release_dir, configs[by_schema["scenes"]]))
    return behavior


def _replays(files: list[Path]) -> list[Replay]:
    """The first ``MAX_REPLAYS`` items (file order) with a non-empty most-replayed graph."""
    out: list[Replay] = []
    for path in files:
        if "heatmap" not in pq.read_schema(path).names:
            return out
        for batch in pq.ParquetFile(path).iter_batches(columns=["uid", "heatmap"], batch_size=1024):
            for uid, points in zip(batch.column("uid").to_pylist(), batch.column("heatmap").to_pylist()):
                points = [p for p in points or [] if None not in (p.get("start_s"), p.get("end_s"), p.get("value"))]
                if points:
                    out.append(Replay(uid, [p["start_s"] for p in points], [p["end_s"] for p in points],
                                      [p["value"] for p in points]))
                    if len(out) == MAX_REPLAYS:
                        return out
    return out


def _add_scene_cuts(replays: list[Replay], scene_files: list[Path]) -> None:
    """Scene starts (after the first scene) of each replay's first media, from a scenes config."""
    wanted = {r.uid: r for r in replays}
    cuts: dict[str, set[float]] = {uid: set() for uid in wanted}
    for path in scene_files:
        t = pq.read_table(path, columns=["uid", "media_index", "scene", "start_s"])
        for uid, index, scene, start in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            if uid in wanted and index == 0 and scene and start is not None:
                cuts[uid].add(float(start))
    for uid, replay in wanted.items():
        replay.cuts_s = sorted(cuts[uid])


# --------------------------------------------------------------------------- drawing


def _new_figure() -> tuple[Figure, "matplotlib.axes.Axes"]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    # fixed margins: constrained layout costs half the drawing time and the labels are short
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.88)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _log_hist(ax: "matplotlib.axes.Axes", series: list[tuple[str, np.ndarray]], xlabel: str) -> None:
    """Histogram of positive values on log-spaced bins (one shared bin edge set for all series)."""
    positive = np.concatenate([v for _, v in series])
    lo, hi = float(positive.min()), float(positive.max())
    edges = np.logspace(math.log10(lo), math.log10(hi), 21) if hi > lo else np.array([lo / 1.5, lo * 1.5])
    for label, vals in series:
        ax.hist(vals, bins=edges.tolist(), alpha=0.75 if len(series) > 1 else 1.0, label=label, edgecolor="white")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("items")
    if len(series) > 1:
        ax.legend()


def _ratio_hist(ax: "matplotlib.axes.Axes", vals: np.ndarray, xlabel: str, hi: float = 1.0) -> None:
    ax.hist(vals, bins=np.linspace(0.0, hi, 21).tolist(), edgecolor="white")
    ax.set_xlim(0.0, hi)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("items")


def _positive_series(vals: np.ndarray) -> tuple[np.ndarray, int]:
    return vals[vals > 0], int((vals <= 0).sum())


def draw_plots(behavior: Behavior) -> dict[str, tuple[bytes, Plot]]:
    """Every plot the data allows: file name -> (PNG bytes, card entry)."""
    out: dict[str, tuple[bytes, Plot]] = {}
    with matplotlib.style.context("default"), matplotlib.rc_context({"svg.hashsalt": "blift", "font.size": 9}):
        def add(name: str, fig: Figure, title: str, caption: str) -> None:
            fig.suptitle(title)
            out[name] = (_png(fig), Plot(f"assets/{name}", title, caption))

        score = _values(behavior, "score")
        pos, rest = _positive_series(score)
        if pos.size:
            fig, ax = _new_figure()
            _log_hist(ax, [("reddit", pos)], "score (log scale)")
            caption = f"{_count(int(score.size), 'Reddit item')} with a score"
            if rest:
                caption += f"; {_count(rest, 'item')} with a score of 0 or less not shown on the log axis"
            add("upvotes.png", fig, "Reddit score (upvotes minus downvotes, as Reddit reports it)", caption)

        ratio = _values(behavior, "upvote_ratio")
        if ratio.size:
            fig, ax = _new_figure()
            _ratio_hist(ax, ratio, "upvote ratio")
            add("upvote_ratio.png", fig, "Reddit upvote ratio",
                f"{_count(int(ratio.size), 'Reddit item')} with an upvote ratio")

        like_ratio = _values(behavior, "like_ratio")
        if like_ratio.size:
            fig, ax = _new_figure()
            hi = max(0.05, float(np.ceil(like_ratio.max() * 20) / 20))  # 0.05 steps: like ratios are small
            _ratio_hist(ax, like_ratio, "likes / views", hi=min(hi, 1.0))
            add("like_ratio.png", fig, "YouTube like ratio (likes / views)",
                f"{_count(int(like_ratio.size), 'video')} with views and likes")

        comments = behavior.comments_per_item()
        series, zeros, total = [], 0, 0
        for platform in sorted(set(behavior.platform.tolist())):
            vals = comments[(behavior.platform == platform) & ~np.isnan(comments)]
            if vals.size:
                p, z = _positive_series(vals)
                total += int(vals.size)
                zeros += z
                if p.size:
                    series.append((str(platform), p))
        if series:
            fig, ax = _new_figure()
            _log_hist(ax, series, "comments reported by the platform (log scale)")
            caption = f"{_count(total, 'item')} with a comment count"
            if zeros:
                caption += f"; {_count(zeros, 'item')} with no comments not shown on the log axis"
            add("comments_per_item.png", fig, "Comments per item", caption)

        views = _values(behavior, "view_count")
        pos, rest = _positive_series(views)
        if pos.size:
            fig, ax = _new_figure()
            _log_hist(ax, [("youtube", pos)], "views (log scale)")
            caption = f"{_count(int(views.size), 'video')} with a view count"
            if rest:
                caption += f"; {_count(rest, 'video')} with no views not shown on the log axis"
            add("views.png", fig, "YouTube views", caption)

        for i, replay in enumerate(behavior.replays[:MAX_REPLAYS], start=1):
            fig, ax = _new_figure()
            xs = [x for s, e in zip(replay.start_s, replay.end_s) for x in (s, e)]
            ys = [y for y in replay.value for _ in (0, 1)]
            ax.plot(xs, ys, linewidth=1.2)
            ax.fill_between(xs, ys, alpha=0.25)
            for cut in replay.cuts_s:
                ax.axvline(cut, color="black", linestyle="--", linewidth=0.8)
            ax.set_ylim(0.0, 1.05)
            ax.set_xlim(min(replay.start_s), max(replay.end_s))
            ax.set_xlabel("time (s)")
            ax.set_ylabel("replay value (0..1)")
            cuts = (f"; dashed lines: {_count(len(replay.cuts_s), 'scene cut')}" if replay.cuts_s else "")
            add(f"replay_{i}.png", fig, f"Most-replayed graph of {replay.uid}",
                f"{_count(len(replay.value), 'segment')}{cuts}")
    return out


def write_plots(release_dir: Path, behavior: Behavior | None) -> list[Plot]:
    """Write the plots under ``<release>/assets`` atomically; remove stale ones this module wrote before."""
    drawn = draw_plots(behavior) if behavior is not None and behavior.items else {}
    assets = Path(release_dir) / "assets"
    for name, (png, _) in drawn.items():
        target = assets / name
        if not (target.is_file() and target.read_bytes() == png):
            tables.atomic_write_bytes(target, png)
    for name in PLOT_NAMES:
        if name not in drawn and (assets / name).is_file():
            (assets / name).unlink()
    if assets.is_dir() and not any(assets.iterdir()):
        assets.rmdir()
    return [plot for _, plot in drawn.values()]
