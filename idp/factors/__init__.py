"""Second factors as plain functions, used by the login flow and by self-service enrollment alike:
``totp``, ``sms`` (with its gateways), ``webauthn``, ``recovery`` codes, ``trusted_devices``, and
``policy``, which decides what a sign-in needs. Nothing here imports the web framework."""
