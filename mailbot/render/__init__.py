"""Rendering: decisions into customers' and engineers' mail (Jinja templates) and into MIME messages."""
