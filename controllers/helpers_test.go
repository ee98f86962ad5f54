package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

type skOption func(*tkv1.SigningKey)

func withAlgorithm(alg tkv1.Algorithm, rsaBits int32) skOption {
	return func(sk *tkv1.SigningKey) {
		sk.Spec.Algorithm = alg
		if rsaBits > 0 {
			sk.Spec.RSAKeySize = &rsaBits
		}
	}
}

func withRotation(interval, publishAhead, retainFor time.Duration) skOption {
	return func(sk *tkv1.SigningKey) {
		sk.Spec.Rotation = tkv1.RotationPolicy{
			Interval:     &metav1.Duration{Duration: interval},
			PublishAhead: &metav1.Duration{Duration: publishAhead},
			RetainFor:    &metav1.Duration{Duration: retainFor},
		}
	}
}

func withIssuer(iss string) skOption {
	return func(sk *tkv1.SigningKey) { sk.Spec.Issuer = iss }
}

func newSigningKey(ns, name string, opts ...skOption) *tkv1.SigningKey {
	sk := &tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	withRotation(time.Hour, time.Second, time.Hour)(sk)
	for _, o := range opts {
		o(sk)
	}
	return sk
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8sClient.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func getSK(t *testing.T, ns, name string) *tkv1.SigningKey {
	t.Helper()
	sk := &tkv1.SigningKey{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, sk); err != nil {
		t.Fatal(err)
	}
	return sk
}

// waitReady waits until the SigningKey is Ready and returns it.
func waitReady(t *testing.T, ns, name string, timeout time.Duration) *tkv1.SigningKey {
	t.Helper()
	var sk *tkv1.SigningKey
	eventually(t, timeout, name+" Ready", func() error {
		sk = getSK(t, ns, name)
		if !meta.IsStatusConditionTrue(sk.Status.Conditions, tkv1.ConditionReady) {
			return fmt.Errorf("conditions: %+v", sk.Status.Conditions)
		}
		return nil
	})
	return sk
}

func getSecret(ns, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name + "-signing-keys"}, s)
	return s, err
}

func getJWKS(ns, name string) (*corev1.ConfigMap, *jose.JSONWebKeySet, error) {
	cm := &corev1.ConfigMap{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name + "-jwks"}, cm); err != nil {
		return nil, nil, err
	}
	set, err := jwks.Parse([]byte(cm.Data[controllers.ConfigMapJWKS]))
	return cm, set, err
}

func kidsOf(set *jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	sort.Strings(out)
	return out
}

// secretRecords reads the timelines the manager keeps in the Secret.
func secretRecords(t *testing.T, s *corev1.Secret) []keys.Record {
	t.Helper()
	var sf struct {
		Keys []keys.Record `json:"keys"`
	}
	if err := json.Unmarshal(s.Data[keys.FileState], &sf); err != nil {
		t.Fatalf("keys.json: %v", err)
	}
	return sf.Keys
}

// signWithSecret signs a JWT the way an issuer that mounts the Secret would.
func signWithSecret(t *testing.T, s *corev1.Secret, claims any) string {
	t.Helper()
	priv, err := keys.ParsePrivatePEM(s.Data[keys.FileActivePEM])
	if err != nil {
		t.Fatal(err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(s.Data[keys.FileActiveJWK]); err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(jwk.Algorithm), Key: jose.JSONWebKey{Key: priv, KeyID: string(s.Data[keys.FileActiveKID])}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// eventReasons lists the reasons of the events about an object.
func eventReasons(t *testing.T, ns, name string) map[string]string {
	t.Helper()
	var list eventsv1.EventList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out[e.Reason] += e.Note + "\n"
		}
	}
	return out
}

func activeRecord(rs []keys.Record) *keys.Record {
	for i := range rs {
		if rs[i].State == keys.Active {
			return &rs[i]
		}
	}
	return nil
}
