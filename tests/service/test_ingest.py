"""The webhook's signature check: only the exact signature of the exact body, inside the replay window."""

from __future__ import annotations

from service.ingest import sign, signature_problem

BODY = b'{"events": [{"user_id": 1, "item_id": 2}]}'


def test_only_the_exact_signature_inside_the_window_passes():
    good = sign("secret", 1000, BODY)
    assert signature_problem("secret", "1000", good, BODY, window_s=300, now=1100) is None
    assert "window" in signature_problem("secret", "1000", good, BODY, window_s=300, now=1400)
    assert "match" in signature_problem("secret", "1000", good, BODY + b" ", window_s=300, now=1100)
    assert "match" in signature_problem("other", "1000", good, BODY, window_s=300, now=1100)
    assert "header" in signature_problem("secret", None, good, BODY, window_s=300, now=1100)
    assert "unix seconds" in signature_problem("secret", "soon", good, BODY, window_s=300, now=1100)


def test_a_non_ascii_signature_is_refused_not_an_error():
    assert "match" in signature_problem("secret", "1000", "sha256=\u00e9", BODY, window_s=300, now=1100)
