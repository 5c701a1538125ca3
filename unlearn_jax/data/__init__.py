"""Data: the record contract (records.py) and the embedded synthetic world (world.py)."""
