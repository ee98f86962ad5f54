package server

import (
	"fmt"
	"sort"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
)

// Build renders tp's snapshot from the objects of its namespace, as the TokenPolicy
// controller renders its bundle, but from each replica's own inputs and without waiting for
// the leader's bundle write:
//   - revocations merge the RevocationLists the policy names (all of the namespace when it
//     names none), by name;
//   - keys are those of each trusted SigningKey's JWKS ConfigMap, plus, when the policy
//     trusts a jwksURI, the bundle's keys (the leader fetches remote JWKS; the bundle is
//     where its result is), minus every revoked kid.
//
// Only public keys can come out: each JWKS is parsed as public keys only and the result is
// checked for private members again. Token has only its digest set.
func Build(tp *tkv1.TokenPolicy, lists map[string]*tkv1.RevocationList, configMaps map[string]*corev1.ConfigMap) (*distribution.Snapshot, error) {
	return buildWith(tp, mergedRevocations(tp, lists), configMaps)
}

// selection names the RevocationLists tp applies: policies with the same selection share
// one merged set in a rebuild.
func selection(tp *tkv1.TokenPolicy) string {
	if len(tp.Spec.RevocationLists) == 0 {
		return "*"
	}
	names := make([]string, 0, len(tp.Spec.RevocationLists))
	for _, ref := range tp.Spec.RevocationLists {
		names = append(names, ref.Name)
	}
	sort.Strings(names)
	return strings.Join(names, "/")
}

// mergedRevocations merges and normalizes the lists tp applies. The result is shared
// between snapshots and never modified.
func mergedRevocations(tp *tkv1.TokenPolicy, lists map[string]*tkv1.RevocationList) tkv1.RevocationListSpec {
	var applied []*tkv1.RevocationList
	if len(tp.Spec.RevocationLists) == 0 {
		for _, l := range lists {
			applied = append(applied, l)
		}
	} else {
		for _, ref := range tp.Spec.RevocationLists {
			if l := lists[ref.Name]; l != nil {
				applied = append(applied, l)
			}
		}
	}
	sort.Slice(applied, func(i, j int) bool { return applied[i].Name < applied[j].Name })
	revs := policy.Merge(tp.Name, applied...).Spec
	distribution.Normalize(&revs)
	return revs
}

func buildWith(tp *tkv1.TokenPolicy, revs tkv1.RevocationListSpec, configMaps map[string]*corev1.ConfigMap) (*distribution.Snapshot, error) {
	revoked := map[string]bool{}
	for _, k := range revs.Keys {
		revoked[k.KID] = true
	}

	var keys []jose.JSONWebKey
	seen := map[string]bool{}
	add := func(cm *corev1.ConfigMap, what string) error {
		if cm == nil {
			return nil // not published yet: the TokenPolicy's conditions say so
		}
		set, err := jwks.Parse([]byte(cm.Data[controllers.ConfigMapJWKS]))
		if err != nil {
			return fmt.Errorf("%s: ConfigMap %s: %w", what, cm.Name, err)
		}
		for _, k := range set.Keys {
			if !seen[k.KeyID] && !revoked[k.KeyID] {
				seen[k.KeyID] = true
				keys = append(keys, k)
			}
		}
		return nil
	}
	remote := false
	for i, src := range tp.Spec.TrustedKeys {
		switch {
		case src.SigningKeyRef != nil:
			sk := &tkv1.SigningKey{}
			sk.Name = src.SigningKeyRef.Name
			if err := add(configMaps[sk.JWKSConfigMapName()], fmt.Sprintf("spec.trustedKeys[%d]", i)); err != nil {
				return nil, err
			}
		case src.JWKSURI != "":
			remote = true
		}
	}
	if remote {
		if err := add(configMaps[tp.BundleConfigMapName()], "bundle"); err != nil {
			return nil, err
		}
	}
	doc, err := jwks.Marshal(keys)
	if err != nil {
		return nil, err
	}
	if err := distribution.CheckKeys(doc); err != nil {
		return nil, err
	}
	s := &distribution.Snapshot{Namespace: tp.Namespace, Name: tp.Name}
	s.Policy = *tp.Spec.DeepCopy()
	s.Keys = doc
	s.Revocations = revs
	if s.Token.Digest, err = s.Digest(); err != nil {
		return nil, err
	}
	return s, nil
}
