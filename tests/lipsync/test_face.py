"""The face path on a real face (skimage's astronaut) with the real MediaPipe Face Mesh."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from polydub.errors import InputError, StageError
from polydub.lipsync.face import (
    CROP,
    TEMPLATE,
    FaceMesh,
    FaceTrack,
    align_face,
    align_matrix,
    anchors_of,
    similarity_transform,
    smooth_anchors,
    track_face,
)
from polydub.lipsync.stage import load_mask
from polydub.lipsync.warp import paste_back

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def two_faces(big: int = 256, small: int = 160) -> np.ndarray:
    """A grey 480x256 canvas: the astronaut large at the left, small at the bottom right."""
    head = skimage.data.astronaut()[:300, 100:360]
    canvas = np.full((256, 480, 3), 128, np.uint8)
    a = cv2.resize(head, (big * 260 // 300, big), interpolation=cv2.INTER_AREA)
    b = cv2.resize(head, (small * 260 // 300, small), interpolation=cv2.INTER_AREA)
    canvas[:big, : a.shape[1]] = a
    canvas[256 - small:, 480 - b.shape[1]:] = b
    return canvas


def face_centre_x(matrix: np.ndarray, res: int) -> float:
    """Where the centre of the aligned face lies in the frame (x, pixels)."""
    return cv2.transform(np.array([[[res / 2, res / 2]]]), cv2.invertAffineTransform(matrix))[0, 0, 0]


# The reference's anchor groups as Face Mesh points, written out here on purpose: the crop must
# put *these* where the template says, whatever face.py's constants say.
EYEBROW_TIP_AND_TOP = ((46, 70, 63, 105, 66, 107), (276, 300, 293, 334, 296, 336))
LOWER_NOSE = (5, 129, 358, 1)
# the groups polydub used before (whole eyebrow contour; nose from between the eyes)
OLD_GROUPS = ((70, 63, 105, 66, 107, 46, 53, 52, 65, 55), (300, 293, 334, 296, 336, 276, 283, 282, 295, 285),
              (168, 6, 197, 195, 5, 4, 98, 97, 2, 326, 327))
EYES = (33, 263)  # outer eye corners
MOUTH = (13, 14)  # inner lips, upper and lower


def reference_anchors(landmarks: np.ndarray) -> np.ndarray:
    return np.stack([landmarks[list(g)].mean(0) for g in (*EYEBROW_TIP_AND_TOP, LOWER_NOSE)])


def placement(anchors: np.ndarray, res: int) -> tuple[np.ndarray, float]:
    """Centroid (aligned pixels) and spread (RMS distance from the centroid, template units
    times res/75) of three anchors in an aligned face; the similarity fit puts both exactly on
    the template's, whatever the face's proportions."""
    units = anchors * [CROP[0] / res, CROP[1] / res]
    spread = np.sqrt(((units - units.mean(0)) ** 2).sum(1).mean()) * res / CROP[0]
    return anchors.mean(0), float(spread)


def aligned_landmarks(image: np.ndarray, matrix: np.ndarray, res: int) -> np.ndarray:
    with FaceMesh(video=False) as mesh:
        found = mesh.detect(align_face(image, matrix, res))
    assert len(found) == 1
    return found[0]


@pytest.mark.slow
def test_the_crop_puts_the_reference_anchors_on_the_template(astronaut):
    res = 256
    track = track_face([astronaut], res)
    assert track.track_id.tolist() == [0]
    found = aligned_landmarks(astronaut, track.matrices[0], res)
    expected = TEMPLATE * [res / CROP[0], res / CROP[1]]  # template in aligned pixels (crop resized to res)
    centre, spread = placement(reference_anchors(found), res)
    want_centre, want_spread = placement(expected, res)
    assert np.abs(centre - want_centre).max() < 2  # position
    assert abs(spread - want_spread) < 2  # size: 2 px of ~66
    eyes = found[list(EYES)]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 2  # eye line level
    # eyes and mouth centred on the nose anchor's column (within Face Mesh's own jitter)
    assert abs(eyes[:, 0].mean() - expected[2, 0]) < 2.5
    assert abs(found[list(MOUTH)].mean(0)[0] - expected[2, 0]) < 2.5
    mouth_row = int(round(found[list(MOUTH)].mean(0)[1]))
    assert load_mask(res)[0, 0, mouth_row, res // 2] == 0  # the mouth is in the regenerated region


def test_the_old_anchor_groups_would_fail(astronaut):
    """Whole eyebrows and the upper nose enlarge the face by ~10 % and drop the mouth ~10 px."""
    res = 256
    with FaceMesh(video=False) as mesh:
        landmarks = mesh.detect(astronaut)[0]
    old = np.stack([landmarks[list(g)].mean(0) for g in OLD_GROUPS])
    old_found = aligned_landmarks(astronaut, align_matrix(old, res), res)
    new_found = aligned_landmarks(astronaut, align_matrix(anchors_of(landmarks), res), res)
    _, old_spread = placement(reference_anchors(old_found), res)
    _, want_spread = placement(TEMPLATE * [res / CROP[0], res / CROP[1]], res)
    assert old_spread - want_spread > 4
    assert old_found[list(MOUTH)].mean(0)[1] - new_found[list(MOUTH)].mean(0)[1] > 4


def test_old_tracks_are_not_reused(tmp_path, astronaut):
    path = tmp_path / "old.npz"
    np.savez(path, matrices=np.zeros((1, 2, 3)), track_id=np.zeros(1, np.int64), res=np.int64(256))
    with pytest.raises(StageError, match="other anchor points"):
        FaceTrack.load(path)


def test_aligned_crop_matches_the_checked_expectation(astronaut):
    res = 64
    aligned = align_face(astronaut, track_face([astronaut], res).matrices[0], res)
    expected = cv2.imread(str(DATA / "astronaut_aligned_64.png"))[:, :, ::-1]
    assert aligned.shape == expected.shape == (64, 64, 3)
    assert np.abs(aligned.astype(int) - expected).mean() < 2.0


def test_blank_frame_has_no_face():
    track = track_face([np.zeros((128, 128, 3), np.uint8), np.full((128, 128, 3), 200, np.uint8)], 64)
    assert track.track_id.tolist() == [-1, -1]
    assert not track.has_face.any()


def test_the_larger_of_two_faces_is_chosen():
    frame = two_faces()
    track = track_face([frame], 64)
    assert track.has_face.tolist() == [True]
    assert face_centre_x(track.matrices[0], 64) < 240  # the large face, on the left


def test_another_face_can_be_chosen():
    frame = two_faces()
    assert face_centre_x(track_face([frame], 64, prefer="right").matrices[0], 64) > 240
    assert face_centre_x(track_face([frame], 64, prefer="left").matrices[0], 64) < 240
    with pytest.raises(InputError, match="face choice"):
        track_face([frame], 64, prefer="tallest")


def test_the_track_does_not_jump_to_a_larger_face_that_appears():
    canvas = two_faces()
    only_small = canvas.copy()
    only_small[:, :240] = 128
    track = track_face([only_small] * 4 + [canvas] * 4, 64)
    assert track.track_id.tolist() == [0] * 8
    assert all(face_centre_x(m, 64) > 240 for m in track.matrices)  # stays on the small face


def test_paste_back_of_the_unchanged_face(astronaut):
    res = 128
    matrix = track_face([astronaut], res).matrices[0]
    aligned = align_face(astronaut, matrix, res)
    out = paste_back(astronaut, aligned, matrix)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - astronaut)
    assert diff.any() and diff.mean() < 1.0 and np.percentile(diff, 99.9) < 20
    # pixels whose position maps outside the aligned square (and the blend's reach) are bit-identical
    h, w = astronaut.shape[:2]
    ys, xs = np.mgrid[:h, :w]
    u, v = np.einsum("ij,jhw->ihw", matrix, np.stack([xs, ys, np.ones_like(xs)]))
    # the reference's blend reaches a pixel past the crop on its right and lower edges
    mu, mv = 2 * np.abs(matrix[:, :2]).sum(1)  # two frame pixels in aligned units
    outside = (u < -1 - mu) | (u > res + mu) | (v < -1 - mv) | (v > res + mv)
    assert outside.mean() > 0.5
    assert np.array_equal(out[outside], astronaut[outside])


def test_a_changed_face_shows_only_inside_the_crop(astronaut):
    res = 64
    matrix = track_face([astronaut], res).matrices[0]
    out = paste_back(astronaut, np.zeros((res, res, 3), np.uint8), matrix)  # black face
    centre = cv2.transform(np.array([[[res / 2, res / 2]]]), cv2.invertAffineTransform(matrix))[0, 0]
    x, y = (int(round(c)) for c in centre)
    assert out[y, x].max() < 10 and astronaut[y, x].max() > 100
    assert np.array_equal(out[:, :100], astronaut[:, :100])  # well left of the face


def test_similarity_transform_recovers_a_known_one():
    src = np.array([[10.0, 20.0], [50.0, 22.0], [31.0, 45.0]])
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = similarity_transform(src, src @ rot.T + shift)
    np.testing.assert_allclose(m, np.hstack([rot, shift[:, None]]), atol=1e-9)
    # a mirrored target still gives a proper rotation (no reflection)
    assert np.linalg.det(similarity_transform(src, src * [-1, 1])[:, :2]) > 0


def test_track_round_trips_through_npz(tmp_path, astronaut):
    track = track_face([astronaut, np.zeros_like(astronaut)], 256)
    path = track.save(tmp_path / "track.npz")
    again = FaceTrack.load(path)
    assert again.res == 256 and again.track_id.tolist() == [0, -1]
    np.testing.assert_array_equal(again.matrices, track.matrices)
    np.testing.assert_allclose(again.at_res(64).matrices[0], align_matrix(anchors_of(
        FaceMesh(video=False).detect(astronaut)[0]), 64), atol=0.05)


def test_smoothing_removes_jitter_without_lag():
    t = np.arange(40, dtype=float)
    motion = np.stack([np.stack([t * 1.5 + 10 * k, t * 0.5 + 3 * k], -1) for k in range(3)], 1)  # (40, 3, 2)
    jitter = np.where(t % 2 == 0, 1.0, -1.0)[:, None, None]
    smoothed = smooth_anchors(motion + jitter)
    inner = slice(4, -4)
    assert np.abs(smoothed[inner] - motion[inner]).max() < 0.3  # jitter of 1 px mostly gone
    np.testing.assert_allclose(smooth_anchors(motion)[inner], motion[inner], atol=1e-9)  # no lag
