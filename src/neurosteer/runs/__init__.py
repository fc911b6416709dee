"""The jobs that tie the stages together: sweeps and their report, the search (``tune``) and its
report, and the refusal demo."""
