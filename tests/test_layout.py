"""The architecture's rules, checked against the code: where a stage lives, which way imports go,
that the core knows no platform, and that a third-party package adds a stage by installing itself."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from blift.collect.reddit.api import RedditStage
from blift.registry import GROUP, installed_stages, load_stage
from blift.runner.ray_executor import forwarded_env
from blift.stage import Stage

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "blift"

BUILT_IN = {"reddit.list", "reddit.collect", "reddit.dumps", "reddit.refresh", "youtube.list", "youtube.collect",
            "youtube.linked", "media.download", "folder.scan", "table.read", "cbc.read",
            "clean", "scenes", "asr", "attributes", "caption", "instruct"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(*parts: str) -> list[Path]:
    where = PKG.joinpath(*parts)
    return [where] if where.suffix == ".py" else sorted(where.rglob("*.py"))


def test_every_built_in_stage_is_an_entry_point_whose_module_follows_its_name():
    stages = installed_stages()
    assert BUILT_IN <= set(stages), f"missing entry points: {BUILT_IN - set(stages)}"
    for name in BUILT_IN:
        module = stages[name].partition(":")[0]
        expected = f"blift.collect.{name}" if "." in name else f"blift.stages.{name}"
        assert module == expected, f"{name}: registered as {module}, the naming rule says {expected}"
        cls = load_stage(name)
        assert cls.name == name and issubclass(cls, Stage)
        # the module path names the file (or the package whose stage.py holds the class)
        file = Path(sys.modules[cls.__module__].__file__).relative_to(ROOT)
        assert str(file.with_suffix("")).replace("/", ".") in (expected, f"{expected}.stage"), file


def test_stages_folder_holds_only_stages():
    """Each entry of blift/stages/ is one registered stage (a module or a package)."""
    entries = {p.stem for p in (PKG / "stages").iterdir() if p.name != "__init__.py" and p.name != "__pycache__"}
    assert entries == {n for n in BUILT_IN if "." not in n}


def test_imports_flow_one_way():
    """Stages and sources never import the runner, release, export, train, eval or the CLI;
    shared libraries import no stage; the runner imports no stage or source by name."""
    downstream = ("blift.runner", "blift.release", "blift.export", "blift.train", "blift.eval", "blift.cli",
                  "blift.pipeline", "blift.config")
    rules = [
        (_files("stages") + _files("collect"), downstream),
        (_files("models") + _files("video.py") + _files("images.py") + _files("storage.py") + _files("tables.py")
         + _files("stage.py") + _files("schemas.py") + _files("ids.py") + _files("errors.py"),
         downstream + ("blift.stages", "blift.collect", "blift.replay")),
        (_files("runner") + _files("registry.py"), ("blift.stages", "blift.collect", "blift.replay", "blift.release")),
        (_files("collect"), ("blift.stages",)),
    ]
    bad = []
    for files, forbidden in rules:
        for f in files:
            for mod in _imports(f):
                if mod.startswith(forbidden):
                    bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_core_knows_no_platform():
    """Runner, config, stage contract and registry never name a platform or a platform's request
    keys; platform knowledge sits in the stages that declare it."""
    core = _files("runner") + _files("config.py") + _files("stage.py") + _files("registry.py") + _files("pipeline.py")
    words = ("reddit", "youtube", "REDDIT_", "info_json", "url_file", "submissions")
    bad = []
    for f in core:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(w in code for w in words):
                bad.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_source_stages_resolve_their_own_request_paths(tmp_path):
    dumps, ytlist = load_stage("reddit.dumps"), load_stage("youtube.list")
    specs = [{"submissions": ["a/RS.zst", "/abs/RS.zst", "s3://bucket/RS.zst"], "comments": "RC.zst"}]
    got = dumps.resolve_requests(specs, tmp_path)
    assert got[0]["submissions"] == [str(tmp_path / "a/RS.zst"), "/abs/RS.zst", "s3://bucket/RS.zst"]
    assert got[0]["comments"] == str(tmp_path / "RC.zst")
    assert specs[0]["submissions"][0] == "a/RS.zst"  # the caller's list is not changed
    got = ytlist.resolve_requests([{"info_json_dir": "info"}, {"url_file": "u.txt"}, {"urls": ["x/y"]}], tmp_path)
    assert got == [{"info_json_dir": str(tmp_path / "info")}, {"url_file": str(tmp_path / "u.txt")}, {"urls": ["x/y"]}]
    # a stage that names no path keys leaves its requests alone
    assert load_stage("reddit.list").resolve_requests([{"posts": ["a/b"]}], tmp_path) == [{"posts": ["a/b"]}]


def test_ray_forwards_credentials_only_for_stages_that_declare_them():
    env = {"REDDIT_CLIENT_ID": "id", "BLIFT_AUTHOR_SALT": "s", "AWS_REGION": "r", "HOME": "/root", "TOY_X": "1"}
    assert forwarded_env(env) == {"BLIFT_AUTHOR_SALT": "s", "AWS_REGION": "r"}
    assert RedditStage.forward_env == ("REDDIT_",)
    assert load_stage("reddit.collect").forward_env == ("REDDIT_",)
    assert load_stage("clean").forward_env == ()
    assert forwarded_env(env, load_stage("reddit.list").forward_env)["REDDIT_CLIENT_ID"] == "id"
    assert forwarded_env({**env, "BLIFT_RAY_ENV": "TOY_X"})["TOY_X"] == "1"


@pytest.mark.slow
def test_a_third_party_package_adds_a_stage_by_installing_itself(tmp_path):
    """A distribution on the path whose metadata declares a ``blift.stages`` entry point: its
    stage runs from a pipeline with no BLIFT_STAGES and no change to blift."""
    site = tmp_path / "site"
    (site / "blift_plugin_demo-0.1.dist-info").mkdir(parents=True)
    (site / "blift_plugin_demo-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: blift-plugin-demo\nVersion: 0.1\n")
    (site / "blift_plugin_demo-0.1.dist-info" / "entry_points.txt").write_text(
        f"[{GROUP}]\ndemo.upper = blift_plugin_demo:UpperTitles\n")
    (site / "blift_plugin_demo.py").write_text(textwrap.dedent('''
        from blift.stage import ShardInput, Stage, StageResult

        class UpperTitles(Stage):
            name = "demo.upper"
            inputs = {"items": "items"}
            outputs = {"items": "items"}

            def process(self, shard: ShardInput) -> StageResult:
                rows = shard.rows("items")
                for row in rows:
                    row["title"] = (row["title"] or "").upper()
                return StageResult(tables={"items": rows}, records_in=len(rows))
    '''))
    run = tmp_path / "run"
    from blift import tables
    from blift.ids import now_utc

    tables.write_rows(run / "raw" / "part-00000.parquet", [
        {"uid": "reddit:a1", "platform": "reddit", "item_id": "a1", "source": "api", "title": "quiet title",
         "collected_at": now_utc()}], "items")
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"name: demo\nout: {run}\nstages:\n  - stage: demo.upper\n    inputs: {{items: raw}}\n")
    env = {k: v for k, v in os.environ.items() if k != "BLIFT_STAGES"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "run", str(pipe), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert tables.read_shard(run / "items" / "part-00000.parquet").column("title").to_pylist() == ["QUIET TITLE"]
    # and without the package, the same name is unknown, with the reason
    env["PYTHONPATH"] = env["PYTHONPATH"].split(os.pathsep, 1)[1]
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "run", str(pipe), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown stage 'demo.upper'" in proc.stderr


def test_two_packages_claiming_one_stage_name_is_an_error(tmp_path, monkeypatch):
    for n, target in (("one", "pkg_one:S"), ("two", "pkg_two:S")):
        d = tmp_path / f"blift_dup_{n}-0.1.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: blift-dup-{n}\nVersion: 0.1\n")
        (d / "entry_points.txt").write_text(f"[{GROUP}]\nclean = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed_stages.cache_clear()
    try:
        assert len([ep for ep in entry_points(group=GROUP) if ep.name == "clean"]) >= 2
        from blift.errors import ConfigError

        with pytest.raises(ConfigError, match="registered twice"):
            installed_stages()
    finally:
        monkeypatch.undo()
        installed_stages.cache_clear()
