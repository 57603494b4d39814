"""The ``blift`` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn, Optional, Protocol

import typer
import yaml
from rich.console import Console

from blift import __version__
from blift.errors import BliftError, ConfigError

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is Python 3.13+

    from blift.release.writer import ImagesMode, VideosMode
    from blift.storage import RunPath

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build, release and use BLIFT-style datasets.")
err = Console(stderr=True, soft_wrap=True)  # error messages hold paths: never break them


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("blift").setLevel(level)


def _out_console() -> Console:
    """Tables on stdout; wide enough to stay readable when piped to a file or CI log."""
    return Console() if sys.stdout.isatty() else Console(width=120)


def _fail(exc: BaseException) -> NoReturn:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
    raise typer.Exit(2)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    _setup_logging(verbose)


@app.command()
def version() -> None:
    """Print the blift version."""
    typer.echo(__version__)


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="pipeline YAML file"),
    out: Optional[str] = typer.Option(None, "--out", help="run folder: a path or an object store URL such as "
                                      "s3://bucket/run (default: the pipeline's `out`, else runs/<name>)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="worker processes per stage"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray; overrides the pipeline"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Ray cluster (default: RAY_ADDRESS, else a local Ray)"),
    ray_wait_timeout: float = typer.Option(3600.0, "--ray-wait-timeout", min=1,
                                           help="Ray: end the run when no shard finishes for this many seconds"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and show what would run"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="redo records whose error was transient"),
    stage: list[str] = typer.Option([], "--stage", help="run only these stages (repeatable)"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="progress bars (default: on a TTY)"),
    no_release: bool = typer.Option(False, "--no-release", help="skip the pipeline's release step"),
    record_timeout: float = typer.Option(900.0, "--record-timeout", min=0,
                                         help="watchdog: fail a record (and restart its worker) after this many "
                                         "seconds; 0: off"),
) -> None:
    """Run a pipeline; finished shards are skipped, so rerunning resumes."""
    from blift.pipeline import RunOptions, release_folder, run_pipeline
    from blift.runner.stats import print_stats

    if executor not in (None, "local", "ray"):
        _fail(ConfigError(f"--executor {executor!r}: expected local or ray"))
    opts = RunOptions(out=out, workers=workers, dry_run=dry_run, retry_failed=retry_failed, progress=progress,
                      record_timeout_s=record_timeout or None, executor=executor, ray_address=ray_address,
                      ray_wait_timeout_s=ray_wait_timeout)
    try:
        report = run_pipeline(pipeline, opts, only=stage or None)
    except BliftError as exc:
        _fail(exc)
    if dry_run:
        for plan in report.plans:
            state = "waits for its input" if plan.waiting else f"{len(plan.todo)} to run, {len(plan.skipped)} done"
            typer.echo(f"{plan.stage:<18} {len(plan.shards)} shard(s): {state}")
        return
    print_stats(report.stats, _out_console())
    typer.echo(f"run folder: {report.run_dir}\nstats: {report.run_dir / 'stats.json'}")
    rel = report.pipeline.release if report.pipeline else None
    if rel and not no_release and not stage:  # what runs after the stages: the pipeline's release step
        rel_out = release_folder(rel, report.run_dir)
        _do_release(report.run_dir, rel_out, rel.configs, rel.max_shard_bytes, check=True, images=rel.images,
                    videos=rel.videos, license=rel.license, pretty_name=rel.pretty_name,
                    takedown_contact=rel.takedown_contact)
        if rel.push:
            _do_push(rel_out, rel.push, private=rel.private)
    if report.failed:
        err.print(f"[yellow]{len(report.failed)} shard(s) failed; rerun the same command to retry them[/]")
        raise typer.Exit(1)


@app.command("stage")
def stage_cmd(
    name: str = typer.Argument(..., help="stage name, e.g. clean"),
    out: str = typer.Option(..., "--out", help="run folder holding the stage's inputs (a path or s3:// URL)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with the stage config"),
    set_: list[str] = typer.Option([], "--set", help="config override key=value (value parsed as YAML)"),
    request: list[str] = typer.Option([], "--request", help="a request for a source stage, as YAML/JSON (repeatable)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1),
    retry_failed: bool = typer.Option(False, "--retry-failed"),
) -> None:
    """Run one stage alone on an existing run folder."""
    from blift.config import StageEntry
    from blift.runner.progress import make_reporter
    from blift.runner.run import RunOptions, run_stage
    from blift.runner.stats import print_stats, write_stats
    from blift.storage import is_remote, run_path

    try:
        run_dir = run_path(out)
        if not is_remote(run_dir):
            run_dir = run_dir.resolve()
            run_dir.mkdir(parents=True, exist_ok=True)
        cfg = yaml.safe_load(config.read_text()) if config else {}
        if not isinstance(cfg, dict):
            raise ConfigError(f"{config}: expected a mapping of config fields")
        for item in set_:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: expected key=value")
            cfg[key] = yaml.safe_load(value)
        requests = [yaml.safe_load(r) for r in request] or None
        entry = StageEntry(stage=name, config=cfg, requests=requests, workers=workers)
        reporter = make_reporter(None)
        try:
            _, stats, failures = run_stage(entry, run_dir, Path.cwd(), {},
                                           RunOptions(workers=workers, retry_failed=retry_failed),
                                           reporter, f"stage {name}")
        finally:
            reporter.close()
    except BliftError as exc:
        _fail(exc)
    print_stats(write_stats(run_dir, f"stage {name}", {name: stats}), _out_console())
    if failures:
        raise typer.Exit(1)


@app.command()
def stats(where: str = typer.Argument(..., metavar="RUN_DIR", help="run folder (path or s3:// URL)"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a run's statistics: records in/out, dropped by reason, errors by class."""
    from blift.runner.stats import print_stats, read_stats
    from blift.storage import run_path

    try:
        run_dir = run_path(where)
    except BliftError as exc:
        _fail(exc)
    if not run_dir.is_dir():
        _fail(ConfigError(f"{run_dir}: not a run folder"))
    data = read_stats(run_dir)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        print_stats(data, _out_console())


