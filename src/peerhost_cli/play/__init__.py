"""The play loop: ``phs host`` runs the world's server under the session lease, ``phs join``
finds the host and connects to it.

The parts are small and separately testable: :mod:`.config` (``peerhost.toml`` and
``server.properties``), :mod:`.game` (the server process), :mod:`.saving` (RCON or quiet-file
consistency), :mod:`.tunnel` (cloudflared, direct, none), :mod:`.keeper` (the lease renewed in
the background), :mod:`.host` and :mod:`.join` (the two loops).
"""
