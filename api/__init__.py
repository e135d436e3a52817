"""HTTP plumbing for views_api.py: the route class that words every error (route),
who is calling (auth), and the Lamassu connection's routes (lamassu)."""
