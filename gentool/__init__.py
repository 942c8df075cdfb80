"""gentool: a plugin-based command-line toolkit for image generative models.

This module stays import-light (no torch) so that `gentool --help` starts fast.
"""

__version__ = "0.1.0"
