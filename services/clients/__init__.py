"""Clients of the other services of the platform: trips, riders and drivers."""
