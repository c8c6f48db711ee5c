"""The command line: `mailbot run | demo | cases | case | plan | explain | import | doctor | …` (`main.py`).

Nothing outside this package imports it; the wiring it uses lives in `mailbot.wiring`.
"""
