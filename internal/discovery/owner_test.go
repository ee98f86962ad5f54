package discovery

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type claimOption func(*Claimant)

func createdAt(d time.Duration) claimOption { return func(c *Claimant) { c.Created = t0.Add(d) } }
func claimed(issuer string, since time.Duration) claimOption {
	return func(c *Claimant) { c.Claimed, c.ClaimedSince = issuer, t0.Add(since) }
}

func claimant(ns, uid, issuer string, opts ...claimOption) Claimant {
	c := Claimant{Namespace: ns, Name: "sk", UID: uid, Issuer: issuer, Created: t0}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func TestIssuerKey(t *testing.T) {
	tests := []struct {
		name, a, b string
		same       bool
	}{
		{"a trailing slash names the same issuer", "https://x.example/a", "https://x.example/a/", true},
		{"the host is compared without case", "https://X.Example/a", "https://x.example/a", true},
		{"the scheme does not matter: the server answers both", "http://x.example/a", "https://x.example/a", true},
		{"port 443 on http is the same place: the scheme is unknown behind an ingress", "http://x.example:443/a", "https://x.example/a", true},
		{"a default https port is the same issuer", "https://x.example:443/a", "https://x.example/a", true},
		{"a default http port is the same issuer", "http://x.example:80/a", "http://x.example/a", true},
		{"a trailing dot in the host is the same issuer", "https://x.example./a", "https://x.example/a", true},
		{"dot segments and doubled slashes are cleaned", "https://x.example/b/../a//", "https://x.example/a", true},
		{"percent-encoding of an unreserved letter is decoded", "https://x.example/%61", "https://x.example/a", true},
		{"userinfo does not make another issuer", "https://u@x.example/a", "https://x.example/a", true},
		{"the root with and without a slash is one issuer", "https://x.example", "https://x.example/", true},
		{"the path keeps its case", "https://x.example/A", "https://x.example/a", false},
		{"another port is another issuer", "https://x.example:8443/a", "https://x.example/a", false},
		{"another host is another issuer", "https://y.example/a", "https://x.example/a", false},
		{"a sub-path is another issuer", "https://x.example/a/b", "https://x.example/a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := IssuerKey(tt.a)
			if err != nil {
				t.Fatal(err)
			}
			b, err := IssuerKey(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if (a == b) != tt.same {
				t.Errorf("IssuerKey(%q) = %v, IssuerKey(%q) = %v; same = %v, want %v", tt.a, a, tt.b, b, a == b, tt.same)
			}
		})
	}
}

func TestOwners(t *testing.T) {
	const iss = "https://auth.example.com/team"
	tests := []struct {
		name      string
		claimants []Claimant
		want      string // UID of the owner of iss
	}{
		{
			name:      "a lone claimant owns its issuer",
			claimants: []Claimant{claimant("a", "uid-a", iss)},
			want:      "uid-a",
		},
		{
			name:      "the oldest unclaimed claimant owns it",
			claimants: []Claimant{claimant("b", "uid-b", iss, createdAt(time.Minute)), claimant("a", "uid-a", iss)},
			want:      "uid-a",
		},
		{
			name:      "created in the same second, the lower UID owns it",
			claimants: []Claimant{claimant("b", "uid-b", iss), claimant("a", "uid-a", iss)},
			want:      "uid-a",
		},
		{
			name: "a recorded claim beats an older claimant that edited its issuer later",
			claimants: []Claimant{
				claimant("old", "uid-a", iss, createdAt(-24*time.Hour)),
				claimant("owner", "uid-z", iss, createdAt(time.Hour), claimed(iss, time.Hour)),
			},
			want: "uid-z",
		},
		{
			name: "a claim recorded in another spelling of the issuer still holds",
			claimants: []Claimant{
				claimant("old", "uid-a", iss+"/", createdAt(-24*time.Hour)),
				claimant("owner", "uid-z", "https://AUTH.example.com/team", createdAt(time.Hour), claimed(iss+"/", time.Hour)),
			},
			want: "uid-z",
		},
		{
			name: "a claim on another issuer is no claim on this one",
			claimants: []Claimant{
				claimant("owner", "uid-a", iss),
				claimant("mover", "uid-b", iss, createdAt(-time.Hour), claimed("https://auth.example.com/other", 0)),
			},
			want: "uid-b",
		},
		{
			name: "of two recorded claims the earlier one wins, whatever the ages",
			claimants: []Claimant{
				claimant("a", "uid-a", iss, createdAt(-time.Hour), claimed(iss, 2*time.Second)),
				claimant("b", "uid-b", iss, createdAt(time.Hour), claimed(iss, time.Second)),
			},
			want: "uid-b",
		},
		{
			name: "of two claims recorded in the same second the older object wins",
			claimants: []Claimant{
				claimant("b", "uid-b", iss, createdAt(time.Second), claimed(iss, time.Hour)),
				claimant("a", "uid-a", iss, claimed(iss, time.Hour)),
			},
			want: "uid-a",
		},
		{
			name: "a squatter spelling the issuer differently is still a squatter",
			claimants: []Claimant{
				claimant("owner", "uid-z", iss, claimed(iss, 0)),
				claimant("s1", "uid-1", "HTTP://Auth.Example.COM:443/team/", createdAt(-time.Hour)),
				claimant("s2", "uid-2", "https://auth.example.com/x/../team", createdAt(-time.Hour)),
			},
			want: "uid-z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := IssuerKey(iss)
			owners := Owners(tt.claimants)
			if len(owners) != 1 {
				t.Fatalf("got %d issuer keys, want 1: %v", len(owners), owners)
			}
			if got := owners[k].UID; got != tt.want {
				t.Errorf("owner %s, want %s", got, tt.want)
			}
			// The decision does not depend on the order the cache lists objects in.
			rev := append([]Claimant(nil), tt.claimants...)
			for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
				rev[i], rev[j] = rev[j], rev[i]
			}
			if got := Owners(rev)[k].UID; got != tt.want {
				t.Errorf("in reverse order: owner %s, want %s", got, tt.want)
			}
		})
	}
}

func TestOwnersDecidesEachIssuerApart(t *testing.T) {
	var cs []Claimant
	for i := 0; i < 20; i++ {
		cs = append(cs, claimant(fmt.Sprintf("ns%d", i), fmt.Sprintf("uid-%02d", i), "https://x.example/shared", createdAt(time.Duration(20-i)*time.Second)))
	}
	cs = append(cs, claimant("other", "uid-other", "https://x.example/other", createdAt(time.Hour)))
	owners := Owners(cs)
	shared, _ := IssuerKey("https://x.example/shared")
	other, _ := IssuerKey("https://x.example/other")
	if owners[shared].UID != "uid-19" || owners[other].UID != "uid-other" || len(owners) != 2 {
		t.Errorf("owners = %v", owners)
	}
}

func TestOwnersIgnoresUnparsableIssuers(t *testing.T) {
	if got := Owners([]Claimant{claimant("a", "uid-a", "://bad")}); len(got) != 0 {
		t.Errorf("owners = %v, want none", got)
	}
}
