// Package policy turns the user-facing manifests (a TokenPolicy, RevocationLists) into the
// verification core's plain configuration, and defines the bundle the sidecar starts from.
// It imports the API types but no Kubernetes client, so the sidecar stays small.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// Files of a policy bundle: the TokenPolicy ConfigMap the manager renders, mounted into each
// injected pod, and the same three files a standalone sidecar is pointed at.
const (
	BundlePolicy      = "policy.yaml"      // the TokenPolicy manifest
	BundleJWKS        = "jwks.json"        // public keys of every trusted key source
	BundleRevocations = "revocations.yaml" // a RevocationList manifest merging those that apply
)

// AnnotationRevocationsIncomplete on the bundle's revocations manifest marks it as a part of
// the revocations that apply: the rest did not fit the ConfigMap. Its value says how much is
// missing. A sidecar holding only such a file is not ready (see docs, "Bundle completeness").
const AnnotationRevocationsIncomplete = "tokenkeeper.dev/revocations-incomplete"

// ParseTokenPolicy reads a TokenPolicy manifest strictly: unknown fields are errors, so a
// typo cannot silently weaken a policy.
func ParseTokenPolicy(data []byte) (*tkv1.TokenPolicy, error) {
	tp := &tkv1.TokenPolicy{}
	if err := yaml.UnmarshalStrict(data, tp); err != nil {
		return nil, fmt.Errorf("parsing TokenPolicy: %w", err)
	}
	if tp.Kind != "" && tp.Kind != "TokenPolicy" {
		return nil, fmt.Errorf("kind is %q, want TokenPolicy", tp.Kind)
	}
	return tp, nil
}

// ParseRevocationList reads a RevocationList manifest strictly.
func ParseRevocationList(data []byte) (*tkv1.RevocationList, error) {
	rl := &tkv1.RevocationList{}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		// JSON, as the manager writes bundles: decoded directly. The YAML route converts a
		// document to a tree and to JSON first, which for 100 000 entries took 500 MB of
		// heap, past a sidecar's memory limit.
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(rl); err != nil {
			return nil, fmt.Errorf("parsing RevocationList: %w", err)
		}
		if dec.More() {
			return nil, errors.New("parsing RevocationList: data after the JSON object")
		}
	} else if err := yaml.UnmarshalStrict(data, rl); err != nil {
		return nil, fmt.Errorf("parsing RevocationList: %w", err)
	}
	if rl.Kind != "" && rl.Kind != "RevocationList" {
		return nil, fmt.Errorf("kind is %q, want RevocationList", rl.Kind)
	}
	return rl, nil
}

// Config maps a TokenPolicy to the verifier's configuration. Defaults the API server would
// apply (clock skew) are applied here too, for files written by hand.
func Config(tp *tkv1.TokenPolicy) (verify.Config, error) {
	s := tp.Spec
	if s.Issuer == "" {
		return verify.Config{}, errors.New("spec.issuer: required")
	}
	if len(s.Audiences) == 0 {
		return verify.Config{}, errors.New("spec.audiences: at least one is required")
	}
	cfg := verify.Config{
		Issuer:       s.Issuer,
		Audiences:    append([]string(nil), s.Audiences...),
		ClockSkew:    verify.DefaultClockSkew,
		ForwardToken: s.ForwardToken,

		RequiredTokenType: s.RequiredTokenType,
	}
	if s.ClockSkew != nil {
		cfg.ClockSkew = s.ClockSkew.Duration
	}
	if s.MaxTokenLifetime != nil {
		cfg.MaxTokenLifetime = s.MaxTokenLifetime.Duration
	}
	for _, a := range s.AllowedAlgorithms {
		cfg.AllowedAlgorithms = append(cfg.AllowedAlgorithms, string(a))
	}
	cfg.RequiredClaims = requirements(s.RequiredClaims)
	for _, r := range s.Rules {
		cfg.Rules = append(cfg.Rules, verify.Rule{
			PathPrefix: r.PathPrefix, Methods: r.Methods, Anonymous: r.Anonymous,
			RequiredClaims: requirements(r.RequiredClaims),
		})
	}
	for _, f := range s.ForwardClaims {
		cfg.ForwardClaims = append(cfg.ForwardClaims, verify.ClaimHeader{Claim: f.Claim, Header: f.Header})
	}
	if ts := s.TokenSource; ts != nil {
		cfg.TokenSource = verify.TokenSource{Header: ts.Header, Prefix: ts.Prefix, Cookie: ts.Cookie}
	}
	return cfg, nil
}

