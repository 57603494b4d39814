"""Running a pipeline file end to end: read it once, start what it asks for around the run
(the loopback replay servers), run its stages, and hand back the loaded pipeline so the caller
can do what comes after (its ``release:`` step) without reading the file again.

The runner below this knows stages and shards only; what a pipeline file adds around them
lives here.
"""

from __future__ import annotations

from pathlib import Path

from blift.config import Pipeline, ReleaseSpec, load_pipeline
from blift.replay.serve import serve
from blift.runner.run import RunOptions, RunReport, run_stages
from blift.storage import RunPath, is_remote

__all__ = ["RunOptions", "RunReport", "release_folder", "run_pipeline"]


def run_pipeline(path: Path, opts: RunOptions, *, only: list[str] | None = None) -> RunReport:
    """Run the pipeline file at ``path`` (``only``: just these stages); ``report.pipeline`` is
    the pipeline as read."""
    pipeline: Pipeline = load_pipeline(path)
    base = path.resolve().parent
    with serve(pipeline.replay, base) as variables:
        report = run_stages(pipeline, path, base, variables, opts, only=only)
    report.pipeline = pipeline
    return report


def release_folder(spec: ReleaseSpec, run_dir: RunPath) -> Path:
    """Where a pipeline's ``release:`` step writes: ``out`` as given when absolute, else under the
    run folder (a remote run's release is written locally, under the current folder)."""
    out = Path(spec.out)
    if out.is_absolute() or is_remote(run_dir):
        return out
    return Path(run_dir) / out
