package server

import (
	"context"

	authenticationv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TokenReviewer reviews tokens with the API server's TokenReview.
type TokenReviewer struct{ Client client.Client }

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

// Review implements Reviewer.
func (t TokenReviewer) Review(ctx context.Context, token string, audiences []string) (authenticationv1.TokenReviewStatus, error) {
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences}}
	if err := t.Client.Create(ctx, tr); err != nil {
		return authenticationv1.TokenReviewStatus{}, err
	}
	return tr.Status, nil
}
