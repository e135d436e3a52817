"""The Lamassu source (docs/sources.md, "Lamassu"): the connection to a Lamassu
server's PostgreSQL (connection), its rows as settlements (mapping), the operator's
configuration (config) and the poller that lands them (poller)."""
