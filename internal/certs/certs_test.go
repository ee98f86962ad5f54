package certs

import (
	"bytes"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestServingCertificateIsValidUntilTwoThirdsOfItsLife(t *testing.T) {
	ca, err := NewCA("test-ca", t0)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"tokenkeeper-webhook.tokenkeeper-system.svc", "127.0.0.1"}
	serving, err := NewServing(ca, hosts, t0)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ParseCert(serving.Cert)
	renew := RenewAt(cert)
	cases := []struct {
		name  string
		ca    Pair
		hosts []string
		at    time.Time
		want  bool
	}{
		{"fresh, for every host it was issued for", ca, hosts, t0, true},
		{"a second before renewal is due", ca, hosts, renew.Add(-time.Second), true},
		{"once renewal is due", ca, hosts, renew, false},
		{"for a host it was not issued for", ca, []string{"other.svc"}, t0, false},
		{"against another CA", mustCA(t), hosts, t0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ServingValid(c.ca, serving, c.hosts, c.at); got != c.want {
				t.Errorf("ServingValid = %v, want %v", got, c.want)
			}
		})
	}
	if d := renew.Sub(cert.NotBefore); d < ServingValidity*2/3-time.Minute || d > ServingValidity*2/3+time.Minute {
		t.Errorf("renewal %v after issue, want two thirds of %v", d, ServingValidity)
	}
}

func TestServingCertificateNeverOutlivesItsCA(t *testing.T) {
	ca, _ := NewCA("short", t0.Add(-CAValidity+24*time.Hour)) // expires tomorrow
	serving, err := NewServing(ca, []string{"x.svc"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCert(serving.Cert)
	caCert, _ := ParseCert(ca.Cert)
	if c.NotAfter.After(caCert.NotAfter) {
		t.Errorf("serving certificate ends %v, after its CA (%v)", c.NotAfter, caCert.NotAfter)
	}
}

func TestBundleSkipsEmptyAndDuplicateCertificates(t *testing.T) {
	a, b := mustCA(t).Cert, mustCA(t).Cert
	got := Bundle(a, nil, b, a)
	if bytes.Count(got, []byte("BEGIN CERTIFICATE")) != 2 {
		t.Errorf("bundle has %d certificates, want 2", bytes.Count(got, []byte("BEGIN CERTIFICATE")))
	}
}

func TestGarbageIsNeverValid(t *testing.T) {
	if ServingValid(Pair{Cert: []byte("x")}, Pair{}, []string{"h"}, t0) {
		t.Error("garbage accepted")
	}
	if _, err := NewServing(Pair{Cert: []byte("x")}, []string{"h"}, t0); err == nil {
		t.Error("issued from a garbage CA")
	}
}

func mustCA(t *testing.T) Pair {
	t.Helper()
	ca, err := NewCA("other", t0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
