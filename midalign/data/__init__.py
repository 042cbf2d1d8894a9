"""Data: the offline multiway UDHR text, task formats and prompts, alignment pairs."""
