package certs

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

var planHosts = []string{"tokenkeeper-webhook.tokenkeeper-system.svc", "tokenkeeper-distribution.tokenkeeper-system.svc", "127.0.0.1"}

// verifies reports whether the served certificate verifies for every host against bundle.
func verifies(t *testing.T, bundle []byte, served []byte, at time.Time) error {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("bundle holds no certificate")
	}
	cert, err := ParseCert(served)
	if err != nil {
		return err
	}
	for _, h := range planHosts {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, CurrentTime: at}); err != nil {
			return err
		}
	}
	return nil
}

// Twelve years of a manager that reconciles every six hours (and at each NextCheck), with
// clients that learn the trust bundle two days late (longer than any kubelet sync): at no
// instant does the served certificate fail to verify against the bundle a client holds,
// and every CA the Secret drops had expired.
func TestCertificateTimelineNeverBreaksALaggingClient(t *testing.T) {
	const lag = 48 * time.Hour
	type seen struct {
		at     time.Time
		bundle []byte
	}
	now := t0
	p, err := PlanCerts(nil, "tokenkeeper-ca", planHosts, now)
	if err != nil {
		t.Fatal(err)
	}
	data := p.Data
	history := []seen{{now, TrustBundle(data)}}
	lagging := func(at time.Time) []byte {
		b := history[0].bundle
		for _, h := range history {
			if !h.at.After(at.Add(-lag)) {
				b = h.bundle
			}
		}
		return b
	}
	cas, promotions, servings := 1, 0, 1
	end := t0.Add(12 * 365 * 24 * time.Hour)
	for now.Before(end) {
		step := now.Add(6 * time.Hour)
		if p.NextCheck.After(now) && p.NextCheck.Before(step) {
			step = p.NextCheck
		}
		now = step
		before := data
		if p, err = PlanCerts(data, "tokenkeeper-ca", planHosts, now); err != nil {
			t.Fatal(err)
		}
		if len(p.Problems) > 0 {
			t.Fatalf("%v: problems with its own data: %v", now, p.Problems)
		}
		data = p.Data
		for _, c := range p.Changes {
			switch c {
			case "published the next CA":
				cas++
			case "the next CA took over signing":
				promotions++
			case "issued a serving certificate":
				servings++
			case "issued a CA":
				t.Fatalf("%v: issued a fresh CA over a working one", now)
			}
		}
		for _, e := range []string{EntryCA, EntryCANext, EntryCAPrevious} {
			if old, err := ParseCert(before[e]); err == nil && now.Before(old.NotAfter) && !strings.Contains(string(TrustBundle(data)), strings.TrimSpace(string(before[e]))) {
				t.Fatalf("%v: %s left the bundle before it expired", now, e)
			}
		}
		history = append(history, seen{now, TrustBundle(data)})
		// The server switches to the new certificate at once; clients trust what they
		// learned lag ago (at install they have the first bundle).
		if err := verifies(t, lagging(now), data[EntryCert], now); err != nil {
			t.Fatalf("%v: a client %v behind cannot verify the served certificate: %v", now, lag, err)
		}
		if len(p.Changes) == 0 && !equalData(before, data) {
			t.Fatalf("%v: data changed without a change reported", now)
		}
	}
	// Over twelve years with five-year CAs renewed at two thirds of their life: the CA
	// is renewed three times, the serving certificate every 60 days or so.
	if cas != 4 || promotions != 3 {
		t.Errorf("%d CAs, %d promotions; want 4 and 3", cas, promotions)
	}
	if servings < 12*365/61 {
		t.Errorf("only %d serving certificates in twelve years", servings)
	}
}

func equalData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}

func TestPlanReplacesWhatItCannotUseAndSaysSo(t *testing.T) {
	good, err := PlanCerts(nil, "ca", planHosts, t0)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewCA("other", t0)
	cases := []struct {
		name        string
		edit        func(map[string][]byte)
		hosts       []string
		wantProblem string // substring of a Problem; "" means none
		wantChanges []string
		keepsCA     bool
	}{
		{"nothing to do", func(map[string][]byte) {}, planHosts, "", nil, true},
		{"a garbage CA", func(d map[string][]byte) { d[EntryCA] = []byte("garbage") }, planHosts, "ca.crt", []string{"issued a CA", "issued a serving certificate"}, false},
		{"a CA key that is not the CA's", func(d map[string][]byte) { d[EntryCAKey] = other.Key }, planHosts, "ca.crt", []string{"issued a CA", "issued a serving certificate"}, false},
		{"a garbage previous CA", func(d map[string][]byte) { d[EntryCAPrevious] = []byte("x") }, planHosts, "ca-previous.crt", nil, true},
		{"a garbage serving certificate", func(d map[string][]byte) { d[EntryCert] = []byte("x") }, planHosts, "tls.crt", []string{"issued a serving certificate"}, true},
		{"a new host", func(map[string][]byte) {}, append([]string{"new.svc"}, planHosts...), "", []string{"issued a serving certificate"}, true},
		{"a serving key that is not the certificate's", func(d map[string][]byte) {
			s, _ := NewServing(Pair{Cert: d[EntryCA], Key: d[EntryCAKey]}, planHosts, t0)
			d[EntryKey] = s.Key
		}, planHosts, "", []string{"issued a serving certificate"}, true},
		{"a serving certificate of another CA", func(d map[string][]byte) {
			s, _ := NewServing(other, planHosts, t0)
			d[EntryCert], d[EntryKey] = s.Cert, s.Key
		}, planHosts, "", []string{"issued a serving certificate"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := map[string][]byte{}
			for k, v := range good.Data {
				data[k] = v
			}
			c.edit(data)
			p, err := PlanCerts(data, "ca", c.hosts, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(p.Problems, "; ")
			if (c.wantProblem == "") != (got == "") || !strings.Contains(got, c.wantProblem) {
				t.Errorf("problems %q, want one naming %q", got, c.wantProblem)
			}
			if strings.Join(p.Changes, ",") != strings.Join(c.wantChanges, ",") {
				t.Errorf("changes %q, want %q", p.Changes, c.wantChanges)
			}
			if keeps := string(p.Data[EntryCA]) == string(good.Data[EntryCA]); keeps != c.keepsCA {
				t.Errorf("kept the CA: %v, want %v", keeps, c.keepsCA)
			}
			if err := verifies(t, TrustBundle(p.Data), p.Data[EntryCert], t0.Add(time.Hour)); err != nil && len(c.hosts) == len(planHosts) {
				t.Errorf("the planned certificate does not verify against the planned bundle: %v", err)
			}
		})
	}
}
