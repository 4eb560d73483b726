"""Running the app: jobs, the scheduler, start-up, backups, download links, keys, shared formats."""
