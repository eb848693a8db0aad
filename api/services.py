"""The one way routes and middleware reach the service graph of the running app."""

from __future__ import annotations

from flask import Flask, current_app

from services.container import Services

EXTENSION = "payment_services"


def services(app: Flask | None = None) -> Services:
    """The app's `Services` (the current app's when none is given)."""
    return (app or current_app).extensions[EXTENSION]
