"""Video-text retrieval data: PyAV decoding with uniform frame sampling, the video set, and its annotation formats.

A ``VideoRetrievalDataset`` (``kind == "video"``) is a ``RetrievalDataset`` whose items are video files;
``load_images(size)`` returns (N, F, 3, size, size) in [0, 1]: F frames (``frames``, default 8) sampled at the
centres of F equal segments of the clip, each resized on its shorter side and centre-cropped like an image,
cached as uint8 under ``$ADVLORA_HOME/tensors``. A clip with fewer frames than F is an error (one line naming
the file), not a silent repetition.

Annotation formats (``FORMATS``, each with its detector), records naming the same video merge:
- ``video-jsonl`` / ``video-json`` / ``msrvtt``: JSON lines or a JSON list of records with the video under
  ``video`` (LAVIS ``msrvtt_ret_test1k.json``: ``{"video": "video7010.mp4", "caption": [...]}``), ``clip_name``
  (BLIP / ALPRO ``msrvtt_test.jsonl``, ``.mp4`` appended) or ``video_id``, and the captions under ``captions``,
  ``caption`` (string or list), ``sentence`` or ``description``; one caption per sentence (MSR-VTT 1k-A:
  1,000 videos, 1,000 captions).
- ``video-csv``: CLIP4Clip's ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``).
- ``didemo``: the same records, paragraph-to-video: all sentences of a video joined with spaces into one caption
  (as CLIP4Clip, LAVIS and ALPRO evaluate DiDeMo).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch

from advlora.data.dataset import RetrievalDataset, square_crop
from advlora.data.records import Format, image_root_of, load_json, problem, read_json_lines, records_to_dataset
from advlora.errors import AdvloraError

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 8
_VIDEO_KEYS = ("video", "clip_name", "video_id")
_CAPTION_KEYS = ("captions", "caption", "sentence", "description")


class VideoRetrievalDataset(RetrievalDataset):
    """A retrieval set of videos; ``load_images`` gives (N, F, 3, S, S) in [0, 1]."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kind = "video"
        self.meta.setdefault("frames", DEFAULT_FRAMES)

    @property
    def frames(self) -> int:
        return int(self.meta["frames"])

    @frames.setter
    def frames(self, n: int) -> None:
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise AdvloraError(f"--frames must be an integer >= 1, got {n!r}")
        self.meta["frames"] = int(n)
        self.meta.pop("_u8", None)  # tensors loaded with another frame count

    def _load_item(self, i: int, size: int) -> torch.Tensor:
        return load_video_uint8(self.image_path(i), self.frames, size)

    def _item_shape(self, size: int) -> tuple[int, ...]:
        return (self.frames, 3, size, size)

    def _cache_key(self, size: int) -> str:
        return f"video|{size}|{self.frames}"


def sample_indices(total: int, frames: int) -> list[int]:
    """Centres of ``frames`` equal segments of ``total`` frames (uniform sampling)."""
    return [min(total - 1, int((k + 0.5) * total / frames)) for k in range(frames)]


def load_video_uint8(path: Path, frames: int, size: int) -> torch.Tensor:
    """Decode ``frames`` uniformly sampled frames with PyAV -> (frames, 3, size, size) uint8."""
    total = frame_count(path)
    if total < frames:
        raise AdvloraError(f"{path}: video has {total} frame{'s' * (total != 1)}, fewer than the {frames} "
                           f"sampled (use fewer --frames)")
    wanted = sample_indices(total, frames)
    picked = _decode(path, set(wanted), size)
    if len(picked) < len(set(wanted)):  # the container's frame count was wrong: count by decoding
        total = len(_decode(path, None, None))
        if total < frames:
            raise AdvloraError(f"{path}: video has {total} decodable frames, fewer than the {frames} sampled "
                               f"(use fewer --frames)")
        wanted = sample_indices(total, frames)
        picked = _decode(path, set(wanted), size)
    return torch.stack([picked[i] for i in wanted])


def _open(path: Path):
    import av

    try:
        if Path(path).stat().st_size == 0:
            raise AdvloraError(f"{path}: video file is empty (0 bytes)")
        container = av.open(str(path))
    except FileNotFoundError:
        raise AdvloraError(f"{path}: video file is missing") from None
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AdvloraError(f"{path}: cannot read video ({type(e).__name__})") from None
    if not container.streams.video:
        container.close()
        raise AdvloraError(f"{path}: has no video stream")
    return container


def frame_count(path: Path) -> int:
    """The number of frames of a video (the container's count, or decoded when it has none)."""
    with _open(path) as container:
        n = int(container.streams.video[0].frames or 0)
    return n if n > 0 else len(_decode(path, None, None))


