package keys

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzLoadRing feeds arbitrary bytes as keys.json and as one PEM entry of a Secret. LoadRing
// must never panic, every record it returns must have key material under its kid, the
// result must be writable back as a Secret, and no problem may quote the private key.
// testdata/fuzz/FuzzLoadRing holds seeds made from real rings.
func FuzzLoadRing(f *testing.F) {
	f.Add([]byte(""), "key-x.pem", []byte(""))
	f.Add([]byte("{}"), "active.pem", []byte("garbage"))
	f.Add([]byte(`{"keys":null}`), "key-x.pem", []byte("-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte(`{"keys":[{"kid":"x","alg":"ES256","state":"Active","createdAt":"2026-01-01T00:00:00Z","publicJWK":{}}]}`), "key-x.pem", []byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte(`{"keys":[{"kid":"x","alg":"ES256","state":"Paused","createdAt":"2026-01-01T00:00:00Z"}],"extra":1}`), "keys.json", []byte("{"))

	f.Fuzz(func(t *testing.T, state []byte, pemName string, pemData []byte) {
		data := map[string][]byte{pemName: pemData}
		if len(state) > 0 {
			data[FileState] = state
		}
		fix := Repair{Now: t0, RetainFor: time.Hour, PreferredRSAAlg: "PS256"}
		ring, problems := LoadRing(data, fix)
		checkRing(t, ring)

		// Problems may echo keys.json (which holds no private material), never the PEM.
		for _, frag := range pemFragments(map[string][]byte{pemName: pemData}) {
			if bytes.Contains(state, []byte(frag)) || strings.Contains(pemName, frag) {
				continue
			}
			for _, p := range problems {
				if strings.Contains(p, frag) {
					t.Fatalf("problem quotes the PEM entry: %q", p)
				}
			}
		}

		// What was loaded can be written back, and loads again to the same keys.
		if len(ring.Records) == 0 {
			return
		}
		again, err := ring.SecretData()
		if err != nil {
			t.Fatalf("the loaded ring cannot be written back: %v", err)
		}
		reloaded, _ := LoadRing(again, fix)
		if got, want := kidsOf(reloaded.Records), kidsOf(ring.Records); !reflect.DeepEqual(got, want) {
			t.Fatalf("reloading the written ring gives kids %v, want %v", got, want)
		}
	})
}

func kidsOf(rs []Record) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.KID+"/"+string(r.State))
	}
	return out
}
