package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Entries of the Secret that holds a SigningKey's keys. The active.* names are stable so an
// issuer can mount the Secret and always find the key it must sign with.
const (
	FileState     = "keys.json"  // every generation's timeline and public JWK; no private material
	FileActivePEM = "active.pem" // the active private key, PKCS #8 PEM
	FileActiveJWK = "active.jwk" // the active private key as a JWK (with kid and alg)
	FileActiveKID = "active.kid" // the active kid
	keyFilePrefix = "key-"
	keyFileSuffix = ".pem"
)

// KeyFile is the Secret entry holding one generation's private key.
func KeyFile(kid string) string { return keyFilePrefix + kid + keyFileSuffix }

// Ring is every live key generation: timelines plus key material by kid.
type Ring struct {
	Records []Record
	Keys    map[string]*Key
}

type stateFile struct {
	Keys []storedRecord `json:"keys"`
}

type storedRecord struct {
	Record
	PublicJWK json.RawMessage `json:"publicJWK,omitempty"`
}

// Active returns the active key, or nil.
func (r Ring) Active() *Key {
	if i := find(r.Records, Active); i >= 0 {
		return r.Keys[r.Records[i].KID]
	}
	return nil
}

// PublicKeys returns the public half of every live key, in record order.
func (r Ring) PublicKeys() []*Key {
	out := make([]*Key, 0, len(r.Records))
	for _, rec := range r.Records {
		if k := r.Keys[rec.KID]; k != nil {
			out = append(out, k)
		}
	}
	return out
}

// SecretData renders the ring as Secret data.
func (r Ring) SecretData() (map[string][]byte, error) {
	data := map[string][]byte{}
	var sf stateFile
	for _, rec := range r.Records {
		k := r.Keys[rec.KID]
		if k == nil {
			return nil, fmt.Errorf("no key material for %s", rec.KID)
		}
		pub, err := json.Marshal(k.PublicJWK())
		if err != nil {
			return nil, fmt.Errorf("encoding public key %s: %w", rec.KID, err)
		}
		sf.Keys = append(sf.Keys, storedRecord{Record: rec, PublicJWK: pub})
		if k.Private == nil {
			continue
		}
		pemBytes, err := k.PrivatePEM()
		if err != nil {
			return nil, err
		}
		data[KeyFile(rec.KID)] = pemBytes
		if rec.State == Active {
			jwk, err := json.Marshal(k.PrivateJWK())
			if err != nil {
				return nil, fmt.Errorf("encoding active key: %w", err)
			}
			data[FileActivePEM], data[FileActiveJWK], data[FileActiveKID] = pemBytes, jwk, []byte(rec.KID)
		}
	}
	state, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return nil, err
	}
	data[FileState] = state
	return data, nil
}

// Repair is what LoadRing needs to mend a damaged Secret without losing a key a valid
// token may still need.
type Repair struct {
	Now       time.Time
	RetainFor time.Duration
	// Fallback timelines (the SigningKey's status) used when keys.json is unreadable.
	Fallback []Record
	// Published is the JWKS last published (the ConfigMap's jwks.json): where the public half
	// of a key comes from when the Secret lost it, so the key can keep verifying.
	Published []byte
	// PreferredRSAAlg pins an orphaned RSA key whose algorithm was lost (RS256 if empty).
	PreferredRSAAlg string
}

