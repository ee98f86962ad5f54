package keys

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ringFixture is a SigningKey's ring half-way through a rotation, at now = t0+50m: a Retired
// key still published until +30m, the Active key (activated at t0) and the Next key
// published at +45m. Keys are referred to by label in expectations.
type ringFixture struct {
	ring   Ring
	now    time.Time
	retain time.Duration
	labels map[string]string // kid → label
	kids   map[string]string // label → kid
}

type ringOpt func(*ringFixture)

const fixtureRetain = 30 * time.Minute

func newRingFixture(t *testing.T, opts ...ringOpt) *ringFixture {
	t.Helper()
	f := &ringFixture{ring: Ring{Keys: map[string]*Key{}}, now: at(50 * time.Minute), retain: fixtureRetain,
		labels: map[string]string{}, kids: map[string]string{}}
	withKey("retired", freshKey(t, "ES256"), Retired, created(-2*time.Hour), published(-2*time.Hour), activated(-time.Hour), retired(0), removeAt(30*time.Minute))(f)
	withKey("active", freshKey(t, "ES256"), Active, created(-15*time.Minute), published(-15*time.Minute), activated(0))(f)
	withKey("next", freshKey(t, "ES256"), Next, created(45*time.Minute), published(45*time.Minute))(f)
	for _, o := range opts {
		o(f)
	}
	sortRecords(f.ring.Records)
	return f
}

// withKey adds (or, for an existing label, replaces) a key generation.
func withKey(label string, k *Key, s State, opts ...recordOpt) ringOpt {
	return func(f *ringFixture) {
		if old, ok := f.kids[label]; ok {
			without(label)(f)
			delete(f.labels, old)
		}
		r := record(k.KID, s, opts...)
		r.Algorithm = k.Algorithm
		if pub, ok := k.Public.(*rsa.PublicKey); ok {
			r.RSABits = pub.N.BitLen()
		}
		f.ring.Records = append(f.ring.Records, r)
		f.ring.Keys[k.KID] = k
		f.labels[k.KID], f.kids[label] = label, k.KID
	}
}

// without removes a key generation from the ring.
func without(label string) ringOpt {
	return func(f *ringFixture) {
		kid := f.kids[label]
		var rs []Record
		for _, r := range f.ring.Records {
			if r.KID != kid {
				rs = append(rs, r)
			}
		}
		f.ring.Records = rs
		delete(f.ring.Keys, kid)
		delete(f.kids, label)
	}
}

func (f *ringFixture) kid(label string) string { return f.kids[label] }

func (f *ringFixture) key(label string) *Key { return f.ring.Keys[f.kids[label]] }

func (f *ringFixture) repair() Repair { return Repair{Now: f.now, RetainFor: f.retain} }

func (f *ringFixture) data(t *testing.T) map[string][]byte {
	t.Helper()
	data, err := f.ring.SecretData()
	if err != nil {
		t.Fatalf("SecretData: %v", err)
	}
	return data
}

