package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Algorithm is a JWS signing algorithm. Each key is pinned to exactly one.
// +kubebuilder:validation:Enum=RS256;RS384;RS512;PS256;PS384;PS512;ES256;ES384;ES512;EdDSA
type Algorithm string

// The supported algorithms: asymmetric only, so verifiers never hold a signing secret.
const (
	RS256 Algorithm = "RS256"
	RS384 Algorithm = "RS384"
	RS512 Algorithm = "RS512"
	PS256 Algorithm = "PS256"
	PS384 Algorithm = "PS384"
	PS512 Algorithm = "PS512"
	ES256 Algorithm = "ES256"
	ES384 Algorithm = "ES384"
	ES512 Algorithm = "ES512"
	EdDSA Algorithm = "EdDSA"
)

// SigningKeySpec describes a rotated family of signing keys.
// +kubebuilder:validation:XValidation:rule="!has(self.rsaKeySize) || self.algorithm.startsWith('RS') || self.algorithm.startsWith('PS')",message="rsaKeySize applies only to RS256/384/512 and PS256/384/512",fieldPath=".rsaKeySize"
type SigningKeySpec struct {
	// Algorithm every new key is generated for. Existing keys keep the algorithm they were
	// created with; changing it rotates the active key out (with the usual publishAhead).
	// +kubebuilder:default=ES256
	// +optional
	Algorithm Algorithm `json:"algorithm,omitempty"`

	// RSAKeySize is the modulus size in bits of RS*/PS* keys. Defaults to 2048 for those
	// algorithms; must not be set for others.
	// +kubebuilder:validation:Enum=2048;3072;4096
	// +optional
	RSAKeySize *int32 `json:"rsaKeySize,omitempty"`

	// Rotation sets how long each key generation is Next, Active and Retired.
	// +kubebuilder:default={interval:"24h",publishAhead:"1h",retainFor:"24h"}
	// +optional
	Rotation RotationPolicy `json:"rotation,omitempty"`

	// Issuer is the "iss" of tokens signed with these keys, an http(s) URL without query or
	// fragment. When set, the JWKS ConfigMap also holds an OpenID discovery document and the
	// manager serves <issuer>/.well-known/openid-configuration and the JWKS over HTTP.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^/?#]+(/[^?#]*)?$') && !self.endsWith('/')",message="issuer must be an http(s) URL without query, fragment or trailing slash"
	// +optional
	Issuer string `json:"issuer,omitempty"`

	// JWKSURI is the jwks_uri advertised in the discovery document. Defaults to
	// <issuer>/.well-known/jwks.json, which the manager serves.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^?#]+$')",message="jwksURI must be an http(s) URL without query or fragment"
	// +optional
	JWKSURI string `json:"jwksURI,omitempty"`
}

// RotationPolicy is the timing of a key's life: Next (published, not signing) for
// publishAhead, Active (the one signing key) for interval, Retired (verify-only) for retainFor.
// +kubebuilder:validation:XValidation:rule="!has(self.publishAhead) || !has(self.interval) || duration(self.publishAhead) < duration(self.interval)",message="publishAhead must be shorter than interval",fieldPath=".publishAhead"
type RotationPolicy struct {
	// Interval is how long a key is Active before the next one takes over.
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s')",message="interval must be at least 10s"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// PublishAhead is how long a key is published before it signs. It must cover every
	// verifier's JWKS cache lifetime (and a kubelet volume sync for mounted JWKS).
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="publishAhead must be at least 1s"
	// +optional
	PublishAhead *metav1.Duration `json:"publishAhead,omitempty"`

	// RetainFor is how long a Retired key stays published. It must cover the longest token
	// lifetime, clock skew, and how long an issuer may still sign with a mounted old key.
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="retainFor must be at least 1s"
	// +optional
	RetainFor *metav1.Duration `json:"retainFor,omitempty"`
}

// KeyState is where a key generation is in its life.
// +kubebuilder:validation:Enum=Next;Active;Retired
type KeyState string

