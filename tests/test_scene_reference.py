"""The scenes stage's cuts equal PySceneDetect's own: ``scenedetect.detect(path, Detector(...))``
(its default OpenCV backend and auto-downscale) against blift's ``detect_scenes`` (PyAV), per
detector, on footage made here with ffmpeg: hard cuts between different sources, fades to and from
black, gradual hue shifts, flashes (a few bright frames), and a variable-frame-rate file.

Why they can be equal at all: blift's DetectionStream feeds the detector the very pixels and
timecodes PySceneDetect's OpenCV backend does (same swscale conversion, rotation, ``cv2.resize``
downscale and ``CAP_PROP_POS_MSEC`` positions); the second test checks exactly that, frame by
frame, on more pixel formats. Before, blift shrank the YUV planes itself and an adaptive ratio
came out 2.18 where PySceneDetect's was 3.13: a real cut was missed.
"""

from __future__ import annotations

import hashlib
import inspect
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scenedetect
from scenedetect import ContentDetector, FrameTimecode

from blift.stages.scenes import stage as scenes_stage
from blift.stages.scenes.detection import FrameShrinker, detection_size
from blift.stages.scenes.stage import DEFAULT_THRESHOLDS, ScenesConfig, detect_scenes, make_detector
from video_factory import Segment, Video, make_video, require_tools

SIZE = (320, 180)  # larger than 256 px: PySceneDetect's auto-downscale shrinks it (factor 1.25)
DETECTORS = ["content", "adaptive", "threshold", "histogram", "hash"]
# Two and three bright frames inside a moving shot; after a cut, one more bright frame.
_FLASHES = "lutyuv=y=235:u=128:v=128:enable='between(n,40,41)+between(n,80,82)'"
_ONE_FLASH = "lutyuv=y=255:enable='eq(n,20)'"


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Video]:
    require_tools("ffmpeg")
    d = tmp_path_factory.mktemp("reference_footage")
    return {
        "hard": make_video(d / "hard.mp4", [Segment("testsrc", 30), Segment("smptebars", 25), Segment("mandelbrot", 30),
                                            Segment("rgbtestsrc", 25), Segment("color=c=blue", 20)], size=SIZE),
        "fades": make_video(d / "fades.mp4", [
            Segment("testsrc", 40, vf="fade=t=out:st=1.0:d=0.6"), Segment("color=c=black", 10),
            Segment("smptebars", 40, vf="fade=t=in:st=0:d=0.6,fade=t=out:st=1.2:d=0.4"),
            Segment("mandelbrot", 35, vf="fade=t=in:st=0:d=0.8")], size=SIZE),
        "hue": make_video(d / "hue.mp4", [Segment("testsrc2", 60, vf="hue=h=120*t"),
                                          Segment("mandelbrot", 50, vf="hue=h=360*t:s=1+sin(6*t)"),
                                          Segment("smptebars", 30, vf="hue=H=PI*t")], size=SIZE),
        "flash": make_video(d / "flash.mp4", [Segment("testsrc2", 120, vf=_FLASHES),
                                              Segment("smptebars", 40, vf=_ONE_FLASH)], size=SIZE),
        # 25 fps, then 10 fps (a black gap and a shot), 25 fps again, then 15 fps; fades around the gap.
        "vfr": make_video(d / "vfr.mp4", [Segment("testsrc", 30, vf="fade=t=out:st=0.8:d=0.4"),
                                          Segment("color=c=black", 6, fps=10), Segment("smptebars", 20, fps=10),
                                          Segment("mandelbrot", 25, vf="fade=t=in:st=0:d=0.4"),
                                          Segment("rgbtestsrc", 12, fps=15)], size=SIZE),
    }


def _reference(path: Path, config: ScenesConfig) -> list[FrameTimecode]:
    """PySceneDetect's cuts: scenedetect.detect() with the detector blift builds from ``config``."""
    return [start for start, _ in scenedetect.detect(str(path), make_detector(config))[1:]]


def _blift(path: Path, config: ScenesConfig) -> tuple[list[int], list[float], list[float]]:
    """blift's cuts as (decode-order frames, their start times, every frame's time)."""
    spans, index, _ = detect_scenes(path, config)
    cuts = [start for start, _ in spans[1:]]
    return cuts, [index.time_of(c) for c in cuts], list(index.times_s)


