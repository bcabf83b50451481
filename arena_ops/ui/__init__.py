"""The Arena view in the Airflow UI: leaderboards, Elo history, win rates and a battle browser (see plugins/)."""
