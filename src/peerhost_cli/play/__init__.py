"""The play loop: ``phs host`` runs the world's server under the session lease, ``phs join``
finds the host and connects to it.

The parts are small and separately testable: :mod:`.config` (``peerhost.toml`` and
``server.properties``), :mod:`.game` (the server process), :mod:`.saving` (RCON or quiet-file
consistency), :mod:`.tunnel` (cloudflared, direct, none), :mod:`.host` and :mod:`.join` (the two loops).
The lease is kept by :mod:`peerhost_store.sync.keeper`, sessions are reached through
:mod:`peerhost_store.sync.remotes`: this package imports the library, never a ``cmd_*`` module.
"""