@app.command()
def validate(folder: Path = typer.Argument(..., help="run or release folder")) -> None:
    """Check every shard in a folder against schemas/ (name, version, types, non-null columns)."""
    from blift.tables import read_shard

    paths = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith(".") and "_blift" not in p.parts)
    if not paths:
        _fail(ConfigError(f"{folder}: no Parquet shards found"))
    bad = 0
    for path in paths:
        try:
            read_shard(path)
        except BliftError as exc:
            bad += 1
            err.print(f"[red]invalid[/] {exc}", highlight=False)
    typer.echo(f"{len(paths) - bad} valid, {bad} invalid shard(s) in {folder}")
    if bad:
        raise typer.Exit(1)


class _Report(Protocol):
    def summary_lines(self) -> list[str]: ...


def _echo_report(title: str, report: _Report) -> None:
    """A title line, then the report's own summary lines, indented."""
    typer.echo(title)
    for line in report.summary_lines():
        typer.echo(f"  {line}")


def _is_images_mode(value: str) -> TypeIs[ImagesMode]:
    return value in ("paths", "bytes")


def _is_videos_mode(value: str) -> TypeIs[VideosMode]:
    return value in ("paths", "frames")


def _is_llava_videos(value: str) -> TypeIs[Literal["frames", "mp4"]]:
    return value in ("frames", "mp4")