def test_cuts_equal_scenedetect_detect_on_a_short_clip(tmp_path: Path) -> None:
    """The quick check (the footage below is the thorough one): hard cuts and a flash."""
    require_tools("ffmpeg")
    video = make_video(tmp_path / "clip.mp4", [Segment("testsrc2", 40, vf="lutyuv=y=235:enable='eq(n,20)'"),
                                               Segment("smptebars", 20), Segment("mandelbrot", 20)], size=SIZE)
    for detector in ("content", "adaptive"):
        config = ScenesConfig(detector=detector)
        frames, _, _ = _blift(video.path, config)
        assert frames == [c.frame_num for c in _reference(video.path, config)], detector
        assert set(video.cuts) <= set(frames), detector


@pytest.mark.slow
@pytest.mark.parametrize("detector", DETECTORS)
def test_cuts_equal_scenedetect_detect(detector: str, footage: dict[str, Video]) -> None:
    config = ScenesConfig(detector=detector)
    found = 0
    for name in ("hard", "fades", "hue", "flash"):  # constant frame rate: frame for frame
        path = footage[name].path
        ref = _reference(path, config)
        frames, starts, _ = _blift(path, config)
        assert frames == [c.frame_num for c in ref], (detector, name)
        assert starts == pytest.approx([c.seconds for c in ref], abs=1e-6), (detector, name)
        found += len(frames)
    assert found >= 2, f"{detector} found nothing to compare on this footage"

    # Variable frame rate: PySceneDetect's frame_num is time x average fps (here 93 frames over
    # 5.6 s: 16.6 fps), blift's frames are decode-order indices; the times agree.
    video = footage["vfr"]
    ref = _reference(video.path, config)
    frames, starts, times = _blift(video.path, config)
    assert times == pytest.approx(list(video.timestamps), abs=1e-6)
    assert len(frames) == len(ref) >= 2
    if detector == "threshold":
        # Its fade cut is the middle of the fade in nominal frames (a time between two frames of
        # a VFR file): blift's cut is the frame on screen at that time, within one frame of it.
        for frame, ref_cut in zip(frames, ref):
            assert times[frame] <= ref_cut.seconds + 1e-6 < times[frame + 1]
        # The black gap's middle; then nominal frame 64 (3.771 s) lands on the last 10 fps
        # smptebars frame (3.7-3.8 s), before the fade-in it stands for.
        assert frames == [33, 55]
    else:
        assert starts == pytest.approx([c.seconds for c in ref], abs=1e-6)
        assert frames == ([21, 36, 56, 81] if detector == "histogram" else video.cuts)  # 21: in the fade-out
        assert [round(times[f] * float(ref[0].frame_rate)) for f in frames] == [c.frame_num for c in ref]


class _Recorder(ContentDetector):
    """A ContentDetector that notes what it is fed: timecode, frame number, pixels' digest, shape."""

    def __init__(self, log: list[tuple], **kw) -> None:
        super().__init__(**kw)
        self.log = log

    def process_frame(self, timecode: FrameTimecode, frame_img: np.ndarray) -> list[FrameTimecode]:
        self.log.append((round(timecode.seconds * 1e6), timecode.frame_num,
                         hashlib.sha1(frame_img.tobytes()).hexdigest(), frame_img.shape))
        return super().process_frame(timecode, frame_img)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def _fed(path: Path, downscale: str | int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple], list[tuple], int]:
    """What PySceneDetect's own pipeline and blift's feed a detector for ``path``, and how many
    frames blift shrank by sampling (the odd-integer-factor path)."""
    ref: list[tuple] = []
    if downscale == "auto":
        scenedetect.detect(str(path), _Recorder(ref, min_scene_len=0.6))
    else:  # what detect() does, with the SceneManager's fixed factor
        manager = scenedetect.SceneManager()
        manager.auto_downscale = False
        manager.downscale = int(downscale)
        manager.add_detector(_Recorder(ref, min_scene_len=0.6))
        manager.detect_scenes(scenedetect.open_video(str(path)))
    mine: list[tuple] = []
    sampled = [0]
    real = FrameShrinker._sampled

    def spy(self: FrameShrinker, *args: object) -> np.ndarray:
        sampled[0] += 1
        return real(self, *args)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(scenes_stage, "make_detector", lambda cfg: _Recorder(mine, min_scene_len=0.6))
        patch.setattr(FrameShrinker, "_sampled", spy)
        detect_scenes(path, ScenesConfig(downscale=downscale))
    return ref, mine, sampled[0]


