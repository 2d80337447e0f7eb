"""The embedded ``emoji-video`` benchmark: an emoji moving across a coloured frame, captioned with its name and
direction ("rocket moving left to right"), encoded with PyAV.

``n_emoji`` emoji are drawn (seeded) from the emoji without qualifiers (no skin tones, flags or keycaps, whose
renders differ by a few pixels); each gets ``renders[split]`` clips per split with a seeded direction (one of
four), background colour, glyph size and cross-axis position. Frame-pooling models cannot see the direction
(mean pooling is order-free), so within a split an emoji never appears with two directions: the task stays
solvable from the emoji, while the captions still name the motion. Videos are H.264 (``libx264``) when the PyAV
build has it, else MPEG-4 part 2. The build goes to ``$ADVLORA_HOME/data/emoji-video`` through a temporary
folder, in the ``video-jsonl`` format ``{"video": "videos/test/0007-0.mp4", "captions": [...]}``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from advlora.data.emoji import cache_matches, compose, emoji_entries, find_font, render_glyph
from advlora.errors import AdvloraError, choices_error
from advlora.io import advlora_home, atomic_dir, atomic_write_text, write_json

#: clips per emoji in each split
SPLITS: dict[str, int] = {"train": 2, "val": 1, "test": 1}
DIRECTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")
FORMAT_VERSION = 1


def video_codec() -> str:
    """``libx264`` when this PyAV build ships it, else ``mpeg4`` (always in PyAV's FFmpeg)."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def clip_frames(glyph, size: int, frames: int, direction: str, rng: random.Random) -> list:
    """The PIL frames of one clip: the glyph crossing the frame in ``direction`` on a seeded background."""
    scale = rng.uniform(0.4, 0.55)
    background = tuple(rng.randrange(256) for _ in range(3))
    room = (1.0 - scale) * size / 2
    cross = rng.uniform(-0.3, 0.3) * room
    out = []
    for k in range(frames):
        t = -room + 2 * room * k / max(1, frames - 1)  # from one edge to the other
        along = {"left to right": t, "right to left": -t, "top to bottom": t, "bottom to top": -t}[direction]
        offset = (along, cross) if direction in DIRECTIONS[:2] else (cross, along)
        out.append(compose(glyph, size, background=background, scale=scale, offset=offset))
    return out


def write_video(path: Path, images: list, fps: int = 8, codec: str | None = None) -> None:
    """Encode PIL RGB images (even width and height) into ``path`` with PyAV."""
    import av

    codec = codec or video_codec()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = images[0].size
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        for im in images:
            for packet in stream.encode(av.VideoFrame.from_image(im)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _pick_emoji(n_emoji: int, seed: int, font) -> list:
    pool = [e for e in emoji_entries() if ":" not in e.name]
    random.Random(f"emoji-video|{seed}").shuffle(pool)
    picked = []
    for e in pool:
        glyph = render_glyph(e.char, font)
        if glyph is not None:
            picked.append((e, glyph))
        if len(picked) == n_emoji:
            break
    return picked


def build_emoji_video(root: str | Path | None = None, *, font_path: str | Path | None = None, seed: int = 0,
                      force: bool = False, n_emoji: int = 100, frames: int = 16, size: int = 64, fps: int = 8,
                      renders: dict[str, int] | None = None) -> Path:
    """Render and encode the clips into ``root`` (default ``$ADVLORA_HOME/data/emoji-video``); return ``root``.

    A finished build with the same settings is reused unless ``force``. Defaults: 100 emoji, 400 clips of
    16 frames at 64 x 64 (train 200, val 100, test 100).
    """
    root = Path(root) if root is not None else advlora_home() / "data" / "emoji-video"
    if size % 2:
        raise AdvloraError(f"emoji-video frame size must be even (H.264 / yuv420p), got {size}")
    font = find_font(font_path)
    renders = dict(renders or SPLITS)
    codec = video_codec()
    info = {"format_version": FORMAT_VERSION, "font": str(font), "seed": seed, "n_emoji": n_emoji,
            "frames": frames, "size": size, "fps": fps, "renders": renders, "codec": codec}
    if not force and cache_matches(root, info):
        return root
    picked = _pick_emoji(n_emoji, seed, font)
    with atomic_dir(root) as tmp:
        for split, n in renders.items():
            (tmp / "videos" / split).mkdir(parents=True)
            lines = []
            for i, (entry, glyph) in enumerate(picked):
                rng = random.Random(f"{seed}|{split}|{i}")
                direction = rng.choice(DIRECTIONS)
                for k in range(n):
                    rel = f"videos/{split}/{i:04d}-{k}.mp4"
                    write_video(tmp / rel, clip_frames(glyph, size, frames, direction, rng), fps, codec)
                    lines.append(json.dumps({"video": rel, "captions": [f"{entry.name} moving {direction}"]},
                                            ensure_ascii=False))
            atomic_write_text(tmp / f"{split}.jsonl", "\n".join(lines) + "\n")
        write_json(tmp / "info.json", {**info, "emoji": [e.name for e, _ in picked]})
    return root



def emoji_video_split_path(split: str) -> Path:
    """The JSON-lines file of one split of the default build, building the set on first use."""
    if split not in SPLITS:
        raise choices_error("emoji-video split", split, SPLITS)
    return build_emoji_video() / f"{split}.jsonl"