// describe renders records as timelines with labels in place of kids.
func (f *ringFixture) describe(rs []Record) []string {
	out := describe(rs)
	for i := range out {
		for kid, label := range f.labels {
			out[i] = strings.ReplaceAll(out[i], kid, label)
		}
	}
	return out
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func TestSecretDataLoadRingRoundTrip(t *testing.T) {
	everyAlg := func(f *ringFixture) {
		for _, l := range []string{"retired", "active", "next"} {
			without(l)(f)
		}
		for i, alg := range Algorithms {
			state, opts := Retired, []recordOpt{created(time.Duration(i) * time.Minute), published(time.Duration(i) * time.Minute), retired(30 * time.Minute), removeAt(time.Hour)}
			switch alg {
			case "PS256":
				state, opts = Active, []recordOpt{created(time.Duration(i) * time.Minute), published(time.Duration(i) * time.Minute), activated(30 * time.Minute)}
			case "EdDSA":
				state, opts = Next, []recordOpt{created(45 * time.Minute), published(45 * time.Minute)}
			}
			withKey(alg, fixtureKey(t, alg), state, opts...)(f)
		}
	}
	tests := []struct {
		name string
		opts []ringOpt
	}{
		{name: "a ring with a Retired, an Active and a Next key"},
		{name: "a ring with one key of every algorithm", opts: []ringOpt{everyAlg}},
		{name: "a ring with only a Next key, before the first activation", opts: []ringOpt{without("retired"), without("active")}},
		{name: "a ring with only an Active key", opts: []ringOpt{without("retired"), without("next")}},
		{name: "an empty ring", opts: []ringOpt{without("retired"), without("active"), without("next")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newRingFixture(t, tc.opts...)
			data := f.data(t)
			loaded, problems := LoadRing(data, f.repair())
			if len(problems) != 0 {
				t.Errorf("problems on an intact Secret: %q", problems)
			}
			if got, want := f.describe(loaded.Records), f.describe(f.ring.Records); !reflect.DeepEqual(nonNil(got), nonNil(want)) {
				t.Errorf("records:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
			}
			if len(loaded.Keys) != len(f.ring.Records) {
				t.Errorf("loaded %d keys for %d records", len(loaded.Keys), len(f.ring.Records))
			}
			for _, r := range f.ring.Records {
				k := loaded.Keys[r.KID]
				if k == nil {
					t.Errorf("no key material for %s", f.labels[r.KID])
					continue
				}
				if k.KID != r.KID || k.Algorithm != r.Algorithm || k.Private == nil {
					t.Errorf("%s loaded as %s/%s private=%v", f.labels[r.KID], k.KID, k.Algorithm, k.Private != nil)
					continue
				}
				if !bytes.Equal(mustPEM(t, k), mustPEM(t, f.ring.Keys[r.KID])) {
					t.Errorf("%s: loaded private key differs", f.labels[r.KID])
				}
			}
			if a, want := loaded.Active(), f.ring.Active(); (a == nil) != (want == nil) || (a != nil && a.KID != want.KID) {
				t.Errorf("Active() = %v, want %v", a, want)
			}
			again, err := loaded.SecretData()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, data) {
				t.Error("writing the loaded ring gives different Secret data")
			}
		})
	}
}

func TestSecretDataEntries(t *testing.T) {
	tests := []struct {
		name     string
		opts     []ringOpt
		noActive bool
	}{
		{name: "an ES256 ring"},
		{name: "a ring whose Active key is RSA", opts: []ringOpt{withKey("active", fixtureKey(t, "RS384"), Active, created(-15*time.Minute), published(-15*time.Minute), activated(0))}},
		{name: "a ring whose Active key is Ed25519", opts: []ringOpt{withKey("active", fixtureKey(t, "EdDSA"), Active, created(-15*time.Minute), published(-15*time.Minute), activated(0))}},
		{name: "a ring without an Active key has no active entries", opts: []ringOpt{without("active")}, noActive: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newRingFixture(t, tc.opts...)
			data := f.data(t)

			wantNames := []string{FileState}
			for _, r := range f.ring.Records {
				wantNames = append(wantNames, KeyFile(r.KID))
			}
			if !tc.noActive {
				wantNames = append(wantNames, FileActivePEM, FileActiveJWK, FileActiveKID)
			}
			var names []string
			for name := range data {
				names = append(names, name)
			}
			if !reflect.DeepEqual(sorted(names), sorted(wantNames)) {
				t.Errorf("entries = %v, want %v", sorted(names), sorted(wantNames))
			}
			for _, r := range f.ring.Records {
				if !strings.HasPrefix(KeyFile(r.KID), "key-") || !strings.HasSuffix(KeyFile(r.KID), ".pem") {
					t.Errorf("KeyFile(%s) = %s", r.KID, KeyFile(r.KID))
				}
				priv, err := ParsePrivatePEM(data[KeyFile(r.KID)])
				if err != nil {
					t.Fatalf("%s: %v", KeyFile(r.KID), err)
				}
				if kid, _ := Thumbprint(priv.Public()); kid != r.KID {
					t.Errorf("%s holds key %s", KeyFile(r.KID), kid)
				}
			}
			if tc.noActive {
				return
			}

			active := f.key("active")
			if got := string(data[FileActiveKID]); got != active.KID {
				t.Errorf("%s = %q, want %q", FileActiveKID, got, active.KID)
			}
			if !bytes.Equal(data[FileActivePEM], data[KeyFile(active.KID)]) {
				t.Errorf("%s differs from %s", FileActivePEM, KeyFile(active.KID))
			}
			priv, err := ParsePrivatePEM(data[FileActivePEM])
			if err != nil {
				t.Fatalf("%s: %v", FileActivePEM, err)
			}
			if kid, _ := Thumbprint(priv.Public()); kid != active.KID {
				t.Errorf("%s holds key %s, want the active %s", FileActivePEM, kid, active.KID)
			}

			var jwk jose.JSONWebKey
			if err := jwk.UnmarshalJSON(data[FileActiveJWK]); err != nil {
				t.Fatalf("%s: %v", FileActiveJWK, err)
			}
			if jwk.IsPublic() || !jwk.Valid() {
				t.Errorf("%s is not a valid private JWK", FileActiveJWK)
			}
			if jwk.KeyID != active.KID || jwk.Algorithm != active.Algorithm || jwk.Use != "sig" {
				t.Errorf("%s has kid=%q alg=%q use=%q, want %q %q sig", FileActiveJWK, jwk.KeyID, jwk.Algorithm, jwk.Use, active.KID, active.Algorithm)
			}
			pub := jwk.Public()
			if kid, _ := Thumbprint(pub.Key); kid != active.KID {
				t.Errorf("%s holds key %s", FileActiveJWK, kid)
			}
			// An issuer signing with active.jwk produces tokens the published key verifies.
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(jwk.Algorithm), Key: jwk}, nil)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := signer.Sign([]byte("payload"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := obj.Verify(active.PublicJWK()); err != nil {
				t.Errorf("a token signed with %s does not verify with the published key: %v", FileActiveJWK, err)
			}
		})
	}
}

