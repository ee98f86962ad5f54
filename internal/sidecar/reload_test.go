package sidecar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// wantStatus sends the token to /api and checks the status and, for a 401, the reason.
func (f *fixture) wantStatus(tok string, status int, reason verify.Reason) {
	f.t.Helper()
	var before float64
	if reason != "" {
		before = f.rejections(reason)
	}
	if resp := f.do("/api", bearer(tok)); resp.status != status {
		f.t.Fatalf("status %d, want %d", resp.status, status)
	}
	if reason != "" && f.rejections(reason)-before != 1 {
		f.t.Fatalf("rejections{reason=%q} did not grow by 1", reason)
	}
}

func TestJWKSRotationIsPickedUpWithoutRestart(t *testing.T) {
	f := newFixture(t)
	oldKey, newKey := f.key, testKey(t, "rotated")
	oldTok, newTok := f.token(), newToken(t, newKey)

	f.wantStatus(oldTok, 200, "") // and now cached
	f.wantStatus(newTok, 401, verify.ReasonUnknownKID)

	f.write(policy.BundleJWKS, jwksDoc(t, oldKey, newKey)) // the next key is published ahead
	f.poll()
	f.wantStatus(newTok, 200, "")
	f.wantStatus(oldTok, 200, "")

	f.write(policy.BundleJWKS, jwksDoc(t, newKey)) // the old key is removed
	f.poll()
	f.wantStatus(oldTok, 401, verify.ReasonUnknownKID) // though it was cached
	f.wantStatus(newTok, 200, "")
	if got := f.reloads(fileJWKS, resultSuccess); got != 3 {
		t.Errorf("reloads{file=jwks,result=success} = %v, want 3 (start and two changes)", got)
	}
}

func TestInvalidFilesKeepTheLastGoodState(t *testing.T) {
	cases := []struct {
		name   string
		file   string
		kind   string
		data   string
		remove bool
	}{
		{name: "a JWKS that is not JSON", file: policy.BundleJWKS, kind: fileJWKS, data: `{"keys": [`},
		{name: "a JWKS holding a private key", file: policy.BundleJWKS, kind: fileJWKS, data: privateJWKS(t)},
		{name: "a JWKS file that disappears", file: policy.BundleJWKS, kind: fileJWKS, remove: true},
		{name: "a policy with a typo in a field name", file: policy.BundlePolicy, kind: filePolicy,
			data: "apiVersion: tokenkeeper.dev/v1alpha1\nkind: TokenPolicy\nspec:\n  issuer: x\n  audiense: [api]\n"},
		{name: "a policy the verifier refuses", file: policy.BundlePolicy, kind: filePolicy,
			data: "kind: TokenPolicy\nspec:\n  issuer: " + testIssuer + "\n  audiences: [api]\n  allowedAlgorithms: [HS256]\n"},
		{name: "a policy with a jwksURI that is not a URL", file: policy.BundlePolicy, kind: filePolicy,
			data: "kind: TokenPolicy\nspec:\n  issuer: " + testIssuer + "\n  audiences: [api]\n  trustedKeys: [{jwksURI: 'file:///etc/passwd'}]\n"},
		{name: "a policy file that disappears", file: policy.BundlePolicy, kind: filePolicy, remove: true},
		{name: "a RevocationList that is not one", file: policy.BundleRevocations, kind: fileRevocations,
			data: "kind: TokenPolicy\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tok := f.token()
			f.wantStatus(tok, 200, "")
			if tc.remove {
				if err := os.Remove(filepath.Join(f.dir, tc.file)); err != nil {
					t.Fatal(err)
				}
			} else {
				f.write(tc.file, []byte(tc.data))
			}
			f.poll()
			f.poll() // unchanged since: not counted again
			if got := f.reloads(tc.kind, resultError); got != 1 {
				t.Errorf("reloads{file=%s,result=error} = %v, want 1", tc.kind, got)
			}
			f.wantStatus(tok, 200, "")
			f.wantStatus(f.token(), 200, "") // a new token verifies in full with the kept state
			if ok, why := f.sc.Ready(); !ok {
				t.Errorf("not ready: %s", why)
			}
		})
	}
}

// privateJWKS is a JWKS that leaks the primary key's private half.
func privateJWKS(t *testing.T) string {
	b, err := testKey(t, "primary").PrivateJWK().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return `{"keys":[` + string(b) + `]}`
}

