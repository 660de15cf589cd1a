"""Modeling phase: layers, model factories, feeding, callbacks, training, inference, Grad-CAM."""
