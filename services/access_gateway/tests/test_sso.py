"""sso links: OpenID Connect authorization code with PKCE against the tenant's provider;
the signed-in address must be the invited one, or in a domain the policy allows."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import pytest
from blume_access_gateway.models import LinkGrant

from services.access_gateway.tests.conftest import PUBLIC, SSO_ISSUER, Harness
from services.access_gateway.tests.fake_idp import query_of
from services.access_gateway.tests.test_view_study import press


def sso_link(harness: Harness, **kwargs: Any) -> tuple[str, Any]:
    return harness.add_link("sso-hospital", auth="sso", **kwargs)


def sign_in(harness: Harness, client: Any, token: str, email: str, **claims: Any) -> Any:
    """Press View study, sign in at the provider as ``email``, follow it back."""
    to_provider = press(client, token)
    assert to_provider.status_code == 303
    back = harness.idp.authorize(query_of(to_provider.headers["location"]), email, claims)
    return client.get(back.removeprefix(PUBLIC))


def test_pressing_view_goes_to_the_provider_with_pkce(harness: Harness) -> None:
    """A 303 to the tenant's provider: code flow, S256 challenge, state, nonce, our callback."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        to_provider = press(client, token)
    location = to_provider.headers["location"]
    assert location.startswith(f"{SSO_ISSUER}/authorize?")
    query = query_of(location)
    assert query["response_type"] == "code"
    assert query["client_id"] == "blume-share"
    assert query["redirect_uri"] == f"{PUBLIC}/sso/callback"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["state"]
    assert query["nonce"]
    assert token not in location
    cookie = SimpleCookie()
    cookie.load(to_provider.headers["set-cookie"])
    assert cookie["__Host-blume_oidc"]["samesite"] == "lax"  # survives the provider's redirect


def test_the_link_page_lets_its_form_lead_to_the_provider(harness: Harness) -> None:
    """An sso link's page names the provider in form-action, and only there."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        csp = client.get(f"/s/{token}").headers["content-security-policy"]
    assert f"form-action 'self' {SSO_ISSUER}" in csp
    assert csp.count(SSO_ISSUER) == 1


def test_the_invited_recipient_signs_in_and_gets_the_study(harness: Harness) -> None:
    """Signed in as the invited address: redirect to the viewer; accessed by sso, as whom."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        granted = sign_in(harness, client, token, "Bob.Jones@clinic.example")
    assert granted.status_code == 303
    assert granted.headers["location"].startswith("https://viewer.test/view?ticket=")
    [accessed] = harness.transport.events("share.link.accessed")
    assert accessed["data"]["auth_method"] == "sso"
    assert accessed["data"]["signed_in_as"] == "bob.jones@clinic.example"
    [token_request] = harness.idp.token_requests
    assert token_request["code_verifier"]  # PKCE: the provider checked it against the challenge


def test_an_allowed_domain_passes(harness: Harness) -> None:
    """Someone else at a domain the policy allows gets in."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        granted = sign_in(harness, client, token, "colleague@partner.example")
    assert granted.status_code == 303
    assert [grant.auth_method for grant in harness.rows(LinkGrant)] == ["sso"]


def test_someone_else_is_refused_as_a_mismatch(harness: Harness) -> None:
    """Another address in another domain: 403, sso_mismatch denial, no grant."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        refused = sign_in(harness, client, token, "mallory@elsewhere.example")
    assert refused.status_code == 403
    assert "You signed in with another account" in refused.text
    assert harness.rows(LinkGrant) == []
    [denied] = harness.transport.events("share.link.denied")
    assert denied["data"]["reason"] == "sso_mismatch"


def test_an_unverified_address_does_not_count(harness: Harness) -> None:
    """The provider says the address is unverified: not accepted as the invited one."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        refused = sign_in(harness, client, token, "bob.jones@clinic.example", email_verified=False)
    assert refused.status_code == 403
    assert harness.rows(LinkGrant) == []


def test_an_address_without_a_verified_claim_is_refused_by_default(harness: Harness) -> None:
    """A provider that omits email_verified is not trusted with the invited address."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        refused = sign_in(harness, client, token, "bob.jones@clinic.example", email_verified=None)
    assert refused.status_code == 403
    assert harness.rows(LinkGrant) == []


