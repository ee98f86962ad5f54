package distribution

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

// Audience is the audience of the projected service-account token a sidecar presents.
const Audience = "tokenkeeper.dev/distribution"

// NamespaceEnv is the environment variable, set by the injection webhook from the downward
// API, that tells a sidecar its namespace: the one whose policies it is served.
const NamespaceEnv = "POD_NAMESPACE"

// CAKey is the key of the policy bundle ConfigMap holding the distribution server's CA.
const CAKey = "distribution-ca.crt"

// VersionKey is the key of the policy bundle ConfigMap holding the floor of its content: per
// input kind, the highest resourceVersion among the objects it was rendered from
// (Version.String()). A snapshot that dominates it has seen every one of them.
const VersionKey = "distribution-version"

// ParseVersion reads a Version.String().
func ParseVersion(s string) (Version, error) {
	var v Version
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != numKinds {
		return v, fmt.Errorf("version %q: want %d numbers separated by dots", s, numKinds)
	}
	for i := range numKinds {
		n, err := strconv.ParseUint(parts[i], 10, 64)
		if err != nil {
			return v, fmt.Errorf("version %q: component %d: %w", s, i, err)
		}
		v[i] = n
	}
	return v, nil
}

// Path is the prefix of a snapshot URL: Path + namespace + "/" + policy.
const Path = "/v1/snapshots/"

// Components of a Version, one per kind of input object.
const (
	KindTokenPolicy = iota
	KindRevocationList
	KindConfigMap
	numKinds
)

// Version is how far each kind's watch had come when a snapshot was built.
type Version [numKinds]uint64

// Dominates reports whether v is at least as new as w in every component.
func (v Version) Dominates(w Version) bool {
	for i := range v {
		if v[i] < w[i] {
			return false
		}
	}
	return true
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2])
}

// Token is what a sidecar sends back as ?version=: the vector and the content digest.
type Token struct {
	Version Version
	Digest  string
}

func (t Token) String() string {
	if t.Digest == "" {
		return ""
	}
	return t.Version.String() + "." + t.Digest
}

// ParseToken reads a ?version= value; "" is the zero Token (the sidecar holds nothing).
func ParseToken(s string) (Token, error) {
	if s == "" {
		return Token{}, nil
	}
	parts := strings.Split(s, ".")
	if len(parts) != numKinds+1 {
		return Token{}, fmt.Errorf("version %q: want %d numbers and a digest separated by dots", s, numKinds)
	}
	var t Token
	for i := range numKinds {
		n, err := strconv.ParseUint(parts[i], 10, 64)
		if err != nil {
			return Token{}, fmt.Errorf("version %q: component %d: %w", s, i, err)
		}
		t.Version[i] = n
	}
	t.Digest = parts[numKinds]
	if len(t.Digest) != sha256.Size*2 || strings.Trim(t.Digest, "0123456789abcdef") != "" {
		return Token{}, fmt.Errorf("version %q: digest is not hex SHA-256", s)
	}
	return t, nil
}

// Content is what a sidecar enforces; the digest covers exactly this.
type Content struct {
	Policy tkv1.TokenPolicySpec `json:"policy"`
	// Keys is a JWKS document of public keys.
	Keys        json.RawMessage         `json:"keys"`
	Revocations tkv1.RevocationListSpec `json:"revocations"`
}

// Snapshot is one TokenPolicy's content at one version.
type Snapshot struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Token     Token  `json:"-"`
	Content
}

// Message is one answer of the server: a full snapshot, or a delta against the snapshot
// whose digest is Delta.Base.
type Message struct {
	Namespace string               `json:"namespace"`
	Name      string               `json:"name"`
	Version   string               `json:"version"` // Token.String()
	Policy    tkv1.TokenPolicySpec `json:"policy"`
	Keys      json.RawMessage      `json:"keys"`
	// Revocations is set in a full snapshot, Delta in a delta.
	Revocations *tkv1.RevocationListSpec `json:"revocations,omitempty"`
	Delta       *Delta                   `json:"delta,omitempty"`
}

// Delta is the change of a revocation set from the snapshot with digest Base.
type Delta struct {
	Base    string                  `json:"base"`
	Added   tkv1.RevocationListSpec `json:"added"`
	Removed tkv1.RevocationListSpec `json:"removed"`
}

// Digest is the hex SHA-256 of c's canonical JSON (revocations sorted and deduplicated
// first, by Normalize).
func (c *Content) Digest() (string, error) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	return hex.EncodeToString(sum[:]), nil
}

// Normalize sorts and deduplicates the revocation entries, so equal sets digest equally.
func Normalize(r *tkv1.RevocationListSpec) {
	r.Tokens = sortUnique(r.Tokens, tokenKey)
	r.Subjects = sortUnique(r.Subjects, subjectKey)
	r.Keys = sortUnique(r.Keys, keyKey)
}

// Entry identities: an entry is the same only when every field is.
func tokenKey(t tkv1.RevokedToken) string {
	return t.JTI + "\x00" + t.Issuer + "\x00" + strconv.FormatInt(t.ExpiresAt.Unix(), 10)
}
func subjectKey(s tkv1.RevokedSubject) string {
	return s.Subject + "\x00" + s.Issuer + "\x00" + strconv.FormatInt(s.NotBefore.Unix(), 10)
}
func keyKey(k tkv1.RevokedKey) string { return k.KID + "\x00" + k.Reason }

