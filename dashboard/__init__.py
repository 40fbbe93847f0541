"""The what-if dashboard (``servesim dashboard``): two configurations on the same requests.

``app.py`` is the thin Streamlit script; the logic is importable and tested without a browser:
``form`` (widget state <-> config, discovered from ``Config.model_fields``), ``runner`` (cached,
parallel runs; errors as messages), ``charts`` (DataFrame -> plotly figure), ``compare`` and
``cost`` (metrics, deltas, SLO attainment, $ per million tokens), ``breakdown`` (memory and
per-operator rows), ``sweep`` (load sweep), ``advisor`` (binding limit, re-simulated remedies),
``validation`` (the committed sim-versus-real reports); ``widgets`` and ``views`` draw them.
Nothing here imports ``realexec``.
"""
