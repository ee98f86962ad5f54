// Package certs issues the webhook's own CA and serving certificate, so tokenkeeper needs
// no cert-manager. It is pure: time and entropy come from the caller.
package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Validity periods. Certificates are renewed once two thirds of their life has passed, so a
// missed renewal has a third of the validity to be noticed.
const (
	CAValidity      = 5 * 365 * 24 * time.Hour
	ServingValidity = 90 * 24 * time.Hour
)

// Pair is a PEM certificate and its PEM private key.
type Pair struct {
	Cert, Key []byte
}

// NewCA makes a self-signed CA.
func NewCA(name string, now time.Time) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Minute), // tolerate small clock skew
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return sign(tmpl, tmpl, &key.PublicKey, key, key)
}

// NewServing makes a serving certificate for hosts (DNS names or IPs), signed by ca.
func NewServing(ca Pair, hosts []string, now time.Time) (Pair, error) {
	caCert, err := ParseCert(ca.Cert)
	if err != nil {
		return Pair{}, fmt.Errorf("CA: %w", err)
	}
	caKey, err := parseKey(ca.Key)
	if err != nil {
		return Pair{}, fmt.Errorf("CA key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	if len(hosts) == 0 {
		return Pair{}, errors.New("no hosts")
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     minTime(now.Add(ServingValidity), caCert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return sign(tmpl, caCert, &key.PublicKey, key, caKey)
}

// RenewAt is when a certificate should be replaced: two thirds into its validity.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life * 2 / 3)
}

// ServingValid reports whether serving is a usable certificate for hosts, signed by ca, and
// not yet due for renewal at now. The CA's own renewal is PlanCerts'.
func ServingValid(ca, serving Pair, hosts []string, now time.Time) bool {
	caCert, err := ParseCert(ca.Cert)
	if err != nil {
		return false
	}
	cert, err := ParseCert(serving.Cert)
	if err != nil || !now.Before(RenewAt(cert)) {
		return false
	}
	if key, err := parseKey(serving.Key); err != nil || !key.PublicKey.Equal(cert.PublicKey) {
		return false // a key that is not the certificate's fails every handshake
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, h := range hosts {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, CurrentTime: now}); err != nil {
			return false
		}
	}
	return true
}

// ParseCert decodes the first PEM certificate.
func ParseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Bundle concatenates PEM certificates for a caBundle, skipping empty ones and duplicates.
func Bundle(certs ...[]byte) []byte {
	var b bytes.Buffer
	seen := map[string]bool{}
	for _, c := range certs {
		c = bytes.TrimSpace(c)
		if len(c) == 0 || seen[string(c)] {
			continue
		}
		seen[string(c)] = true
		b.Write(c)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func sign(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey, signer any) (Pair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return Pair{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
