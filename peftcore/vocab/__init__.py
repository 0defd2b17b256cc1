"""The words every layer shares, with nothing beneath them but the foundation.

- ``record``: the case record's fields (typed), its cost figures with unit and direction;
- ``quantities``: the names of a record's numbers that gates and reports address, and tolerances;
- ``metrics``: every built-in metric's name, direction, inputs and kind of uncertainty;
- ``variants``: the deployment variants a profile may list.

Specs, records, gates, the stages and the report all read them; the code behind a name (a
metric's function, a variant's build) lives in its stage. Nothing here imports torch, pandas or
another peftcore package but the foundation (errors, units, stats).
"""