func TestRevocationsApplyToCachedTokens(t *testing.T) {
	f := newFixture(t)
	expires := metav1.NewTime(t0.Add(time.Hour))
	cases := []struct {
		name   string
		list   *tkv1.RevocationList
		reason verify.Reason
	}{
		{
			name:   "a revoked jti",
			list:   revocationList([]tkv1.RevokedToken{{JTI: "token-1", ExpiresAt: expires}}, nil),
			reason: verify.ReasonRevokedToken,
		},
		{
			name:   "a subject logged out everywhere after the token was issued",
			list:   revocationList(nil, []tkv1.RevokedSubject{{Subject: "alice", NotBefore: metav1.NewTime(t0)}}),
			reason: verify.ReasonRevokedSubject,
		},
		{
			name:   "a revoked key",
			list:   revocationList(nil, nil, f.key.KID),
			reason: verify.ReasonRevokedKey,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := f.token()
			f.wantStatus(tok, 200, "")
			hits, _, _ := f.sc.cacheStats()
			f.wantStatus(tok, 200, "")
			if h, _, _ := f.sc.cacheStats(); h != hits+1 {
				t.Fatalf("the token was not answered from the cache")
			}

			f.write(policy.BundleRevocations, marshalYAML(t, tc.list))
			f.poll()
			f.wantStatus(tok, 401, tc.reason)

			f.write(policy.BundleRevocations, marshalYAML(t, revocationList(nil, nil)))
			f.poll() // an empty list revokes nothing
			f.wantStatus(tok, 200, "")
		})
	}
}

