"""The admin console at ``/admin``: administrators, the service desk and app owners, each limited by role.

``roles`` says who may do what, ``access`` checks it on every request (session with a second factor, role,
CSRF); the page modules are thin over plain functions that the ``idp`` command uses too.
"""
