"""mura: abnormality detection in musculoskeletal radiographs (MURA, Bone Fracture Multi-Region).

A pre-screening aid for radiologists, never a replacement. See README.md.
"""

from __future__ import annotations

from mura.stage import set_seed

__all__ = ["set_seed", "__version__"]
__version__ = "0.1.0"