// Revocations fail closed: once a list was applied, a list that disappears or holds an
// entry that would revoke less than it says keeps the last good one.
func TestRevocationsAreKeptWhenTheFileGoesBad(t *testing.T) {
	expires := metav1.NewTime(t0.Add(time.Hour))
	cases := []struct {
		name   string
		change func(f *fixture)
	}{
		{"the file disappears", func(f *fixture) {
			if err := os.Remove(filepath.Join(f.dir, policy.BundleRevocations)); err != nil {
				f.t.Fatal(err)
			}
		}},
		{"a token entry lacks expiresAt", func(f *fixture) {
			f.write(policy.BundleRevocations, []byte("kind: RevocationList\nspec:\n  tokens: [{jti: other}]\n"))
		}},
		{"a subject entry lacks notBefore", func(f *fixture) {
			f.write(policy.BundleRevocations, []byte("kind: RevocationList\nspec:\n  subjects: [{subject: bob}]\n"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tok := f.token()
			f.write(policy.BundleRevocations, marshalYAML(t, revocationList([]tkv1.RevokedToken{{JTI: "token-1", ExpiresAt: expires}}, nil)))
			f.poll()
			f.wantStatus(tok, 401, verify.ReasonRevokedToken)
			tc.change(f)
			f.poll()
			if got := f.reloads(fileRevocations, resultError); got != 1 {
				t.Errorf("reloads{file=revocations,result=error} = %v, want 1", got)
			}
			f.wantStatus(tok, 401, verify.ReasonRevokedToken)
		})
	}
}

// A sidecar started without a revocations file revokes nothing and is ready.
func TestNoRevocationsFileRevokesNothing(t *testing.T) {
	f := newFixture(t)
	if _, err := os.Stat(filepath.Join(f.dir, policy.BundleRevocations)); !os.IsNotExist(err) {
		t.Fatalf("the fixture wrote a revocations file (%v)", err)
	}
	f.wantStatus(f.token(), 200, "")
	if ok, why := f.sc.Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}
}

func TestThePollLoopPicksUpAPolicyChange(t *testing.T) {
	f := newFixture(t, withOptions(func(o *Options) { o.PollInterval = 10 * time.Millisecond }))
	tok := f.token()
	f.wantStatus(tok, 200, "")
	f.write(policy.BundlePolicy, marshalYAML(t, basePolicy(func(tp *tkv1.TokenPolicy) {
		tp.Spec.Audiences = []string{"billing"}
	})))
	eventually(t, "the new policy", func() bool { return f.reloads(filePolicy, resultSuccess) == 2 })
	f.wantStatus(tok, 401, verify.ReasonWrongAudience)
	// The cache counters carry over from the replaced Verifier.
	if hits, misses, _ := f.sc.cacheStats(); misses < 2 {
		t.Errorf("cache stats after a policy swap: hits %d misses %d", hits, misses)
	}
}

// TestAKubeletSymlinkSwapIsPickedUp mounts the bundle as the kubelet does (files are links
// into ..data, itself a link to a timestamped directory, swapped by a rename).
func TestAKubeletSymlinkSwapIsPickedUp(t *testing.T) {
	dir := t.TempDir()
	version := func(name string, jwks []byte) {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(d, policy.BundlePolicy), marshalYAML(t, basePolicy()))
		writeFile(t, filepath.Join(d, policy.BundleJWKS), jwks)
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2030_01_02_v1", jwksDoc(t, testKey(t, "primary")))
	for _, name := range []string{policy.BundlePolicy, policy.BundleJWKS} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	pf, jf, rf := BundleFiles(dir)
	f := newFixture(t, withOptions(func(o *Options) { o.PolicyFile, o.JWKSFile, o.RevocationsFile = pf, jf, rf }))
	newTok := newToken(t, testKey(t, "rotated"))
	f.wantStatus(newTok, 401, verify.ReasonUnknownKID)

	version("..2030_01_02_v2", jwksDoc(t, testKey(t, "primary"), testKey(t, "rotated")))
	f.poll()
	f.wantStatus(newTok, 200, "")
}

func TestReadiness(t *testing.T) {
	t.Run("without keys the sidecar is unready, refuses with 503 and still passes anonymous routes", func(t *testing.T) {
		f := newFixture(t, withoutJWKS())
		if r := f.admin("/readyz"); r.status != 503 || r.body != "no keys loaded\n" {
			t.Fatalf("/readyz %d %q, want 503", r.status, r.body)
		}
		if r := f.admin("/healthz"); r.status != 200 {
			t.Errorf("/healthz %d, want 200", r.status)
		}
		if r := f.do("/api", bearer(f.token())); r.status != 503 || r.header.Get("Retry-After") == "" {
			t.Errorf("a request got %d, want 503 with Retry-After", r.status)
		}
		if r := f.do("/healthz"); r.status != 200 {
			t.Errorf("the anonymous route got %d, want 200", r.status)
		}
		if f.reloads(fileJWKS, resultError) != 1 {
			t.Errorf("the missing JWKS file was not counted once")
		}

		f.write(policy.BundleJWKS, jwksDoc(t, f.key))
		f.poll()
		if r := f.admin("/readyz"); r.status != 200 {
			t.Fatalf("/readyz %d after keys arrived, want 200", r.status)
		}
		f.wantStatus(f.token(), 200, "")
	})
	t.Run("without a policy the sidecar is unready and refuses everything with 503", func(t *testing.T) {
		f := newFixture(t, withoutPolicy())
		if r := f.admin("/readyz"); r.status != 503 || r.body != "no valid policy loaded\n" {
			t.Fatalf("/readyz %d %q, want 503", r.status, r.body)
		}
		if r := f.do("/healthz"); r.status != 503 {
			t.Errorf("got %d, want 503", r.status)
		}
		eventually(t, "an unavailable request counted", func() bool { return f.requests(outcomeUnavailable) == 1 })
		f.write(policy.BundlePolicy, marshalYAML(t, basePolicy()))
		f.poll()
		if r := f.admin("/readyz"); r.status != 200 {
			t.Fatalf("/readyz %d after the policy arrived, want 200", r.status)
		}
	})
	t.Run("an invalid policy at start-up leaves the sidecar unready until a valid one arrives", func(t *testing.T) {
		f := newFixture(t, withPolicyFile("kind: TokenPolicy\nspec: {issuer: ''}\n"))
		if r := f.admin("/readyz"); r.status != 503 {
			t.Fatalf("/readyz %d, want 503", r.status)
		}
		f.write(policy.BundlePolicy, marshalYAML(t, basePolicy()))
		f.poll()
		if r := f.admin("/readyz"); r.status != 200 {
			t.Fatalf("/readyz %d, want 200", r.status)
		}
	})
}

// Per "Bundle completeness": a revocations file the manager marked incomplete is applied but
// keeps the sidecar unready, since tokens it omits would pass; a complete file makes it ready.
func TestAnIncompleteRevocationsFileKeepsTheSidecarUnready(t *testing.T) {
	f := newFixture(t)
	if ok, why := f.sc.Ready(); !ok {
		t.Fatalf("not ready before: %s", why)
	}
	partial := revocationList([]tkv1.RevokedToken{{JTI: "token-1", ExpiresAt: metav1.NewTime(t0.Add(time.Hour))}}, nil)
	partial.Annotations = map[string]string{policy.AnnotationRevocationsIncomplete: "1 of 9000 token and subject revocations fit the bundle"}
	f.write(policy.BundleRevocations, marshalYAML(t, partial))
	f.poll()
	if ok, why := f.sc.Ready(); ok || !strings.Contains(why, "revocations incomplete: 1 of 9000") {
		t.Fatalf("Ready = %t (%s), want unready naming what is missing", ok, why)
	}
	f.wantStatus(f.token(), 401, verify.ReasonRevokedToken) // what it holds still applies

	f.write(policy.BundleRevocations, marshalYAML(t, revocationList(nil, nil)))
	f.poll()
	if ok, why := f.sc.Ready(); !ok {
		t.Fatalf("a complete file left the sidecar unready: %s", why)
	}
}
