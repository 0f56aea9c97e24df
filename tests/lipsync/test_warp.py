"""The batched tensor face path against the per-frame cv2 one, on the real face (paste-back
against the reference: test_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from polydub.errors import StageError
from polydub.lipsync import face, warp
from polydub.lipsync.video import BackgroundWriter, FrameWriter, prefetch


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def frames_and_matrices(astronaut):
    """Three frames: the astronaut, shifted, and mirrored (another face size and footprint)."""
    frames = np.stack([astronaut, np.roll(astronaut, (9, -14), (0, 1)), astronaut[:, ::-1]])
    with face.FaceMesh(video=False) as mesh:
        landmarks = [mesh.detect(f) for f in frames]
    assert all(len(found) == 1 for found in landmarks)
    return frames, np.stack([face.align_matrix(face.anchors_of(found[0]), 256) for found in landmarks])


def levels(faces: torch.Tensor) -> np.ndarray:
    return ((faces + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy().astype(int)


def test_batched_alignment_matches_cv2(frames_and_matrices):
    frames, matrices = frames_and_matrices
    ours = levels(warp.align_faces(torch.from_numpy(frames), matrices, 256))
    for frame, m, aligned in zip(frames, matrices, ours):
        diff = np.abs(aligned - face.align_face(frame, m, 256))
        assert diff.mean() < 0.25 and np.percentile(diff, 99.9) <= 3


def test_unchanged_face_round_trips(frames_and_matrices):
    frames, matrices = frames_and_matrices
    batch = torch.from_numpy(frames)
    out = warp.paste_faces(batch, warp.align_faces(batch, matrices, 256), matrices).numpy()
    diff = np.abs(out.astype(int) - frames)
    assert diff.any() and diff.mean() < 1.0 and np.percentile(diff, 99.9) < 20


def test_prefetch_hands_over_errors_and_stops_early():
    def produce():
        yield from range(5)
        raise StageError("decoding broke")

    got = []
    with pytest.raises(StageError, match="decoding broke"):
        for item in prefetch(produce(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    items = prefetch(endless(), depth=3)
    assert [next(items) for _ in range(4)] == [0, 1, 2, 3]
    items.close()  # the caller stops: the producer is stopped and closed
    assert closed == [True]


def test_background_writer_reports_a_bad_frame(tmp_path):
    writer = BackgroundWriter(FrameWriter(tmp_path / "out.mkv", 32, 32, codec_args=("-c:v", "ffv1")))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.write(np.zeros((16, 16, 3), np.uint8))  # wrong size: reported on close
    with pytest.raises(StageError, match="does not fit"):
        writer.close()
    assert not (tmp_path / "out.mkv").exists()
