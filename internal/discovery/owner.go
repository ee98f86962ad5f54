package discovery

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"
)

// Key is an issuer in the form the server looks it up by: lower-case host without port 80 or
// 443 or a trailing dot, and the cleaned path without a trailing slash. The scheme is not part
// of it: the server answers http and https (behind an ingress) alike, so http://x/a and
// https://x/a would be served from the same place and must have one owner.
type Key struct{ Host, Path string }

func (k Key) String() string { return k.Host + k.Path }

// IssuerKey normalises an issuer URL. Two issuers with the same key cannot both be served.
func IssuerKey(issuer string) (Key, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return Key{}, fmt.Errorf("issuer %q: %w", issuer, err)
	}
	if u.Host == "" {
		return Key{}, fmt.Errorf("issuer %q has no host", issuer)
	}
	return Key{Host: normalHost(u.Host), Path: normalPath(u.Path)}, nil
}

// requestKey is the key a request for base on host asks for.
func requestKey(host, base string) Key { return Key{Host: normalHost(host), Path: normalPath(base)} }

// normalHost drops both default ports: behind an ingress the scheme is unknown.
func normalHost(hostport string) string {
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6
	}
	if port != "" && port != "80" && port != "443" {
		return host + ":" + port
	}
	return host
}

// normalPath cleans dot segments and doubled slashes; the root is "".
func normalPath(p string) string {
	if p == "" || p == "/" {
		return ""
	}
	c := path.Clean("/" + p)
	if c == "/" {
		return ""
	}
	return c
}

// Claimant is one SigningKey that names an issuer, with what the ownership decision reads.
type Claimant struct {
	Namespace, Name, UID string
	Issuer               string
	Created              time.Time
	// Claimed is the issuer this SigningKey's status records as served (it owned it when the
	// manager last reconciled it), and ClaimedSince when that was recorded.
	Claimed      string
	ClaimedSince time.Time
}

func (c Claimant) holdsClaim(k Key) bool {
	if c.Claimed == "" {
		return false
	}
	ck, err := IssuerKey(c.Claimed)
	return err == nil && ck == k
}

// Owners decides, for every issuer key, which claimant owns it. The decision reads only what
// survives a manager restart (status and immutable metadata), so every replica and every
// restart decides the same:
//  1. A claimant whose status records a claim on this very key beats any that does not, so a
//     long-existing SigningKey that edits its issuer to someone else's never takes it over.
//  2. Among equals, the earliest claim wins, then the oldest creationTimestamp, then the
//     lowest UID (UIDs never repeat, so there is always exactly one owner).
//
// Claimants with an unparsable issuer own nothing.
func Owners(cs []Claimant) map[Key]Claimant {
	byKey := map[Key][]Claimant{}
	for _, c := range cs {
		k, err := IssuerKey(c.Issuer)
		if err != nil {
			continue
		}
		byKey[k] = append(byKey[k], c)
	}
	out := make(map[Key]Claimant, len(byKey))
	for k, group := range byKey {
		sort.Slice(group, func(i, j int) bool { return before(k, group[i], group[j]) })
		out[k] = group[0]
	}
	return out
}

func before(k Key, a, b Claimant) bool {
	ac, bc := a.holdsClaim(k), b.holdsClaim(k)
	if ac != bc {
		return ac
	}
	if ac && !a.ClaimedSince.Equal(b.ClaimedSince) {
		return a.ClaimedSince.Before(b.ClaimedSince)
	}
	return older(a, b)
}

// older orders by creationTimestamp, then UID.
func older(a, b Claimant) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.UID < b.UID
}
