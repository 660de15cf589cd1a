"""Apps: the HTTP programs people use — the clinicians' web page (:mod:`.web`) and the model server
(:mod:`.model_server`), with the middleware they share (:mod:`.http`).
"""
