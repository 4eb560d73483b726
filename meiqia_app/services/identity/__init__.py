"""Who is who and who may do what: logging in, sessions, users, teams, roles and permissions."""
