"""SPANBERT model folder: scripts run as `python data.py` etc. inside it."""