const (
	// KeyNext is published in the JWKS but does not sign yet.
	KeyNext KeyState = "Next"
	// KeyActive is published and is the one key that signs.
	KeyActive KeyState = "Active"
	// KeyRetired is published for verification only, until its removal time.
	KeyRetired KeyState = "Retired"
)

// KeyStatus is one key generation. It never holds private material.
type KeyStatus struct {
	// KID is the RFC 7638 JWK thumbprint (base64url SHA-256) of the public key.
	KID string `json:"kid"`
	// Algorithm the key is pinned to.
	Algorithm Algorithm `json:"algorithm"`
	// State of the key.
	State KeyState `json:"state"`
	// CreatedAt is when the key was generated.
	CreatedAt metav1.Time `json:"createdAt"`
	// PublishedAt is when the key was first seen in the published JWKS.
	// +optional
	PublishedAt *metav1.Time `json:"publishedAt,omitempty"`
	// ActivatedAt is when the key started signing.
	// +optional
	ActivatedAt *metav1.Time `json:"activatedAt,omitempty"`
	// RetiredAt is when the key stopped signing.
	// +optional
	RetiredAt *metav1.Time `json:"retiredAt,omitempty"`
	// RemoveAt is when a Retired key leaves the JWKS.
	// +optional
	RemoveAt *metav1.Time `json:"removeAt,omitempty"`
}

// SigningKeyStatus is the observed state of a SigningKey.
type SigningKeyStatus struct {
	// ObservedGeneration is the generation last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// ActiveKID is the kid of the key that signs.
	// +optional
	ActiveKID string `json:"activeKID,omitempty"`
	// NextKID is the kid of the published key that signs next.
	// +optional
	NextKID string `json:"nextKID,omitempty"`
	// Keys lists every live key generation, oldest first.
	// +listType=map
	// +listMapKey=kid
	// +optional
	Keys []KeyStatus `json:"keys,omitempty"`
	// NextTransitionTime is when the next key state change is due.
	// +optional
	NextTransitionTime *metav1.Time `json:"nextTransitionTime,omitempty"`
	// ServedIssuer is the issuer the manager's discovery server serves this SigningKey's
	// keys under. It is set once this SigningKey owns spec.issuer (no other SigningKey, in
	// any namespace, claimed it first) and is the record that keeps the ownership across
	// manager restarts. Empty while another SigningKey owns the issuer.
	// +optional
	ServedIssuer string `json:"servedIssuer,omitempty"`
	// SecretName is the Secret holding the private keys.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// JWKSConfigMapName is the ConfigMap holding the public JWKS.
	// +optional
	JWKSConfigMapName string `json:"jwksConfigMapName,omitempty"`
	// Conditions: Ready, KeysValid, Published.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SigningKey is a rotated family of JWT signing keys. Private keys go to the Secret
// <name>-signing-keys, public keys to the ConfigMap <name>-jwks.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 230",message="name must be at most 230 characters, so that <name>-signing-keys is a valid Secret name"
// +kubebuilder:resource:shortName=sk;signkey,categories=tokenkeeper
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Algorithm",type=string,JSONPath=`.spec.algorithm`
// +kubebuilder:printcolumn:name="Active Key",type=string,JSONPath=`.status.activeKID`
// +kubebuilder:printcolumn:name="Next Rotation",type=date,JSONPath=`.status.nextTransitionTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SigningKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec SigningKeySpec `json:"spec,omitempty"`
	// +optional
	Status SigningKeyStatus `json:"status,omitempty"`
}

// SigningKeyList is a list of SigningKeys.
// +kubebuilder:object:root=true
type SigningKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SigningKey `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SigningKey{}, &SigningKeyList{})
}

// SecretName is the Secret that holds a SigningKey's private keys.
func (sk *SigningKey) SecretName() string { return sk.Name + "-signing-keys" }

// JWKSConfigMapName is the ConfigMap that publishes a SigningKey's public keys.
func (sk *SigningKey) JWKSConfigMapName() string { return sk.Name + "-jwks" }
