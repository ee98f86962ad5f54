package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CertProvider serves the webhook's certificate straight from the Secret the certificate
// controller maintains: every replica picks up a renewal within a cache sync, with no files
// (the root filesystem stays read-only).
type CertProvider struct {
	Reader client.Reader
	Secret types.NamespacedName

	mu   sync.Mutex
	rv   string
	cert *tls.Certificate
}

// GetCertificate is a tls.Config.GetCertificate.
func (p *CertProvider) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := &corev1.Secret{}
	if err := p.Reader.Get(context.Background(), p.Secret, s); err != nil {
		return nil, fmt.Errorf("webhook serving certificate not available yet: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cert != nil && s.ResourceVersion == p.rv {
		return p.cert, nil
	}
	cert, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("webhook serving certificate unusable: %w", err)
	}
	p.cert, p.rv = &cert, s.ResourceVersion
	return p.cert, nil
}
