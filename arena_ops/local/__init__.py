"""The embedded default on one machine: ``arena stack`` (``stack``: PostgreSQL, SeaweedFS, a two-node Ray cluster,
the whole Airflow), and ``make demo`` (``demo``, ``demo_model``)."""