def _do_release(run_dir: RunPath | str, out: Path, configs: dict[str, str] | None, max_shard_bytes: int, check: bool,
                *, images: ImagesMode, videos: VideosMode, license: str, takedown_contact: str | None,
                pretty_name: str | None = None) -> None:
    from blift.release.writer import release as do_release
    from blift.storage import is_remote, mirror, run_path

    try:
        where = run_path(run_dir)
        if is_remote(where):  # a release reads the whole run (shards and media): work on a local copy
            local, files, size = mirror(where)
            typer.echo(f"release: {where} mirrored to {local} ({files} file(s), {size / 1e6:.1f} MB fetched)")
        else:
            local = where
        report = do_release(local, out, configs=configs, max_shard_bytes=max_shard_bytes, check=check, images=images,
                            videos=videos, license=license, pretty_name=pretty_name,
                            takedown_contact=takedown_contact)
    except BliftError as exc:
        _fail(exc)
    _echo_report(f"release: {report.out_dir}", report)


def _do_push(release_dir: Path, repo_id: str, *, private: bool, append: bool = False, prune: bool = False) -> None:
    from blift.release.push import push_release

    try:
        report = push_release(release_dir, repo_id, private=private, append=append, prune=prune,
                              progress=sys.stderr.isatty())
    except BliftError as exc:
        _fail(exc)
    _echo_report(f"pushed: {repo_id}", report)


@app.command()
def release(
    run_dir: str = typer.Argument(..., help="run folder (a path, or an object store URL: copied locally first)"),
    out: Path = typer.Argument(..., help="release folder (replaced atomically)"),
    config: list[str] = typer.Option([], "--config", help="release config=run dataset (repeatable)"),
    max_shard_bytes: int = typer.Option(500_000_000, "--max-shard-bytes", min=1,
                                        help="cut shards at this many uncompressed bytes"),
    images: str = typer.Option("paths", "--images",
                               help="images as 'paths' (files under media/) or 'bytes' (datasets Image)"),
    videos: str = typer.Option("paths", "--videos", help="videos as 'paths' or 'frames' (arrays in the Parquet)"),
    check: bool = typer.Option(True, "--check/--no-check", help="load the result with datasets.load_dataset"),
    license: str = typer.Option("other", "--license",
                                help="card license (the media and texts belong to their authors)"),
    takedown_contact: Optional[str] = typer.Option(None, "--takedown-contact", help="e-mail or URL shown in the card"),
    push: Optional[str] = typer.Option(None, "--push", metavar="ORG/NAME", help="then push it to the Hugging Face Hub"),
    private: bool = typer.Option(False, "--private", help="with --push: create the Hub repo private"),
    append: bool = typer.Option(False, "--append",
                                help="with --push: add new shards to the Hub copy, renumbering -of-N"),
) -> None:
    """Write the Hugging Face layout (data/<config>/<split>-0000i-of-0000N.parquet + card), check it
    loads, and optionally push it (resumable: rerun an interrupted push)."""
    configs = None
    if config:
        configs = {}
        for item in config:
            name, sep, dataset = item.partition("=")
            if not sep:
                _fail(ConfigError(f"--config {item!r}: expected name=dataset"))
            configs[name] = dataset
    if not _is_images_mode(images):
        _fail(ConfigError(f"--images {images!r}: expected one of paths, bytes"))
    if not _is_videos_mode(videos):
        _fail(ConfigError(f"--videos {videos!r}: expected one of paths, frames"))
    _do_release(run_dir, out, configs, max_shard_bytes, check, images=images, videos=videos, license=license,
                takedown_contact=takedown_contact)
    if push:
        _do_push(out, push, private=private, append=append)


@app.command()
def push(
    release_dir: Path = typer.Argument(..., help="release folder"),
    repo_id: str = typer.Argument(..., metavar="ORG/NAME", help="Hub dataset repo"),
    private: bool = typer.Option(False, "--private"),
    append: bool = typer.Option(False, "--append", help="add new shards, renumbering -of-N in one commit"),
    prune: bool = typer.Option(False, "--prune", help="delete Hub data/media files the release no longer has"),
) -> None:
    """Push a release folder to the Hub (token: HF_TOKEN or `huggingface-cli login`). Resumable:
    files already on the Hub are not uploaded again."""
    _do_push(release_dir, repo_id, private=private, append=append, prune=prune)


