"""`mailbot report`: what chasing achieves, from the case timelines (figures), as text, JSON, HTML and mail."""
