"""Self-service account pages (``/account``): enrolling and managing second factors, recovery codes and
one's own sessions. Filled by the second-factor issue; nothing is served from here yet."""
