package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenPolicySpec is what a valid token is for a workload.
type TokenPolicySpec struct {
	// Issuer every token must carry in "iss".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	Issuer string `json:"issuer"`

	// Audiences: a token is accepted when its "aud" (string or array) holds at least one.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +listType=set
	Audiences []string `json:"audiences"`

	// TrustedKeys are the key sources whose public keys verify tokens.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	TrustedKeys []TrustedKeySource `json:"trustedKeys"`

	// AllowedAlgorithms narrows the algorithms accepted. Each key is still pinned to its own
	// algorithm; the token header's alg is never trusted. Empty means all supported.
	// +kubebuilder:validation:MaxItems=10
	// +listType=set
	// +optional
	AllowedAlgorithms []Algorithm `json:"allowedAlgorithms,omitempty"`

	// ClockSkew tolerated on exp, nbf and iat.
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('10m')",message="clockSkew must be between 0s and 10m"
	// +optional
	ClockSkew *metav1.Duration `json:"clockSkew,omitempty"`

	// MaxTokenLifetime rejects tokens whose exp - iat exceeds it (and tokens without iat).
	// +optional
	MaxTokenLifetime *metav1.Duration `json:"maxTokenLifetime,omitempty"`

	// RequiredTokenType is the "typ" header every token must carry, such as "at+jwt" for
	// OAuth 2.0 access tokens (RFC 9068), so that an ID token from the same issuer cannot be
	// used as an access token. Compared case-insensitively, with "application/" implied when
	// the value holds no "/" (RFC 7515 §4.1.9): "at+jwt" and "application/at+jwt" are one.
	// Empty (the default) means typ is not checked.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[!#$%&'*+\-.^_|~0-9A-Za-z/]*$`
	// +optional
	RequiredTokenType string `json:"requiredTokenType,omitempty"`

	// RequiredClaims every token must satisfy on every non-anonymous route.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	RequiredClaims []ClaimRequirement `json:"requiredClaims,omitempty"`

	// Rules are evaluated in order; the first whose match fits the request decides. A request
	// no rule matches needs a valid token and nothing more.
	// +kubebuilder:validation:MaxItems=128
	// +listType=atomic
	// +optional
	Rules []RouteRule `json:"rules,omitempty"`

	// ForwardClaims copies claims of a verified token into request headers for the app.
	// Incoming copies of these headers are always stripped.
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=header
	// +optional
	ForwardClaims []ClaimHeader `json:"forwardClaims,omitempty"`

	// TokenSource is where the token is read from. Default: Authorization: Bearer.
	// +optional
	TokenSource *TokenSource `json:"tokenSource,omitempty"`

	// ForwardToken keeps the token in the request forwarded to the app. By default it is removed.
	// +optional
	ForwardToken bool `json:"forwardToken,omitempty"`

	// RevocationLists that apply, by name in this namespace. Empty means every
	// RevocationList in the namespace.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	RevocationLists []LocalObjectReference `json:"revocationLists,omitempty"`

	// NetworkPolicy makes the manager keep a NetworkPolicy that admits traffic to the pods
	// injected with this policy only on the sidecar's ports. Off by default: it needs a CNI
	// that enforces NetworkPolicies, and other NetworkPolicies selecting the same pods can
	// still open other ports (NetworkPolicies add up).
	// +optional
	NetworkPolicy *NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// Distribution tunes how the manager's pushed snapshots reach this policy's sidecars.
	// +optional
	Distribution *DistributionSpec `json:"distribution,omitempty"`
}

// DistributionSpec tunes the push of snapshots (policy, keys, revocations) to sidecars.
type DistributionSpec struct {
	// MaxStaleness is how long a sidecar may go without hearing from the manager (a
	// snapshot or a "nothing changed" answer) before it fails closed: every request gets
	// 503 and the sidecar is not ready until it hears again. Unset (the default) means a
	// sidecar keeps serving with its last good snapshot however long the manager is away.
	// A sidecar hears from the manager at least every poll hold (30s), so values under a
	// minute fail pods closed on an ordinary reconnect.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s')",message="maxStaleness must be at least 10s"
	// +optional
	MaxStaleness *metav1.Duration `json:"maxStaleness,omitempty"`
}

