package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Claims are a verified token's claims. A Claims may be shared between requests through
// the cache: treat it, and every value Get returns, as read-only.
type Claims struct {
	Issuer   string
	Subject  string
	Audience []string
	ID       string // jti
	// Expiry, NotBefore and IssuedAt are zero when the token lacks the claim.
	Expiry    time.Time
	NotBefore time.Time
	IssuedAt  time.Time
	// KeyID and Algorithm are the verifying key's kid and pinned alg.
	KeyID     string
	Algorithm string

	all map[string]any // every claim as decoded JSON, numbers as json.Number

	forwarded atomic.Pointer[forwardMemo] // ForwardHeaders' result, computed on first use
}

// Get returns a claim by name; dots reach into nested objects. Numbers are json.Number.
func (c *Claims) Get(name string) (any, bool) {
	if c == nil {
		return nil, false
	}
	v, ok := lookupClaim(c.all, name)
	if !ok || v == nil {
		return nil, false // a null claim counts as absent
	}
	return v, true
}

// lookupClaim finds name in m, trying the whole name first so that a top-level claim whose
// name holds dots ("https://example.com/roles") wins over a nested path, then every dot as
// a step into a nested object. It allocates nothing.
func lookupClaim(m map[string]any, name string) (any, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	for i := 0; i < len(name); i++ {
		if name[i] != '.' {
			continue
		}
		if sub, ok := m[name[:i]].(map[string]any); ok {
			if v, ok := lookupClaim(sub, name[i+1:]); ok {
				return v, true
			}
		}
	}
	return nil, false
}

// parseClaims decodes a JWT payload: a JSON object whose registered claims have the types
// RFC 7519 gives them. Anything else is malformed rather than silently ignored.
func parseClaims(payload []byte) (*Claims, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber() // keep large integers exact for matching and forwarding
	var all map[string]any
	if err := dec.Decode(&all); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if all == nil {
		return nil, fmt.Errorf("payload is not a JSON object")
	}
	if dec.More() {
		return nil, fmt.Errorf("payload has trailing data")
	}
	c := &Claims{all: all}
	var err error
	if c.Issuer, err = stringClaim(all, "iss"); err != nil {
		return nil, err
	}
	if c.Subject, err = stringClaim(all, "sub"); err != nil {
		return nil, err
	}
	if c.ID, err = stringClaim(all, "jti"); err != nil {
		return nil, err
	}
	if c.Audience, err = audienceClaim(all); err != nil {
		return nil, err
	}
	if c.Expiry, err = dateClaim(all, "exp"); err != nil {
		return nil, err
	}
	if c.NotBefore, err = dateClaim(all, "nbf"); err != nil {
		return nil, err
	}
	if c.IssuedAt, err = dateClaim(all, "iat"); err != nil {
		return nil, err
	}
	return c, nil
}

func stringClaim(all map[string]any, name string) (string, error) {
	switch v := all[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("claim %q is a %T, not a string", name, v)
	}
}

func audienceClaim(all map[string]any) ([]string, error) {
	switch v := all["aud"].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, len(v))
		for i, a := range v {
			s, ok := a.(string)
			if !ok {
				return nil, fmt.Errorf("claim \"aud\" holds a %T", a)
			}
			out[i] = s
		}
		return out, nil
	default:
		return nil, fmt.Errorf("claim \"aud\" is a %T", v)
	}
}

// maxDateSeconds bounds NumericDates (about year 36800) so conversions cannot overflow.
const maxDateSeconds = 1 << 40

// dateClaim reads a NumericDate: seconds since the epoch, possibly fractional.
func dateClaim(all map[string]any, name string) (time.Time, error) {
	v, ok := all[name]
	if !ok || v == nil {
		return time.Time{}, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, fmt.Errorf("claim %q is a %T, not a number", name, v)
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return time.Unix(clampSeconds(i), 0).UTC(), nil
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}, fmt.Errorf("claim %q is not a usable number", name)
	}
	if f > maxDateSeconds {
		f = maxDateSeconds
	} else if f < -maxDateSeconds {
		f = -maxDateSeconds
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

func clampSeconds(s int64) int64 {
	return min(max(s, -maxDateSeconds), maxDateSeconds)
}

// claimStrings calls yield with each scalar the claim holds: the value itself, or each
// element of an array. Numbers keep their JSON text. It allocates nothing.
func claimStrings(v any, yield func(string) bool) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if s, ok := scalarString(e); ok && !yield(s) {
				return
			}
		}
	default:
		if s, ok := scalarString(x); ok {
			yield(s)
		}
	}
}

func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return string(x), true
	case bool:
		if x {
			return "true", true
		}
		return "false", true
	}
	return "", false
}

// words splits a space-separated claim such as "scope" without allocating.
func words(s string) func(func(string) bool) { return strings.FieldsSeq(s) }
