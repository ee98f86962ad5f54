package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// BenchmarkRebuild is what one RevocationList change costs the Hub (Build: merge,
// normalize, digest; encode: JSON and gzip) for a policy whose revocations are spread over
// 20 RevocationLists, at 1 000 and 100 000 revoked tokens. Each iteration adds one jti, as
// make bench-distribution's changes do.
func BenchmarkRebuild(b *testing.B) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	k, err := keys.FromPrivate(priv, "ES256")
	if err != nil {
		b.Fatal(err)
	}
	doc, err := json.Marshal(map[string]any{"keys": []any{k.PublicJWK()}})
	if err != nil {
		b.Fatal(err)
	}
	exp := metav1.NewTime(time.Unix(4102444800, 0))
	for _, n := range []int{1000, 100000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			h := NewHub(slog.New(slog.DiscardHandler))
			tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api", ResourceVersion: "1"}}
			tp.Spec.Issuer, tp.Spec.Audiences = "https://issuer.example", []string{"api"}
			tp.Spec.TrustedKeys = []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "sk"}}}
			h.Upsert(tp)
			h.Upsert(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sk-jwks", ResourceVersion: "1"}, Data: map[string]string{"jwks.json": string(doc)}})
			const lists = 20
			for l := range lists {
				rl := &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("large-%02d", l), ResourceVersion: "1"}}
				for i := l * n / lists; i < (l+1)*n/lists; i++ {
					rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: fmt.Sprintf("revoked-%08d-4c55-4f5e-9a4b-2b8f0b0c1d2e", i), ExpiresAt: exp})
				}
				h.Upsert(rl)
			}
			h.MarkSynced()
			changes := &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "changes"}}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				changes = changes.DeepCopy()
				changes.ResourceVersion = strconv.Itoa(i + 2)
				changes.Spec.Tokens = append(changes.Spec.Tokens, tkv1.RevokedToken{JTI: "change-" + strconv.Itoa(i), ExpiresAt: exp})
				h.Upsert(changes)
				h.rebuildDirty()
			}
		})
	}
}