export_app = typer.Typer(no_args_is_help=True, help="Export a release for other trainers.")
app.add_typer(export_app, name="export")


@export_app.command("llava")
def export_llava(
    release_dir: Path = typer.Argument(..., help="release folder"),
    out: Path = typer.Argument(..., help="export folder (blift.json + media)"),
    videos: str = typer.Option("frames", "--videos", help="'frames' (224 px .npy, what LLaMA-VID reads) or 'mp4'"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="local tokenizer folder: check --max-length"),
    max_length: int = typer.Option(2048, "--max-length", min=1),
    split: list[str] = typer.Option(["train"], "--split", help="splits to export (repeatable)"),
) -> None:
    """LLaVA / LLaMA-VID JSON (id, image|video, conversations) plus the media folder, validated."""
    from blift.export.llava import export_llava as do_export

    if not _is_llava_videos(videos):
        _fail(ConfigError(f"--videos {videos!r}: expected frames or mp4"))
    try:
        report = do_export(release_dir, out, videos=videos, tokenizer=tokenizer, max_length=max_length,
                           splits=tuple(split))
    except BliftError as exc:
        _fail(exc)
    _echo_report(f"export: {out}", report)


@app.command()
def takedown(
    release_dir: Path = typer.Argument(..., help="release folder"),
    ids: Path = typer.Option(..., "--ids", help="file: one uid, platform id, URL or author:<hash> per line"),
    push: Optional[str] = typer.Option(None, "--push", metavar="ORG/NAME", help="then update the Hub copy"),
) -> None:
    """Remove posts, videos or authors from every config of a release, re-shard, and record the
    removal (count and date, never the ids) in the card."""
    from blift.release.takedown import takedown as do_takedown

    try:
        report = do_takedown(release_dir, ids)
    except BliftError as exc:
        _fail(exc)
    _echo_report(f"takedown: {release_dir}", report)
    if push:
        _do_push(release_dir, push, private=False, prune=True)


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="training config YAML (see blift/train/recipes/behavior_llava.yaml)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from the last checkpoint in output_dir"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1,
                                            help="stop after this many steps (a smoke run)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="override the config's output_dir"),
) -> None:
    """Fine-tune a LLaVA-family model on released BLIFT records (full or LoRA). Under several GPUs:
    `accelerate launch --config_file blift/train/recipes/accelerate_zero2.yaml -m blift.cli train CONFIG`."""
    from blift.train.config import load_train_config
    from blift.train.trainer import train as do_train

    try:
        cfg = load_train_config(config)
        updates = {k: v for k, v in {"max_steps": max_steps,
                                     "output_dir": str(output_dir) if output_dir else None}.items()
                   if v is not None}
        result = do_train(cfg.model_copy(update=updates) if updates else cfg, resume=resume)
    except BliftError as exc:
        _fail(exc)
    last = f"{result.losses[-1][1]:.4f}" if result.losses else "n/a"
    typer.echo(f"trained {result.global_step} steps ({result.epochs:.2f} epochs) in {result.seconds:.1f} s; "
               f"last loss {last}; {len(result.dropped)} records dropped; model in {result.output_dir}")


@app.command("eval")
def eval_cmd(
    config: Path = typer.Argument(..., help="evaluation config YAML: checkpoints, behavior records, task files"),
) -> None:
    """Score checkpoints on behavior prediction and content tasks; writes results.json and results.md."""
    from blift.eval.config import load_eval_config
    from blift.eval.run import evaluate

    try:
        cfg = load_eval_config(config)
        evaluate(cfg)
    except BliftError as exc:
        _fail(exc)
    table = Path(cfg.output_dir) / "results.md"
    typer.echo(table.read_text() if table.exists() else "no results")
    typer.echo(f"results: {Path(cfg.output_dir) / 'results.json'}, {table}")


if __name__ == "__main__":  # pragma: no cover
    app()
