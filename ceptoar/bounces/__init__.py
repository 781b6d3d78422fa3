"""What comes back after the relay said 250: each delivery's own return path (`verp.py`), reading
what returns to it (`report.py`) and recording it (`intake.py`).

Nothing is imported here: the mailer needs `verp` alone, not the parsers.
"""
