"""The dashboard (``jobtrack ui``, extra ``ui``) and what it shares with ``jobtrack report`` (standard library only).

``svg`` draws the charts, ``data`` reads what a page shows, ``pages`` and ``jobpage`` write the HTML;
only ``app`` and ``server`` import the web stack (Starlette, uvicorn), so the report works on a core
install (#16).
"""
