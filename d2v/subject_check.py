"""The path check for subjects: did each subject go where its path says? Measured from the
output frames, beside the camera's check (`d2v.fidelity`).

    measure_subjects(frames, scene, trajectory, n_frames) -> [SubjectFidelity]
    combine(report, subjects)           the job's verdict: followed only if camera and all subjects are
    draw_subjects(picture, scene, subjects, scale)   each track and where the subject went, on fidelity.png

Locating a subject in a frame: its cut-out from the photo (`d2v.subjects`), seen as the plan
would show it in that frame (the planned camera, its depth, scale and turn at that time), is
the template; normalised cross-correlation over the whole frame (at MATCH_SIDE, masked to
the subject's own pixels) finds where it is. The error is the distance between where it was
found and where its track puts it, in % of the view width. A subject that is mostly out of
view, or whose best match is weak (MIN_SCORE), is not located in that frame.

Verdicts per subject, as for the camera: `followed` when every located frame is within
TOLERANCE_PCT (DEPTH_TOLERANCE_PCT with a depth map) and at least half the sampled frames
located it; `missed` when one is beyond; `unmeasured` otherwise.
"""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from d2v import camera
from d2v.models import CameraTrajectory, FidelityReport, SubjectFidelity, SubjectFrame
from d2v.subjects import COLOURS, SubjectScene, layer_homography

MATCH_SIDE = 384  # frames are searched at this width
SEARCH_MARGIN = 0.08  # share of the frame on each side the template leaves free
MIN_SCORE = 0.5  # a weaker best match: not located
MIN_VISIBLE = 0.4  # less of the subject in view than this share: not measured in that frame
TOLERANCE_PCT = 3.0
DEPTH_TOLERANCE_PCT = 5.0
MIN_LOCATED_SHARE = 0.5


def _planned_frame(trajectory: CameraTrajectory, index: int, n_video: int):
    """The plan's camera at the same fraction of the move as video frame `index`."""
    n = len(trajectory.frames)
    if n_video == n or n_video <= 1:
        return trajectory.frames[min(index, n - 1)]
    from d2v.interpolate import camera_inbetweens

    return camera_inbetweens(trajectory.frames, np.array([index * (n - 1) / (n_video - 1)]))[0]