func TestSecretDataStateFileHasNoPrivateMaterial(t *testing.T) {
	f := newRingFixture(t,
		withKey("rsa", fixtureKey(t, "PS256"), Retired, created(-3*time.Hour), retired(0), removeAt(20*time.Minute)),
		withKey("ed", fixtureKey(t, "EdDSA"), Retired, created(-4*time.Hour), retired(0), removeAt(20*time.Minute)))
	data := f.data(t)
	state := data[FileState]

	var sf struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(state, &sf); err != nil {
		t.Fatal(err)
	}
	if len(sf.Keys) != len(f.ring.Records) {
		t.Fatalf("keys.json lists %d keys, want %d", len(sf.Keys), len(f.ring.Records))
	}
	for i, entry := range sf.Keys {
		pub, ok := entry["publicJWK"]
		if !ok {
			t.Errorf("keys[%d] has no publicJWK", i)
			continue
		}
		assertNoPrivateMembers(t, "keys.json publicJWK", pub)
		for _, name := range privateJWKMembers {
			if _, ok := entry[name]; ok {
				t.Errorf("keys[%d] has private member %q", i, name)
			}
		}
	}
	if bytes.Contains(state, []byte("PRIVATE KEY")) {
		t.Error("keys.json contains a PEM private key")
	}
	for _, frag := range pemFragments(data) {
		if bytes.Contains(state, []byte(frag)) {
			t.Errorf("keys.json contains private key material %q", frag)
		}
	}
	for label, kid := range f.kids {
		var priv map[string]any
		if err := json.Unmarshal(mustJSON(t, f.ring.Keys[kid].PrivateJWK()), &priv); err != nil {
			t.Fatal(err)
		}
		if d, _ := priv["d"].(string); d == "" || bytes.Contains(state, []byte(d)) {
			t.Errorf("keys.json contains the private exponent of %s", label)
		}
	}
}

