"""Diagnose models: statistics, probes, receptive fields, patches, sensitivity, figures, recordings."""