@pytest.mark.slow
def test_detector_is_fed_the_frames_and_timecodes_scenedetect_feeds_it(
        footage: dict[str, Video], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same pixels (BGR conversion, rotation, downscale) and timecodes as PySceneDetect's OpenCV
    backend, frame for frame: 10-bit, full range, rotated phone-style files, an odd detection
    height, an integer downscale, and 1280x720 (factor 5: blift converts only the sampled pixels)."""
    src = "testsrc2=s=320x180:r=25:d=1.2"
    hd = "testsrc2=s=1280x720:r=25:d=0.6"
    _ffmpeg("-f", "lavfi", "-i", src, "-pix_fmt", "yuv420p10le", "-c:v", "libx264", str(tmp_path / "10bit.mp4"))
    _ffmpeg("-f", "lavfi", "-i", src, "-pix_fmt", "yuvj420p", "-c:v", "libx264", str(tmp_path / "full.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=482x270:r=30:d=1", "-pix_fmt", "yuv420p", "-c:v", "libx264",
            str(tmp_path / "odd.mp4"))  # detection size 256x143
    _ffmpeg("-i", str(footage["hard"].path), "-c", "copy", "-metadata:s:v", "rotate=90", str(tmp_path / "rot.mp4"))
    _ffmpeg("-f", "lavfi", "-i", hd, "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", str(tmp_path / "hd.mp4"))
    _ffmpeg("-f", "lavfi", "-i", hd, "-pix_fmt", "yuvj420p", "-c:v", "libx264", "-preset", "ultrafast",
            str(tmp_path / "hdfull.mp4"))
    _ffmpeg("-i", str(tmp_path / "hd.mp4"), "-c", "copy", "-metadata:s:v", "rotate=270", str(tmp_path / "hdrot.mp4"))
    made = [tmp_path / f"{name}.mp4" for name in ("10bit", "full", "odd", "rot", "hd", "hdfull", "hdrot")]
    shapes, sampled = {}, {}
    for path, downscale in [(footage["hard"].path, "auto"), (footage["vfr"].path, "auto"),
                            *((path, "auto") for path in made), (footage["hard"].path, 3)]:
        ref, mine, sampled[path.stem, downscale] = _fed(path, downscale, monkeypatch)
        assert len(ref) >= 15 and mine == ref, (path.name, downscale)
        shapes[path.stem, downscale] = ref[0][3]
    assert shapes == {("hard", "auto"): (144, 256, 3), ("vfr", "auto"): (144, 256, 3), ("10bit", "auto"): (144, 256, 3),
                      ("full", "auto"): (144, 256, 3), ("odd", "auto"): (143, 256, 3), ("rot", "auto"): (256, 144, 3),
                      ("hd", "auto"): (144, 256, 3), ("hdfull", "auto"): (144, 256, 3),
                      ("hdrot", "auto"): (256, 144, 3), ("hard", 3): (60, 107, 3)}
    assert {key for key, n in sampled.items() if n} == {("hd", "auto"), ("hdfull", "auto"), ("hdrot", "auto")}
    assert sampled["hd", "auto"] == 15


def test_detectors_thresholds_and_downscale_are_pyscenedetects() -> None:
    classes = {"content": scenedetect.ContentDetector, "adaptive": scenedetect.AdaptiveDetector,
               "threshold": scenedetect.ThresholdDetector, "histogram": scenedetect.HistogramDetector,
               "hash": scenedetect.HashDetector}
    assert set(DEFAULT_THRESHOLDS) == set(classes) == set(DETECTORS)
    for name, cls in classes.items():
        param = "adaptive_threshold" if name == "adaptive" else "threshold"
        assert DEFAULT_THRESHOLDS[name] == inspect.signature(cls).parameters[param].default, name
        assert type(make_detector(ScenesConfig(detector=name))) is cls
    assert ScenesConfig(detector="hash", threshold=0.3).detector_label == "hash:0.3"
    # compute_downscale_factor(longest side): portrait videos shrink by their height
    assert detection_size(720, 1280, "auto") == (144, 256)
    assert detection_size(640, 360, "auto") == (256, 144)
    assert detection_size(854, 480, "auto") == (256, 144)
    assert detection_size(200, 256, "auto") == (200, 256)
    assert detection_size(640, 360, 3) == (213, 120)
