"""Operations: the HTTP endpoint (/metrics, /healthz, /readyz, /status), systemd notification,
configuration reload. Nothing here decides a request; it reports on and steers the daemon."""
