"""Operations: the HTTP endpoint of a peer (health, Prometheus metrics, status, log level)."""
