"""d2v: a drawn path on a photo becomes a camera move and a video.

The library: every pipeline stage works without Ray. See README.md and DESIGN.md.
"""

__version__ = "0.1.0"
