"""One module a verb. Each function here is the API; rk.cli only parses and prints."""
