"""Print canonical records: JSON lines, CSV, text, or a jinja2 template."""