func TestSecretDataRefusesARecordWithoutKeyMaterial(t *testing.T) {
	f := newRingFixture(t)
	delete(f.ring.Keys, f.kid("next"))
	if data, err := f.ring.SecretData(); err == nil {
		t.Errorf("SecretData = %d entries, want an error", len(data))
	}
}

func TestRingActiveAndPublicKeys(t *testing.T) {
	f := newRingFixture(t)
	if a := f.ring.Active(); a == nil || a.KID != f.kid("active") {
		t.Errorf("Active() = %v, want the active key", a)
	}
	var got []string
	for _, k := range f.ring.PublicKeys() {
		got = append(got, f.labels[k.KID])
	}
	if want := []string{"retired", "active", "next"}; !reflect.DeepEqual(got, want) {
		t.Errorf("PublicKeys() = %v, want %v in record order", got, want)
	}
	if a := newRingFixture(t, without("active")).ring.Active(); a != nil {
		t.Errorf("Active() of a ring without one = %s, want nil", a.KID)
	}
	if empty, problems := LoadRing(nil, Repair{Now: t0}); len(empty.Records) != 0 || len(problems) != 0 || empty.Keys == nil {
		t.Errorf("LoadRing(nil) = %v, %q; want an empty ring with a key map and no problems", empty, problems)
	}
}

// pemFragments is every base64 body line of every PEM in data: text that must never appear
// in a problem, a status or a ConfigMap.
func pemFragments(datas ...map[string][]byte) []string {
	var out []string
	for _, data := range datas {
		for _, v := range data {
			if !bytes.Contains(v, []byte("-----BEGIN")) {
				continue
			}
			for _, l := range strings.Split(string(v), "\n") {
				if l = strings.TrimSpace(l); len(l) >= 16 && !strings.HasPrefix(l, "-----") {
					out = append(out, l)
				}
			}
		}
	}
	return out
}

func assertProblemsHoldNoKeyMaterial(t *testing.T, problems []string, datas ...map[string][]byte) {
	t.Helper()
	frags := pemFragments(datas...)
	for _, p := range problems {
		if strings.Contains(p, "-----BEGIN") || strings.Contains(p, "-----END") || strings.Contains(p, "PRIVATE KEY-----") {
			t.Errorf("problem contains PEM text: %q", p)
		}
		for _, frag := range frags {
			if strings.Contains(p, frag) || strings.Contains(p, frag[:16]) {
				t.Errorf("problem contains private key material: %q", p)
				break
			}
		}
	}
}

// editState rewrites keys.json through its Go form.
func editState(t *testing.T, data map[string][]byte, edit func(sf *stateFile)) {
	t.Helper()
	var sf stateFile
	if err := json.Unmarshal(data[FileState], &sf); err != nil {
		t.Fatal(err)
	}
	edit(&sf)
	b, err := json.Marshal(sf)
	if err != nil {
		t.Fatal(err)
	}
	data[FileState] = b
}

