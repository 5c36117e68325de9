"""phs host checks before it hosts (issue 13): server.properties read as Java reads it,
settings validated before the lease, world versions and mod lists compared across hosts,
notifications that never block hosting."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerhost_cli.play.config import ConfigError, load_properties, parse_properties


def test_server_properties_are_read_as_java_reads_them(tmp_path: Path) -> None:
    text = ("#Minecraft server properties\n"
            "rcon.password=p\\:ss\\=w\\\\rd\\u00e9\n"
            "motd=A \\u00A7aworld\n"
            "level-name = my\\ world\n"
            "server-port: 25570\n"
            "enable-rcon=true\\\n"
            "    \n")
    values = parse_properties(text)
    assert values["rcon.password"] == "p:ss=w\\rdé"
    assert values["motd"] == "A §aworld" and values["level-name"] == "my world"
    path = tmp_path / "server.properties"
    path.write_text(text, encoding="utf-8")
    props = load_properties(path)
    assert (props.port, props.rcon_enabled, props.rcon_password) == (25570, True, "p:ss=w\\rdé")
    path.write_bytes("rcon.password=caf\xe9\n".encode("iso-8859-1"))  # Java's own encoding
    assert load_properties(path).rcon_password == "café"
    path.write_text("motd=\\u12\n")
    with pytest.raises(ConfigError, match="server.properties: not a valid properties file"):
        load_properties(path)
