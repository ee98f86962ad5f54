package discovery

import (
	"context"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
)

// ClaimantOf is what the ownership decision reads of a SigningKey.
func ClaimantOf(sk *tkv1.SigningKey) Claimant {
	c := Claimant{
		Namespace: sk.Namespace, Name: sk.Name, UID: string(sk.UID),
		Issuer:  sk.Spec.Issuer,
		Created: sk.CreationTimestamp.Time,
		Claimed: sk.Status.ServedIssuer,
	}
	if cond := meta.FindStatusCondition(sk.Status.Conditions, tkv1.ConditionIssuerOwned); cond != nil && cond.Status == "True" {
		c.ClaimedSince = cond.LastTransitionTime.Time
	}
	return c
}

// ClaimantsOf lists the SigningKeys that name an issuer.
func ClaimantsOf(items []tkv1.SigningKey) []Claimant {
	out := make([]Claimant, 0, len(items))
	for i := range items {
		if items[i].Spec.Issuer != "" && items[i].DeletionTimestamp.IsZero() {
			out = append(out, ClaimantOf(&items[i]))
		}
	}
	return out
}

// FromCluster lists SigningKeys with an issuer and reads their JWKS ConfigMaps through c
// (the manager's cache, so every replica serves without touching the API server). Only the
// owner of each issuer is served, and only once its status records the claim: so an issuer
// is never served before the controller has settled who owns it.
func FromCluster(c client.Reader, jwksKey, discoveryKey string) Source {
	return func(ctx context.Context) ([]Issuer, error) {
		var list tkv1.SigningKeyList
		if err := c.List(ctx, &list); err != nil {
			return nil, err
		}
		byUID := map[string]*tkv1.SigningKey{}
		for i := range list.Items {
			byUID[string(list.Items[i].UID)] = &list.Items[i]
		}
		owners := make([]Claimant, 0)
		for k, o := range Owners(ClaimantsOf(list.Items)) {
			if o.holdsClaim(k) {
				owners = append(owners, o)
			}
		}
		// Earliest claim first: a request matched by path alone gets the first owner.
		sort.Slice(owners, func(i, j int) bool {
			if a, b := owners[i].ClaimedSince, owners[j].ClaimedSince; !a.Equal(b) {
				return a.Before(b)
			}
			return older(owners[i], owners[j])
		})
		out := make([]Issuer, 0, len(owners))
		for _, o := range owners {
			sk := byUID[o.UID]
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
