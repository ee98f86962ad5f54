package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RevocationListSpec lists what is revoked. Lists are capped so that an object stays far
// below etcd's request limit; shard larger sets across several RevocationLists.
type RevocationListSpec struct {
	// Tokens revoked one by one, by jti. Entries are pruned once the token has expired.
	// +kubebuilder:validation:MaxItems=5000
	// +listType=atomic
	// +optional
	Tokens []RevokedToken `json:"tokens,omitempty"`

	// Subjects whose tokens issued before notBefore are rejected ("log out everywhere").
	// +kubebuilder:validation:MaxItems=5000
	// +listType=atomic
	// +optional
	Subjects []RevokedSubject `json:"subjects,omitempty"`

	// Keys revoked by kid: removed from every JWKS at once and rejected. An Active revoked key
	// of a SigningKey in this namespace is replaced immediately (an emergency rotation).
	// +kubebuilder:validation:MaxItems=1000
	// +listType=map
	// +listMapKey=kid
	// +optional
	Keys []RevokedKey `json:"keys,omitempty"`
}

// RevokedToken is one revoked token.
type RevokedToken struct {
	// JTI is the token's "jti" claim.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	JTI string `json:"jti"`
	// Issuer limits the revocation to tokens of this "iss". Empty means any issuer.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// ExpiresAt is the token's own expiry. Verifiers drop the entry once it is older than
	// the largest clock skew a TokenPolicy may allow (10m), when no verifier can accept the
	// token any more.
	ExpiresAt metav1.Time `json:"expiresAt"`
}

// RevokedSubject rejects every token of a subject issued before notBefore.
type RevokedSubject struct {
	// Subject is the token's "sub" claim.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Subject string `json:"subject"`
	// Issuer limits the revocation to tokens of this "iss". Empty means any issuer.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// NotBefore: tokens with an "iat" before it (or without "iat") are rejected.
	NotBefore metav1.Time `json:"notBefore"`
}

// RevokedKey is one compromised or withdrawn key.
type RevokedKey struct {
	// KID of the key.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	KID string `json:"kid"`
	// Reason, for humans.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`
}

// RevocationListStatus is the observed state of a RevocationList.
type RevocationListStatus struct {
	// ObservedGeneration is the generation last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Entries is how many revocations are in force.
	// +optional
	Entries int32 `json:"entries,omitempty"`
	// Conditions: Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RevocationList revokes tokens, subjects and keys for the TokenPolicies of its namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rl;revlist,categories=tokenkeeper
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Entries",type=integer,JSONPath=`.status.entries`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RevocationList struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec RevocationListSpec `json:"spec,omitempty"`
	// +optional
	Status RevocationListStatus `json:"status,omitempty"`
}

// RevocationListList is a list of RevocationLists.
// +kubebuilder:object:root=true
type RevocationListList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RevocationList `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RevocationList{}, &RevocationListList{})
}
