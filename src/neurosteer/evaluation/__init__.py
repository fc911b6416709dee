"""Measuring a steering: behaviours (training contrast, held-out data, their metrics), the
evaluator shared by every command, and the bounds a setting must stay within."""