// NetworkPolicySpec configures the NetworkPolicy the manager keeps for a TokenPolicy.
type NetworkPolicySpec struct {
	// Enabled creates the NetworkPolicy; false (the default) removes it.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
}

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// TrustedKeySource is one source of verification keys: exactly one of signingKeyRef or jwksURI.
// +kubebuilder:validation:XValidation:rule="has(self.signingKeyRef) != has(self.jwksURI)",message="exactly one of signingKeyRef or jwksURI must be set"
type TrustedKeySource struct {
	// SigningKeyRef trusts the published keys of a SigningKey in this namespace.
	// +optional
	SigningKeyRef *LocalObjectReference `json:"signingKeyRef,omitempty"`

	// JWKSURI trusts a remote JWKS, such as an external IdP's or the cluster's
	// service-account issuer's.
	// The manager fetches it over https unless allowInsecureHTTP is set, and refuses
	// loopback, link-local and cloud metadata addresses unless its
	// --jwks-allow-local-addresses flag is set.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^?#]+')",message="jwksURI must be an http(s) URL"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[a-zA-Z]+://[^/?#]*@')",message="jwksURI must not contain userinfo (user:password@)"
	// +optional
	JWKSURI string `json:"jwksURI,omitempty"`

	// CABundle (PEM) is trusted instead of the system roots for an https jwksURI: a private IdP.
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	CABundle string `json:"caBundle,omitempty"`

	// AllowInsecureHTTP permits a plain http jwksURI (an in-cluster issuer that serves only
	// http). Anyone on the network path can then substitute keys; KeySourcesSecure says so.
	// +optional
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`
}

// ClaimRequirement requires a claim to be present and, when values is set, to hold one of them:
// for an array claim such as "groups", any element, compared whole; for a string claim, the
// whole string, or for "scope" and "scp" (space-separated lists by definition) any word of it.
// No other claim is split: "readonly admin" is one value, not "admin".
type ClaimRequirement struct {
	// Name of the claim; dots reach into nested objects (e.g. "realm_access.roles").
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// Values: any one of them satisfies the requirement. Empty means presence is enough.
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	// +optional
	Values []string `json:"values,omitempty"`
}

// RouteRule decides what a matching request needs.
// +kubebuilder:validation:XValidation:rule="!(has(self.anonymous) && self.anonymous && has(self.requiredClaims) && size(self.requiredClaims) > 0)",message="an anonymous rule cannot require claims",fieldPath=".requiredClaims"
type RouteRule struct {
	// PathPrefix the request path must start with, such as "/api/" or "/healthz",
	// compared segment by segment: "/api" and "/api/" both match "/api", "/api/" and
	// "/api/items", and neither matches "/apiary". The path is matched both as sent and
	// case-folded, and a request must satisfy the first matching rule of each reading, as
	// the app may route case-insensitively ("/API/items" needs what "/api/items" needs). The
	// sidecar refuses (400) paths that an app could resolve differently: dot or empty
	// segments, ";", "\", encoded "/" or ".".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	PathPrefix string `json:"pathPrefix"`
	// Methods the rule applies to. Empty means all. GET covers HEAD too, as servers answer
	// HEAD with their GET handler.
	// +kubebuilder:validation:MaxItems=9
	// +kubebuilder:validation:items:Enum=GET;HEAD;POST;PUT;PATCH;DELETE;OPTIONS;CONNECT;TRACE
	// +listType=set
	// +optional
	Methods []string `json:"methods,omitempty"`
	// Anonymous lets requests through without a token (health checks, public pages).
	// +optional
	Anonymous bool `json:"anonymous,omitempty"`
	// RequiredClaims a valid token must also satisfy here; a valid token that does not gets 403.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	RequiredClaims []ClaimRequirement `json:"requiredClaims,omitempty"`
}

// ClaimHeader forwards one claim as a request header.
type ClaimHeader struct {
	// Claim name; dots reach into nested objects.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Claim string `json:"claim"`
	// Header name the app receives it in.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9-]+$`
	// +kubebuilder:validation:MaxLength=128
	Header string `json:"header"`
}

// TokenSource says where a token is read from: a header (with a prefix) or a cookie.
// +kubebuilder:validation:XValidation:rule="has(self.header) != has(self.cookie)",message="exactly one of header or cookie must be set"
type TokenSource struct {
	// Header holding the token, such as "Authorization".
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9-]+$`
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Header string `json:"header,omitempty"`
	// Prefix before the token in the header, such as "Bearer ".
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// Cookie holding the token.
	// +kubebuilder:validation:Pattern=`^[!#$%&'*+\-.^_|~0-9A-Za-z]+$`
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Cookie string `json:"cookie,omitempty"`
}

// TokenPolicyStatus is the observed state of a TokenPolicy.
type TokenPolicyStatus struct {
	// ObservedGeneration is the generation last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// BundleConfigMapName is the ConfigMap holding the policy and the merged public JWKS.
	// +optional
	BundleConfigMapName string `json:"bundleConfigMapName,omitempty"`
	// KeyCount is how many public keys the bundle holds.
	// +optional
	KeyCount int32 `json:"keyCount,omitempty"`
	// Conditions: Ready, KeysResolved.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// TokenPolicy is what a valid token is for a workload; sidecars injected with it enforce it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tp;tokpol,categories=tokenkeeper
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Issuer",type=string,JSONPath=`.spec.issuer`
// +kubebuilder:printcolumn:name="Keys",type=integer,JSONPath=`.status.keyCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TokenPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TokenPolicySpec `json:"spec"`
	// +optional
	Status TokenPolicyStatus `json:"status,omitempty"`
}

// TokenPolicyList is a list of TokenPolicies.
// +kubebuilder:object:root=true
type TokenPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TokenPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TokenPolicy{}, &TokenPolicyList{})
}
