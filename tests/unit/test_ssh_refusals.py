"""ssh's words for a host that refused a session (busy) against those of a gone host."""

import pytest

from rk.errors import explain_unreachable, refused_session

pytestmark = pytest.mark.fast

# As ssh 9.2 printed them, through Ansible, against sshd with low MaxSessions and MaxStartups.
MAX_SESSIONS = ("Failed to connect to the host via ssh: mux_client_request_session: session request failed: "
                "Session open refused by peer")
MAX_STARTUPS = ("Failed to connect to the host via ssh: kex_exchange_identification: read: Connection reset by peer",
                "Failed to connect to the host via ssh: kex_exchange_identification: Connection closed by remote host")
GONE = ("Failed to connect to the host via ssh: Connection timed out during banner exchange",
        "Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 2222: Connection timed out",
        "Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 2222: Connection refused",
        "Failed to connect to the host via ssh: Timeout, server 127.0.0.1 not responding.")


def test_a_refused_session_names_maxsessions():
    assert refused_session(MAX_SESSIONS)
    assert explain_unreachable(MAX_SESSIONS)[0] == "the host refused another SSH session (MaxSessions)"


@pytest.mark.parametrize("message", MAX_STARTUPS)
def test_a_connection_closed_in_its_handshake_names_maxstartups(message):
    assert refused_session(message)
    assert explain_unreachable(message)[0] == "the host refused another SSH connection (MaxStartups)"


@pytest.mark.parametrize("message", GONE)
def test_a_silent_or_closed_host_is_never_retried_as_busy(message):
    assert not refused_session(message)
    assert explain_unreachable(message)[0].startswith("unreachable")
