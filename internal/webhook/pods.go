// Package webhook serves the manager's admission webhooks: HTTP handling only; the
// decisions live in internal/inject.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/inject"
)

// PodInjectorPath is where the pod injection webhook is served.
const PodInjectorPath = "/mutate-v1-pod"

// SystemNamespaces never get a sidecar: the cluster's own pods must not depend on tokenkeeper.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=tokenpolicies,verbs=get;list;watch

// PodInjector adds the verifying sidecar to pods that opt in.
type PodInjector struct {
	Decoder admission.Decoder
	Config  inject.Config
	// Reader checks that the named TokenPolicy exists (the manager's cache).
	Reader client.Reader
	// Excluded namespaces: the system ones and the manager's own.
	Excluded map[string]bool
}

// Handle admits a pod, injected when it asked for it.
func (h *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := h.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	ns := req.Namespace
	if pod.Namespace == "" {
		pod.Namespace = ns
	}
	if h.Excluded[ns] {
		resp := admission.Allowed("system namespace")
		if pod.Annotations[inject.AnnotationInject] == "true" {
			resp.Warnings = []string{fmt.Sprintf("tokenkeeper does not inject into namespace %s", ns)}
		}
		return resp
	}
	if pod.Annotations[inject.AnnotationInject] == "true" && pod.Annotations[inject.AnnotationStatus] == "" {
		if name := pod.Annotations[inject.AnnotationPolicy]; name != "" {
			err := h.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &tkv1.TokenPolicy{})
			if apierrors.IsNotFound(err) {
				return admission.Denied(fmt.Sprintf("TokenPolicy %s/%s does not exist: create it before pods that use it", ns, name))
			}
			if err != nil {
				return admission.Errored(http.StatusInternalServerError, err)
			}
		}
	}
	out, res, err := inject.Mutate(pod, h.Config)
	if errors.Is(err, inject.ErrRefused) {
		return admission.Denied(err.Error())
	}
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if !res.Injected {
		return admission.Allowed(res.Skipped)
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	log.FromContext(ctx).Info("Injected the sidecar", "pod", pod.GenerateName+pod.Name, "namespace", ns, "policy", pod.Annotations[inject.AnnotationPolicy])
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}