func sortUnique[T any](in []T, key func(T) string) []T {
	if len(in) == 0 {
		return nil
	}
	// Each key is built once, not at every comparison (a fifth of a 100 000-entry rebuild
	// went to building keys). The order is the keys' order, as every version has used:
	// the digest a manager and a sidecar compute must agree.
	keyed := make([]keyedEntry[T], len(in))
	for i, e := range in {
		keyed[i] = keyedEntry[T]{key(e), e}
	}
	slices.SortFunc(keyed, func(a, b keyedEntry[T]) int { return strings.Compare(a.key, b.key) })
	keyed = slices.CompactFunc(keyed, func(a, b keyedEntry[T]) bool { return a.key == b.key })
	out := make([]T, len(keyed))
	for i := range keyed {
		out[i] = keyed[i].entry
	}
	return out
}

type keyedEntry[T any] struct {
	key   string
	entry T
}

// Diff is the delta from base to next; both normalized.
func Diff(base, next *tkv1.RevocationListSpec) (added, removed tkv1.RevocationListSpec) {
	added.Tokens, removed.Tokens = diff(base.Tokens, next.Tokens, tokenKey)
	added.Subjects, removed.Subjects = diff(base.Subjects, next.Subjects, subjectKey)
	added.Keys, removed.Keys = diff(base.Keys, next.Keys, keyKey)
	return added, removed
}

func diff[T any](base, next []T, key func(T) string) (added, removed []T) {
	in := make(map[string]bool, len(base))
	for _, e := range base {
		in[key(e)] = true
	}
	for _, e := range next {
		if k := key(e); in[k] {
			delete(in, k)
		} else {
			added = append(added, e)
		}
	}
	for _, e := range base {
		if in[key(e)] {
			removed = append(removed, e)
		}
	}
	return added, removed
}

// Patch applies a delta to base (normalized) and returns the normalized result.
func Patch(base *tkv1.RevocationListSpec, d *Delta) tkv1.RevocationListSpec {
	out := tkv1.RevocationListSpec{
		Tokens:   patch(base.Tokens, d.Added.Tokens, d.Removed.Tokens, tokenKey),
		Subjects: patch(base.Subjects, d.Added.Subjects, d.Removed.Subjects, subjectKey),
		Keys:     patch(base.Keys, d.Added.Keys, d.Removed.Keys, keyKey),
	}
	Normalize(&out)
	return out
}

func patch[T any](base, added, removed []T, key func(T) string) []T {
	gone := make(map[string]bool, len(removed))
	for _, e := range removed {
		gone[key(e)] = true
	}
	out := make([]T, 0, len(base)+len(added))
	for _, e := range base {
		if !gone[key(e)] {
			out = append(out, e)
		}
	}
	return append(out, added...)
}

// privateMembers are the JWK members (RFC 7518 §6.2.2, §6.3.2, §6.4.1) that hold secrets.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// CheckKeys checks a JWKS document: it parses as public keys only (jwks.Parse) and, as a
// second line that does not depend on the JOSE library, no key has a private member.
func CheckKeys(doc []byte) error {
	var raw struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &raw); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	for i, k := range raw.Keys {
		for _, m := range privateMembers {
			if _, ok := k[m]; ok {
				return fmt.Errorf("keys.keys[%d]: has private member %q", i, m)
			}
		}
	}
	if _, err := jwks.Parse(doc); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}

// Validate checks a snapshot a sidecar is about to apply: names, keys, digest.
func (s *Snapshot) Validate() error {
	var errs []error
	if s.Namespace == "" || s.Name == "" {
		errs = append(errs, errors.New("namespace and name: required"))
	}
	if err := CheckKeys(s.Keys); err != nil {
		errs = append(errs, err)
	}
	if got, err := s.Digest(); err != nil || got != s.Token.Digest {
		errs = append(errs, fmt.Errorf("version: digest %s does not match the content (%s)", s.Token.Digest, got))
	}
	return errors.Join(errs...)
}

// Resolve turns a message into the snapshot it describes. held is the sidecar's current
// snapshot (nil when it holds none); a delta needs it as its base.
func Resolve(m *Message, held *Snapshot) (*Snapshot, error) {
	tok, err := ParseToken(m.Version)
	if err != nil {
		return nil, err
	}
	if tok.Digest == "" {
		return nil, errors.New("version: required")
	}
	s := &Snapshot{Namespace: m.Namespace, Name: m.Name, Token: tok}
	s.Policy, s.Keys = m.Policy, m.Keys
	switch {
	case m.Revocations != nil && m.Delta == nil:
		s.Revocations = *m.Revocations
		Normalize(&s.Revocations)
	case m.Delta != nil && m.Revocations == nil:
		if held == nil || held.Token.Digest != m.Delta.Base {
			return nil, fmt.Errorf("delta: base %s is not the snapshot held", m.Delta.Base)
		}
		s.Revocations = Patch(&held.Revocations, m.Delta)
	default:
		return nil, errors.New("exactly one of revocations and delta: required")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Accepts reports whether a sidecar holding held should apply next: a newer version in
// every component with other content. held nil accepts any snapshot.
func Accepts(held *Token, next Token) bool {
	if held == nil || held.Digest == "" {
		return true
	}
	return next.Version.Dominates(held.Version) && next.Digest != held.Digest
}
