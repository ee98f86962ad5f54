package v1alpha1

// Annotation and label keys shared by the manager, the webhook and the kubectl plugin.
const (
	// AnnotationRotateRequestedAt asks for a rotation of a SigningKey. Its value is an RFC 3339
	// time: the active key is rotated at that time (now, if it is in the past) unless it was
	// activated after it. The next key is still published for publishAhead before it signs.
	AnnotationRotateRequestedAt = "tokenkeeper.dev/rotate-requested-at"

	// LabelSigningKey marks the Secret and ConfigMap rendered for a SigningKey.
	LabelSigningKey = "tokenkeeper.dev/signing-key"
)

// Condition types.
const (
	// ConditionReady is True when the object's outputs are current and usable.
	ConditionReady = "Ready"
	// ConditionKeysValid is False when the Secret holding the keys was found damaged.
	ConditionKeysValid = "KeysValid"
	// ConditionPublished is True when the JWKS ConfigMap holds every live key.
	ConditionPublished = "Published"
	// ConditionIssuerOwned is True when this SigningKey owns spec.issuer and the discovery
	// server serves its keys; False when another SigningKey claimed the issuer first. Absent
	// without an issuer.
	ConditionIssuerOwned = "IssuerOwned"
)

// Condition reasons, also used as Event reasons.
const (
	ReasonActive              = "Active"
	ReasonWaitingForPublish   = "WaitingForPublication"
	ReasonKeyGenerating       = "KeyGenerating"
	ReasonKeyGenerated        = "KeyGenerated"
	ReasonRotated             = "Rotated"
	ReasonRotationRequested   = "RotationRequested"
	ReasonInvalidRotationTime = "InvalidRotationRequest"
	ReasonKeyRemoved          = "KeyRemoved"
	ReasonKeyRevoked          = "KeyRevoked"
	ReasonEmergencyRotation   = "EmergencyRotation"
	ReasonSecretRepaired      = "SecretRepaired"
	ReasonSecretValid         = "SecretValid"
	ReasonSecretWriteFailed   = "SecretWriteFailed"
	ReasonConfigMapFailed     = "ConfigMapWriteFailed"
	ReasonPublished           = "Published"
	ReasonPending             = "Pending"
	ReasonNotGathered         = "NotGathered"
	ReasonInputsUnreadable    = "InputsUnreadable" // an input could not be read; the condition is Unknown
	ReasonInvalidSpec         = "InvalidSpec"
	ReasonIssuerOwner         = "IssuerOwner"
	ReasonIssuerConflict      = "IssuerConflict"
)

// TokenPolicy condition types and reasons.
const (
	// ConditionKeysResolved is True when every trusted key source resolved to keys.
	ConditionKeysResolved = "KeysResolved"
	// ConditionRetentionCoversTokens is False when a referenced SigningKey drops retired
	// keys before tokens this policy accepts expire, so valid tokens would be rejected.
	ConditionRetentionCoversTokens = "RetentionCoversTokens"
	// ConditionKeySourcesSecure is False when a jwksURI is fetched over plain http, where
	// anyone on the network path could substitute keys and so forge tokens.
	ConditionKeySourcesSecure = "KeySourcesSecure"

	ReasonResolved           = "Resolved"
	ReasonSigningKeyNotFound = "SigningKeyNotFound"
	ReasonSigningKeyNotReady = "SigningKeyNotReady"
	ReasonJWKSUnreachable    = "JWKSUnreachable"
	ReasonJWKSPending        = "JWKSPending"
	// ConditionRevocationsComplete is False when the revocations that apply do not all fit
	// the bundle ConfigMap.
	ConditionRevocationsComplete = "RevocationsComplete"
	ReasonRevocationsTruncated   = "RevocationsTruncated"
	ReasonRevocationsFit         = "RevocationsFit"
	ReasonNoKeys                 = "NoKeys"
	ReasonBundleWritten          = "BundleWritten"
	ReasonBundleWriteFailed      = "BundleWriteFailed"
	ReasonRetentionTooShort      = "RetentionTooShort"
	ReasonRetentionSufficient    = "RetentionSufficient"
	ReasonNoLifetimeCap          = "NoLifetimeCap"
	ReasonInsecureJWKSURI        = "InsecureJWKSURI"
	ReasonSecureKeySources       = "SecureKeySources"

	// LabelTokenPolicy marks the bundle ConfigMap rendered for a TokenPolicy.
	LabelTokenPolicy = "tokenkeeper.dev/token-policy"
)

// BundleConfigMapName is the ConfigMap holding a TokenPolicy's bundle for its sidecars.
func (tp *TokenPolicy) BundleConfigMapName() string { return tp.Name + "-bundle" }