def locate(scene: SubjectScene, layer, trajectory: CameraTrajectory, frame_cam, picture: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(planned, found) subject centres in frame pixels and the match score, or None when the
    subject is too little in view or no match is good enough."""
    h, w = picture.shape[:2]
    k = min(1.0, MATCH_SIDE / w)
    # The template, as the plan shows it in this frame, at the search size.
    small = trajectory.model_copy(update={"width": max(2, round(trajectory.width * k)),
                                          "height": max(2, round(trajectory.height * k))})
    kt = small.width / trajectory.width
    cam = frame_cam.model_copy(update={"fx": frame_cam.fx * kt, "fy": frame_cam.fy * kt,
                                       "cx": frame_cam.cx * kt, "cy": frame_cam.cy * kt})
    full = scene.layer_depth(layer, trajectory)
    M = layer_homography(trajectory, cam, full) @ layer.motion(frame_cam.time_s)
    planned = camera.apply_homography(M, layer.centre[None])[0]
    # Where the subject would lie in an unbounded frame: how much of it is in view.
    pts = camera.apply_homography(M, np.argwhere(layer.mask)[::max(1, int(layer.mask.sum()) // 2000), ::-1] + 0.5)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < small.width) & (pts[:, 1] >= 0) & (pts[:, 1] < small.height)
    if inside.mean() < MIN_VISIBLE:
        return None
    rgb, alpha = scene.sprite_into_frame(layer, small, cam)
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) < 16:
        return None
    # The template keeps SEARCH_MARGIN of the frame free on every side, so it can slide even
    # where the subject fills the frame.
    mx, my = round(SEARCH_MARGIN * small.width), round(SEARCH_MARGIN * small.height)
    x0, x1 = max(xs.min(), mx), min(xs.max() + 1, small.width - mx)
    y0, y1 = max(ys.min(), my), min(ys.max() + 1, small.height - my)
    if x1 - x0 < 4 or y1 - y0 < 4 or (alpha[y0:y1, x0:x1] > 0.5).sum() < 16:
        return None
    tmpl = np.clip(rgb[y0:y1, x0:x1] / np.maximum(alpha[y0:y1, x0:x1, None], 1e-3), 0, 255).astype(np.float32)
    tmask = (alpha[y0:y1, x0:x1] > 0.5).astype(np.float32)
    target = cv2.resize(picture, (small.width, small.height), interpolation=cv2.INTER_AREA).astype(np.float32) \
        if picture.shape[1] != small.width else picture.astype(np.float32)
    if tmpl.shape[0] >= target.shape[0] or tmpl.shape[1] >= target.shape[1]:
        return None
    scores = cv2.matchTemplate(target, tmpl, cv2.TM_CCOEFF_NORMED, mask=np.repeat(tmask[:, :, None], 3, axis=2))
    scores = np.nan_to_num(scores, nan=-1.0, posinf=-1.0, neginf=-1.0)
    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
    if best < MIN_SCORE:
        return None
    found = planned + np.array([bx - x0, by - y0], float)
    return planned / kt, found / kt, float(best)


def subject_places(scene: SubjectScene, trajectory: CameraTrajectory, frame_cam, width: int, height: int,
                   grow_px: int) -> np.ndarray:
    """(height, width) bool: where the plan puts the subjects in a frame, and the holes they left,
    grown by grow_px."""
    k = width / trajectory.width
    sized = trajectory.model_copy(update={"width": width, "height": height})
    cam = frame_cam.model_copy(update={"fx": frame_cam.fx * k, "fy": frame_cam.fy * k, "cx": frame_cam.cx * k,
                                       "cy": frame_cam.cy * k})
    H = camera.frame_homography(cam)
    places = cv2.warpPerspective(scene.hole.astype(np.uint8), camera.to_opencv(H), (width, height),
                                 flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    for layer in scene.layers:
        places |= scene.sprite_into_frame(layer, sized, cam)[1] > 0.05
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1,) * 2)
    return cv2.dilate(places.astype(np.uint8), kernel) > 0


def camera_view(frames: Mapping[int, np.ndarray], scene: SubjectScene, trajectory: CameraTrajectory,
                n_frames: int) -> dict[int, np.ndarray]:
    """The frames as the camera's check should see them: the subjects' planned places and old
    places filled from each frame's own pixels around them (`d2v.inpaint`), so things that move
    on their own do not pass for the camera moving. Measure them against `scene.plate`."""
    from d2v.inpaint import inpaint_hole

    out = {}
    for i, picture in frames.items():
        picture = np.asarray(picture)
        h, w = picture.shape[:2]
        places = subject_places(scene, trajectory, _planned_frame(trajectory, i, n_frames), w, h,
                                max(2, round(0.01 * w)))
        out[i] = inpaint_hole(picture, places, source=~places) if places.any() else picture
    return out


def measure_subjects(frames: Mapping[int, np.ndarray], scene: SubjectScene, trajectory: CameraTrajectory,
                     n_frames: int) -> list[SubjectFidelity]:
    """Each subject of `scene` in the sampled `frames` ({index: RGB}) against its track."""
    tol = DEPTH_TOLERANCE_PCT if scene.plate_depth is not None else TOLERANCE_PCT
    out = []
    for layer in scene.layers:
        results = []
        for i in sorted(frames):
            picture = np.asarray(frames[i])
            cam = _planned_frame(trajectory, i, n_frames)
            k = picture.shape[1] / trajectory.width
            if abs(k - 1.0) > 1e-6:
                picture = cv2.resize(picture, (trajectory.width, trajectory.height), interpolation=cv2.INTER_AREA)
            hit = locate(scene, layer, trajectory, cam, picture)
            planned_img = layer.planned_at(cam.time_s)
            if hit is None:
                results.append(SubjectFrame(index=i, located=False, planned=_r(planned_img)))
                continue
            planned_px, found_px, score = hit
            # Back onto the photo through the layer's own plane, for fidelity.png.
            to_img = np.linalg.inv(layer_homography(trajectory, cam, scene.layer_depth(layer, trajectory)))
            found_img = camera.apply_homography(to_img, found_px[None])[0] - (
                camera.apply_homography(to_img, planned_px[None])[0] - planned_img)
            err = 100.0 * float(np.hypot(*(found_px - planned_px))) / trajectory.width
            results.append(SubjectFrame(index=i, located=True, planned=_r(planned_img), found=_r(found_img),
                                        error_pct=round(err, 3), score=round(score, 3)))
        out.append(_verdict(layer.index, results, tol))
    return out


def measure_with_subjects(frames: Mapping[int, np.ndarray], photo: np.ndarray, trajectory: CameraTrajectory,
                          request, *, n_frames: int, depth: np.ndarray | None = None,
                          scene: SubjectScene | None = None) -> tuple[FidelityReport, SubjectScene | None]:
    """The whole path check of a job: the camera (`d2v.fidelity`; with subjects, on the frames'
    background against the photo's, `camera_view`) and each subject. Returns the report and the
    SubjectScene (built here when the job has subjects and the caller had none)."""
    from d2v.fidelity import measure_fidelity

    if request.subjects and scene is None:
        scene = SubjectScene.build(photo, depth, request)
    report = measure_fidelity(camera_view(frames, scene, trajectory, n_frames) if scene else frames,
                              scene.plate if scene else photo, trajectory, n_frames=n_frames, depth=depth,
                              motion_blur=request.motion_blur, blur_samples=request.motion_blur_samples)
    if scene is not None:
        report = combine(report, measure_subjects(frames, scene, trajectory, n_frames))
    return report, scene


def _r(xy) -> list[float]:
    return [round(float(v), 2) for v in xy]


def _verdict(index: int, results: list[SubjectFrame], tol: float) -> SubjectFidelity:
    located = [r for r in results if r.located]
    base = dict(subject=index, located=len(located), sampled=len(results), tolerance_pct=tol, frames=results)
    need = max(2, int(np.ceil(MIN_LOCATED_SHARE * len(results)))) if len(results) > 1 else 1
    if not located:
        return SubjectFidelity(verdict="unmeasured", reason=f"subject {index} was not found in any sampled frame",
                               **base)
    errs = np.array([r.error_pct for r in located])
    worst = located[int(errs.argmax())]
    stats = dict(worst_pct=round(float(errs.max()), 3), median_pct=round(float(np.median(errs)), 3))
    off = [r for r in located if r.error_pct > tol]
    if off and (len(located) >= need or len(off) >= 2):
        return SubjectFidelity(verdict="missed", reason=f"subject {index} is {worst.error_pct:.1f}% of the view "
                               f"width off its path in frame {worst.index} (tolerance {tol:g}%)", **stats, **base)
    if len(located) < need:
        return SubjectFidelity(verdict="unmeasured", reason=f"subject {index} was found in only {len(located)} of "
                               f"{len(results)} sampled frames ({need} needed)", **stats, **base)
    return SubjectFidelity(verdict="followed", **stats, **base)


def combine(report: FidelityReport, subjects: list[SubjectFidelity]) -> FidelityReport:
    """The job's verdict with its subjects: followed only when the camera and every subject
    followed; missed when the camera or any subject missed (a subject that went elsewhere can
    also leave the camera unmeasurable: the miss is what the user needs to hear)."""
    report.subjects = subjects
    if report.verdict == "missed":
        return report
    missed = next((s for s in subjects if s.verdict == "missed"), None)
    if missed is not None:
        report.verdict, report.reason = "missed", missed.reason
        return report
    if report.verdict == "followed":
        unmeasured = next((s for s in subjects if s.verdict == "unmeasured"), None)
        if unmeasured is not None:
            report.verdict, report.reason = "unmeasured", unmeasured.reason
    return report


def _bgr(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)  # fidelity.png is built in RGB


def draw_subjects(picture: np.ndarray, scene: SubjectScene, subjects: list[SubjectFidelity], scale: float) -> None:
    """On fidelity.png (RGB, the photo at `scale`): each subject's outline, its track (where its
    centre should go; a thin line) and where it was found (dots), in its colour; in place."""
    thick = max(1, round(max(picture.shape[:2]) / 400))
    shift = 4

    def pts(xy) -> np.ndarray:
        return np.round(np.asarray(xy, np.float64).reshape(-1, 2) * scale * (1 << shift)).astype(np.int32)

    for layer in scene.layers:
        colour = _bgr(COLOURS[layer.index % len(COLOURS)])
        contours, _ = cv2.findContours(layer.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            cv2.polylines(picture, [pts(c[:, 0, :] + 0.5)], True, colour, thick, cv2.LINE_AA, shift)
        track = layer.track.xy - layer.track.xy[0] + layer.centre
        cv2.polylines(picture, [pts(track)], False, colour, thick * 2, cv2.LINE_AA, shift)
        measured = next((s for s in subjects if s.subject == layer.index), None)
        if measured is None:
            continue
        for f in measured.frames:
            if f.located and f.found is not None:
                p = pts([f.found])[0]
                cv2.circle(picture, (int(p[0]), int(p[1])), (thick * 3) << shift, colour, -1, cv2.LINE_AA, shift)
                cv2.circle(picture, (int(p[0]), int(p[1])), (thick * 3) << shift, (0, 0, 0), 1, cv2.LINE_AA, shift)