func TestLoadRingMendsDamage(t *testing.T) {
	const (
		// The standard timelines, and what each key looks like once adopted at now=+50m.
		intactRetired = "retired Retired created=-2h0m0s published=-2h0m0s activated=-1h0m0s retired=0s removeAt=30m0s"
		intactActive  = "active Active created=-15m0s published=-15m0s activated=0s retired=- removeAt=-"
		intactNext    = "next Next created=45m0s published=45m0s activated=- retired=- removeAt=-"
		adopted       = " Retired created=50m0s published=- activated=- retired=50m0s removeAt=1h20m0s"
	)
	rsaOrphan := fixtureKey(t, "RS256")
	tests := []struct {
		name   string
		damage func(t *testing.T, f *ringFixture, data map[string][]byte)
		repair func(f *ringFixture, r *Repair)
		// want is the loaded timelines (labels for kids), in any order.
		want []string
		// verifyOnly labels keys expected without a private half; every other key has one.
		verifyOnly []string
		// problem is a substring some problem must contain (with labels for kids).
		problem string
	}{
		{
			name:    "keys.json deleted: timelines come back from the fallback",
			damage:  func(t *testing.T, f *ringFixture, data map[string][]byte) { delete(data, FileState) },
			repair:  func(f *ringFixture, r *Repair) { r.Fallback = f.ring.Records },
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "keys.json is missing",
		},
		{
			name:    "keys.json deleted without a fallback: every key is adopted as Retired until now+retainFor",
			damage:  func(t *testing.T, f *ringFixture, data map[string][]byte) { delete(data, FileState) },
			want:    []string{"retired" + adopted, "active" + adopted, "next" + adopted},
			problem: "keys.json is missing",
		},
		{
			name:   "keys.json deleted with a stale fallback: the key it lacks is adopted as Retired",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) { delete(data, FileState) },
			repair: func(f *ringFixture, r *Repair) {
				r.Fallback = nil
				for _, rec := range f.ring.Records {
					if rec.KID != f.kid("next") {
						r.Fallback = append(r.Fallback, rec)
					}
				}
			},
			want:    []string{intactRetired, intactActive, "next" + adopted},
			problem: "next (entry key-next.pem) has no timeline",
		},
		{
			name:    "keys.json garbage: timelines come back from the fallback",
			damage:  func(t *testing.T, f *ringFixture, data map[string][]byte) { data[FileState] = []byte("}{ not json") },
			repair:  func(f *ringFixture, r *Repair) { r.Fallback = f.ring.Records },
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "keys.json is unreadable",
		},
		{
			name:    "keys.json garbage without a fallback: every key is adopted as Retired",
			damage:  func(t *testing.T, f *ringFixture, data map[string][]byte) { data[FileState] = []byte("}{ not json") },
			want:    []string{"retired" + adopted, "active" + adopted, "next" + adopted},
			problem: "keys.json is unreadable",
		},
		{
			name:    "keys.json emptied without a fallback: every key is adopted as Retired",
			damage:  func(t *testing.T, f *ringFixture, data map[string][]byte) { data[FileState] = []byte{} },
			want:    []string{"retired" + adopted, "active" + adopted, "next" + adopted},
			problem: "keys.json is unreadable",
		},
		{
			name: "keys.json with an unknown state: timelines come back from the fallback",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				editState(t, data, func(sf *stateFile) { sf.Keys[0].State = "Paused" })
			},
			repair:  func(f *ringFixture, r *Repair) { r.Fallback = f.ring.Records },
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "Paused",
		},
		{
			name: "keys.json with a record without alg: every key is adopted as Retired",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				editState(t, data, func(sf *stateFile) { sf.Keys[1].Algorithm = "" })
			},
			want:    []string{"retired" + adopted, "active" + adopted, "next" + adopted},
			problem: "kid and alg are required",
		},
		{
			name:       "the Next key's PEM deleted: kept verify-only from its public JWK, as Retired",
			damage:     func(t *testing.T, f *ringFixture, data map[string][]byte) { delete(data, KeyFile(f.kid("next"))) },
			want:       []string{intactRetired, intactActive, "next Retired created=45m0s published=45m0s activated=- retired=50m0s removeAt=1h20m0s"},
			verifyOnly: []string{"next"},
			problem:    "private key next is missing; kept for verification only",
		},
		{
			name:       "the Retired key's PEM deleted: kept verify-only with its original RemoveAt",
			damage:     func(t *testing.T, f *ringFixture, data map[string][]byte) { delete(data, KeyFile(f.kid("retired"))) },
			want:       []string{intactRetired, intactActive, intactNext},
			verifyOnly: []string{"retired"},
			problem:    "private key retired is missing",
		},
		{
			name: "the Active key's PEM and active.pem deleted: the key becomes Retired, verify-only",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				delete(data, KeyFile(f.kid("active")))
				delete(data, FileActivePEM)
			},
			want:       []string{intactRetired, "active Retired created=-15m0s published=-15m0s activated=0s retired=50m0s removeAt=1h20m0s", intactNext},
			verifyOnly: []string{"active"},
			problem:    "private key active is missing",
		},
		{
			name:    "the Active key's PEM deleted but active.pem present: recovered as Active, and reported",
			damage:  func(t *testing.T, f *ringFixture, data map[string][]byte) { delete(data, KeyFile(f.kid("active"))) },
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "active",
		},
		{
			name: "the Next key's PEM replaced by garbage: kept verify-only, as Retired",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				data[KeyFile(f.kid("next"))] = []byte("garbage")
			},
			want:       []string{intactRetired, intactActive, "next Retired created=45m0s published=45m0s activated=- retired=50m0s removeAt=1h20m0s"},
			verifyOnly: []string{"next"},
			problem:    "entry key-next.pem is not a usable private key",
		},
		{
			name: "the Next key's PEM replaced by a PKCS #1 RSA key: kept verify-only, no material in problems",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				data[KeyFile(f.kid("next"))] = pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaOrphan.Private.(*rsa.PrivateKey)))
			},
			want:       []string{intactRetired, intactActive, "next Retired created=45m0s published=45m0s activated=- retired=50m0s removeAt=1h20m0s"},
			verifyOnly: []string{"next"},
			problem:    "entry key-next.pem is not a usable private key",
		},
		{
			name: "the Active key's PEM replaced by garbage with active.pem intact: recovered as Active",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				data[KeyFile(f.kid("active"))] = []byte("garbage")
			},
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "entry key-active.pem is not a usable private key",
		},
		{
			name:    "active.pem replaced by garbage: nothing lost",
			damage:  func(t *testing.T, f *ringFixture, data map[string][]byte) { data[FileActivePEM] = []byte("garbage") },
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "entry active.pem is not a usable private key",
		},
		{
			name: "a PEM stored under a wrong name: adopted under its real kid",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				data[KeyFile("wrong")] = data[KeyFile(f.kid("next"))]
				delete(data, KeyFile(f.kid("next")))
			},
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "entry key-wrong.pem holds key next; renamed",
		},
		{
			name: "two PEMs swapped between their names: each adopted under its real kid",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				a, b := KeyFile(f.kid("next")), KeyFile(f.kid("retired"))
				data[a], data[b] = data[b], data[a]
			},
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "entry key-next.pem holds key retired; renamed",
		},
		{
			name: "an orphan RSA PEM is adopted as Retired with the preferred RSA algorithm",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				f.labels[rsaOrphan.KID] = "orphan"
				data[KeyFile(rsaOrphan.KID)] = mustPEM(t, rsaOrphan)
			},
			repair:  func(f *ringFixture, r *Repair) { r.PreferredRSAAlg = "PS384" },
			want:    []string{intactRetired, intactActive, intactNext, "orphan" + adopted + " alg=PS384/0"},
			problem: "orphan (entry key-orphan.pem) has no timeline; adopted as Retired",
		},
		{
			name: "an orphan RSA PEM without a preferred algorithm is adopted as RS256",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				f.labels[rsaOrphan.KID] = "orphan"
				data[KeyFile(rsaOrphan.KID)] = mustPEM(t, rsaOrphan)
			},
			want:    []string{intactRetired, intactActive, intactNext, "orphan" + adopted + " alg=RS256/0"},
			problem: "adopted as Retired",
		},
		{
			name: "an orphan RSA PEM with a non-RSA preferred algorithm is adopted as RS256",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				f.labels[rsaOrphan.KID] = "orphan"
				data[KeyFile(rsaOrphan.KID)] = mustPEM(t, rsaOrphan)
			},
			repair:  func(f *ringFixture, r *Repair) { r.PreferredRSAAlg = "ES256" },
			want:    []string{intactRetired, intactActive, intactNext, "orphan" + adopted + " alg=RS256/0"},
			problem: "adopted as Retired",
		},
		{
			name: "orphan EC and Ed25519 PEMs are pinned by their curve",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				for _, alg := range []string{"ES384", "ES512", "EdDSA"} {
					k := fixtureKey(t, alg)
					f.labels[k.KID] = "orphan" + alg
					data[KeyFile(k.KID)] = mustPEM(t, k)
				}
			},
			repair: func(f *ringFixture, r *Repair) { r.PreferredRSAAlg = "PS256" },
			want: []string{intactRetired, intactActive, intactNext,
				"orphanES384" + adopted + " alg=ES384/0", "orphanES512" + adopted + " alg=ES512/0", "orphanEdDSA" + adopted + " alg=EdDSA/0"},
			problem: "adopted as Retired",
		},
		{
			name: "only active.pem survives: its key is adopted as Retired",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				for name := range data {
					if name != FileActivePEM {
						delete(data, name)
					}
				}
			},
			want:    []string{"active" + adopted},
			problem: "keys.json is missing",
		},
		{
			name: "a key listed twice in keys.json is kept once",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				editState(t, data, func(sf *stateFile) { sf.Keys = append(sf.Keys, sf.Keys[0]) })
			},
			want:    []string{intactRetired, intactActive, intactNext},
			problem: "key retired is listed twice",
		},
		{
			name: "a key whose PEM and public JWK are both gone is dropped: nothing can verify with it",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				delete(data, KeyFile(f.kid("next")))
				editState(t, data, func(sf *stateFile) {
					for i := range sf.Keys {
						if sf.Keys[i].KID == f.kid("next") {
							sf.Keys[i].PublicJWK = nil
						}
					}
				})
			},
			want:    []string{intactRetired, intactActive},
			problem: "key next is missing and cannot be recovered; dropped",
		},
		{
			name: "a key whose public JWK belongs to another key is dropped when its PEM is gone",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				delete(data, KeyFile(f.kid("next")))
				editState(t, data, func(sf *stateFile) {
					for i := range sf.Keys {
						if sf.Keys[i].KID == f.kid("next") {
							sf.Keys[i].PublicJWK = mustJSON(t, f.key("active").PublicJWK())
						}
					}
				})
			},
			want:    []string{intactRetired, intactActive},
			problem: "key next is missing and cannot be recovered",
		},
		{
			name: "a record whose alg does not suit its key is reported",
			damage: func(t *testing.T, f *ringFixture, data map[string][]byte) {
				editState(t, data, func(sf *stateFile) {
					for i := range sf.Keys {
						if sf.Keys[i].KID == f.kid("retired") {
							sf.Keys[i].Algorithm = "ES384"
						}
					}
				})
			},
			want:    nil, // not asserted: see the check below
			problem: "key retired does not suit ES384",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newRingFixture(t)
			intact := f.data(t)
			data := f.data(t)
			tc.damage(t, f, data)
			fix := f.repair()
			if tc.repair != nil {
				tc.repair(f, &fix)
			}
			ring, problems := LoadRing(data, fix)

			if len(problems) == 0 {
				t.Error("damage was not reported: no problems")
			}
			labelled := make([]string, len(problems))
			for i, p := range problems {
				labelled[i] = p
				for kid, label := range f.labels {
					labelled[i] = strings.ReplaceAll(labelled[i], kid, label)
				}
			}
			found := false
			for _, p := range labelled {
				found = found || strings.Contains(p, tc.problem)
			}
			if len(problems) > 0 && !found {
				t.Errorf("no problem mentions %q: %q", tc.problem, labelled)
			}
			assertProblemsHoldNoKeyMaterial(t, problems, intact, data)
			checkRing(t, ring)

			if tc.want != nil {
				if got := f.describe(ring.Records); !reflect.DeepEqual(sorted(got), sorted(tc.want)) {
					t.Errorf("records:\n got %s\nwant %s", strings.Join(sorted(got), "\n     "), strings.Join(sorted(tc.want), "\n     "))
				}
			}
			verifyOnly := map[string]bool{}
			for _, l := range tc.verifyOnly {
				verifyOnly[l] = true
			}
			for _, r := range ring.Records {
				label := f.labels[r.KID]
				if k := ring.Keys[r.KID]; k != nil && (k.Private == nil) != verifyOnly[label] {
					t.Errorf("%s: has private half = %v, want %v", label, k.Private != nil, !verifyOnly[label])
				}
			}

			// A repaired ring is stable: written back and loaded again, its timelines stay
			// as they are (a verify-only key's RemoveAt is not pushed back on every load).
			if len(ring.Records) > 0 {
				again, err := ring.SecretData()
				if err != nil {
					t.Fatalf("SecretData of the repaired ring: %v", err)
				}
				reloaded, _ := LoadRing(again, Repair{Now: f.now.Add(time.Minute), RetainFor: f.retain})
				if got, want := f.describe(reloaded.Records), f.describe(ring.Records); !reflect.DeepEqual(got, want) {
					t.Errorf("reloading the repaired ring changed it:\n got %v\nwant %v", got, want)
				}
			}
		})
	}
}

