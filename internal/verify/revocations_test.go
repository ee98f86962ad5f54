package verify

import (
	"testing"
	"time"
)

func TestRevocations(t *testing.T) {
	k := testKey(t, "ES256")
	other := "https://other.example"
	cases := []struct {
		name  string
		revs  *Revocations
		token []tokenOpt
		want  Reason
	}{
		{name: "nothing revoked", revs: NewRevocations(nil, nil, nil)},
		{name: "a jti revoked for any issuer", revs: NewRevocations([]RevokedToken{{JTI: "token-1"}}, nil, nil), want: ReasonRevokedToken},
		{name: "a jti revoked for another issuer does not apply",
			revs: NewRevocations([]RevokedToken{{JTI: "token-1", Issuer: other}}, nil, nil)},
		{name: "another jti revoked does not apply", revs: NewRevocations([]RevokedToken{{JTI: "token-2"}}, nil, nil)},
		{name: "a token without jti cannot be revoked by jti",
			revs: NewRevocations([]RevokedToken{{JTI: "token-1"}}, nil, nil), token: []tokenOpt{withoutClaim("jti")}},
		{name: "a subject's token issued before notBefore",
			revs: NewRevocations(nil, []RevokedSubject{{Subject: "alice", NotBefore: t0}}, nil), want: ReasonRevokedSubject},
		{name: "a subject's token issued at notBefore survives",
			revs:  NewRevocations(nil, []RevokedSubject{{Subject: "alice", NotBefore: t0}}, nil),
			token: []tokenOpt{withClaim("iat", t0.Unix())}},
		{name: "a subject's token issued after notBefore survives",
			revs: NewRevocations(nil, []RevokedSubject{{Subject: "alice", NotBefore: t0.Add(-time.Hour)}}, nil)},
		{name: "a subject's token without iat is rejected",
			revs:  NewRevocations(nil, []RevokedSubject{{Subject: "alice", NotBefore: t0.Add(-time.Hour)}}, nil),
			token: []tokenOpt{withoutClaim("iat")}, want: ReasonRevokedSubject},
		{name: "a subject revoked for this issuer",
			revs: NewRevocations(nil, []RevokedSubject{{Subject: "alice", Issuer: issuer, NotBefore: t0}}, nil), want: ReasonRevokedSubject},
		{name: "a subject revoked for another issuer does not apply",
			revs: NewRevocations(nil, []RevokedSubject{{Subject: "alice", Issuer: other, NotBefore: t0}}, nil)},
		{name: "the latest notBefore of a subject wins",
			revs: NewRevocations(nil, []RevokedSubject{
				{Subject: "alice", NotBefore: t0},
				{Subject: "alice", NotBefore: t0.Add(-time.Hour)},
			}, nil), want: ReasonRevokedSubject},
		{name: "a revoked kid", revs: NewRevocations(nil, nil, []string{k.KID}), want: ReasonRevokedKey},
		{name: "another revoked kid does not apply", revs: NewRevocations(nil, nil, []string{"other"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, withOptions(WithRevocations(tc.revs)))
			c, err := v.Verify(newToken(t, k, tc.token...), t0)
			wantReason(t, c, err, tc.want)
		})
	}
}

func TestRevocationsCountTheirEntries(t *testing.T) {
	r := NewRevocations(
		[]RevokedToken{{JTI: "a"}, {JTI: "a"}, {JTI: ""}},
		[]RevokedSubject{{Subject: "s"}, {Subject: "s", Issuer: "i"}},
		[]string{"k", ""},
	)
	if r.Len() != 4 {
		t.Errorf("Len %d, want 4 (duplicates and empty names dropped)", r.Len())
	}
	if !r.KeyRevoked("k") || r.KeyRevoked("") {
		t.Error("KeyRevoked")
	}
	var none *Revocations
	if none.Len() != 0 || none.KeyRevoked("k") {
		t.Error("nil Revocations revokes")
	}
}