func requirements(in []tkv1.ClaimRequirement) []verify.ClaimRequirement {
	var out []verify.ClaimRequirement
	for _, r := range in {
		out = append(out, verify.ClaimRequirement{Name: r.Name, Values: r.Values})
	}
	return out
}

// ValidateRevocationList checks what the API server's schema enforces for a RevocationList
// applied with kubectl, for files written by hand: an entry missing its expiry or notBefore
// would otherwise revoke less than it says, silently.
func ValidateRevocationList(rl *tkv1.RevocationList) error {
	var errs []error
	for i, t := range rl.Spec.Tokens {
		if t.JTI == "" {
			errs = append(errs, fmt.Errorf("spec.tokens[%d].jti: required", i))
		}
		if t.ExpiresAt.IsZero() {
			errs = append(errs, fmt.Errorf("spec.tokens[%d].expiresAt: required", i))
		}
	}
	for i, s := range rl.Spec.Subjects {
		if s.Subject == "" {
			errs = append(errs, fmt.Errorf("spec.subjects[%d].subject: required", i))
		}
		if s.NotBefore.IsZero() {
			errs = append(errs, fmt.Errorf("spec.subjects[%d].notBefore: required", i))
		}
	}
	for i, k := range rl.Spec.Keys {
		if k.KID == "" {
			errs = append(errs, fmt.Errorf("spec.keys[%d].kid: required", i))
		}
	}
	return errors.Join(errs...)
}

// Revocations merges RevocationLists into one snapshot, leaving out token entries whose
// token can no longer be presented: expired longer ago than the largest clock skew a
// policy may tolerate (a verifier accepts a token until exp plus its skew).
func Revocations(now time.Time, lists ...*tkv1.RevocationList) *verify.Revocations {
	var tokens []verify.RevokedToken
	var subjects []verify.RevokedSubject
	var kids []string
	for _, l := range lists {
		if l == nil {
			continue
		}
		for _, t := range l.Spec.Tokens {
			if t.ExpiresAt.Add(verify.MaxClockSkew).After(now) {
				tokens = append(tokens, verify.RevokedToken{JTI: t.JTI, Issuer: t.Issuer})
			}
		}
		for _, s := range l.Spec.Subjects {
			subjects = append(subjects, verify.RevokedSubject{Subject: s.Subject, Issuer: s.Issuer, NotBefore: s.NotBefore.Time})
		}
		for _, k := range l.Spec.Keys {
			kids = append(kids, k.KID)
		}
	}
	return verify.NewRevocations(tokens, subjects, kids)
}

// Merge combines RevocationLists into one manifest, as the bundle carries them.
func Merge(name string, lists ...*tkv1.RevocationList) *tkv1.RevocationList {
	out := &tkv1.RevocationList{}
	out.APIVersion, out.Kind, out.Name = tkv1.GroupVersion.String(), "RevocationList", name
	seenKID := map[string]bool{}
	for _, l := range lists {
		out.Spec.Tokens = append(out.Spec.Tokens, l.Spec.Tokens...)
		out.Spec.Subjects = append(out.Spec.Subjects, l.Spec.Subjects...)
		for _, k := range l.Spec.Keys {
			if !seenKID[k.KID] {
				seenKID[k.KID] = true
				out.Spec.Keys = append(out.Spec.Keys, k)
			}
		}
	}
	return out
}