// TestLoadRingKeepsEveryKeyThatMayVerify removes each single Secret entry in turn: whatever
// is lost, every key generation whose public half is still known must remain loadable.
func TestLoadRingKeepsEveryKeyThatMayVerify(t *testing.T) {
	f := newRingFixture(t)
	intact := f.data(t)
	for name := range intact {
		label := name
		for kid, l := range f.labels {
			label = strings.ReplaceAll(label, kid, l)
		}
		t.Run("without "+label, func(t *testing.T) {
			data := map[string][]byte{}
			for k, v := range intact {
				if k != name {
					data[k] = v
				}
			}
			ring, problems := LoadRing(data, f.repair())
			assertProblemsHoldNoKeyMaterial(t, problems, intact)
			checkRing(t, ring)
			for _, r := range f.ring.Records {
				if ring.Keys[r.KID] == nil {
					t.Errorf("key %s lost", f.labels[r.KID])
				}
			}
		})
	}
}

// checkRing checks what LoadRing promises whatever the input: every record has key material
// with its kid and alg, kids are unique and records are oldest first.
func checkRing(t *testing.T, ring Ring) {
	t.Helper()
	seen := map[string]bool{}
	for i, r := range ring.Records {
		if seen[r.KID] {
			t.Errorf("kid %s listed twice", r.KID)
		}
		seen[r.KID] = true
		k := ring.Keys[r.KID]
		if k == nil {
			t.Errorf("record %s has no key material", r.KID)
			continue
		}
		if k.KID != r.KID || k.Algorithm != r.Algorithm {
			t.Errorf("record %s/%s holds key %s/%s", r.KID, r.Algorithm, k.KID, k.Algorithm)
		}
		if kid, err := Thumbprint(k.Public); err != nil || kid != r.KID {
			t.Errorf("record %s holds a public key with thumbprint %s (%v)", r.KID, kid, err)
		}
		if i > 0 && r.CreatedAt.Before(ring.Records[i-1].CreatedAt) {
			t.Errorf("records out of order at %d", i)
		}
		switch r.State {
		case Next, Active, Retired:
		default:
			t.Errorf("record %s has state %q", r.KID, r.State)
		}
	}
}