def _decode(path: Path, keep: set[int] | None, size: int | None) -> dict[int, torch.Tensor | None]:
    """Frames at indices ``keep`` (all when None; pixels only when ``size`` is given) as (3, size, size) uint8."""
    import av
    import numpy as np

    out: dict[int, torch.Tensor | None] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last = max(keep) if keep else None
        try:
            for i, frame in enumerate(container.decode(stream)):
                if keep is None or i in keep:
                    if size is None:
                        out[i] = None
                    else:
                        arr = np.asarray(square_crop(frame.to_image(), size), dtype=np.uint8).copy()
                        out[i] = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
                if last is not None and i >= last:
                    break
        except (av.FFmpegError, ValueError) as e:
            if not out:
                raise AdvloraError(f"{path}: cannot decode video ({type(e).__name__})") from None
            log.warning("%s: decoding stopped after %d frames (%s)", path, len(out), type(e).__name__)
    return out


# ---- annotation formats ------------------------------------------------------------------------------------
def _video_record(rec, source: Path, n: int) -> tuple[str, list] | None:
    if not isinstance(rec, dict):
        return problem(f"{source}: record {n + 1} is not an object")
    key = next((k for k in _VIDEO_KEYS if k in rec), None)
    if key is None:
        return problem(f"{source}: record {n + 1} is missing the key 'video' (or 'clip_name', 'video_id')")
    cap_key = next((k for k in _CAPTION_KEYS if k in rec), None)
    if cap_key is None:
        return problem(f"{source}: record {n + 1} is missing the key 'captions' (or 'caption', 'sentence')")
    video = str(rec[key])
    if key != "video" and not Path(video).suffix:
        video += ".mp4"
    caps = rec[cap_key]
    return video, [caps] if isinstance(caps, str) else caps


def _raw_records(path: Path) -> list:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_json_lines(path)
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    data = load_json(path)
    if not isinstance(data, list):
        raise AdvloraError(f"{path}: expected a JSON list of {{'video', 'caption'}} records")
    return data


def _to_video_dataset(ds: RetrievalDataset) -> VideoRetrievalDataset:
    return VideoRetrievalDataset(ds.root, ds.images, ds.captions, ds.txt2img, ds.name, "video", dict(ds.meta))


def read_video_records(path: Path, split: str | None = None, image_root: str | Path | None = None
                       ) -> VideoRetrievalDataset:
    """Video records (JSON lines, JSON list or CSV by the file's suffix): one caption per sentence."""
    recs = [_video_record(r, path, n) for n, r in enumerate(_raw_records(path))]
    return _to_video_dataset(records_to_dataset(recs, image_root_of(path, image_root), path.stem, path))


def read_didemo(path: Path, split: str | None = None, image_root: str | Path | None = None
                ) -> VideoRetrievalDataset:
    """DiDeMo paragraph-to-video: the sentences of each video joined (in file order) into one caption."""
    by_video: dict[str, list[str]] = {}
    for n, r in enumerate(_raw_records(path)):
        rec = _video_record(r, path, n)
        if rec is None:
            continue
        video, caps = rec
        sentences = [c.strip() for c in (caps or []) if isinstance(c, str) and c.strip()]
        if not sentences:
            problem(f"{path}: record {n + 1} ({video}) has an empty caption")
            continue
        by_video.setdefault(video, []).extend(sentences)
    recs = [(v, [" ".join(s)]) for v, s in by_video.items()]
    return _to_video_dataset(records_to_dataset(recs, image_root_of(path, image_root), path.stem, path))


def _names_a_video(head: str) -> bool:
    return any(k in head for k in ('"video"', '"clip_name"', '"video_id"'))


def _video_records(path: Path, head: str) -> bool:
    """JSON lines, or a JSON list without image records, that name videos."""
    suffix = path.suffix.lower()
    if not _names_a_video(head):
        return False
    return suffix == ".jsonl" or (suffix == ".json" and head.lstrip().startswith("[") and '"image"' not in head)


def is_video_records(path: Path, head: str) -> bool:
    """Video records in JSON lines or a JSON list (not a DiDeMo file, which its name tells)."""
    return _video_records(path, head) and "didemo" not in path.name.lower()


def is_didemo(path: Path, head: str) -> bool:
    """Video records in a file whose name says DiDeMo (``didemo_ret_test.json``)."""
    return _video_records(path, head) and "didemo" in path.name.lower()


def is_video_csv(path: Path, head: str) -> bool:
    """A CSV whose header has ``video_id`` and a sentence or caption column (CLIP4Clip's MSR-VTT files)."""
    if path.suffix.lower() != ".csv":
        return False
    stripped = head.lstrip()
    first = stripped.splitlines()[0].lower() if stripped else ""
    return "video_id" in first and ("sentence" in first or "caption" in first)


FORMATS = (
    Format("video-jsonl", read_video_records, lambda p, h: p.suffix.lower() == ".jsonl" and is_video_records(p, h),
           "JSON lines of video records"),
    Format("video-json", read_video_records, lambda p, h: p.suffix.lower() == ".json" and is_video_records(p, h),
           "a JSON list of video records (LAVIS msrvtt_ret_test1k.json)"),
    Format("video-csv", read_video_records, is_video_csv, "CLIP4Clip's MSRVTT_JSFUSION_test.csv"),
    Format("msrvtt", read_video_records, None, "MSR-VTT records (any of the three layouts)"),
    Format("didemo", read_didemo, is_didemo, "DiDeMo paragraph-to-video"),
)
