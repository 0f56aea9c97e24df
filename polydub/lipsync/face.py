"""The face path: track one face through a video, align it to the LatentSync template, paste back.

MediaPipe Face Mesh gives 478 landmarks per face (pixels). Three anchors, the Face Mesh points
matching the reference's InsightFace groups (each eyebrow's outer tip and upper edge; the lower
nose: bridge end, both wings, tip), are mapped by a similarity transform onto the template; the
crop (int(75r) x int(100r), r = res/256 * 2.8) is resized to res x res (bilinear warp, then
Lanczos-4 resize, as the reference made the training faces). A track holds, per frame, the
smoothed anchors, the 2x3 matrix from frame pixels to aligned-face pixels (crop and resize
composed, with the resize's half-pixel convention; `crop_matrix` recovers the crop alone) and
which face track the frame belongs to (-1: no face). It is computed once per video and saved as
a small .npz.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from polydub.errors import InputError, StageError
from polydub.lipsync.weights import FACE_CHOICES

# Face Mesh points matching the reference's InsightFace 2d106 groups (frontal, unmirrored face):
# image-left eyebrow outer tip (46, 70) + upper edge (63, 105, 66, 107)  ~ 2d106 [43, 48, 49, 51, 50]
# image-right eyebrow outer tip (276, 300) + upper edge (293, 334, 296, 336)  ~ 2d106 101..105
# lower nose: bridge end 5, wings 129 and 358, tip 1  ~ 2d106 [74, 77, 83, 86]
# Not the whole eyebrow contour nor the bridge between the eyes: those enlarge the face in the crop.
LEFT_EYEBROW = (46, 70, 63, 105, 66, 107)
RIGHT_EYEBROW = (276, 300, 293, 334, 296, 336)
NOSE = (5, 129, 358, 1)
ANCHORS_VERSION = 2  # saved with a track: tracks made with other groups are computed again

TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])  # anchors, in units of r
CROP = (75.0, 100.0)  # crop width, height in units of r
TEMPLATE_SCALE = 2.8  # r at res 256

MAX_FACES = 4  # faces Face Mesh looks for; we keep one
IOU_MIN = 0.3  # the tracked face is the one overlapping its last box at least this much
PATIENCE = 5  # frames the tracked face may be missing before another face may take over
SMOOTH_SIGMA = 1.0  # frames; centred Gaussian over the anchors of each contiguous run
BORDER_VALUE = (127, 127, 127)  # grey outside the frame, as the models were trained with


def template(res: int) -> np.ndarray:
    """The three anchors in crop pixels, (3, 2)."""
    return TEMPLATE * (res / 256 * TEMPLATE_SCALE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) taking `src` (K, 2) to `dst`.

    Centre both sets, divide each by its std, SVD of the cross-covariance, rotation with the
    reflection fixed, scale = ratio of stds.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    c1, c2 = src.mean(0), dst.mean(0)
    p1, p2 = src - c1, dst - c2
    s1, s2 = p1.std(), p2.std()
    u, _, vt = np.linalg.svd((p1 / s1).T @ (p2 / s2))
    d = np.sign(np.linalg.det(u @ vt))
    rotation = (u @ np.diag([1.0, d]) @ vt).T
    scale = s2 / s1
    return np.hstack([scale * rotation, (c2 - scale * rotation @ c1)[:, None]])


def crop_size(res: int) -> tuple[int, int]:
    """(width, height) in pixels of the template crop that is resized to res x res."""
    r = res / 256 * TEMPLATE_SCALE
    return int(CROP[0] * r), int(CROP[1] * r)


def align_matrix(anchors: np.ndarray, res: int) -> np.ndarray:
    """2x3 matrix from frame pixels to the res x res aligned face, for anchors (3, 2).

    The crop -> res resize is non-uniform and uses pixel centres at +0.5 (as cv2.resize and
    torch's interpolate with align_corners=False do): x_res = (x_crop + 0.5) * s - 0.5.
    """
    crop = similarity_transform(anchors, template(res))
    scale = np.array([res, res]) / np.array(crop_size(res), np.float64)
    return np.hstack([scale[:, None] * crop[:, :2], (scale * crop[:, 2] + 0.5 * (scale - 1))[:, None]])


def crop_matrix(matrix: np.ndarray, res: int) -> np.ndarray:
    """The frame -> template-crop part of `align_matrix`'s matrix (the crop before its resize);
    works on (2, 3) or (N, 2, 3)."""
    scale = np.array([res, res]) / np.array(crop_size(res), np.float64)
    matrix = np.asarray(matrix, np.float64)
    crop = matrix / scale[:, None]
    crop[..., 2] = (matrix[..., 2] - 0.5 * (scale - 1)) / scale
    return crop


def align_matrices(anchors: np.ndarray, track_id: np.ndarray, res: int) -> np.ndarray:
    """(N, 2, 3) matrices for anchors (N, 3, 2); zeros where track_id < 0."""
    matrices = np.zeros((len(track_id), 2, 3))
    for i in np.flatnonzero(np.asarray(track_id) >= 0):
        matrices[i] = align_matrix(anchors[i], res)
    return matrices


def anchors_of(landmarks: np.ndarray) -> np.ndarray:
    """The three anchors (3, 2) of one face's landmarks (478, 2) in pixels."""
    return np.stack([landmarks[list(g)].mean(0) for g in (LEFT_EYEBROW, RIGHT_EYEBROW, NOSE)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / max(_area(a) + _area(b) - inter, 1e-9)


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


class FaceMesh:
    """MediaPipe Face Mesh over RGB uint8 frames; `detect(frame)` -> list of (478, 2) pixels."""

    def __init__(self, video: bool = True, max_faces: int = MAX_FACES):
        import mediapipe as mp  # heavy import, only where faces are detected

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        h, w = frame.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(frame))
        return [np.array([(p.x * w, p.y * h) for p in face.landmark])
                for face in result.multi_face_landmarks or []]

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class FaceTrack:
    """Per frame: smoothed `anchors` (N, 3, 2) in frame pixels, `track_id` (N,) (-1: no face), and
    `matrices` (N, 2, 3) frame -> aligned res x res, made from the anchors."""

    anchors: np.ndarray
    track_id: np.ndarray
    res: int

    def __post_init__(self) -> None:
        self.matrices = align_matrices(self.anchors, self.track_id, self.res)

    @property
    def has_face(self) -> np.ndarray:
        return self.track_id >= 0

    def __len__(self) -> int:
        return len(self.track_id)

    def at_res(self, res: int) -> FaceTrack:
        """The same track for another face resolution (the template scales with res)."""
        return FaceTrack(self.anchors, self.track_id, res)

    def save(self, path: str | Path) -> Path:
        """Write atomically (a crash leaves no half-written cache)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, anchors=self.anchors, matrices=self.matrices, track_id=self.track_id,
                 has_face=self.has_face, res=np.int64(self.res), anchors_version=np.int64(ANCHORS_VERSION))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FaceTrack:
        try:
            with np.load(path) as data:
                version = int(data["anchors_version"]) if "anchors_version" in data else 1
                if version != ANCHORS_VERSION:
                    raise StageError(f"{path}: face track made with other anchor points (version {version})")
                return cls(data["anchors"], data["track_id"], int(data["res"]))
        except (OSError, KeyError, ValueError) as exc:
            raise StageError(f"{path}: not a face track ({exc})") from None


def smooth_anchors(anchors: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """Centred Gaussian smoothing over time of one run's anchors (n, 3, 2); no lag, edges renormalised.

    sigma <= 0 falls back to a causal exponential blend of the anchors (0.2 previous smoothed,
    0.8 current). That is not the reference's smoothing: the reference blends only the
    translation it adds to each frame's transform (from the normalised nose anchor), 0.2 / 0.8.
    """
    if len(anchors) < 2:
        return anchors
    if sigma <= 0:
        out = anchors.copy()
        for i in range(1, len(out)):
            out[i] = 0.2 * out[i - 1] + 0.8 * anchors[i]
        return out
    radius = int(np.ceil(3 * sigma))
    t = np.arange(len(anchors))
    weights = np.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma) ** 2)
    weights[np.abs(t[:, None] - t[None, :]) > radius] = 0
    weights /= weights.sum(1, keepdims=True)
    return np.einsum("ij,jkl->ikl", weights, anchors)


def _runs(track_id: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of frames with the same face track (no-face frames excluded)."""
    runs, start = [], 0
    for i in range(1, len(track_id) + 1):
        if i == len(track_id) or track_id[i] != track_id[start]:
            if track_id[start] >= 0:
                runs.append((start, i))
            start = i
    return runs


def _choose(boxes: list[np.ndarray], prefer: str, width: int) -> int:
    """Index of the face to start a track on: the largest, or the one furthest left/right,
    or nearest the centre of the frame. Boxes are (x0, y0, x1, y1) in pixels."""
    centres = [(b[0] + b[2]) / 2 for b in boxes]
    if prefer == "left":
        return int(np.argmin(centres))
    if prefer == "right":
        return int(np.argmax(centres))
    if prefer == "center":
        return int(np.argmin([abs(c - width / 2) for c in centres]))
    return int(np.argmax([_area(b) for b in boxes]))


def track_face(frames: Iterable[np.ndarray], res: int, sigma: float = SMOOTH_SIGMA,
               mesh: FaceMesh | None = None, prefer: str = "largest") -> FaceTrack:
    """Track one face through RGB uint8 frames (H, W, 3) and return its alignment per frame.

    Several faces: the one `prefer` names (the largest by default; or left, right, center)
    is chosen, then followed by box overlap so the track does not jump to another person;
    only after it has been missing for `PATIENCE` frames may a new track start. Frames
    without the tracked face get track id -1.
    """
    if prefer not in FACE_CHOICES:
        raise InputError(f"face choice must be one of {', '.join(FACE_CHOICES)}, not {prefer!r}")
    own = mesh is None
    mesh = mesh or FaceMesh(video=True)
    anchors, ids = [], []
    box, track, missing = None, -1, 0
    try:
        for frame in frames:
            faces = mesh.detect(frame)
            boxes = [np.concatenate([f.min(0), f.max(0)]) for f in faces]
            pick = None
            if boxes and box is not None:
                overlaps = [_iou(box, b) for b in boxes]
                if max(overlaps) >= IOU_MIN:
                    pick = int(np.argmax(overlaps))
            if pick is None and boxes and (box is None or missing >= PATIENCE):
                pick = _choose(boxes, prefer, frame.shape[1])
                track += 1
            if pick is None:
                missing += 1
                anchors.append(np.zeros((3, 2)))
                ids.append(-1)
                continue
            box, missing = boxes[pick], 0
            anchors.append(anchors_of(faces[pick]))
            ids.append(track)
    finally:
        if own:
            mesh.close()
    track_id = np.array(ids, dtype=np.int64)
    points = np.array(anchors, dtype=np.float64).reshape(-1, 3, 2)
    smoothed = np.zeros_like(points)
    for start, end in _runs(track_id):
        smoothed[start:end] = smooth_anchors(points[start:end], sigma)
    return FaceTrack(smoothed, track_id, res)


def align_face(frame: np.ndarray, matrix: np.ndarray, res: int) -> np.ndarray:
    """The aligned face (res, res, 3) uint8 of an RGB frame, made as the reference makes it (the
    faces the models were trained on): a bilinear warp into the template crop, truncated to
    uint8, then a Lanczos-4 resize to res x res."""
    width, height = crop_size(res)
    crop = cv2.warpAffine(frame.astype(np.float32), crop_matrix(matrix, res), (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_VALUE)
    crop = np.clip(crop, 0, 255).astype(np.uint8)  # truncates, as the reference's astype does
    return cv2.resize(crop, (res, res), interpolation=cv2.INTER_LANCZOS4)
