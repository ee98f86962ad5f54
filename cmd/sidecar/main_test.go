package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/sidecar"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, o sidecar.Options)
		error string
	}{
		{
			name: "the injected sidecar's flags read the bundle directory",
			args: []string{"--listen=:15080", "--admin-listen=:15021", "--upstream=http://127.0.0.1:8080",
				"--bundle-dir=/etc/tokenkeeper/bundle", "--policy-name=app"},
			check: func(t *testing.T, o sidecar.Options) {
				if o.PolicyFile != "/etc/tokenkeeper/bundle/policy.yaml" || o.JWKSFile != "/etc/tokenkeeper/bundle/jwks.json" ||
					o.RevocationsFile != "/etc/tokenkeeper/bundle/revocations.yaml" {
					t.Errorf("files %q %q %q", o.PolicyFile, o.JWKSFile, o.RevocationsFile)
				}
				if o.PolicyName != "app" || o.Listen != ":15080" || o.AdminListen != ":15021" {
					t.Errorf("options %+v", o)
				}
				if o.MaxHeaderBytes != 16<<10 || o.MaxBodyBytes != 10<<20 || o.UpstreamTimeout != 30*time.Second ||
					o.DrainDelay != 5*time.Second || o.ShutdownTimeout != 15*time.Second || o.CacheSize != 10000 {
					t.Errorf("defaults %+v", o)
				}
			},
		},
		{
			name: "standalone mode reads the files named",
			args: []string{"--listen", ":8443", "--upstream", "http://127.0.0.1:8080", "--policy-file", "p.yaml",
				"--jwks-file", "jwks.json", "--revocations-file", "r.yaml", "--token-cache-size=0", "--log-format=text"},
			check: func(t *testing.T, o sidecar.Options) {
				if o.PolicyFile != "p.yaml" || o.JWKSFile != "jwks.json" || o.RevocationsFile != "r.yaml" {
					t.Errorf("files %q %q %q", o.PolicyFile, o.JWKSFile, o.RevocationsFile)
				}
				if o.CacheSize >= 0 {
					t.Errorf("a cache size of 0 should disable the cache, got %d", o.CacheSize)
				}
			},
		},
		{
			name:  "a bundle directory and a file exclude each other",
			args:  []string{"--upstream=http://127.0.0.1:8080", "--bundle-dir=/b", "--policy-file=p.yaml"},
			error: "exclude each other",
		},
		{
			name:  "without a bundle directory a policy file is needed",
			args:  []string{"--upstream=http://127.0.0.1:8080", "--jwks-file=jwks.json"},
			error: "--policy-file",
		},
		{
			name:  "an unknown log format is refused",
			args:  []string{"--bundle-dir=/b", "--log-format=xml"},
			error: "--log-format",
		},
		{
			name:  "an unknown log level is refused",
			args:  []string{"--bundle-dir=/b", "--log-level=loud"},
			error: "log-level",
		},
		{
			name:  "stray arguments are refused",
			args:  []string{"--bundle-dir=/b", "extra"},
			error: "unexpected arguments",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, _, err := parseFlags(tc.args, io.Discard)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	if _, _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if code := run([]string{"-h"}, io.Discard); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if code := run([]string{"--bogus"}, io.Discard); code != 2 {
		t.Errorf("exit code %d for a bad flag, want 2", code)
	}
}
