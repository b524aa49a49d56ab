"""fgdepth: foreground mask and depth from a (background, scene) pair."""

__version__ = "0.1.0"
