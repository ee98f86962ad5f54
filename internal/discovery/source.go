package discovery

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
)

// FromCluster lists SigningKeys with an issuer and reads their JWKS ConfigMaps through c
// (the manager's cache, so every replica serves without touching the API server).
func FromCluster(c client.Reader, jwksKey, discoveryKey string) Source {
	return func(ctx context.Context) ([]Issuer, error) {
		var list tkv1.SigningKeyList
		if err := c.List(ctx, &list); err != nil {
			return nil, err
		}
		out := make([]Issuer, 0)
		for i := range list.Items {
			sk := &list.Items[i]
			if sk.Spec.Issuer == "" {
				continue
			}
			cm := &corev1.ConfigMap{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: sk.Namespace, Name: sk.JWKSConfigMapName()}, cm); err != nil {
				if client.IgnoreNotFound(err) != nil {
					return nil, err
				}
				continue
			}
			out = append(out, Issuer{
				URL:       sk.Spec.Issuer,
				JWKS:      []byte(cm.Data[jwksKey]),
				Discovery: []byte(cm.Data[discoveryKey]),
				MaxAge:    MaxAgeFor(publishAhead(sk)),
			})
		}
		return out, nil
	}
}

func publishAhead(sk *tkv1.SigningKey) time.Duration {
	if d := sk.Spec.Rotation.PublishAhead; d != nil {
		return d.Duration
	}
	return time.Hour
}
