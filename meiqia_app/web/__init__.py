"""HTTP-level pieces of the app: session routes and the event guard."""
