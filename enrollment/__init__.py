"""Self-service account pages (``/account``): the user's second factors, recovery codes, trusted browsers and
sign-in sessions.

One module per thing the user manages: ``overview`` (the page), ``totp``, ``webauthn`` and ``phone`` (adding
a factor), ``factors`` (renaming and removing), ``recovery`` (codes), ``sessions`` (signing out, trusted
browsers); ``access`` holds the checks every page makes first (session, fresh sign-in, CSRF, input) and
``routes`` the list that ``idp.app`` mounts. The factors themselves are ``idp.factors``; nothing here
touches a secret other than through it.
"""
