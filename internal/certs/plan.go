package certs

import (
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// Entries of the certificate Secret.
const (
	EntryCA         = "ca.crt"
	EntryCAKey      = "ca.key"
	EntryCANext     = "ca-next.crt" // trusted, not yet signing: it must reach every client first
	EntryCANextKey  = "ca-next.key"
	EntryCAPrevious = "ca-previous.crt" // trusted until it expires: certificates it signed may still be served
	EntryCert       = "tls.crt"
	EntryKey        = "tls.key"
)

// CAPublishAhead is how long a new CA is trusted before it signs the serving certificate.
// Clients learn the trusted CAs late: the API server from a patched caBundle within
// seconds, sidecars from a mounted ConfigMap after a kubelet sync (a minute or two), so a
// CA that signed at once would be refused until then. A week also covers a manager that
// was down for days.
const CAPublishAhead = 7 * 24 * time.Hour

// Plan is what the certificate Secret must hold at one instant.
type Plan struct {
	Data map[string][]byte
	// Changes say what was issued or dropped, for the log; empty when nothing changed.
	Changes []string
	// Problems name stored entries that could not be used and were replaced.
	Problems []string
	// NextCheck is when the plan next changes, absent other events.
	NextCheck time.Time
}

// PlanCerts decides the CA and serving certificate for hosts at now, from what the Secret
// stores. It is the whole rotation: a CA is renewed at two thirds of its life by publishing
// a next CA, which signs only CAPublishAhead later; the replaced CA stays trusted until it
// expires. The serving certificate is reissued at two thirds of its life, when the hosts
// change, or when the signing CA changes. Entropy is the only input besides the arguments.
func PlanCerts(stored map[string][]byte, caName string, hosts []string, now time.Time) (Plan, error) {
	p := Plan{Data: map[string][]byte{}}
	for k, v := range stored {
		p.Data[k] = v
	}
	cur, curErr := parsePair(p.Data, EntryCA, EntryCAKey)
	if curErr != nil || !now.Before(cur.NotAfter) {
		if curErr != nil && len(p.Data[EntryCA]) > 0 {
			p.Problems = append(p.Problems, fmt.Sprintf("%s: %v", EntryCA, curErr))
		}
		ca, err := NewCA(caName, now)
		if err != nil {
			return Plan{}, err
		}
		p.Data[EntryCA], p.Data[EntryCAKey] = ca.Cert, ca.Key
		delete(p.Data, EntryCANext)
		delete(p.Data, EntryCANextKey)
		p.Changes = append(p.Changes, "issued a CA")
		if cur, err = ParseCert(ca.Cert); err != nil {
			return Plan{}, err
		}
	}

	next, nextErr := parsePair(p.Data, EntryCANext, EntryCANextKey)
	if nextErr != nil && len(p.Data[EntryCANext]) > 0 {
		p.Problems = append(p.Problems, fmt.Sprintf("%s: %v", EntryCANext, nextErr))
		delete(p.Data, EntryCANext)
		delete(p.Data, EntryCANextKey)
		next = nil
	}
	switch {
	case next != nil && !now.Before(publishedAt(next).Add(CAPublishAhead)):
		p.Data[EntryCAPrevious] = p.Data[EntryCA]
		p.Data[EntryCA], p.Data[EntryCAKey] = p.Data[EntryCANext], p.Data[EntryCANextKey]
		delete(p.Data, EntryCANext)
		delete(p.Data, EntryCANextKey)
		p.Changes = append(p.Changes, "the next CA took over signing")
		cur, next = next, nil
	case next == nil && !now.Before(RenewAt(cur)):
		ca, err := NewCA(caName, now)
		if err != nil {
			return Plan{}, err
		}
		p.Data[EntryCANext], p.Data[EntryCANextKey] = ca.Cert, ca.Key
		p.Changes = append(p.Changes, "published the next CA")
		if next, err = ParseCert(ca.Cert); err != nil {
			return Plan{}, err
		}
	}

	prev, prevErr := ParseCert(p.Data[EntryCAPrevious])
	switch {
	case prevErr != nil && len(p.Data[EntryCAPrevious]) > 0:
		p.Problems = append(p.Problems, fmt.Sprintf("%s: %v", EntryCAPrevious, prevErr))
		delete(p.Data, EntryCAPrevious)
		prev = nil
	case prevErr == nil && !now.Before(prev.NotAfter):
		delete(p.Data, EntryCAPrevious)
		p.Changes = append(p.Changes, "dropped the expired previous CA")
		prev = nil
	case prevErr != nil:
		prev = nil
	}

	ca := Pair{Cert: p.Data[EntryCA], Key: p.Data[EntryCAKey]}
	serving := Pair{Cert: p.Data[EntryCert], Key: p.Data[EntryKey]}
	if !ServingValid(ca, serving, hosts, now) {
		if len(serving.Cert) > 0 {
			if _, err := ParseCert(serving.Cert); err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("%s: %v", EntryCert, err))
			}
		}
		s, err := NewServing(ca, hosts, now)
		if err != nil {
			return Plan{}, err
		}
		p.Data[EntryCert], p.Data[EntryKey] = s.Cert, s.Key
		p.Changes = append(p.Changes, "issued a serving certificate")
	}

	servingCert, err := ParseCert(p.Data[EntryCert])
	if err != nil {
		return Plan{}, err
	}
	checks := []time.Time{RenewAt(servingCert)}
	if next != nil {
		checks = append(checks, publishedAt(next).Add(CAPublishAhead))
	} else {
		checks = append(checks, RenewAt(cur))
	}
	if prev != nil {
		checks = append(checks, prev.NotAfter)
	}
	p.NextCheck = slices.MinFunc(checks, func(a, b time.Time) int { return a.Compare(b) })
	return p, nil
}

// TrustBundle is the caBundle clients must trust: the signing CA, the next one and the
// previous one, each while the Secret holds it.
func TrustBundle(data map[string][]byte) []byte {
	return Bundle(data[EntryCA], data[EntryCANext], data[EntryCAPrevious])
}

// publishedAt is when a CA was issued (NewCA backdates NotBefore by a minute).
func publishedAt(ca *x509.Certificate) time.Time { return ca.NotBefore.Add(time.Minute) }

// parsePair parses a CA certificate and checks its key is there and matches.
func parsePair(data map[string][]byte, certEntry, keyEntry string) (*x509.Certificate, error) {
	cert, err := ParseCert(data[certEntry])
	if err != nil {
		return nil, err
	}
	key, err := parseKey(data[keyEntry])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyEntry, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match the certificate", keyEntry)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("not a CA certificate")
	}
	return cert, nil
}
