"""Python API: ``Predictor.load(uri).predict_study(views)``.

The public entry point for scripts and notebooks; the implementation lives in
:mod:`mura.runtime.predictor`, the one scoring path the CLI, the web UI and the
DICOM node share with ``mlflow models serve``. A pre-screening suggestion for a
radiologist, never a diagnosis.
"""

from mura.runtime.predictor import Predictor, StudyResult, ViewInput, ViewResult

__all__ = ["Predictor", "StudyResult", "ViewInput", "ViewResult"]
