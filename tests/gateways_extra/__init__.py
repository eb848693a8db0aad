"""Gateways that exist only in the tests, registered from them: what adding a gateway takes, shown."""
