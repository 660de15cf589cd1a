"""Data phase: dataset layouts, decoding, ingest, patient-level split, class weights, synthetic phantoms."""
