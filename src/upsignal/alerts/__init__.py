"""Alerts: tier transitions and their delivery to destinations."""
