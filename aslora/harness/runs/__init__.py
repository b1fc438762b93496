"""What a run is and what it records: its settings, its plan (steps, warm-up, ties), the run itself
(``run.run``, what ``train.py`` calls), its directory, its record and report, the lines it prints."""
