-- Radiologists' feedback (mura serve-ui / dicom-node --feedback-dir, MURA_FEEDBACK_DB): its own database.
CREATE DATABASE mura_feedback OWNER mura;