// LoadRing reads Secret data back. It never regenerates anything: it adopts every key it
// finds. Damage is reported as problems (without private material) and mended:
//   - unreadable keys.json: timelines come from the fallback, else keys are adopted as Retired;
//   - a private key without a timeline: adopted as Retired for RetainFor (it may have signed);
//   - a timeline whose private key is gone: kept verify-only (Retired) from its public JWK;
//   - a timeline with neither: dropped, since nothing can verify with it.
func LoadRing(data map[string][]byte, fix Repair) (Ring, []string) {
	var problems []string
	note := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	ring := Ring{Keys: map[string]*Key{}}
	if len(data) == 0 && len(fix.Fallback) == 0 {
		return ring, nil // a new SigningKey
	}
	if len(data) == 0 {
		note("the Secret is missing or empty")
	}

	privates := map[string]privateEntry{}
	names := make([]string, 0, len(data))
	for name := range data {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name != FileActivePEM && !(strings.HasPrefix(name, keyFilePrefix) && strings.HasSuffix(name, keyFileSuffix)) {
			continue
		}
		priv, err := ParsePrivatePEM(data[name])
		if err != nil {
			note("entry %s is not a usable private key (%v)", name, err)
			continue
		}
		kid, err := Thumbprint(priv.Public())
		if err != nil {
			note("entry %s: %v", name, err)
			continue
		}
		if name != FileActivePEM && name != KeyFile(kid) {
			note("entry %s holds key %s; renamed", name, kid)
		}
		privates[kid] = privateEntry{priv: priv, from: name}
	}

	records, publics, err := parseState(data[FileState])
	switch {
	case data[FileState] == nil:
		note("entry %s is missing", FileState)
		records = fix.Fallback
	case err != nil:
		note("entry %s is unreadable (%v)", FileState, err)
		records = fix.Fallback
	}

	seen := map[string]bool{}
	for _, rec := range records {
		if seen[rec.KID] {
			note("key %s is listed twice", rec.KID)
			continue
		}
		seen[rec.KID] = true
		if p, ok := privates[rec.KID]; ok {
			if p.from == FileActivePEM {
				note("entry %s is missing or unreadable; recovered from %s", KeyFile(rec.KID), FileActivePEM)
			}
			k, err := FromPrivate(p.priv, rec.Algorithm)
			if err != nil {
				note("key %s does not suit %s (%v); dropped", rec.KID, rec.Algorithm, err)
				continue
			}
			ring.Records, ring.Keys[rec.KID] = append(ring.Records, rec), k
			continue
		}
		pub := publics[rec.KID]
		if pub == nil {
			pub = publishedJWK(fix.Published, rec.KID)
		}
		if pub != nil {
			k, err := FromPublicJWK(pub)
			if err == nil && k.KID == rec.KID && k.Algorithm == rec.Algorithm {
				note("private key %s is missing; kept for verification only", rec.KID)
				if rec.State != Retired {
					retire(&rec, fix.Now, fix.RetainFor)
				}
				ring.Records, ring.Keys[rec.KID] = append(ring.Records, rec), k
				continue
			}
		}
		note("key %s is missing and cannot be recovered; dropped", rec.KID)
	}

	orphans := make([]string, 0)
	for kid := range privates {
		if !seen[kid] {
			orphans = append(orphans, kid)
		}
	}
	sort.Strings(orphans)
	for _, kid := range orphans {
		p := privates[kid]
		alg := guessAlgorithm(p, fix.PreferredRSAAlg)
		k, err := FromPrivate(p.priv, alg)
		if err != nil {
			note("entry %s: %v; dropped", p.from, err)
			continue
		}
		note("key %s (entry %s) has no timeline; adopted as Retired", kid, p.from)
		rec := Record{KID: kid, Algorithm: alg, State: Retired, CreatedAt: fix.Now}
		retire(&rec, fix.Now, fix.RetainFor)
		ring.Records, ring.Keys[kid] = append(ring.Records, rec), k
	}
	sortRecords(ring.Records)
	return ring, problems
}

type privateEntry struct {
	priv crypto.Signer
	from string
}

func parseState(data []byte) ([]Record, map[string][]byte, error) {
	if data == nil {
		return nil, nil, nil
	}
	var sf stateFile
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return nil, nil, err
	}
	publics := map[string][]byte{}
	records := make([]Record, 0, len(sf.Keys))
	for i, s := range sf.Keys {
		if s.KID == "" || s.Algorithm == "" {
			return nil, nil, fmt.Errorf("keys[%d]: kid and alg are required", i)
		}
		switch s.State {
		case Next, Active, Retired:
		default:
			return nil, nil, fmt.Errorf("keys[%d]: unknown state %q", i, s.State)
		}
		records = append(records, s.Record)
		publics[s.KID] = s.PublicJWK
	}
	return records, publics, nil
}

// guessAlgorithm pins an orphaned key: its curve decides for EC and Ed25519; for RSA the
// SigningKey's algorithm if it is an RSA one.
func guessAlgorithm(p privateEntry, preferredRSA string) string {
	switch k := p.priv.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return "ES256"
		case 384:
			return "ES384"
		default:
			return "ES512"
		}
	case ed25519.PublicKey:
		return "EdDSA"
	}
	if IsRSA(preferredRSA) {
		return preferredRSA
	}
	return "RS256"
}

// publishedJWK finds a kid's public JWK in a published JWKS, or nil.
func publishedJWK(set []byte, kid string) []byte {
	if len(set) == 0 {
		return nil
	}
	var parsed struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if json.Unmarshal(set, &parsed) != nil {
		return nil
	}
	for _, raw := range parsed.Keys {
		var id struct {
			KID string `json:"kid"`
		}
		if json.Unmarshal(raw, &id) == nil && id.KID == kid {
			return raw
		}
	}
	return nil
}
