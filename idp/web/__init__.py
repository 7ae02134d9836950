"""The web layer's shared parts: templates and themes, CSRF, cookies, security headers, error pages."""
