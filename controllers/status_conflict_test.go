package controllers_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/keygen"
	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

// A first publication writes the Secret, the JWKS ConfigMap and the Secret again. A
// conflict at any of the three writes leaves a status that claims no less than exists: once
// the ConfigMap publishes a key, status lists it (a conflict on the last write used to
// render the status from an empty ring: keys=0, Ready=False "No key yet").
func TestAConflictAtAnyWriteNeverClaimsFewerKeysThanPublished(t *testing.T) {
	for failAt := int32(1); failAt <= 3; failAt++ {
		t.Run(fmt.Sprintf("conflict at write %d", failAt), func(t *testing.T) {
			ctx := context.Background()
			ns := newNamespace(t)
			base, err := client.NewWithWatch(cfg, client.Options{Scheme: operator.Scheme()})
			if err != nil {
				t.Fatal(err)
			}
			var applies atomic.Int32
			wrapped := interceptor.NewClient(base, interceptor.Funcs{
				Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
					if applies.Add(1) == failAt {
						return apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, "injected", fmt.Errorf("write %d conflicts", failAt))
					}
					return c.Apply(ctx, obj, opts...)
				},
			})
			r := &controllers.SigningKeyReconciler{
				Client: wrapped, APIReader: base, Clock: clock.RealClock{},
				Recorder: events.NewFakeRecorder(100), Metrics: metrics.NewSigningKeys(time.Now),
			}
			r.Keys = keygen.New(ctx, rand.Reader, 1, func(string) {})
			create(t, newSigningKey(ns, "keys"))
			req := ctrl.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: "keys"}}
			ready := false
			for i := 0; i < 100 && !(ready && applies.Load() > failAt); i++ {
				if _, err := r.Reconcile(ctx, req); err != nil {
					t.Logf("reconcile %d: %v", i, err)
				}
				sk := getSK(t, ns, "keys")
				ready = meta.IsStatusConditionTrue(sk.Status.Conditions, tkv1.ConditionReady)
				_, set, err := getJWKS(ns, "keys")
				if err == nil && len(set.Keys) > len(sk.Status.Keys) {
					t.Fatalf("after %d writes the ConfigMap publishes %d keys, status lists %d (Ready: %+v)",
						applies.Load(), len(set.Keys), len(sk.Status.Keys), sk.Status.Conditions)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if !ready || applies.Load() <= failAt {
				t.Fatalf("not Ready after the conflict at write %d (%d writes)", failAt, applies.Load())
			}
		})
	}
}
