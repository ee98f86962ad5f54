package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The samples users copy from are valid against the CRDs.
func TestSamplesAreAcceptedByTheAPIServer(t *testing.T) {
	ns := newNamespace(t)
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "tokenkeeper_*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("want a sample per kind, found %v (%v)", files, err)
	}
	kinds := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		u.SetNamespace(ns)
		if err := k8sClient.Create(context.Background(), u); err != nil {
			t.Errorf("%s refused: %v", filepath.Base(f), err)
		}
		kinds[u.GetKind()] = true
	}
	for _, k := range []string{"SigningKey", "TokenPolicy", "RevocationList"} {
		if !kinds[k] {
			t.Errorf("no sample for %s", k)
		}
	}
}
