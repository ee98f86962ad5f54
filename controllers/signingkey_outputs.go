package controllers

import (
	"bytes"
	"context"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// Entries of the JWKS ConfigMap.
const (
	ConfigMapJWKS      = "jwks.json"
	ConfigMapDiscovery = "openid-configuration"
)

// applySecret writes the ring to the Secret with server-side apply, unless current already
// holds exactly that. The write is conditional on the resourceVersion the ring was read at
// (basedOn), so a reconcile working from a stale cache gets a conflict instead of undoing a
// newer write. It returns the Secret's resourceVersion after the write.
func (r *SigningKeyReconciler) applySecret(ctx context.Context, sk *tkv1.SigningKey, current *corev1.Secret, basedOn string, ring keys.Ring) (string, error) {
	data, err := ring.SecretData()
	if err != nil {
		return "", err
	}
	if current != nil && current.ResourceVersion == basedOn && current.Type == SecretType &&
		sameBytesMap(current.Data, data) && hasOutputLabels(current.Labels, sk.Name) {
		return basedOn, nil
	}
	ac := corev1ac.Secret(sk.SecretName(), sk.Namespace).
		WithType(SecretType).
		WithLabels(outputLabels(sk.Name)).
		WithOwnerReferences(ownerReference(sk)).
		WithData(data)
	if basedOn != "" {
		ac.WithResourceVersion(basedOn)
	}
	if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return "", err
	}
	if ac.ResourceVersion == nil {
		return "", fmt.Errorf("no resourceVersion in the apply response")
	}
	return *ac.ResourceVersion, nil
}

// applyJWKS publishes the public keys (and the discovery document when there is an issuer).
func (r *SigningKeyReconciler) applyJWKS(ctx context.Context, sk *tkv1.SigningKey, current *corev1.ConfigMap, ring keys.Ring) error {
	data, err := jwksData(sk, ring)
	if err != nil {
		return err
	}
	if current != nil && sameStringMap(current.Data, data) && hasOutputLabels(current.Labels, sk.Name) {
		return nil
	}
	ac := corev1ac.ConfigMap(sk.JWKSConfigMapName(), sk.Namespace).
		WithLabels(outputLabels(sk.Name)).
		WithOwnerReferences(ownerReference(sk)).
		WithData(data)
	return r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership)
}

// jwksData renders the ConfigMap's data: public keys only, never private material.
func jwksData(sk *tkv1.SigningKey, ring keys.Ring) (map[string]string, error) {
	pub := make([]jose.JSONWebKey, 0, len(ring.Records))
	for _, k := range ring.PublicKeys() {
		pub = append(pub, k.PublicJWK())
	}
	set, err := jwks.Marshal(pub)
	if err != nil {
		return nil, fmt.Errorf("rendering JWKS: %w", err)
	}
	data := map[string]string{ConfigMapJWKS: string(set)}
	if sk.Spec.Issuer != "" {
		doc, err := jwks.DiscoveryDocument(sk.Spec.Issuer, sk.Spec.JWKSURI, pub)
		if err != nil {
			return nil, err
		}
		data[ConfigMapDiscovery] = string(doc)
	}
	return data, nil
}

func outputLabels(name string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, tkv1.LabelSigningKey: name}
}

func hasOutputLabels(have map[string]string, name string) bool {
	for k, v := range outputLabels(name) {
		if have[k] != v {
			return false
		}
	}
	return true
}

func ownerReference(sk *tkv1.SigningKey) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(tkv1.GroupVersion.String()).
		WithKind("SigningKey").
		WithName(sk.Name).
		WithUID(sk.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

func sameBytesMap(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if w, ok := a[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func sameStringMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if w, ok := a[k]; !ok || v != w {
			return false
		}
	}
	return true
}
