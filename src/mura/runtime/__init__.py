"""Runtime: what a served process needs and nothing else.

Loading a registered model (:mod:`.predictor`), the served configuration (:mod:`.served_config`),
the Keras and OpenVINO runners (:mod:`.runners`, :mod:`.numeric_precision`), the ensemble's
answer (:mod:`.service`), the MLflow pyfunc (:mod:`.pyfunc`) and the request/response
schema (:mod:`.schema`). Imports nothing from packaging, operations or the apps.
"""
