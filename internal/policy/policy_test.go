package policy

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// A revoked token's entry outlives the token by the largest clock skew a policy may allow,
// since a verifier accepts the token until exp plus its skew.
func TestRevokedTokensAreKeptUntilNoVerifierCanAcceptThem(t *testing.T) {
	exp := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	rl := &tkv1.RevocationList{Spec: tkv1.RevocationListSpec{Tokens: []tkv1.RevokedToken{{JTI: "t1", ExpiresAt: metav1.NewTime(exp)}}}}
	for _, tc := range []struct {
		name string
		now  time.Time
		want int
	}{
		{"before exp", exp.Add(-time.Second), 1},
		{"after exp, within the largest skew", exp.Add(verify.MaxClockSkew - time.Second), 1},
		{"once exp plus the largest skew has passed", exp.Add(verify.MaxClockSkew), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Revocations(tc.now, rl).Len(); got != tc.want {
				t.Errorf("entries = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestValidateRevocationListNamesTheField(t *testing.T) {
	rl, err := ParseRevocationList([]byte(`kind: RevocationList
spec:
  tokens: [{jti: a, expiresAt: "2026-11-28T12:00:00Z"}, {jti: b}, {expiresAt: "2026-11-28T12:00:00Z"}]
  subjects: [{subject: alice, notBefore: "2026-11-28T12:00:00Z"}, {subject: bob}]
  keys: [{kid: k1}, {kid: ""}]
`))
	if err != nil {
		t.Fatal(err)
	}
	err = ValidateRevocationList(rl)
	if err == nil {
		t.Fatal("accepted entries that revoke less than they say")
	}
	for _, want := range []string{"spec.tokens[1].expiresAt: required", "spec.tokens[2].jti: required",
		"spec.subjects[1].notBefore: required", "spec.keys[1].kid: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "tokens[0]") || strings.Contains(err.Error(), "subjects[0]") {
		t.Errorf("complete entries reported: %v", err)
	}
}

func TestConfigCarriesTheRequiredTokenType(t *testing.T) {
	tp := &tkv1.TokenPolicy{Spec: tkv1.TokenPolicySpec{Issuer: "https://issuer.example", Audiences: []string{"api"}, RequiredTokenType: "at+jwt"}}
	cfg, err := Config(tp)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RequiredTokenType != "at+jwt" {
		t.Errorf("RequiredTokenType = %q, want at+jwt", cfg.RequiredTokenType)
	}
	tp.Spec.RequiredTokenType = ""
	if cfg, _ := Config(tp); cfg.RequiredTokenType != "" {
		t.Errorf("RequiredTokenType = %q by default, want it off", cfg.RequiredTokenType)
	}
}

func largeList(n int) *tkv1.RevocationList {
	rl := &tkv1.RevocationList{TypeMeta: metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "RevocationList"}}
	exp := metav1.NewTime(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	for i := range n {
		rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: fmt.Sprintf("jti-%08d", i), Issuer: "https://issuer.example", ExpiresAt: exp})
	}
	return rl
}

// The manager writes a bundle's revocations as JSON; the sidecar reads it the same as the
// YAML spelling, as strictly (unknown fields, trailing data), and without the YAML route's
// cost: 100 000 entries took some 500 MB of heap that way, past a sidecar's memory limit.
func TestRevocationListsParseFromJSONAsFromYAMLAndCheaply(t *testing.T) {
	rl := largeList(100000)
	js, err := json.Marshal(rl)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := ParseRevocationList(js)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.Tokens) != 100000 || got.Spec.Tokens[99999].JTI != "jti-00099999" {
		t.Fatalf("parsed %d tokens", len(got.Spec.Tokens))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16*uint64(len(js)) {
		t.Errorf("parsing %d bytes of JSON allocated %d bytes (more than 16x)", len(js), alloc)
	}

	small, _ := yaml.Marshal(largeList(3))
	fromYAML, err := ParseRevocationList(small)
	if err != nil {
		t.Fatal(err)
	}
	smallJSON, _ := json.Marshal(largeList(3))
	fromJSON, err := ParseRevocationList(smallJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromYAML, fromJSON) {
		t.Errorf("YAML and JSON spellings differ:\n%+v\n%+v", fromYAML, fromJSON)
	}
	for name, doc := range map[string]string{
		"an unknown field":      `{"kind":"RevocationList","spec":{"tokens":[],"evil":1}}`,
		"data after the object": `{"kind":"RevocationList"} {"kind":"RevocationList"}`,
		"another kind":          `{"kind":"TokenPolicy"}`,
		"a truncated document":  `{"kind":"RevocationList","spec":{"tokens":[`,
	} {
		if _, err := ParseRevocationList([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
