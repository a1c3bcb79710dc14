"""A development and test key broker speaking Trustee's KBS protocol (RCAR, 0.4.0).

:mod:`~copra.attest.kbs.store` (SQLite), :mod:`~copra.attest.kbs.broker` (sessions,
appraisal, tokens, resources), :mod:`~copra.attest.kbs.app` (the flask HTTP layer) and
:mod:`~copra.attest.kbs.cli` (``copra kbs``). See docs/attestation-protocol.md.
"""
