"""Packaging: what turns trained variants into a registered model.

The ``register`` stage (:mod:`.register`), the optimized export and its precision check
(:mod:`.export`) and the model card (:mod:`.model_card`). Never imported by a served process.
"""
