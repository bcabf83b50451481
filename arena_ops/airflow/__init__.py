"""Adapters to Apache Airflow: the REST client (``api``), the deferred wait for a training job (``training``), the
lookup of Airflow connections (``connections``) and the Airflow UI's login for the Arena view (``auth``). The library
itself does not need Airflow; these do."""
