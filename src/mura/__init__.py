"""mura: abnormality detection in musculoskeletal radiographs (MURA, Bone Fracture Multi-Region).

A pre-screening aid for radiologists, never a replacement. See README.md and docs/.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