def test_a_tenant_may_trust_a_provider_that_omits_the_claim(harness: Harness) -> None:
    """trust_unverified_email accepts an omitted claim, never an explicit false."""
    token, _link = harness.add_link("trusting-sso-hospital", auth="sso")
    with harness.client() as client:
        granted = sign_in(harness, client, token, "bob.jones@clinic.example", email_verified=None)
    assert granted.status_code == 303
    token, _link = harness.add_link("trusting-sso-hospital", auth="sso")
    with harness.client() as client:
        refused = sign_in(harness, client, token, "bob.jones@clinic.example", email_verified=False)
    assert refused.status_code == 403


def test_a_forged_state_is_refused(harness: Harness) -> None:
    """A callback whose state is not this browser's round trip: sso_failed, no token request."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        to_provider = press(client, token)
        params = {**query_of(to_provider.headers["location"]), "state": "forged"}
        back = harness.idp.authorize(params, "bob.jones@clinic.example")
        refused = client.get(back.removeprefix(PUBLIC))
    assert refused.status_code == 403
    assert harness.idp.token_requests == []
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "sso_failed"


def test_an_id_token_for_another_nonce_is_refused(harness: Harness) -> None:
    """An ID token replayed from another sign-in (wrong nonce): sso_failed."""
    token, _link = sso_link(harness)
    harness.idp.id_token_overrides["nonce"] = "someone-elses"
    with harness.client() as client:
        refused = sign_in(harness, client, token, "bob.jones@clinic.example")
    assert refused.status_code == 403
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "sso_failed"


def test_an_id_token_for_another_client_is_refused(harness: Harness) -> None:
    """An ID token whose audience is another application: sso_failed."""
    token, _link = sso_link(harness)
    harness.idp.id_token_overrides["aud"] = "another-app"
    with harness.client() as client:
        refused = sign_in(harness, client, token, "bob.jones@clinic.example")
    assert refused.status_code == 403
    assert harness.rows(LinkGrant) == []


def test_the_provider_reporting_an_error_is_a_failed_sign_in(harness: Harness) -> None:
    """?error=access_denied from the provider: sso_failed, nothing granted."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        press(client, token)
        refused = client.get("/sso/callback?error=access_denied&state=x")
    assert refused.status_code == 403
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "sso_failed"


def test_a_callback_without_a_round_trip_is_refused(harness: Harness) -> None:
    """No sign-in cookie (a stray or forged callback): a failure page, nothing else."""
    with harness.client() as client:
        refused = client.get("/sso/callback?code=abc&state=def")
    assert refused.status_code == 403
    assert harness.transport.events() == []


def test_a_missing_client_secret_is_unavailable_not_an_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy names a secret variable that is not set: 503, nothing granted."""
    token, _link = sso_link(harness)
    monkeypatch.delenv("BLUME_TEST_SSO_SECRET")
    with harness.client() as client:
        refused = press(client, token)
    assert refused.status_code == 503
    assert harness.rows(LinkGrant) == []


def test_an_allowed_domain_address_our_parser_refuses_is_a_mismatch_not_a_500(
    harness: Harness,
) -> None:
    """ "x@evil"@partner.example ends in an allowed domain but is no address our contracts
    take: 403 sso_mismatch, audited as a denial, no grant."""
    token, _link = sso_link(harness)
    with harness.client() as client:
        refused = sign_in(harness, client, token, '"x@evil"@partner.example')
    assert refused.status_code == 403
    assert "You signed in with another account" in refused.text
    assert harness.rows(LinkGrant) == []
    [denied] = harness.transport.events("share.link.denied")
    assert denied["data"]["reason"] == "sso_mismatch"
