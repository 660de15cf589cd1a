"""Integrations with hospital systems: the DICOM node (PACS in, DICOM results out)."""
