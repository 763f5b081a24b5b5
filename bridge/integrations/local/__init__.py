"""Local outputs: a JSONL file of every record, and readable lines on the console."""
