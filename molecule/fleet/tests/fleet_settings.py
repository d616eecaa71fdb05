"""What the fleet's tests share: the Open WebUI account they create (the first account, so the admin)."""

ADMIN = {"name": "Fleet Admin", "email": "admin@example.org", "password": "not-a-real-secret-1"}
