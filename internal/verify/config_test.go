package verify

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNewRefusesInvalidConfigs(t *testing.T) {
	valid := func() Config { return Config{Issuer: issuer, Audiences: []string{"api"}} }
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }, "issuer"},
		{"no audience", func(c *Config) { c.Audiences = nil }, "audiences"},
		{"an empty audience", func(c *Config) { c.Audiences = []string{""} }, "audiences[0]"},
		{"a symmetric algorithm", func(c *Config) { c.AllowedAlgorithms = []string{"HS256"} }, "HS256"},
		{"alg none", func(c *Config) { c.AllowedAlgorithms = []string{"none"} }, "none"},
		{"a negative skew", func(c *Config) { c.ClockSkew = -time.Second }, "clockSkew"},
		{"a negative lifetime", func(c *Config) { c.MaxTokenLifetime = -time.Second }, "maxTokenLifetime"},
		{"a negative size limit", func(c *Config) { c.MaxTokenBytes = -1 }, "maxTokenBytes"},
		{"a required claim without name", func(c *Config) { c.RequiredClaims = []ClaimRequirement{{}} }, "requiredClaims[0]"},
		{"a relative rule prefix", func(c *Config) { c.Rules = []Rule{{PathPrefix: "api"}} }, "rules[0].pathPrefix"},
		{"an anonymous rule requiring claims", func(c *Config) {
			c.Rules = []Rule{{PathPrefix: "/", Anonymous: true, RequiredClaims: []ClaimRequirement{{Name: "x"}}}}
		}, "anonymous"},
		{"a forwarded header with a space", func(c *Config) { c.ForwardClaims = []ClaimHeader{{Claim: "sub", Header: "X User"}} }, "header"},
		{"a forwarded header used twice", func(c *Config) {
			c.ForwardClaims = []ClaimHeader{{Claim: "sub", Header: "X-User"}, {Claim: "email", Header: "x-user"}}
		}, "twice"},
		{"a token source with header and cookie", func(c *Config) { c.TokenSource = TokenSource{Header: "A", Cookie: "b"} }, "not both"},
		{"a cookie source with a prefix", func(c *Config) { c.TokenSource = TokenSource{Cookie: "b", Prefix: "Bearer "} }, "prefix"},
		{"a token source with only a prefix", func(c *Config) { c.TokenSource = TokenSource{Prefix: "Token "} }, "set header or cookie"},
		{"a bad cookie name", func(c *Config) { c.TokenSource = TokenSource{Cookie: "a;b"} }, "cookie"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestNewFillsInDefaults(t *testing.T) {
	v, err := New(Config{Issuer: issuer, Audiences: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := v.Config()
	if cfg.TokenSource != (TokenSource{Header: "Authorization", Prefix: "Bearer "}) {
		t.Errorf("TokenSource %+v", cfg.TokenSource)
	}
	if cfg.MaxTokenBytes != 8192 || len(cfg.AllowedAlgorithms) != 10 || cfg.ClockSkew != 0 {
		t.Errorf("defaults %+v", cfg)
	}
}

func TestErrorsCarryTheirReason(t *testing.T) {
	err := error(reject(ReasonExpired, "detail"))
	if err.Error() != "token rejected: expired: detail" || errExpired.Error() != "token rejected: expired" {
		t.Errorf("messages %q, %q", err, errExpired)
	}
	long := reject(ReasonMalformed, strings.Repeat("é", 300)).Error()
	if len(long) > 250 || !strings.HasSuffix(long, "é…") {
		t.Errorf("a long detail is not cut at a rune boundary: %d bytes", len(long))
	}
	if ReasonOf(err) != ReasonExpired || ReasonOf(nil) != "" || ReasonOf(errors.New("x")) != "" {
		t.Error("ReasonOf")
	}
	if !errors.Is(err, errExpired) || errors.Is(err, errRevokedKey) || !errors.Is(fmt.Errorf("wrapped: %w", err), errExpired) {
		t.Error("Is compares reasons")
	}
}
