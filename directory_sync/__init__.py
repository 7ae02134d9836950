"""Mirroring accounts and groups from Active Directory or OpenLDAP (ldap3), and password checks by LDAP bind.

    presets      the two attribute mappings and how a source's settings refine them
    entries      raw LDAP entries → DirectoryUser / DirectoryGroup (ids, DNs, change markers)
    ldap         connections: failover, TLS rules, timeouts, paged searches, error classes
    snapshot     what one run reads from the directory (full, or incremental from the high-water mark)
    membership   nested groups → effective memberships
    changes      the plan of a run as data (also what --dry-run shows)
    plan         the difference between the directory and the accounts in the database
    groups       the same for groups and (nested) memberships
    safety       the guard that refuses a suspicious plan
    apply        writing a plan (one transaction), ending sessions of disabled accounts
    state        high-water marks, the lease that lets one process sync a source, run history
    engine       one run from start to end: lease, read, plan, guard, apply, history, audit
    bind         sign-in of directory accounts by binding as the user
    scheduler    runs each source on its interval inside ``idp serve``
    cli          ``idp sync ldap``: progress, dry-run diff, summary

Nothing here imports Starlette: the engine is plain functions over the database and the directory.
"""
