"""The names a request may use and what each means to the viewer: camera effects, post
effects, named looks. Plain data, importable without pydantic or numpy, so that `d2v --help`
and the listing commands start fast; d2v.models (which validates requests) re-exports them.
"""

# name -> what the viewer sees. Order is the order `d2v effects` prints.
EFFECTS: dict[str, str] = {
    "auto": "picks an effect from the path's shape: straight -> zoom_in or pan (parallax for a horizontal "
    "stroke when there is depth), closed loop -> orbit, spiral -> spiral, otherwise pan",
    "zoom_in": "pushes in along the path (about 1x -> 3x); the last frame is centred on the path's end",
    "pull_back": "starts close on the path's start, travels the path while pulling back to the full view",
    "pan": "constant zoom (1.5x, more for long strokes so the view can follow all of it, up to 3x); "
    "the view's centre follows the path",
    "orbit": "the camera arcs (20 degrees, 30 with depth) around the path's centre; drawn clockwise it swings right, "
    "counter-clockwise left",
    "dolly_zoom": "moves toward the path's end while the lens widens so the subject keeps its size and the "
    "background changes scale (a depth map gives true parallax; without one the subject is lifted off the "
    "background around the path's end)",
    "spiral": "zooms in with roll; the picture turns the way the spiral was drawn",
    "earth_zoom_out": "exponential pull back from about 10x at the path's start to the full view",
    "crash_zoom": "a hold, then a very fast push in to the path's end",
    "parallax": "the camera trucks sideways along the drawn direction, so near things slide past far ones "
    "(true parallax with depth; without it a stand-in depth lifts the stroke's middle off the background)",
}
# Post effects, applied in the request's order after upscaling, before encoding (d2v.post).
POST_EFFECTS: dict[str, str] = {
    "reverse": "the clip plays backwards",
    "boomerang": "forwards then backwards (the turn frame is not doubled)",
    "glitch": "seeded RGB split, block displacement and scanline bursts on a share of frames (glitch_amount)",
    "mirror_fold": "the picture folds like paper along a line through the path's centre, in perspective",
    "bullet_time": "the scene freezes mid-clip while the camera keeps moving around the path's centre, with "
    "speed ramps in and out",
    "tenet": "a region around the path's end plays backwards while the rest plays forwards, with a soft seam",
}

# Named colour grades (d2v.looks); a request may instead name a `.cube` 3D LUT that travels with the job.
LOOKS: dict[str, str] = {
    "natural": "no grade: the photo's own colours",
    "cinematic": "gentle S-curve, lifted blacks, slightly cool shadows and warm highlights",
    "vibrant": "richer saturation and contrast",
    "noir": "high-contrast black and white",
    "teal_orange": "teal shadows, orange skin tones and highlights",
    "warm": "warmer white balance",
    "cool": "cooler white balance",
    "faded": "lifted blacks, lowered contrast and saturation, like old film",
}
LUT_SUFFIX = ".cube"
